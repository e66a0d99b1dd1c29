//! A real OCI registry: Debian's `docker-registry` (distribution 2.8) on 127.0.0.1.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use crate::proc::{Daemon, find_bin, run_checked};
use crate::tls::make_tls;
pub(crate) use crate::tls::random_hex;
use crate::token::{TOKEN_ISSUER, TOKEN_SERVICE, TokenIssuer};

/// OCI media types used by the pushes.
const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MT_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MT_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MT_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The user name in the registry's htpasswd when auth is on.
pub const REGISTRY_USER: &str = "tagflow";

/// How to start a [`Registry`]; `Default` is plain HTTP, no auth, no notifications.
#[derive(Debug, Clone, Default)]
pub struct RegistryOpts {
    /// htpasswd basic auth with user "tagflow" and a random password.
    pub auth: bool,
    /// Serve HTTPS with a leaf cert (127.0.0.1, localhost) signed by a fresh test CA.
    pub tls: bool,
    /// Send push/delete notifications to (url, bearer token).
    pub notify: Option<(String, String)>,
    /// `auth: token` with a [`TokenIssuer`] the harness starts; user "tagflow" with a random
    /// password is the issuer's account (ignored with `auth`).
    pub token: bool,
}

/// One request in the registry's access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// Method, e.g. "HEAD".
    pub method: String,
    /// Path plus query, e.g. "/v2/team/app/tags/list".
    pub uri: String,
    /// Response status (401 challenges included).
    pub status: u16,
}

/// A running `docker-registry serve`; killed on drop.
pub struct Registry {
    /// "127.0.0.1:PORT".
    pub host: String,
    /// "http://127.0.0.1:PORT" or "https://127.0.0.1:PORT".
    pub base_url: String,
    /// The port.
    pub port: u16,
    /// PEM of the CA that signed the server cert, when TLS is on.
    pub ca_file: Option<PathBuf>,
    /// "tagflow" when auth is on.
    pub username: Option<String>,
    /// The random password when auth is on.
    pub password: Option<String>,
    /// The registry's JSON log (stderr).
    pub log_file: PathBuf,
    /// The registry's access log (stdout, one combined-format line per request).
    pub access_log_file: PathBuf,
    /// The temp dir holding config, storage and logs.
    pub dir: PathBuf,
    /// The token issuer, in `token` mode.
    pub token: Option<TokenIssuer>,
    daemon: Daemon,
    _tmp: TempDir,
}

fn yaml_str(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

impl Registry {
    /// Start `docker-registry serve` on 127.0.0.1:0 and wait until it reports its port.
    pub fn start(opts: RegistryOpts) -> Registry {
        let bin = find_bin("docker-registry");
        let tmp = tempfile::Builder::new()
            .prefix("testbed-registry-")
            .tempdir()
            .expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  formatter: json\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:0\n  secret: {}\n",
            yaml_str(&dir.join("data").to_string_lossy()),
            random_hex(16),
        );
        let mut ca_file = None;
        if opts.tls {
            let tls = make_tls(&dir);
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                yaml_str(&tls.cert.to_string_lossy()),
                yaml_str(&tls.key.to_string_lossy())
            ));
            ca_file = Some(tls.ca_cert);
        }
        let (mut username, mut password) = (None, None);
        if opts.auth {
            let pass = random_hex(12);
            let line = run_checked(
                Command::new(find_bin("htpasswd")).args(["-nbB", "-C", "4", REGISTRY_USER, &pass]),
                Duration::from_secs(30),
            );
            let htpasswd = dir.join("htpasswd");
            fs::write(&htpasswd, line.trim_end().to_string() + "\n").expect("write htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: testbed\n    path: {}\n",
                yaml_str(&htpasswd.to_string_lossy())
            ));
            username = Some(REGISTRY_USER.to_string());
            password = Some(pass);
        }
        let mut token = None;
        if opts.token && !opts.auth {
            let issuer = TokenIssuer::start(&dir);
            let pass = random_hex(12);
            issuer.set_user(REGISTRY_USER, &pass);
            config.push_str(&format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    \
                 rootcertbundle: {}\n",
                yaml_str(&issuer.realm),
                yaml_str(TOKEN_SERVICE),
                yaml_str(TOKEN_ISSUER),
                yaml_str(&issuer.files.ca_cert.to_string_lossy())
            ));
            username = Some(REGISTRY_USER.to_string());
            password = Some(pass);
            token = Some(issuer);
        }
        if let Some((url, token)) = &opts.notify {
            config.push_str(&format!(
                "notifications:\n  events:\n    includereferences: true\n  endpoints:\n    \
                 - name: testbed\n      url: {}\n      headers:\n        Authorization: [{}]\n      \
                 timeout: 1s\n      threshold: 5\n      backoff: 1s\n      \
                 ignoredmediatypes:\n        - application/octet-stream\n      \
                 ignore:\n        actions:\n          - pull\n",
                yaml_str(url),
                yaml_str(&format!("Bearer {token}"))
            ));
        }
        let config_path = dir.join("config.yml");
        fs::write(&config_path, config).expect("write registry config");
        let log_file = dir.join("registry.log");
        let access_log_file = dir.join("access.log");
        let mut daemon = Daemon::spawn(
            "docker-registry",
            Command::new(bin)
                .arg("serve")
                .arg(&config_path)
                .current_dir(&dir),
            &access_log_file,
            &log_file,
        );
        let port = daemon
            .wait_log(Duration::from_secs(20), |log| {
                let at = log.find("listening on 127.0.0.1:")? + "listening on 127.0.0.1:".len();
                let digits: String = log[at..].chars().take_while(char::is_ascii_digit).collect();
                digits.parse::<u16>().ok()
            })
            .unwrap_or_else(|e| daemon.fail(e));
        let scheme = if opts.tls { "https" } else { "http" };
        Registry {
            host: format!("127.0.0.1:{port}"),
            base_url: format!("{scheme}://127.0.0.1:{port}"),
            port,
            ca_file,
            username,
            password,
            log_file,
            access_log_file,
            dir,
            token,
            daemon,
            _tmp: tmp,
        }
    }

    /// Take the registry down: its port refuses connections until [`Registry::restart`].
    pub fn stop(&mut self) {
        self.daemon.stop();
    }

    /// Start the registry again on the same port with the same storage (its images survive).
    pub fn restart(&mut self) {
        self.daemon.stop();
        let config_path = self.dir.join("config.yml");
        let config = fs::read_to_string(&config_path).expect("read registry config");
        let config = config.replace(
            "addr: 127.0.0.1:0\n",
            &format!("addr: 127.0.0.1:{}\n", self.port),
        );
        fs::write(&config_path, config).expect("write registry config");
        let mut daemon = Daemon::spawn(
            "docker-registry",
            Command::new(find_bin("docker-registry"))
                .arg("serve")
                .arg(&config_path)
                .current_dir(&self.dir),
            &self.dir.join("access-restarted.log"),
            &self.dir.join("registry-restarted.log"),
        );
        if let Err(e) = daemon.wait_log(Duration::from_secs(20), |l| {
            l.contains("listening on 127.0.0.1:").then_some(())
        }) {
            daemon.fail(e);
        }
        self.daemon = daemon;
    }

    /// Rotate the password of user "tagflow": rewrites htpasswd (the registry re-reads it on
    /// change) or tells the token issuer. The old password stops working at once.
    pub fn set_password(&mut self, new: &str) {
        if let Some(issuer) = &self.token {
            issuer.set_user(REGISTRY_USER, new);
        } else {
            let line = run_checked(
                Command::new(find_bin("htpasswd")).args(["-nbB", "-C", "4", REGISTRY_USER, new]),
                Duration::from_secs(30),
            );
            let htpasswd = self.dir.join("htpasswd");
            let tmp = self.dir.join("htpasswd.new");
            fs::write(&tmp, line.trim_end().to_string() + "\n").expect("write htpasswd");
            fs::rename(&tmp, &htpasswd).expect("replace htpasswd");
        }
        self.password = Some(new.to_string());
    }

    /// The registry's process id.
    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// "127.0.0.1:PORT/`repo`" — the image reference prefix for `repo`.
    pub fn image(&self, repo: &str) -> String {
        format!("{}/{repo}", self.host)
    }

    /// Push a one-layer amd64/linux image (config `created`, revision label) to `repo:tag`; returns the manifest digest.
    pub fn push_image(
        &self,
        repo: &str,
        tag: &str,
        created: &str,
        revision: Option<&str>,
    ) -> String {
        self.with_api(|api| {
            let manifest = api.push_platform_image(repo, tag, created, revision, "linux", "amd64");
            api.put_manifest(repo, tag, MT_MANIFEST, &manifest)
        })
    }

    /// Push an OCI index of per-platform images to `repo:tag`; returns (index digest, manifest digests in `platforms` order).
    pub fn push_index(
        &self,
        repo: &str,
        tag: &str,
        created: &str,
        revision: Option<&str>,
        platforms: &[(&str, &str)],
    ) -> (String, Vec<String>) {
        self.with_api(|api| {
            let mut entries = Vec::new();
            let mut digests = Vec::new();
            for (os, arch) in platforms {
                let manifest = api.push_platform_image(repo, tag, created, revision, os, arch);
                let digest = sha256_digest(&manifest);
                api.put_manifest(repo, &digest, MT_MANIFEST, &manifest);
                entries.push(json!({
                    "mediaType": MT_MANIFEST,
                    "digest": digest,
                    "size": manifest.len(),
                    "platform": {"architecture": arch, "os": os},
                }));
                digests.push(digest);
            }
            let index = serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": MT_INDEX,
                "manifests": entries,
            }))
            .expect("serialize index");
            (api.put_manifest(repo, tag, MT_INDEX, &index), digests)
        })
    }

    /// Delete the manifest `digest` (and so every tag pointing at it) from `repo`.
    pub fn delete_tag_manifest(&self, repo: &str, digest: &str) {
        self.with_api(|api| {
            let url = format!("{}/v2/{repo}/manifests/{digest}", api.base);
            let resp = api.send(api.client.delete(&url));
            api.expect(resp, &[202], "DELETE manifest");
        })
    }

    /// GET `path` (e.g. "/v2/team/app/tags/list") with the registry's creds; returns (status, JSON or null).
    pub fn get_json(&self, path: &str) -> (u16, Value) {
        self.with_api(|api| {
            let accept = [
                MT_MANIFEST,
                MT_INDEX,
                DOCKER_MANIFEST,
                DOCKER_LIST,
                "application/json",
            ];
            let resp = api.send(
                api.client
                    .get(format!("{}{path}", api.base))
                    .header("Accept", accept.join(", ")),
            );
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().unwrap_or(Value::Null))
        })
    }

    /// Every request in the access log so far (waits briefly for the log to settle).
    pub fn requests(&self) -> Vec<LoggedRequest> {
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut last = fs::read_to_string(&self.access_log_file).unwrap_or_default();
        loop {
            thread::sleep(Duration::from_millis(20));
            let now = fs::read_to_string(&self.access_log_file).unwrap_or_default();
            if now == last || Instant::now() >= deadline {
                return parse_access_log(&now);
            }
            last = now;
        }
    }

    /// The JSON log's entries (one object per line).
    pub fn json_log(&self) -> Vec<Value> {
        fs::read_to_string(&self.log_file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Docker config JSON with this registry's credentials (`{"auths":{}}` without auth).
    pub fn docker_config_json(&self) -> String {
        let mut auths = serde_json::Map::new();
        if let (Some(u), Some(p)) = (&self.username, &self.password) {
            let auth = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            auths.insert(self.host.clone(), json!({"auth": auth}));
        }
        json!({"auths": auths}).to_string()
    }

    /// Write [`Self::docker_config_json`] to a file in the registry's temp dir and return its path.
    pub fn write_docker_config(&self) -> PathBuf {
        let path = self.dir.join("docker-config.json");
        fs::write(&path, self.docker_config_json()).expect("write docker config");
        path
    }

    /// Run `f` with an HTTP client on a fresh thread (reqwest::blocking must not run inside tokio).
    fn with_api<T: Send>(&self, f: impl FnOnce(&Api) -> T + Send) -> T {
        thread::scope(|s| {
            s.spawn(|| {
                // Only ever talks to this registry: skip loading the public root store.
                let mut builder = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .tls_built_in_root_certs(false)
                    .redirect(reqwest::redirect::Policy::none());
                if let Some(ca) = &self.ca_file {
                    let pem = fs::read(ca).expect("read CA");
                    let cert = reqwest::Certificate::from_pem(&pem).expect("parse CA");
                    builder = builder
                        .tls_built_in_root_certs(false)
                        .add_root_certificate(cert);
                }
                let api = Api {
                    client: builder.build().expect("build HTTP client"),
                    base: self.base_url.clone(),
                    creds: self.username.clone().zip(self.password.clone()),
                    issuer: self.token.as_ref(),
                };
                f(&api)
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }
}

fn parse_access_log(text: &str) -> Vec<LoggedRequest> {
    // 127.0.0.1 - - [date] "GET /v2/ HTTP/1.1" 401 87 "" "ua"
    text.lines()
        .filter_map(|line| {
            let start = line.find('"')? + 1;
            let len = line[start..].find('"')?;
            let mut req = line[start..start + len].split(' ');
            let method = req.next()?.to_string();
            let uri = req.next()?.to_string();
            let status = line[start + len + 1..]
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some(LoggedRequest {
                method,
                uri,
                status,
            })
        })
        .collect()
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A minimal ustar archive holding one regular file.
fn tar_one_file(name: &str, content: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    header[100..108].copy_from_slice(b"0000644\0");
    header[108..116].copy_from_slice(b"0000000\0");
    header[116..124].copy_from_slice(b"0000000\0");
    header[124..136].copy_from_slice(format!("{:011o}\0", content.len()).as_bytes());
    header[136..148].copy_from_slice(b"14000000000\0");
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = header.to_vec();
    out.extend_from_slice(content);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out.extend_from_slice(&[0u8; 1024]);
    out
}

struct Api<'a> {
    client: reqwest::blocking::Client,
    base: String,
    creds: Option<(String, String)>,
    issuer: Option<&'a TokenIssuer>,
}

/// The repository a `/v2/<name>/{blobs,manifests,tags}/…` URL is about.
fn repo_of(url: &str) -> Option<&str> {
    let rest = &url[url.find("/v2/")? + 4..];
    ["/blobs/", "/manifests/", "/tags/"]
        .iter()
        .filter_map(|m| rest.rfind(m))
        .min()
        .map(|end| &rest[..end])
}

impl Api<'_> {
    fn send(&self, req: reqwest::blocking::RequestBuilder) -> reqwest::blocking::Response {
        let req = match (self.issuer, &self.creds) {
            (Some(issuer), _) => {
                let probe = req
                    .try_clone()
                    .expect("cloneable request")
                    .build()
                    .expect("request");
                match repo_of(probe.url().as_str()) {
                    Some(repo) => req.bearer_auth(issuer.mint(repo)),
                    None => req,
                }
            }
            (None, Some((u, p))) => req.basic_auth(u, Some(p)),
            (None, None) => req,
        };
        req.send()
            .unwrap_or_else(|e| panic!("registry request failed: {e:?}"))
    }

    fn expect(
        &self,
        resp: reqwest::blocking::Response,
        ok: &[u16],
        what: &str,
    ) -> reqwest::blocking::Response {
        let status = resp.status().as_u16();
        if !ok.contains(&status) {
            let url = resp.url().to_string();
            let body = resp.text().unwrap_or_default();
            panic!("{what} {url}: status {status}: {body}");
        }
        resp
    }

    /// Upload `bytes` as a blob unless the registry already has it; returns its digest.
    fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = sha256_digest(bytes);
        let head = self.send(
            self.client
                .head(format!("{}/v2/{repo}/blobs/{digest}", self.base)),
        );
        if head.status().as_u16() == 200 {
            return digest;
        }
        let post = self.send(
            self.client
                .post(format!("{}/v2/{repo}/blobs/uploads/", self.base)),
        );
        let post = self.expect(post, &[202], "POST blob upload");
        let location = post
            .headers()
            .get("Location")
            .and_then(|v| v.to_str().ok())
            .expect("upload Location header")
            .to_string();
        let location = if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            location
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = self.send(
            self.client
                .put(format!("{location}{sep}digest={digest}"))
                .header("Content-Type", "application/octet-stream")
                .body(bytes.to_vec()),
        );
        self.expect(put, &[201], "PUT blob");
        digest
    }

    /// Push layer + config for one platform; returns the manifest bytes (not yet pushed).
    fn push_platform_image(
        &self,
        repo: &str,
        tag: &str,
        created: &str,
        revision: Option<&str>,
        os: &str,
        arch: &str,
    ) -> Vec<u8> {
        let layer = tar_one_file(
            "testbed.txt",
            format!("{repo}:{tag} {os}/{arch}\n").as_bytes(),
        );
        let layer_digest = self.push_blob(repo, &layer);
        let mut labels = serde_json::Map::new();
        if let Some(rev) = revision {
            labels.insert("org.opencontainers.image.revision".into(), json!(rev));
        }
        let config = serde_json::to_vec(&json!({
            "created": created,
            "architecture": arch,
            "os": os,
            "config": {"Labels": labels},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            "history": [{"created": created, "created_by": "tagflow testbed"}],
        }))
        .expect("serialize config");
        let config_digest = self.push_blob(repo, &config);
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": MT_LAYER, "digest": layer_digest, "size": layer.len()}],
        }))
        .expect("serialize manifest")
    }

    /// PUT a manifest under `reference`; returns its digest (checked against the registry's).
    fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> String {
        let digest = sha256_digest(body);
        let resp = self.send(
            self.client
                .put(format!("{}/v2/{repo}/manifests/{reference}", self.base))
                .header("Content-Type", media_type)
                .body(body.to_vec()),
        );
        let resp = self.expect(resp, &[201], "PUT manifest");
        if let Some(got) = resp
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok())
        {
            assert_eq!(got, digest, "registry computed a different manifest digest");
        }
        digest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_access_log_lines() {
        let log = "127.0.0.1 - - [22/Nov/2026:18:28:18 +0000] \"GET /v2/ HTTP/1.1\" 401 87 \"\" \"curl\"\n\
                   127.0.0.1 - tagflow [22/Nov/2026:18:28:18 +0000] \"HEAD /v2/a/b/blobs/sha256:x?n=1 HTTP/1.1\" 200 0 \"\" \"ua\"\n";
        let got = parse_access_log(log);
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0],
            LoggedRequest {
                method: "GET".into(),
                uri: "/v2/".into(),
                status: 401
            }
        );
        assert_eq!(got[1].uri, "/v2/a/b/blobs/sha256:x?n=1");
    }

    #[test]
    fn tar_is_block_aligned() {
        let t = tar_one_file("a.txt", b"hello");
        assert_eq!(t.len() % 512, 0);
        assert_eq!(&t[257..262], b"ustar");
    }
}
