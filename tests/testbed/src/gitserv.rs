//! Git fixtures: a bare repo, and servers for it over smart HTTP (lighttpd) and SSH (sshd).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::proc::{Daemon, NotReady, find_bin, free_port, run_checked};
use crate::registry::random_hex;
use crate::{git, try_git};

/// How often a server start is retried when its picked port was taken meanwhile.
const BIND_ATTEMPTS: usize = 10;

/// One commit as `git log` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Full sha.
    pub sha: String,
    /// Author name.
    pub author_name: String,
    /// Author email.
    pub author_email: String,
    /// Committer name.
    pub committer_name: String,
    /// Parent shas.
    pub parents: Vec<String>,
    /// First line of the message.
    pub subject: String,
    /// Full message (trailing newline trimmed).
    pub message: String,
}

/// A bare git repo (`<tmp>/config.git`, branch main, HTTP pushes allowed) in its own temp dir.
pub struct BareRepo {
    /// Path of the bare repo.
    pub path: PathBuf,
    /// Repo directory name, e.g. "config.git".
    pub name: String,
    tmp: TempDir,
}

fn write_files(root: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let full = root.join(path);
        if let Some(parent) = full.parent() {
            fs::create_dir_all(parent).expect("create dirs");
        }
        fs::write(&full, content).unwrap_or_else(|e| panic!("write {}: {e}", full.display()));
    }
}

impl BareRepo {
    /// A bare repo whose `main` has one commit (fixed author and date) with `files`.
    pub fn new(files: &[(&str, &str)]) -> BareRepo {
        let tmp = tempfile::Builder::new()
            .prefix("testbed-git-")
            .tempdir()
            .expect("tempdir");
        let name = "config.git".to_string();
        let path = tmp.path().join(&name);
        let p = path.to_string_lossy().into_owned();
        git(tmp.path(), &["init", "-q", "--bare", "-b", "main", &p]);
        git(&path, &["config", "http.receivepack", "true"]);
        let work = tmp.path().join("seed");
        let w = work.to_string_lossy().into_owned();
        git(tmp.path(), &["init", "-q", "-b", "main", &w]);
        write_files(&work, files);
        git(&work, &["add", "-A"]);
        git(
            &work,
            &["commit", "-q", "--allow-empty", "-m", "Initial commit"],
        );
        git(&work, &["push", "-q", &p, "main:refs/heads/main"]);
        fs::remove_dir_all(&work).expect("remove seed work tree");
        BareRepo { path, name, tmp }
    }

    /// A scratch directory inside the repo's temp dir (for clones by tests).
    pub fn scratch_dir(&self) -> PathBuf {
        let dir = self.tmp.path().join(format!("scratch-{}", random_hex(6)));
        fs::create_dir_all(&dir).expect("create scratch dir");
        dir
    }

    /// Content of `path` on `branch`, or None if the branch or file does not exist.
    pub fn read(&self, branch: &str, path: &str) -> Option<String> {
        try_git(
            &self.path,
            &["show", &format!("refs/heads/{branch}:{path}")],
            &[],
        )
        .ok()
    }

    /// Sha of `branch`, or None if it does not exist.
    pub fn head(&self, branch: &str) -> Option<String> {
        try_git(
            &self.path,
            &[
                "rev-parse",
                "--verify",
                "-q",
                &format!("refs/heads/{branch}"),
            ],
            &[],
        )
        .ok()
        .map(|s| s.trim().to_string())
    }

    /// Commits reachable from `branch`, newest first.
    pub fn log(&self, branch: &str) -> Vec<Commit> {
        let out = git(
            &self.path,
            &[
                "log",
                "--topo-order",
                "--format=%H%x1f%an%x1f%ae%x1f%cn%x1f%P%x1f%s%x1f%B%x1e",
                &format!("refs/heads/{branch}"),
            ],
        );
        out.split('\x1e')
            .filter(|r| !r.trim().is_empty())
            .map(|record| {
                let f: Vec<&str> = record.trim_start_matches('\n').split('\x1f').collect();
                assert_eq!(f.len(), 7, "unexpected git log record {record:?}");
                Commit {
                    sha: f[0].to_string(),
                    author_name: f[1].to_string(),
                    author_email: f[2].to_string(),
                    committer_name: f[3].to_string(),
                    parents: f[4].split_whitespace().map(str::to_string).collect(),
                    subject: f[5].to_string(),
                    message: f[6].trim_end().to_string(),
                }
            })
            .collect()
    }

    /// Another writer ("Other Writer") commits `files` to `branch` and pushes (rebasing on races); returns the new sha.
    pub fn commit_files(&self, branch: &str, files: &[(&str, &str)], message: &str) -> String {
        let work = self.scratch_dir();
        let p = self.path.to_string_lossy().into_owned();
        git(&work, &["clone", "-q", "--no-tags", &p, "."]);
        let remote_ref = format!("refs/remotes/origin/{branch}");
        if try_git(&work, &["rev-parse", "--verify", "-q", &remote_ref], &[]).is_ok() {
            git(&work, &["checkout", "-q", "-B", branch, &remote_ref]);
        } else {
            git(&work, &["checkout", "-q", "-B", branch]);
        }
        write_files(&work, files);
        git(&work, &["add", "-A"]);
        git(
            &work,
            &[
                "commit",
                "-q",
                "--allow-empty",
                "--author=Other Writer <other@example.com>",
                "-m",
                message,
            ],
        );
        let refspec = format!("HEAD:refs/heads/{branch}");
        let mut last_err = String::new();
        for _ in 0..5 {
            match try_git(&work, &["push", "-q", "origin", &refspec], &[]) {
                Ok(_) => {
                    let sha = git(&work, &["rev-parse", "HEAD"]).trim().to_string();
                    let _ = fs::remove_dir_all(&work);
                    return sha;
                }
                Err(e) => {
                    last_err = e;
                    git(&work, &["pull", "-q", "--rebase", "origin", branch]);
                }
            }
        }
        panic!("commit_files: push to {branch} kept failing: {last_err}");
    }

    /// `git diff from to` output.
    pub fn diff(&self, from: &str, to: &str) -> String {
        git(&self.path, &["diff", from, to])
    }
}

/// Smart-HTTP git server (lighttpd + git-http-backend CGI) for one [`BareRepo`]; basic auth for fetch and push.
pub struct GitHttp {
    /// "http://127.0.0.1:PORT/git/config.git".
    pub url: String,
    /// Basic-auth user.
    pub username: String,
    /// Basic-auth password.
    pub password: String,
    /// The port.
    pub port: u16,
    /// With [`GitHttp::start_tls`]: the test CA that signed the server certificate.
    pub ca_cert: Option<PathBuf>,
    daemon: Daemon,
    _tmp: TempDir,
}

impl GitHttp {
    /// Start `lighttpd -D` on a free port serving `repo` (retries if the port was taken).
    pub fn start(repo: &BareRepo) -> GitHttp {
        Self::start_with(repo, false, None)
    }

    /// Like [`GitHttp::start`], over HTTPS (lighttpd's mod_openssl) with a leaf certificate for
    /// 127.0.0.1 signed by a fresh test CA ([`GitHttp::ca_cert`]), as a self-hosted GitLab or
    /// Gitea behind a private CA serves it.
    pub fn start_tls(repo: &BareRepo) -> GitHttp {
        Self::start_with(repo, true, None)
    }

    /// Like [`GitHttp::start_tls`], also proxying `https://…/api/…` to the plain-HTTP server at
    /// `api_base` (`http://127.0.0.1:PORT`; the path as sent, un-normalised so GitLab's `%2F`
    /// survives; the forge stand-in serves under `/api` too): one host behind one private CA
    /// for git and the forge API, as a self-hosted GitLab or Gitea is.
    /// [`GitHttp::api_url`] is the proxied base.
    pub fn start_tls_with_api(repo: &BareRepo, api_base: &str) -> GitHttp {
        let port = api_base
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .expect("api_base is http://127.0.0.1:PORT");
        Self::start_with(repo, true, Some(port))
    }

    /// With [`GitHttp::start_tls_with_api`]: the API base through the TLS proxy.
    pub fn api_url(&self) -> String {
        format!("https://127.0.0.1:{}/api", self.port)
    }

    fn start_with(repo: &BareRepo, tls: bool, api_port: Option<u16>) -> GitHttp {
        let bin = find_bin("lighttpd");
        let exec_path = run_checked(
            Command::new(find_bin("git")).arg("--exec-path"),
            Duration::from_secs(30),
        );
        let backend = Path::new(exec_path.trim()).join("git-http-backend");
        assert!(
            backend.is_file(),
            "missing {}: run scripts/install-test-deps",
            backend.display()
        );
        let root = repo.path.parent().expect("repo parent").to_path_buf();
        let tmp = tempfile::Builder::new()
            .prefix("testbed-githttp-")
            .tempdir()
            .expect("tempdir");
        let dir = tmp.path();
        let username = "tagflow".to_string();
        let password = random_hex(12);
        fs::write(dir.join("users"), format!("{username}:{password}\n")).expect("write users");
        fs::create_dir_all(dir.join("uploads")).expect("uploads dir");
        fs::create_dir_all(dir.join("www")).expect("www dir");
        let q = |p: &Path| serde_json::Value::String(p.to_string_lossy().into_owned()).to_string();
        let pki = tls.then(|| crate::tls::make_tls(dir));
        let (ssl_module, ssl_conf) = match &pki {
            Some(t) => (
                ", \"mod_openssl\"",
                format!(
                    "ssl.engine = \"enable\"\nssl.pemfile = {}\nssl.privkey = {}\n",
                    q(&t.cert),
                    q(&t.key)
                ),
            ),
            None => ("", String::new()),
        };
        let (proxy_module, proxy_conf) = match api_port {
            Some(port) => (
                "\"mod_proxy\", ",
                format!(
                    "proxy.server = (\"/api/\" => ((\"host\" => \"127.0.0.1\", \"port\" => {port})))\n\
                     server.http-parseopts = (\"url-path-2f-decode\" => \"disable\", \"url-normalize\" => \"disable\")\n"
                ),
            ),
            None => ("", String::new()),
        };
        for _ in 0..BIND_ATTEMPTS {
            let port = free_port();
            let conf = format!(
                "server.document-root = {www}\n\
                 server.bind = \"127.0.0.1\"\n\
                 server.port = {port}\n\
                 server.upload-dirs = ({uploads})\n\
                 server.modules = (\"mod_alias\", \"mod_setenv\", \"mod_auth\", \"mod_authn_file\", {proxy_module}\"mod_cgi\"{ssl_module})\n\
                 {ssl_conf}\
                 {proxy_conf}\
                 alias.url = (\"/git/\" => {backend_slash})\n\
                 cgi.assign = (\"\" => \"\")\n\
                 setenv.add-environment = (\"GIT_PROJECT_ROOT\" => {root}, \"GIT_HTTP_EXPORT_ALL\" => \"1\")\n\
                 auth.backend = \"plain\"\n\
                 auth.backend.plain.userfile = {users}\n\
                 auth.require = (\"/git/\" => (\"method\" => \"basic\", \"realm\" => \"git\", \"require\" => \"valid-user\"))\n",
                www = q(&dir.join("www")),
                uploads = q(&dir.join("uploads")),
                backend_slash = q(Path::new(&format!("{}/", backend.display()))),
                root = q(&root),
                users = q(&dir.join("users")),
            );
            let conf_path = dir.join("lighttpd.conf");
            fs::write(&conf_path, conf).expect("write lighttpd.conf");
            let log = dir.join("lighttpd.log");
            let mut daemon = Daemon::spawn(
                "lighttpd",
                Command::new(&bin)
                    .arg("-D")
                    .arg("-f")
                    .arg(&conf_path)
                    .current_dir(dir),
                &log,
                &log,
            );
            match daemon.wait_log(Duration::from_secs(10), |l| {
                l.contains("server started").then_some(())
            }) {
                Ok(()) => {
                    let scheme = if tls { "https" } else { "http" };
                    return GitHttp {
                        url: format!("{scheme}://127.0.0.1:{port}/git/{}", repo.name),
                        ca_cert: pki.as_ref().map(|t| t.ca_cert.clone()),
                        username,
                        password,
                        port,
                        daemon,
                        _tmp: tmp,
                    };
                }
                Err(NotReady::Exited(l)) if l.contains("in use") => continue,
                Err(e) => daemon.fail(e),
            }
        }
        panic!("lighttpd: no free port after {BIND_ATTEMPTS} attempts");
    }

    /// The URL with credentials embedded (for the git CLI).
    pub fn url_with_credentials(&self) -> String {
        let (scheme, rest) = self.url.split_once("://").expect("a URL");
        format!("{scheme}://{}:{}@{rest}", self.username, self.password)
    }

    /// lighttpd's process id.
    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// Take the server down: its port refuses connections until [`GitHttp::restart`].
    pub fn stop(&mut self) {
        self.daemon.stop();
    }

    /// Start lighttpd again on the same port with the same repo and users.
    pub fn restart(&mut self) {
        self.daemon.stop();
        let dir = self._tmp.path();
        let log = dir.join("lighttpd.log");
        let mut daemon = Daemon::spawn(
            "lighttpd",
            Command::new(find_bin("lighttpd"))
                .arg("-D")
                .arg("-f")
                .arg(dir.join("lighttpd.conf"))
                .current_dir(dir),
            &log,
            &log,
        );
        if let Err(e) = daemon.wait_log(Duration::from_secs(10), |l| {
            l.contains("server started").then_some(())
        }) {
            daemon.fail(e);
        }
        self.daemon = daemon;
    }

    /// Rotate the basic-auth password; lighttpd reads its user file at each request.
    pub fn set_password(&mut self, password: &str) {
        fs::write(
            self._tmp.path().join("users"),
            format!("{}:{password}\n", self.username),
        )
        .expect("write users");
        self.password = password.to_owned();
    }
}

/// A private sshd serving a [`BareRepo`] to an ed25519 deploy key; killed on drop.
pub struct GitSsh {
    /// "ssh://USER@127.0.0.1:PORT/abs/path/config.git".
    pub url: String,
    /// Login user (the current user).
    pub user: String,
    /// The port.
    pub port: u16,
    /// The deploy key's private key (ed25519, OpenSSH format, mode 0600).
    pub key_file: PathBuf,
    /// The deploy key's public key file.
    pub public_key_file: PathBuf,
    /// known_hosts with "[127.0.0.1]:PORT ssh-ed25519 ..." for this server.
    pub known_hosts_file: PathBuf,
    /// A valid known_hosts line for this host with a different key (host-key mismatch tests).
    pub wrong_known_hosts_file: PathBuf,
    /// The server's host public key, "ssh-ed25519 AAAA...".
    pub host_public_key: String,
    daemon: Daemon,
    _tmp: TempDir,
}

fn keygen(path: &Path, comment: &str) -> String {
    run_checked(
        Command::new(find_bin("ssh-keygen"))
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(path),
        Duration::from_secs(30),
    );
    let public = fs::read_to_string(path.with_extension("pub")).expect("read public key");
    let mut parts = public.split_whitespace();
    format!(
        "{} {}",
        parts.next().unwrap_or(""),
        parts.next().unwrap_or("")
    )
}

impl GitSsh {
    /// Start `sshd -D -e -f CONFIG` on a free port serving `repo` to a fresh deploy key.
    pub fn start(repo: &BareRepo) -> GitSsh {
        let sshd = find_bin("sshd");
        let tmp = tempfile::Builder::new()
            .prefix("testbed-gitssh-")
            .tempdir()
            .expect("tempdir");
        let dir = tmp.path();
        fs::create_dir_all("/run/sshd").expect("create /run/sshd (privilege separation dir)");
        let _ = fs::set_permissions("/run/sshd", fs::Permissions::from_mode(0o755));
        let host_key = dir.join("host_ed25519");
        let host_public_key = keygen(&host_key, "testbed-host");
        let key_file = dir.join("deploy_ed25519");
        let deploy_public = keygen(&key_file, "tagflow-deploy");
        fs::set_permissions(&key_file, fs::Permissions::from_mode(0o600)).expect("chmod key");
        let authorized = dir.join("authorized_keys");
        fs::write(&authorized, format!("{deploy_public} tagflow-deploy\n"))
            .expect("authorized_keys");
        let wrong_key = keygen(&dir.join("wrong_host_ed25519"), "testbed-wrong-host");
        let user = run_checked(
            Command::new(find_bin("id")).arg("-un"),
            Duration::from_secs(10),
        )
        .trim()
        .to_string();
        for _ in 0..BIND_ATTEMPTS {
            let port = free_port();
            let conf = format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nPidFile none\n\
                 AuthorizedKeysFile {auth}\nUsePAM no\nStrictModes no\nPubkeyAuthentication yes\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\nAllowUsers {user}\nPrintMotd no\n\
                 X11Forwarding no\nAllowTcpForwarding no\nLogLevel VERBOSE\n",
                host = host_key.display(),
                auth = authorized.display(),
            );
            let conf_path = dir.join("sshd_config");
            fs::write(&conf_path, conf).expect("write sshd_config");
            let log = dir.join("sshd.log");
            let mut daemon = Daemon::spawn(
                "sshd",
                Command::new(&sshd)
                    .arg("-D")
                    .arg("-e")
                    .arg("-f")
                    .arg(&conf_path)
                    .current_dir(dir),
                &log,
                &log,
            );
            let ready = format!("Server listening on 127.0.0.1 port {port}");
            match daemon.wait_log(Duration::from_secs(10), |l| {
                l.contains(&ready).then_some(())
            }) {
                Ok(()) => {
                    let known_hosts_file = dir.join("known_hosts");
                    fs::write(
                        &known_hosts_file,
                        format!("[127.0.0.1]:{port} {host_public_key}\n"),
                    )
                    .expect("write known_hosts");
                    let wrong_known_hosts_file = dir.join("wrong_known_hosts");
                    fs::write(
                        &wrong_known_hosts_file,
                        format!("[127.0.0.1]:{port} {wrong_key}\n"),
                    )
                    .expect("write wrong known_hosts");
                    return GitSsh {
                        url: format!("ssh://{user}@127.0.0.1:{port}{}", repo.path.display()),
                        user,
                        port,
                        public_key_file: key_file.with_extension("pub"),
                        key_file,
                        known_hosts_file,
                        wrong_known_hosts_file,
                        host_public_key,
                        daemon,
                        _tmp: tmp,
                    };
                }
                Err(NotReady::Exited(l)) if l.contains("in use") => continue,
                Err(e) => daemon.fail(e),
            }
        }
        panic!("sshd: no free port after {BIND_ATTEMPTS} attempts");
    }

    /// A `GIT_SSH_COMMAND` value using the deploy key and strict checking against `known_hosts`.
    pub fn ssh_command(&self, known_hosts: &Path) -> String {
        format!(
            "ssh -i {} -o IdentitiesOnly=yes -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes \
             -o BatchMode=yes -o ConnectTimeout=10 -F /dev/null",
            self.key_file.display(),
            known_hosts.display()
        )
    }

    /// sshd's process id.
    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }
}
