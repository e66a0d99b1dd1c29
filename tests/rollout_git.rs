//! Rollouts without Kubernetes: `tagflow run` with no `--lease` keeps the rollout state in the
//! config repo (`refs/tagflow/state`, compare-and-swap pushes) and follows each environment by
//! its smoke check alone. The test plays the deployer: when the config repo's head moves, each
//! environment's app answers with the tag its values file names.
//!
//! The same scenarios as tests/rollout.rs: dev → soak → approval → prod; a prod smoke failure
//! reverted and quarantined; a restart mid-soak that neither restarts the soak nor commits twice.

mod common;

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{
    Local, commits_setting, eventually, file_url, push_three, rollout_config, rollout_values,
    tagflow,
};
use serde_json::Value;
use testbed::{BareRepo, DeployedApps, Registry, RegistryOpts, SlackCapture, tag_in};

/// Generous guard for anything tagflow does in a few cycles; never a timing assertion.
const LIMIT: Duration = Duration::from_secs(90);

struct World {
    _reg: Registry,
    repo: Arc<BareRepo>,
    slack: SlackCapture,
    apps: DeployedApps,
    local: Local,
    url: String,
}

fn world(prod_gate: &str) -> World {
    let reg = Registry::start(RegistryOpts::default());
    push_three(&reg);
    let mut apps = DeployedApps::start(&["dev", "prod"]);
    let slack = SlackCapture::start();
    let local = Local::new();
    let hook = local.file("slack-url", &slack.url);
    let repository = format!("{}/team/app", reg.host);
    let config = rollout_config(
        &reg,
        &local,
        &apps,
        prod_gate,
        &format!(
            "notify:\n  slack: {{webhookUrl: {{file: {}}}}}\n",
            hook.display()
        ),
    );
    let repo = Arc::new(BareRepo::new(&[
        ("config/tagflow.yaml", &config),
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
    let url = file_url(&repo);
    World {
        _reg: reg,
        repo,
        slack,
        apps,
        local,
        url,
    }
}

/// A `tagflow run` without `--lease`, killed (SIGKILL) on drop.
struct Replica {
    child: Option<Child>,
    log: PathBuf,
}

impl Replica {
    fn start(w: &World, name: &str) -> Replica {
        let dir = w.local.dir.path().join(name);
        std::fs::create_dir_all(&dir).expect("dir");
        let log = dir.join("run.log");
        let mut c = tagflow();
        c.args([
            "run",
            "--repo",
            &w.url,
            "--listen",
            &format!("127.0.0.1:{}", testbed::free_port()),
        ])
        .arg("--workdir")
        .arg(dir.join("work"))
        .env_remove("KUBECONFIG")
        .env("HOME", &dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"));
        Replica {
            child: Some(c.spawn().expect("spawn tagflow run")),
            log,
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The rollout state document on `refs/tagflow/state`.
fn state(w: &World) -> Option<Value> {
    let text = testbed::try_git(
        &w.repo.path,
        &["show", "refs/tagflow/state:state.json"],
        &[],
    )
    .ok()?;
    serde_json::from_str(&text).ok()
}

fn phase(w: &World, key: &str) -> Option<(String, String)> {
    let s = state(w)?;
    let r = &s["rollouts"][key];
    Some((
        r["pinned"]["tag"].as_str()?.to_owned(),
        r["phase"].as_str()?.to_owned(),
    ))
}

fn wait_phase(w: &World, key: &str, tag: &str, want: &str, r: &Replica) {
    let got = eventually(LIMIT, || {
        phase(w, key).filter(|(t, p)| t == tag && p == want)
    });
    assert!(
        got.is_some(),
        "{key} never reached {tag} {want} (now {:?}); logs:\n{}",
        phase(w, key),
        r.logs()
    );
}

#[test]
#[ignore = "real servers: run by scripts/test"]
fn happy_path_dev_then_prod_behind_soak_and_approval_with_state_in_git() {
    let w = world("{soak: 2s, approval: true}");
    let r = Replica::start(&w, "a");
    wait_phase(&w, "dev/app", "0f1e2d3", "awaitingApproval", &r);
    assert!(commits_setting(&w.repo, "prod", "0f1e2d3").is_empty());
    let out = common::run(tagflow().args(["approve", "prod", "0f1e2d3", "--repo", &w.url]));
    assert!(out.status.success(), "{}", common::logs(&out));
    wait_phase(&w, "prod/app", "0f1e2d3", "healthy", &r);
    let (dev, prod) = (
        commits_setting(&w.repo, "dev", "0f1e2d3"),
        commits_setting(&w.repo, "prod", "0f1e2d3"),
    );
    assert_eq!((dev.len(), prod.len()), (1, 1), "one commit each");
    assert_eq!(
        w.repo.read("main", "envs/prod/patch.yaml"),
        w.repo.read("main", "envs/dev/patch.yaml"),
        "prod got the very tag and digest dev ran"
    );
    // Every step reached Slack through the incoming webhook (no bot: flat messages).
    let all = w.slack.texts().join("\n");
    for step in [
        "dev: smoke check OK",
        "dev: soak done",
        "waiting for approval to promote 0f1e2d3 to prod",
        "prod: healthy",
    ] {
        assert!(all.contains(step), "{step:?} missing from Slack:\n{all}");
    }
    // Anyone with read access to the repo can see the state: no cluster involved.
    let out = common::run(tagflow().args(["status", "--repo", &w.url]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", common::logs(&out));
    assert!(stdout.contains("dev\tapp\t0f1e2d3\tpromoted\t"), "{stdout}");
    assert!(stdout.contains("prod\tapp\t0f1e2d3\thealthy\t"), "{stdout}");
    assert!(!r.logs().contains("Kubernetes"), "{}", r.logs());
}

#[test]
#[ignore = "real servers: run by scripts/test"]
fn prod_smoke_failure_reverts_and_quarantines_with_state_in_git() {
    let w = world("{soak: 1s}");
    w.apps.set_env_broken("prod", true);
    let r = Replica::start(&w, "a");
    wait_phase(&w, "prod/app", "0f1e2d3", "quarantined", &r);
    w.apps.set_env_broken("prod", false);
    assert_eq!(
        common::commits_titled(&w.repo, "tagflow: revert prod app 0f1e2d3 → a1b2c3d"),
        1,
        "one revert commit"
    );
    assert_eq!(
        tag_in(&w.repo.read("main", "envs/prod/patch.yaml").expect("prod")),
        "a1b2c3d"
    );
    let q = w
        .repo
        .read("main", "config/quarantine.yaml")
        .expect("quarantine list");
    assert!(q.contains("image: \"app\", tag: \"0f1e2d3\""), "{q}");
    // The policy moves dev off the quarantined tag.
    wait_phase(&w, "dev/app", "b2c3d4e", "healthy", &r);
    assert_eq!(commits_setting(&w.repo, "prod", "0f1e2d3").len(), 1);
    let failed: Vec<String> = w
        .slack
        .texts()
        .into_iter()
        .filter(|t| t.contains("FAILED"))
        .collect();
    assert_eq!(failed.len(), 1, "one alert: {failed:#?}");
}

#[test]
#[ignore = "real servers: run by scripts/test"]
fn a_restart_mid_soak_resumes_the_soak_without_a_duplicate_commit() {
    let w = world("{soak: 8s}");
    let mut a = Replica::start(&w, "a");
    wait_phase(&w, "dev/app", "0f1e2d3", "soaking", &a);
    let since = state(&w).expect("state")["rollouts"]["dev/app"]["since"].clone();
    a.kill(); // SIGKILL: nothing is flushed or released
    let b = Replica::start(&w, "b");
    wait_phase(&w, "prod/app", "0f1e2d3", "healthy", &b);
    assert!(
        !b.logs().contains("to=soaking"),
        "the soak restarted:\n{}",
        b.logs()
    );
    assert!(since.is_string());
    assert_eq!(
        commits_setting(&w.repo, "dev", "0f1e2d3").len(),
        1,
        "no duplicate dev commit"
    );
    assert_eq!(
        commits_setting(&w.repo, "prod", "0f1e2d3").len(),
        1,
        "no duplicate promotion"
    );
}

#[test]
#[ignore = "real servers: run by scripts/test"]
fn a_promotion_pushed_by_a_replica_killed_before_saving_state_is_reverted_from_git_alone() {
    let w = world("{soak: 1s}");
    w.apps.set_env_broken("prod", true);
    let mut a = Replica::start(&w, "a");
    // Kill a the moment its promotion is in git: its smoke checks of prod take seconds more.
    let pushed = eventually(LIMIT, || {
        (!commits_setting(&w.repo, "prod", "0f1e2d3").is_empty()).then_some(())
    });
    a.kill();
    assert!(pushed.is_some(), "no promotion; logs:\n{}", a.logs());
    assert_eq!(
        tag_in(&w.repo.read("main", "envs/prod/patch.yaml").expect("prod")),
        "0f1e2d3",
        "a was killed after the promotion, before judging it"
    );
    // Whatever a saved is gone: the next replica has git and nothing else.
    testbed::git(&w.repo.path, &["update-ref", "-d", "refs/tagflow/state"]);
    let promotion = w
        .repo
        .log("main")
        .into_iter()
        .find(|c| c.subject.contains("prod app → 0f1e2d3"));
    let body = testbed::git(
        &w.repo.path,
        &[
            "log",
            "-1",
            "--format=%B",
            &promotion.expect("promotion commit").sha,
        ],
    );
    assert!(
        body.contains("Tagflow-Previous: prod app a1b2c3d"),
        "{body}"
    );

    let b = Replica::start(&w, "b");
    wait_phase(&w, "prod/app", "0f1e2d3", "quarantined", &b);
    assert!(b.logs().contains("following it from git"), "{}", b.logs());
    assert_eq!(
        common::commits_titled(&w.repo, "tagflow: revert prod app 0f1e2d3 → a1b2c3d"),
        1,
        "one revert commit"
    );
    assert_eq!(
        tag_in(&w.repo.read("main", "envs/prod/patch.yaml").expect("prod")),
        "a1b2c3d"
    );
    let q = w
        .repo
        .read("main", "config/quarantine.yaml")
        .expect("quarantine");
    assert!(q.contains("tag: \"0f1e2d3\""), "{q}");
}
