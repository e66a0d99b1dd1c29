//! Shared fixtures for tagflow's end-to-end tests: a config repo, a registry with images, and
//! the real `tagflow` binary run as a process.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use testbed::{BareRepo, Registry};

/// Build times used by the acceptance scenario: a1b2c3d (T1), b2c3d4e (T2), 0f1e2d3 (T3).
pub const T1: &str = "2024-01-01T10:00:00Z";
/// Second.
pub const T2: &str = "2024-01-01T11:00:00Z";
/// Newest.
pub const T3: &str = "2024-01-01T12:00:00Z";

/// A values file with one tag marker (so the expected diff is exactly one line).
pub fn dev_values(repository: &str) -> String {
    format!(
        "# dev values\nimage:\n  repository: {repository}\n  tag: a1b2c3d # {{\"$imagepolicy\": \"flux-system:app:tag\"}}\n  pullPolicy: IfNotPresent\nreplicaCount: 1\n"
    )
}

/// A values file with tag and digest markers.
pub fn pinned_values(repository: &str) -> String {
    format!(
        "image:\n  repository: {repository}\n  tag: a1b2c3d # {{\"$imagepolicy\": \"flux-system:app:tag\"}}\n  digest: \"\" # {{\"$imagepolicy\": \"flux-system:app:digest\"}}\n"
    )
}

/// Files a test writes for tagflow: secrets and the work dir, all in one temp dir.
pub struct Local {
    pub dir: tempfile::TempDir,
}

impl Local {
    pub fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("tagflow-e2e-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    /// Write a file (mode 0600) and return its path.
    pub fn file(&self, name: &str, content: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.dir.path().join(name);
        std::fs::write(&p, content).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        p
    }

    pub fn workdir(&self) -> PathBuf {
        self.dir.path().join("work")
    }
}

/// The registry block of a config for a testbed registry (CA, credentials, insecure as needed).
pub fn registry_block(reg: &Registry, local: &Local) -> String {
    let mut s = format!(
        "registries:\n  - host: \"{}\"\n    rateLimit: 200\n    timeout: 10s\n",
        reg.host
    );
    match &reg.ca_file {
        Some(ca) => s.push_str(&format!("    caFile: {}\n", ca.display())),
        None => s.push_str("    insecure: true\n"),
    }
    if let (Some(u), Some(p)) = (&reg.username, &reg.password) {
        use base64::Engine;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        let cfg = local.file(
            "docker-config.json",
            &format!("{{\"auths\":{{\"{}\":{{\"auth\":\"{auth}\"}}}}}}", reg.host),
        );
        s.push_str(&format!(
            "    credentials:\n      dockerConfigFile: {}\n",
            cfg.display()
        ));
    }
    s
}

/// A whole config for image `app` at `<registry>/team/app` with one `dev` environment.
pub fn config(reg: &Registry, local: &Local, policy: &str, extra: &str) -> String {
    format!(
        "interval: 1s\n{}images:\n  app:\n    repository: {}/team/app\n    policy: {policy}\nenvironments:\n  dev:\n    file: envs/dev/patch.yaml\n{extra}",
        registry_block(reg, local),
        reg.host
    )
}

/// Push the three acceptance images.
pub fn push_three(reg: &Registry) {
    reg.push_image("team/app", "a1b2c3d", T1, Some("a1b2c3d"));
    reg.push_image("team/app", "0f1e2d3", T3, Some("0f1e2d3"));
    reg.push_image("team/app", "b2c3d4e", T2, Some("b2c3d4e"));
}

/// The repo URL for a bare repo on disk.
pub fn file_url(repo: &BareRepo) -> String {
    format!("file://{}", repo.path.display())
}

/// The tagflow binary built by cargo for these tests.
pub fn tagflow() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tagflow"));
    c.env_remove("TAGFLOW_REPO")
        .env_remove("TAGFLOW_SECRET_HOSTS")
        .env("TAGFLOW_LOG", "info,tagflow=debug");
    c
}

/// Run a tagflow command to completion (2 minute guard) and return its output.
pub fn run(cmd: &mut Command) -> Output {
    testbed::run_with_timeout(cmd, None, Duration::from_secs(120))
}

/// `tagflow once` against `url` with a work dir and extra args.
pub fn once(url: &str, local: &Local, extra: &[&str]) -> Output {
    let mut c = tagflow();
    c.args(["once", "--repo", url, "--workdir"])
        .arg(local.workdir())
        .args(extra);
    run(&mut c)
}

/// Text of stderr (logs).
pub fn logs(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Assert success and return logs.
pub fn ok(o: &Output) -> String {
    let l = logs(o);
    assert!(
        o.status.success(),
        "tagflow failed ({:?}):\n{l}\nstdout:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout)
    );
    l
}

/// The last non-empty log line.
pub fn last_line(o: &Output) -> String {
    logs(o)
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .to_owned()
}

/// Poll until `f` returns Some or the deadline passes.
pub fn eventually<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Cycles the `tagflow run` listening on `port` has finished: `tagflow_cycles_total` summed over
/// every result, from its `/metrics` (0 while it does not answer).
pub fn cycles_done(port: u16) -> u64 {
    let Ok(r) = reqwest::blocking::get(format!("http://127.0.0.1:{port}/metrics")) else {
        return 0;
    };
    let text = r.text().unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("tagflow_cycles_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Wait until the `run` on `port` has finished at least `target` cycles (panics with `logs()`
/// after 90 s). A test that asserts something did *not* happen waits here first, so the
/// assertion comes after tagflow has looked, not after a guessed sleep.
pub fn wait_cycles(port: u16, target: u64, logs: impl Fn() -> String) {
    let done = eventually(Duration::from_secs(90), || {
        (cycles_done(port) >= target).then_some(())
    });
    assert!(
        done.is_some(),
        "tagflow run never finished {target} cycles (done: {}); logs:\n{}",
        cycles_done(port),
        logs()
    );
}

/// A `tagflow run` process, killed on drop.
pub struct Running {
    pub child: Option<Child>,
    pub port: u16,
    pub log_path: PathBuf,
}

impl Running {
    pub fn start(url: &str, local: &Local, extra: &[&str]) -> Self {
        Self::start_at(testbed::free_port(), url, local, extra)
    }

    /// Start with the HTTP server on a chosen port (known before the registry starts).
    pub fn start_at(port: u16, url: &str, local: &Local, extra: &[&str]) -> Self {
        Self::start_env(port, url, local, extra, &[])
    }

    /// Like [`Running::start_at`], with extra environment variables (`KUBECONFIG`).
    pub fn start_env(
        port: u16,
        url: &str,
        local: &Local,
        extra: &[&str],
        env: &[(&str, &Path)],
    ) -> Self {
        let log_path = local.dir.path().join(format!("run-{port}.log"));
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut c = tagflow();
        c.args([
            "run",
            "--repo",
            url,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--workdir",
        ])
        .arg(local.workdir())
        .args(extra)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
        let child = c.spawn().expect("spawn tagflow run");
        Self {
            child: Some(child),
            port,
            log_path,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Wait for /readyz to answer 200.
    pub fn wait_ready(&self) {
        let ready = eventually(Duration::from_secs(60), || {
            let r = reqwest::blocking::get(self.url("/readyz")).ok()?;
            r.status().is_success().then_some(())
        });
        assert!(
            ready.is_some(),
            "tagflow run never became ready; logs:\n{}",
            self.logs()
        );
    }

    /// Cycles finished so far ([`cycles_done`]).
    pub fn cycles_done(&self) -> u64 {
        cycles_done(self.port)
    }

    /// Wait until at least `target` cycles have finished ([`wait_cycles`]).
    pub fn wait_cycles(&self, target: u64) {
        wait_cycles(self.port, target, || self.logs());
    }

    /// SIGTERM, then wait for exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("running");
        // A syscall, not the kill(1) binary: a machine with only Rust may not have procps.
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(child),
            rustix::process::Signal::TERM,
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = child.try_wait().expect("wait") {
                self.child = None;
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "tagflow did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Lines of a diff that add or remove content (not headers).
pub fn changed_lines(diff: &str) -> Vec<String> {
    diff.lines()
        .filter(|l| {
            (l.starts_with('+') || l.starts_with('-'))
                && !l.starts_with("+++")
                && !l.starts_with("---")
        })
        .map(str::to_owned)
        .collect()
}

/// Path helper for readability.
pub fn p(path: &Path) -> String {
    path.display().to_string()
}

/// The acceptance setup: a registry (`opts`) holding the three images, and a config repo whose
/// config uses order `built` plus `extra` (made with the test's [`Local`]) and whose dev values
/// file is `values(repository)`.
pub fn scenario(
    opts: testbed::RegistryOpts,
    values: fn(&str) -> String,
    extra: impl FnOnce(&Local) -> String,
) -> (Registry, Local, BareRepo) {
    let reg = Registry::start(opts);
    push_three(&reg);
    let local = Local::new();
    let extra = extra(&local);
    let repo = BareRepo::new(&[
        (
            "config/tagflow.yaml",
            &config(
                &reg,
                &local,
                "{tags: '^[0-9a-f]{7}$', order: built}",
                &extra,
            ),
        ),
        (
            "envs/dev/patch.yaml",
            &values(&format!("{}/team/app", reg.host)),
        ),
    ]);
    (reg, local, repo)
}

/// How many commits on `main` have a subject starting with `prefix`.
pub fn commits_titled(repo: &BareRepo, prefix: &str) -> usize {
    repo.log("main")
        .into_iter()
        .filter(|c| c.subject.starts_with(prefix))
        .count()
}

/// Commits on `main` whose message sets `env` to `tag` (`Tagflow-Set: env app …:tag`).
pub fn commits_setting(repo: &BareRepo, env: &str, tag: &str) -> Vec<testbed::Commit> {
    repo.log("main")
        .into_iter()
        .filter(|c| {
            c.message.lines().any(|l| {
                l.starts_with(&format!("Tagflow-Set: {env} app "))
                    && l.contains(&format!(":{tag} "))
            })
        })
        .collect()
}

/// An in-process registry serving `tags`, each resolving to one tiny image; the tags listing
/// answers after `delay`. Returns the server and the manifest digest every tag points at.
pub fn scripted_registry(tags: serde_json::Value, delay: Duration) -> (testbed::Scripted, String) {
    use sha2::Digest as _;
    let config_blob =
        br#"{"created":"2024-01-01T00:00:00Z","architecture":"amd64","os":"linux","config":{}}"#
            .to_vec();
    let config_digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&config_blob)));
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_blob.len()},
        "layers": []
    })
    .to_string();
    let manifest_digest = format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(manifest.as_bytes()))
    );
    let md = manifest_digest.clone();
    let server = testbed::Scripted::start(move |req| {
        if req.path.ends_with("/tags/list") {
            testbed::Response::json(200, &serde_json::json!({"name": "team/app", "tags": tags}))
                .delayed(delay)
        } else if req.path.contains("/manifests/") {
            testbed::Response::text(200, &manifest)
                .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                .header("Docker-Content-Digest", &md)
        } else if req.path.contains("/blobs/") {
            testbed::Response::new(200).body(config_blob.clone())
        } else {
            testbed::Response::new(404)
        }
    });
    (server, manifest_digest)
}

/// The rollout state on the `tagflow/tagflow` Lease, and its holder.
pub fn lease_state(kube: &testbed::KubeApi) -> Option<(serde_json::Value, String)> {
    let (status, l) = kube
        .try_request(
            "GET",
            "/apis/coordination.k8s.io/v1/namespaces/tagflow/leases/tagflow",
            None,
            "",
        )
        .ok()?;
    if status != 200 {
        return None;
    }
    let holder = l["spec"]["holderIdentity"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let state = l["metadata"]["annotations"]["tagflow.dev/rollouts"]
        .as_str()
        .and_then(|s| serde_json::from_str(s).ok())?;
    Some((state, holder))
}

/// The (tag, phase) of rollout `key` (`env/image`) in the Lease's state.
pub fn lease_phase(kube: &testbed::KubeApi, key: &str) -> Option<(String, String)> {
    let (s, _) = lease_state(kube)?;
    let r = &s["rollouts"][key];
    Some((
        r["pinned"]["tag"].as_str()?.to_owned(),
        r["phase"].as_str()?.to_owned(),
    ))
}

/// The Events tagflow recorded on object `name` in `namespace` (events.k8s.io), oldest first.
pub fn tagflow_events(
    kube: &testbed::KubeApi,
    namespace: &str,
    name: &str,
) -> Vec<serde_json::Value> {
    let all = kube
        .get(&format!(
            "/apis/events.k8s.io/v1/namespaces/{namespace}/events"
        ))
        .expect("events");
    let mut mine: Vec<serde_json::Value> = all["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["reportingController"] == "tagflow" && e["regarding"]["name"] == name)
        .cloned()
        .collect();
    mine.sort_by_key(|e| e["eventTime"].as_str().unwrap_or_default().to_owned());
    mine
}

/// An Event's (type, reason).
pub fn event_type_reason(e: &serde_json::Value) -> (String, String) {
    let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
    (s("type"), s("reason"))
}

/// Wait until the Events tagflow recorded on `name` hold the reasons `want` in this order
/// (others may come between); all of them, oldest first. Panics with what came after `limit`.
pub fn wait_events<'k>(
    limit: Duration,
    kube: &impl Fn() -> std::sync::MutexGuard<'k, testbed::KubeApi>,
    namespace: &str,
    name: &str,
    want: &[&str],
) -> Vec<serde_json::Value> {
    let list = || tagflow_events(&kube(), namespace, name);
    let in_order = |got: &[serde_json::Value]| {
        let mut it = got.iter().map(|e| event_type_reason(e).1);
        want.iter().all(|w| it.any(|r| r == *w))
    };
    eventually(limit, || Some(list()).filter(|g| in_order(g))).unwrap_or_else(|| {
        let got: Vec<_> = list().iter().map(event_type_reason).collect();
        panic!("{namespace}/{name}: want {want:?} in order, got {got:?}")
    })
}

/// The rollout scenarios' values file for `repository` at `tag` (tag and digest markers).
pub fn rollout_values(repository: &str, tag: &str) -> String {
    format!(
        "image:\n  repository: {repository}\n  tag: {tag} # {{\"$imagepolicy\": \"flux-system:app:tag\"}}\n  digest: \"\" # {{\"$imagepolicy\": \"flux-system:app:digest\"}}\n"
    )
}

/// The rollout scenarios' config: image `app`, `dev` then `prod` (promoted from dev behind
/// `prod_gate`), each smoke-checked against its deployed app; `extra` is appended.
pub fn rollout_config(
    reg: &Registry,
    local: &Local,
    apps: &testbed::DeployedApps,
    prod_gate: &str,
    extra: &str,
) -> String {
    let smoke = |env: &str| {
        format!(
            "    smoke: {{url: '{}', expect: {{status: 200, bodyContains: 'version={{tag}}'}}, retries: 2, interval: 1s, deadline: 30s}}\n",
            apps.url(env)
        )
    };
    format!(
        "interval: 1s\n{}images:\n  app:\n    repository: {}/team/app\n    policy: {{tags: '^[0-9a-f]{{7}}$', order: built}}\nenvironments:\n  dev:\n    file: envs/dev/patch.yaml\n{}  prod:\n    file: envs/prod/patch.yaml\n    promoteFrom: dev\n    gate: {prod_gate}\n{}{extra}",
        registry_block(reg, local),
        reg.host,
        smoke("dev"),
        smoke("prod"),
    )
}
