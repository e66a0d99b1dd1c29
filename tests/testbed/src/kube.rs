//! A throwaway Kubernetes control plane: etcd + kube-apiserver (built once by
//! scripts/install-deploy-deps and cached under ~/.cache/tagflow) on free loopback ports.
//!
//! No controller-manager runs, so nothing reconciles: tests play Flux's helm-controller by
//! patching HelmRelease status. The API server can be stopped and started again on the same
//! port (same etcd) to test outages. Both processes are killed by PID and reaped on drop.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::proc::{find_bin, free_port, run_checked};

/// Bearer token of the `system:masters` user the harness and tagflow use.
pub const ADMIN_TOKEN: &str = "tagflow-test-admin-token";
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// etcd + kube-apiserver in a private temp dir.
pub struct KubeApi {
    dir: TempDir,
    etcd: Option<Child>,
    apiserver: Option<Child>,
    etcd_port: u16,
    port: u16,
    extra_args: Vec<String>,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// A kubeconfig for the admin token (insecure-skip-tls-verify).
    pub kubeconfig: PathBuf,
}

/// The cached kube-apiserver binary (`$TAGFLOW_CACHE` or `~/.cache/tagflow`, `bin/`).
pub fn apiserver_bin() -> PathBuf {
    let cache = std::env::var_os("TAGFLOW_CACHE").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/tagflow"),
        PathBuf::from,
    );
    let p = cache.join("bin/kube-apiserver");
    assert!(
        p.is_file(),
        "missing {}: run scripts/install-deploy-deps",
        p.display()
    );
    p
}

impl KubeApi {
    /// Start etcd and kube-apiserver and wait until `/readyz` is ok (~5 s).
    pub fn start() -> KubeApi {
        Self::start_with(&[])
    }

    /// Like [`KubeApi::start`], with extra kube-apiserver flags (kept across restarts).
    pub fn start_with(extra_args: &[&str]) -> KubeApi {
        let mut dir = tempfile::Builder::new()
            .prefix("tagflow-kube-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        let openssl = find_bin("openssl");
        run_checked(
            Command::new(&openssl)
                .args(["genrsa", "-out"])
                .arg(d.join("sa.key"))
                .arg("2048"),
            Duration::from_secs(60),
        );
        run_checked(
            Command::new(&openssl)
                .args(["rsa", "-pubout", "-in"])
                .arg(d.join("sa.key"))
                .arg("-out")
                .arg(d.join("sa.pub")),
            Duration::from_secs(60),
        );
        fs::write(
            d.join("tokens.csv"),
            format!("{ADMIN_TOKEN},admin,admin,system:masters\n"),
        )
        .expect("tokens");
        let mut last = String::new();
        for _ in 0..3 {
            let (etcd_port, peer, port) = (free_port(), free_port(), free_port());
            let kubeconfig = dir.path().join("kubeconfig");
            fs::write(
                &kubeconfig,
                format!(
                    "apiVersion: v1\nkind: Config\n\
                     clusters: [{{name: test, cluster: {{server: \"https://127.0.0.1:{port}\", insecure-skip-tls-verify: true}}}}]\n\
                     users: [{{name: admin, user: {{token: {ADMIN_TOKEN}}}}}]\n\
                     contexts: [{{name: test, context: {{cluster: test, user: admin}}}}]\n\
                     current-context: test\n"
                ),
            )
            .expect("kubeconfig");
            let mut k = KubeApi {
                dir,
                etcd: None,
                apiserver: None,
                etcd_port,
                port,
                extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
                url: format!("https://127.0.0.1:{port}"),
                kubeconfig,
            };
            k.etcd = Some(spawn_logged(
                Command::new(find_bin("etcd"))
                    .arg("--name=test")
                    .arg(format!("--data-dir={}", k.path("etcd").display()))
                    .arg(format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"))
                    .arg(format!(
                        "--advertise-client-urls=http://127.0.0.1:{etcd_port}"
                    ))
                    .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
                    .arg(format!(
                        "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
                    ))
                    .arg(format!("--initial-cluster=test=http://127.0.0.1:{peer}"))
                    .arg("--listen-metrics-urls=")
                    .arg("--log-level=warn"),
                &k.path("etcd.log"),
            ));
            match k.start_apiserver_once() {
                Ok(()) => return k,
                Err(e) => {
                    last = e;
                    dir = k.take_dir();
                }
            }
        }
        panic!("kube-apiserver did not start:\n{last}");
    }

    fn take_dir(mut self) -> TempDir {
        self.kill_all();
        let placeholder = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self.dir, placeholder)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The private temp dir (logs, certs, kubeconfig); removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn start_apiserver_once(&mut self) -> Result<(), String> {
        let p = |n: &str| self.path(n).display().to_string();
        let child = spawn_logged(
            Command::new(apiserver_bin())
                .arg(format!(
                    "--etcd-servers=http://127.0.0.1:{}",
                    self.etcd_port
                ))
                .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
                .arg(format!("--secure-port={}", self.port))
                .arg(format!("--cert-dir={}", p("certs")))
                .arg(format!("--token-auth-file={}", p("tokens.csv")))
                .arg("--authorization-mode=RBAC")
                .arg("--service-account-issuer=https://kubernetes.default.svc")
                .arg(format!("--service-account-key-file={}", p("sa.pub")))
                .arg(format!(
                    "--service-account-signing-key-file={}",
                    p("sa.key")
                ))
                .arg("--api-audiences=https://kubernetes.default.svc")
                .arg("--service-cluster-ip-range=10.96.0.0/24")
                .arg("--enable-priority-and-fairness=false")
                .arg("--endpoint-reconciler-type=none")
                .args(&self.extra_args),
            &self.path("apiserver.log"),
        );
        self.apiserver = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let ready = matches!(
                self.try_request("GET", "/readyz", None, ""),
                Ok((200, Value::String(ref body))) if body == "ok"
            );
            if ready {
                return Ok(());
            }
            if let Some(status) = self
                .apiserver
                .as_mut()
                .and_then(|c| c.try_wait().expect("wait"))
            {
                return Err(format!(
                    "kube-apiserver exited ({status}):\n{}",
                    self.logs()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "not ready after {READY_TIMEOUT:?}:\n{}",
                    self.logs()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stop the API server (SIGKILL by PID); etcd keeps the data.
    pub fn stop_apiserver(&mut self) {
        if let Some(mut c) = self.apiserver.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start the API server again on the same port and wait until it is ready.
    pub fn start_apiserver(&mut self) {
        if let Err(e) = self.start_apiserver_once() {
            panic!("kube-apiserver did not restart:\n{e}");
        }
    }

    /// The last lines of both logs.
    pub fn logs(&self) -> String {
        ["etcd.log", "apiserver.log"]
            .iter()
            .map(|f| {
                let text = fs::read_to_string(self.path(f)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                format!(
                    "--- {f}\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// One API request as admin (`body` sent with `content_type`); (status, JSON or text body).
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        content_type: &str,
    ) -> Result<(u16, Value), String> {
        let url = format!("{}{path}", self.url);
        let (method, content_type) = (method.to_owned(), content_type.to_owned());
        // On a private thread: reqwest's blocking client must not run inside a tokio runtime.
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::builder()
                .danger_accept_invalid_certs(true)
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| e.to_string())?;
            let m = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
            let mut req = client.request(m, &url).bearer_auth(ADMIN_TOKEN);
            if let Some(b) = body {
                req = req.header("Content-Type", content_type).body(b);
            }
            let resp = req.send().map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let text = resp.text().map_err(|e| e.to_string())?;
            Ok((
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            ))
        })
        .join()
        .expect("request thread")
    }

    /// Like [`KubeApi::try_request`], panicking unless the answer is 2xx.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        content_type: &str,
    ) -> Value {
        match self.try_request(method, path, body, content_type) {
            Ok((s, v)) if (200..300).contains(&s) => v,
            other => panic!("{method} {path}: {other:?}"),
        }
    }

    /// Create an object from YAML or JSON text at a collection path.
    pub fn create(&self, collection: &str, manifest: &str) -> Value {
        self.request(
            "POST",
            collection,
            Some(manifest.to_owned()),
            "application/yaml",
        )
    }

    /// Create a namespace.
    pub fn namespace(&self, name: &str) {
        self.create(
            "/api/v1/namespaces",
            &format!("{{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{{\"name\":\"{name}\"}}}}"),
        );
    }

    /// Install a CRD from a YAML file and wait until its group version is served.
    pub fn install_crd(&self, file: &Path, group_version: &str) {
        let text = fs::read_to_string(file).expect("CRD file");
        self.create(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            &text,
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while !matches!(
            self.try_request("GET", &format!("/apis/{group_version}"), None, ""),
            Ok((200, _))
        ) {
            assert!(Instant::now() < deadline, "{group_version} not served");
            std::thread::sleep(Duration::from_millis(100));
        }
        // Served is not yet established for writes; give the CRD controller a moment.
        std::thread::sleep(Duration::from_millis(500));
    }

    /// Merge-patch an object's status subresource.
    pub fn patch_status(&self, object_path: &str, status: &Value) -> Value {
        self.request(
            "PATCH",
            &format!("{object_path}/status"),
            Some(serde_json::json!({ "status": status }).to_string()),
            "application/merge-patch+json",
        )
    }

    /// GET an object (`None` on 404).
    pub fn get(&self, path: &str) -> Option<Value> {
        match self.try_request("GET", path, None, "") {
            Ok((200, v)) => Some(v),
            Ok((404, _)) => None,
            other => panic!("GET {path}: {other:?}"),
        }
    }

    fn kill_all(&mut self) {
        for child in [self.apiserver.take(), self.etcd.take()]
            .into_iter()
            .flatten()
        {
            stop(child);
        }
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.kill_all();
    }
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn spawn_logged(cmd: &mut Command, log: &Path) -> Child {
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone().expect("log file"))
        .stderr(file)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
}
