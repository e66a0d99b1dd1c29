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
