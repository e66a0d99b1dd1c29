//! Pushing tiny images to the real registry fast: the distribution HTTP API directly, one
//! keep-alive client per thread, one shared layer per repository (uploaded once, then mounted)
//! and a config blob of its own per image (so the cold scan has one config GET per image).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::Result;

const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MT_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MT_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// What was pushed for one image: enough to build the floor's URLs.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// Repository path, e.g. `s100x100/img00007`.
    pub repo: String,
    /// Tag.
    pub tag: String,
    /// Config blob digest.
    pub config: String,
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A one-file tar (512-byte header, content, padding, two zero blocks): the shared layer.
fn layer_tar() -> Vec<u8> {
    let content = b"tagflow bench\n";
    let mut h = [0u8; 512];
    h[..9].copy_from_slice(b"bench.txt");
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{:011o}\0", content.len()).as_bytes());
    h[136..148].copy_from_slice(b"14000000000\0");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(content);
    out.resize(1024, 0);
    out.extend_from_slice(&[0u8; 1024]);
    out
}

struct Api {
    http: reqwest::blocking::Client,
    base: String,
}

impl Api {
    fn new(base: &str) -> Result<Api> {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .tls_built_in_root_certs(false)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("push client: {e}"))?;
        Ok(Api {
            http,
            base: base.to_owned(),
        })
    }

    fn check(
        resp: reqwest::blocking::Response,
        want: u16,
        what: &str,
    ) -> Result<reqwest::blocking::Response> {
        if resp.status().as_u16() == want {
            Ok(resp)
        } else {
            let status = resp.status();
            let body = resp.text().unwrap_or_default();
            Err(format!("{what}: {status}: {body}"))
        }
    }

    /// Monolithic upload: POST for a location, then PUT `?digest=` with the bytes (this registry
    /// drops the body of a single-POST upload).
    fn upload(&self, repo: &str, bytes: &[u8]) -> Result<String> {
        let d = digest(bytes);
        let post = self
            .http
            .post(format!("{}/v2/{repo}/blobs/uploads/", self.base))
            .send()
            .map_err(|e| format!("POST upload {repo}: {e}"))?;
        let post = Self::check(post, 202, "POST upload")?;
        let loc = post
            .headers()
            .get("Location")
            .and_then(|v| v.to_str().ok())
            .ok_or("upload without Location")?
            .to_owned();
        let loc = if loc.starts_with('/') {
            format!("{}{loc}", self.base)
        } else {
            loc
        };
        let sep = if loc.contains('?') { '&' } else { '?' };
        let put = self
            .http
            .put(format!("{loc}{sep}digest={d}"))
            .header("Content-Type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .map_err(|e| format!("PUT blob {repo}: {e}"))?;
        Self::check(put, 201, "PUT blob")?;
        Ok(d)
    }

    /// Link an existing blob into `repo` (one request instead of an upload).
    fn mount(&self, repo: &str, d: &str, from: &str) -> Result<()> {
        let resp = self
            .http
            .post(format!(
                "{}/v2/{repo}/blobs/uploads/?mount={d}&from={from}",
                self.base
            ))
            .send()
            .map_err(|e| format!("mount {repo}: {e}"))?;
        Self::check(resp, 201, "mount blob").map(drop)
    }

    fn manifest(&self, repo: &str, tag: &str, body: Vec<u8>) -> Result<()> {
        let resp = self
            .http
            .put(format!("{}/v2/{repo}/manifests/{tag}", self.base))
            .header("Content-Type", MT_MANIFEST)
            .body(body)
            .send()
            .map_err(|e| format!("PUT manifest {repo}:{tag}: {e}"))?;
        Self::check(resp, 201, "PUT manifest").map(drop)
    }

    fn image(&self, repo: &str, tag: &str, created: &str, layer: (&str, usize)) -> Result<Pushed> {
        let config = serde_json::to_vec(&json!({
            "created": created,
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {
                "org.opencontainers.image.revision": tag,
                "org.opencontainers.image.title": repo,
            }},
            "rootfs": {"type": "layers", "diff_ids": [layer.0]},
        }))
        .map_err(|e| e.to_string())?;
        let config_digest = self.upload(repo, &config)?;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": MT_LAYER, "digest": layer.0, "size": layer.1}],
        }))
        .map_err(|e| e.to_string())?;
        self.manifest(repo, tag, manifest)?;
        Ok(Pushed {
            repo: repo.to_owned(),
            tag: tag.to_owned(),
            config: config_digest,
        })
    }
}

/// Push `tags.len()` images to each of `repos`, `threads` repositories at a time. Returns
/// every image pushed, in (repo, tag) order.
pub fn push_all(
    base: &str,
    repos: &[String],
    tags: &[(String, String)],
    threads: usize,
) -> Result<Vec<Pushed>> {
    let layer = layer_tar();
    let seed = &repos[0];
    let layer_digest = Api::new(base)?.upload(seed, &layer)?;
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<(usize, Vec<Pushed>)>> = Mutex::new(Vec::new());
    let failed: Mutex<Option<String>> = Mutex::new(None);
    thread::scope(|s| {
        for _ in 0..threads.clamp(1, repos.len()) {
            s.spawn(|| {
                let run = || -> Result<()> {
                    let api = Api::new(base)?;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= repos.len() || failed.lock().map_or(true, |f| f.is_some()) {
                            return Ok(());
                        }
                        let repo = &repos[i];
                        if i > 0 {
                            api.mount(repo, &layer_digest, seed)?;
                        }
                        let mut done = Vec::with_capacity(tags.len());
                        for (tag, created) in tags {
                            done.push(api.image(
                                repo,
                                tag,
                                created,
                                (&layer_digest, layer.len()),
                            )?);
                        }
                        out.lock().map_err(|e| e.to_string())?.push((i, done));
                    }
                };
                if let Err(e) = run()
                    && let Ok(mut f) = failed.lock()
                {
                    f.get_or_insert(e);
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().map_err(|e| e.to_string())? {
        return Err(format!("push failed: {e}"));
    }
    let mut out = out.into_inner().map_err(|e| e.to_string())?;
    out.sort_by_key(|(i, _)| *i);
    Ok(out.into_iter().flat_map(|(_, v)| v).collect())
}
