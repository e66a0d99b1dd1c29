//! The status page of a real `tagflow run` (state in git, a real registry, deployed apps the
//! test plays), loaded in a real browser: Debian's headless `chromium` dumps the DOM the test
//! asserts on and takes a screenshot (target/status-page.png). A hostile reason in the
//! quarantine list shows as text: escaped in the DOM, no script element added (tags there are
//! validated; hostile tags are covered by the renderer's unit test).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{Local, eventually, file_url, push_three, rollout_config, rollout_values, tagflow};
use testbed::{BareRepo, DeployedApps, Registry, RegistryOpts, run_with_timeout};

const LIMIT: Duration = Duration::from_secs(90);
/// Tags in the list are validated (this one never names an image); the reason is free text.
const HOSTILE_TAG: &str = "deadbee";
const HOSTILE_REASON: &str =
    "smoke failed: '<script>document.title=\"owned\"</script>' & <b>bold</b>";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chromium(args: &[&str], url: &str, home: &Path) -> String {
    let bin = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|b| Path::new(b).exists())
        .expect("chromium is missing: run scripts/install-test-deps");
    let out = run_with_timeout(
        Command::new(bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", home.display()))
            .args(args)
            .arg(url)
            .env("HOME", home),
        None,
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "real servers: run by scripts/test"]
fn the_status_page_shows_rollouts_approvals_and_quarantine_in_a_browser() {
    let reg = Registry::start(RegistryOpts::default());
    push_three(&reg);
    let mut apps = DeployedApps::start(&["dev", "prod"]);
    let local = Local::new();
    let repository = format!("{}/team/app", reg.host);
    let config = rollout_config(&reg, &local, &apps, "{soak: 1s, approval: true}", "");
    let quarantine = format!(
        "quarantine:\n  - image: app\n    tag: {}\n    reason: {}\n    at: \"2024-01-01T12:00:00Z\"\n",
        serde_json::to_string(HOSTILE_TAG).expect("json"),
        serde_json::to_string(HOSTILE_REASON).expect("json"),
    );
    let repo = Arc::new(BareRepo::new(&[
        ("config/tagflow.yaml", &config),
        ("config/quarantine.yaml", &quarantine),
        (
            "envs/dev/patch.yaml",
            &rollout_values(&repository, "a1b2c3d"),
        ),
        (
            "envs/prod/patch.yaml",
            &rollout_values(&repository, "a1b2c3d"),
        ),
    ]));
    apps.follow(repo.clone(), "main");
    let port = testbed::free_port();
    let log = local.dir.path().join("run.log");
    let _run = Killed(
        tagflow()
            .args(["run", "--repo", &file_url(&repo), "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--workdir")
            .arg(local.workdir())
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn tagflow run"),
    );
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let api = format!("http://127.0.0.1:{port}/api/status");
    let waiting = eventually(LIMIT, || {
        let v: serde_json::Value = reqwest::blocking::get(&api).ok()?.json().ok()?;
        (v["approvals"][0]["command"] == "tagflow approve prod 0f1e2d3").then_some(v)
    });
    let data = waiting.unwrap_or_else(|| panic!("no pending approval on {api}; logs:\n{}", logs()));
    assert_eq!(data["quarantine"][0]["tag"], HOSTILE_TAG, "{data}");
    assert!(
        data["commits"][0]["subject"]
            .as_str()
            .is_some_and(|s| s.starts_with("tagflow:")),
        "{data}"
    );

    let home = local.dir.path().join("chromium");
    std::fs::create_dir_all(&home).expect("home");
    let page = format!("http://127.0.0.1:{port}/");
    let dom = chromium(&["--dump-dom"], &page, &home);
    for want in [
        "<title>tagflow status</title>",
        "awaiting approval",
        "<code>tagflow approve prod 0f1e2d3</code>",
        "<code>0f1e2d3</code>",
        "<code>deadbee</code>",
        // The hostile reason is there, as text.
        "&lt;script&gt;document.title=\"owned\"&lt;/script&gt;' &amp; &lt;b&gt;bold&lt;/b&gt;",
    ] {
        assert!(dom.contains(want), "{want:?} missing from the DOM:\n{dom}");
    }
    assert!(
        !dom.contains("<script"),
        "a script element was added:\n{dom}"
    );
    assert!(
        !dom.contains("<b>bold"),
        "markup from a reason was rendered:\n{dom}"
    );
    assert!(!dom.contains("owned</title>"), "{dom}");

    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/status-page.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,900",
        ],
        &page,
        &home,
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
}

fn terraform_bin() -> PathBuf {
    let home = std::env::var_os("HOME").expect("HOME");
    let bin = Path::new(&home).join(".cache/tagflow/bin/terraform");
    assert!(
        bin.is_file(),
        "missing {}: run scripts/install-terraform",
        bin.display()
    );
    bin
}

/// Each infra workspace's drift state and plan id, and the last error of each stage (a
/// registry that refuses connections, a workspace whose code does not parse, a broken config
/// commit while the last good one keeps running), as a real `tagflow run` serves them.
#[test]
#[ignore = "real servers: run by scripts/test"]
fn the_status_page_shows_infra_drift_and_the_last_error_per_stage() {
    let local = Local::new();
    let root = local.dir.path();
    let cli = local.file("terraformrc", "");
    let dead_registry = format!("127.0.0.1:{}", testbed::free_port());
    let workspace = |name: &str| {
        format!(
            "  - name: {name}\n    dir: infra/{name}\n    schedule: '* * * * * *'\n    terraformBin: {bin}\n    timeout: 60s\n    env:\n      TF_CLI_CONFIG_FILE: {cli}\n",
            bin = terraform_bin().display(),
            cli = cli.display(),
        )
    };
    let config = format!(
        "interval: 2s\nregistries:\n  - host: {dead_registry}\n    insecure: true\n    timeout: 2s\nimages:\n  app:\n    repository: {dead_registry}/team/app\n    policy: {{tags: '^[0-9a-f]{{7}}$', order: built}}\nenvironments:\n  dev: {{file: envs/dev/patch.yaml}}\ninfra:\n{}{}",
        workspace("net"),
        workspace("broken"),
    );
    let net_tf = format!(
        "terraform {{\n  backend \"local\" {{\n    path = \"{}\"\n  }}\n}}\n\nresource \"terraform_data\" \"router\" {{\n  input = \"10.0.0.1\"\n}}\n",
        root.join("net.tfstate").display()
    );
    let values = common::dev_values(&format!("{dead_registry}/team/app"));
    let repo = BareRepo::new(&[
        ("config/tagflow.yaml", &config),
        ("envs/dev/patch.yaml", &values),
        ("infra/net/main.tf", &net_tf),
        ("infra/broken/main.tf", "resource \"terraform_data\" {\n"),
    ]);
    let port = testbed::free_port();
    let log = root.join("run.log");
    let _run = Killed(
        tagflow()
            .args(["run", "--repo", &file_url(&repo), "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--workdir")
            .arg(local.workdir())
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn tagflow run"),
    );
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let api = format!("http://127.0.0.1:{port}/api/status");
    let status = |want: &dyn Fn(&serde_json::Value) -> bool| {
        eventually(LIMIT, || {
            let v: serde_json::Value = reqwest::blocking::get(&api).ok()?.json().ok()?;
            want(&v).then_some(v)
        })
        .unwrap_or_else(|| panic!("{api} never showed what was expected; logs:\n{}", logs()))
    };
    let stage = |v: &serde_json::Value, name: &str| -> Option<serde_json::Value> {
        v["errors"]
            .as_array()?
            .iter()
            .find(|e| e["stage"] == name)
            .cloned()
    };
    let data = status(&|v| {
        v["infra"].as_array().is_some_and(|a| a.len() == 2)
            && stage(v, "scan").is_some()
            && stage(v, "infra broken").is_some()
    });
    let net = data["infra"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["workspace"] == "net")
        .expect("net")
        .clone();
    assert_eq!(net["state"], "drift", "{data}");
    let plan_id = net["planId"].as_str().expect("plan id").to_owned();
    assert!(!plan_id.is_empty(), "{data}");
    assert!(
        net["summary"]
            .as_str()
            .unwrap_or("")
            .contains("1 to create"),
        "{data}"
    );
    let scan = stage(&data, "scan").unwrap();
    assert!(scan["resolved"].is_null(), "{data}");
    assert!(
        scan["message"]
            .as_str()
            .unwrap_or("")
            .contains(&dead_registry),
        "{data}"
    );
    assert!(stage(&data, "infra net").is_none(), "{data}");

    // A broken config commit: the config stage fails, the last good config keeps running.
    repo.commit_files(
        "main",
        &[("config/tagflow.yaml", "images: [\n")],
        "break the config",
    );
    let data = status(&|v| stage(v, "config").is_some());
    let cfg = stage(&data, "config").unwrap();
    let message = cfg["message"].as_str().unwrap_or("");
    assert!(
        message.contains("running the last good config") && message.contains("config/tagflow.yaml"),
        "{data}"
    );

    let home = root.join("chromium");
    std::fs::create_dir_all(&home).expect("home");
    let page = format!("http://127.0.0.1:{port}/");
    let dom = chromium(&["--dump-dom"], &page, &home);
    for want in [
        "<h2>Infrastructure</h2>",
        &format!("<code>{plan_id}</code>"),
        "<span class=\"infra-drift\">drift</span>",
        "<span class=\"infra-failed\">failed</span>",
        "<h2>Last error per stage</h2>",
        "<span class=\"failing\">failing</span>",
        "running the last good config",
    ] {
        assert!(dom.contains(want), "{want:?} missing from the DOM:\n{dom}");
    }
}
