//! A throwaway Kubernetes control plane for the deploy tests: etcd + kube-apiserver (built by
//! scripts/install-deploy-deps) on free loopback ports, driven with kubectl.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use serde_yaml::Value as Yaml;
use tempfile::TempDir;

use crate::support::{
    TOOL_TIMEOUT, cached_tool, check_subset, object_key, repo, run, run_ok, system_tool, to_json,
    yaml_docs, yaml_files,
};

/// From spawning etcd + kube-apiserver to `/readyz` answering ok (~5 s when idle).
const APISERVER_READY_TIMEOUT: Duration = Duration::from_secs(90);

// kube-apiserver + etcd

/// etcd and kube-apiserver on free 127.0.0.1 ports, in a private temp dir; both are killed by
/// PID and reaped on drop. No controller-manager runs, so nothing reconciles: tests see exactly
/// what the API server accepts.
pub struct Cluster {
    kubectl: PathBuf,
    kubeconfig: PathBuf,
    dir: TempDir,
    apiserver: Option<Child>,
    etcd: Option<Child>,
}

const ADMIN_TOKEN: &str = "tagflow-test-admin-token";

impl Cluster {
    pub fn start() -> Cluster {
        let mut last = String::new();
        // Ports are picked free, then bound by the servers; another process can take one in
        // between, so a failed start is retried on new ports.
        for _ in 0..3 {
            match Cluster::try_start() {
                Ok(c) => return c,
                Err(e) => last = e,
            }
        }
        panic!("kube-apiserver did not start:\n{last}");
    }

    pub fn try_start() -> Result<Cluster, String> {
        let apiserver_bin = cached_tool("kube-apiserver");
        let etcd_bin = system_tool("etcd");
        let openssl = system_tool("openssl");
        let dir = tempfile::Builder::new()
            .prefix("tagflow-deploy-kube-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        let key = d.join("sa.key");
        let public = d.join("sa.pub");
        run_ok(
            Command::new(&openssl)
                .args(["genrsa", "-out"])
                .arg(&key)
                .arg("2048"),
            None,
            TOOL_TIMEOUT,
        );
        run_ok(
            Command::new(&openssl)
                .args(["rsa", "-pubout", "-in"])
                .arg(&key)
                .arg("-out")
                .arg(&public),
            None,
            TOOL_TIMEOUT,
        );
        fs::write(
            d.join("tokens.csv"),
            format!("{ADMIN_TOKEN},admin,admin,system:masters\n"),
        )
        .expect("tokens");

        let [client, peer, secure] = [free_port(), free_port(), free_port()];
        let mut cluster = Cluster {
            kubectl: cached_tool("kubectl"),
            kubeconfig: d.join("kubeconfig"),
            apiserver: None,
            etcd: None,
            dir,
        };
        let d = cluster.dir.path();
        cluster.etcd = Some(spawn_logged(
            Command::new(etcd_bin)
                .arg("--name=test")
                .arg(format!("--data-dir={}", d.join("etcd").display()))
                .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
                .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
                .arg(format!(
                    "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
                ))
                .arg(format!("--initial-cluster=test=http://127.0.0.1:{peer}"))
                .arg("--listen-metrics-urls=")
                .arg("--log-level=warn"),
            &d.join("etcd.log"),
        ));
        let path = |name: &str| d.join(name).display().to_string();
        cluster.apiserver = Some(spawn_logged(
            Command::new(apiserver_bin)
                .arg(format!("--etcd-servers=http://127.0.0.1:{client}"))
                .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
                .arg(format!("--secure-port={secure}"))
                .arg(format!("--cert-dir={}", path("certs")))
                .arg(format!("--token-auth-file={}", path("tokens.csv")))
                .arg("--authorization-mode=RBAC")
                .arg("--service-account-issuer=https://kubernetes.default.svc")
                .arg(format!("--service-account-key-file={}", path("sa.pub")))
                .arg(format!(
                    "--service-account-signing-key-file={}",
                    path("sa.key")
                ))
                .arg("--api-audiences=https://kubernetes.default.svc")
                .arg("--service-cluster-ip-range=10.96.0.0/24")
                .arg("--enable-priority-and-fairness=false")
                .arg("--endpoint-reconciler-type=none")
                // No controller-manager creates the namespaces' default ServiceAccounts, which
                // this plugin would require of every Pod (the chart's helm test Pod).
                .arg("--disable-admission-plugins=ServiceAccount"),
            &d.join("apiserver.log"),
        ));
        fs::write(
            &cluster.kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\n\
                 clusters: [{{name: test, cluster: {{server: \"https://127.0.0.1:{secure}\", insecure-skip-tls-verify: true}}}}]\n\
                 users: [{{name: admin, user: {{token: {ADMIN_TOKEN}}}}}]\n\
                 contexts: [{{name: test, context: {{cluster: test, user: admin}}}}]\n\
                 current-context: test\n"
            ),
        )
        .expect("kubeconfig");

        let deadline = Instant::now() + APISERVER_READY_TIMEOUT;
        loop {
            let out = run(
                cluster.kubectl().args(["get", "--raw", "/readyz"]),
                None,
                TOOL_TIMEOUT,
            );
            if out.status.success() && out.stdout == b"ok" {
                return Ok(cluster);
            }
            let exited = [
                ("etcd", &mut cluster.etcd),
                ("kube-apiserver", &mut cluster.apiserver),
            ]
            .into_iter()
            .find_map(|(name, child)| Some((name, child.as_mut()?.try_wait().expect("wait")?)));
            if let Some((name, status)) = exited {
                return Err(format!("{name} exited ({status}):\n{}", cluster.logs()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "not ready after {APISERVER_READY_TIMEOUT:?}:\n{}",
                    cluster.logs()
                ));
            }
            thread::sleep(Duration::from_millis(250));
        }
    }

    pub fn logs(&self) -> String {
        ["etcd.log", "apiserver.log"]
            .iter()
            .map(|f| {
                let text = fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                format!(
                    "--- {f}\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        cmd.arg("--cache-dir")
            .arg(self.dir.path().join("kube-cache"));
        // kubectl 1.33 warns about the skew to the 1.20 server on every call.
        cmd.arg("--warnings-as-errors=false");
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir.path());
        cmd.current_dir(repo());
        cmd
    }

    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        run_ok(self.kubectl().args(args), None, TOOL_TIMEOUT)
    }

    /// Applies the Flux CRDs from tests/crds and waits until the server serves them.
    pub fn install_flux_crds(&self) {
        self.kubectl_ok(&["apply", "-f", "tests/crds/"]);
        self.kubectl_ok(&[
            "wait",
            "--for=condition=established",
            "--timeout=60s",
            "-f",
            "tests/crds/",
        ]);
    }

    /// Creates the namespaces the manifests live in: flux-system (made by `flux install` in a
    /// real cluster) and every Namespace under flux/.
    pub fn create_namespaces(&self) {
        self.kubectl_ok(&["create", "namespace", "flux-system"]);
        for file in yaml_files(&repo().join("flux")) {
            let text = fs::read_to_string(&file).expect("read");
            let nss: Vec<Yaml> = yaml_docs(&text)
                .into_iter()
                .filter(|d| d["kind"].as_str() == Some("Namespace"))
                .collect();
            for ns in nss {
                let body = serde_yaml::to_string(&ns).expect("yaml");
                run_ok(
                    self.kubectl().args(["apply", "-f", "-"]),
                    Some(body.as_bytes()),
                    TOOL_TIMEOUT,
                );
            }
        }
    }

    /// Server-side dry-run of a YAML stream; panics with the server's message if any object is
    /// rejected, or if the server dropped or changed any field that was sent.
    pub fn dry_run(&self, what: &str, yaml: &str) {
        if let Err(e) = self.try_dry_run(yaml) {
            panic!("{what}: {e}");
        }
    }

    pub fn try_dry_run(&self, yaml: &str) -> Result<(), String> {
        let sent = yaml_docs(yaml);
        if sent.is_empty() {
            return Err("no objects".into());
        }
        // kubectl validates against the server's OpenAPI (CRD schemas included) before sending.
        let out = run(
            self.kubectl()
                .args(["apply", "--dry-run=server", "--output=json", "-f", "-"]),
            Some(yaml.as_bytes()),
            TOOL_TIMEOUT,
        );
        if !out.status.success() {
            return Err(format!(
                "rejected:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let got: Json = serde_json::from_slice(&out.stdout).expect("kubectl JSON");
        let got_items: Vec<&Json> = if got["kind"] == "List" {
            got["items"].as_array().expect("items").iter().collect()
        } else {
            vec![&got]
        };
        let by_key: BTreeMap<String, &Json> =
            got_items.into_iter().map(|o| (object_key(o), o)).collect();
        let mut problems = Vec::new();
        for doc in &sent {
            let doc = to_json(doc);
            let key = object_key(&doc);
            match by_key.get(&key) {
                Some(got) => check_subset(&doc, got, &key, &mut problems),
                None => problems.push(format!("{key}: not in the server's answer")),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the server did not keep what was sent:\n{}",
                problems.join("\n")
            ))
        }
    }

    /// `--kube-version` and `--api-versions` flags describing this server, for helm template.
    pub fn helm_capabilities(&self) -> Vec<String> {
        let version: Json =
            serde_json::from_str(&self.kubectl_ok(&["version", "--output=json"])).expect("version");
        let mut flags = vec![format!(
            "--kube-version={}",
            version["serverVersion"]["gitVersion"]
                .as_str()
                .expect("server gitVersion")
        )];
        flags.extend(
            self.kubectl_ok(&["api-versions"])
                .lines()
                .map(|v| format!("--api-versions={v}")),
        );
        flags
    }

    /// `kubectl auth can-i` as `user` in `ns`: true for "yes".
    pub fn can_i(&self, user: &str, ns: Option<&str>, verb: &str, resource: &str) -> bool {
        let mut cmd = self.kubectl();
        cmd.args(["auth", "can-i", verb, resource, "--as", user]);
        match ns {
            Some(ns) => cmd.args(["--namespace", ns]),
            None => cmd.arg("--all-namespaces"),
        };
        let out = run(&mut cmd, None, TOOL_TIMEOUT);
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        match (out.status.code(), answer.as_str()) {
            (Some(0), "yes") => true,
            (Some(1), "no") => false,
            _ => panic!("can-i {verb} {resource} as {user}: {out:?}"),
        }
    }

    /// `kubectl auth can-i --list` as `user` in `ns`: one "resource [names] [verbs]" per rule.
    pub fn can_i_list(&self, user: &str, ns: &str) -> BTreeSet<String> {
        let out = self.kubectl_ok(&["auth", "can-i", "--list", "--namespace", ns, "--as", user]);
        out.lines().skip(1).map(parse_can_i_row).collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in [self.apiserver.take(), self.etcd.take()]
            .into_iter()
            .flatten()
        {
            stop(child);
        }
    }
}

/// SIGKILL by PID, then reap: nothing is left running, even when a test failed.
fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn spawn_logged(cmd: &mut Command, log: &Path) -> Child {
    let file = fs::File::create(log).expect("log file");
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone().expect("log file"))
        .stderr(file)
        // Its own process group: a Ctrl-C to the test run does not orphan it half-way.
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// "leases.coordination.k8s.io   []   [tagflow]   [get update]" → "leases.coordination.k8s.io
/// names=[tagflow] urls=[] verbs=[get update]".
fn parse_can_i_row(line: &str) -> String {
    let first_bracket = line.find('[').unwrap_or(line.len());
    let resource = line[..first_bracket].trim();
    let groups: Vec<&str> = line[first_bracket..]
        .split(']')
        .map(|g| g.trim().trim_start_matches('['))
        .collect();
    let (urls, names, verbs) = (
        groups.first().copied(),
        groups.get(1).copied(),
        groups.get(2).copied(),
    );
    format!(
        "{resource} urls=[{}] names=[{}] verbs=[{}]",
        urls.unwrap_or_default(),
        names.unwrap_or_default(),
        verbs.unwrap_or_default()
    )
}
