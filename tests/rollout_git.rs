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
        Self::start_with(w, name, &[])
    }

    fn start_with(w: &World, name: &str, extra: &[&str]) -> Replica {
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
        .args(extra)
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

/// A world whose prod is gated by the merge of a promotion PR on the GitHub stand-in, with a
/// replica running and dev soaked: (forge, world, replica, the PR, the token's dir).
fn awaiting_a_promotion_pull_request() -> (testbed::Forge, World, Replica, testbed::Pr, Local) {
    let forge = testbed::Forge::start(testbed::Flavor::Github, "org/config", "gate-token-77");
    let token = Local::new();
    let token_file = token.file("token", "gate-token-77");
    let gate = format!(
        "{{soak: 1s, approval: pullRequest}}\n    push: {{branch: 'tagflow/{{env}}'}}\n    pullRequest: {{provider: github, tokenFile: {}, apiUrl: '{}', project: org/config}}",
        token_file.display(),
        forge.api_url()
    );
    let w = world(&gate);
    let r = Replica::start_with(&w, "a", &["--secret-hosts", "127.0.0.1"]);
    wait_phase(&w, "dev/app", "0f1e2d3", "awaitingApproval", &r);
    let pr = eventually(LIMIT, || forge.open().into_iter().next())
        .unwrap_or_else(|| panic!("no promotion PR: {:#?}\n{}", forge.calls(), r.logs()));
    (forge, w, r, pr, token)
}

/// Closing the promotion PR without merging declines that tag for prod: after a restart
/// (nothing remembered in memory) tagflow does not reopen it, the thread says so and how to
/// promote anyway, the state (and so the status page) marks it, and prod keeps its tag.
#[test]
#[ignore = "real servers: run by scripts/test"]
fn closing_the_promotion_pull_request_by_hand_declines_it() {
    let (forge, w, r, pr, _token) = awaiting_a_promotion_pull_request();
    forge.close_by_hand(pr.number);
    drop(r);
    let r = Replica::start_with(&w, "b", &["--secret-hosts", "127.0.0.1"]);
    let said = eventually(LIMIT, || {
        w.slack
            .texts()
            .into_iter()
            .find(|t| t.contains("was closed without merging"))
    })
    .unwrap_or_else(|| panic!("{:#?}\n{}", w.slack.texts(), r.logs()));
    assert!(
        said.contains(&format!("/pull/{}", pr.number))
            && said.contains("tagflow approve prod 0f1e2d3"),
        "{said}"
    );
    // The thread is told before the state is saved: wait for the save.
    let marked = eventually(LIMIT, || {
        state(&w).filter(|s| s["rollouts"]["dev/app"]["pullRequestDeclined"] == true)
    });
    assert!(marked.is_some(), "the state marks it: {:?}", state(&w));
    assert!(forge.open().is_empty(), "reopened: {:#?}", forge.prs());
    assert_eq!(forge.prs().len(), 1, "{:#?}", forge.prs());
    assert_eq!(
        tag_in(&w.repo.read("main", "envs/prod/patch.yaml").expect("prod")),
        "a1b2c3d"
    );
    assert_eq!(
        phase(&w, "dev/app"),
        Some(("0f1e2d3".to_owned(), "awaitingApproval".to_owned()))
    );
}

/// `gate.approval: pullRequest`: once dev soaked, the promotion is proposed as a PR on
/// tagflow's branch (main untouched) and the thread names it; merging it is the approval, and
/// prod then rolls out what was merged. The forge is the stand-in (tests/testbed/src/forge.rs).
#[test]
#[ignore = "real servers: run by scripts/test"]
fn merging_the_promotion_pull_request_is_the_approval() {
    let (forge, w, r, pr, _token) = awaiting_a_promotion_pull_request();
    assert_eq!(
        (pr.head.as_str(), pr.base.as_str()),
        ("tagflow/prod", "main")
    );
    assert_eq!(pr.title, "tagflow: prod app → 0f1e2d3");
    assert!(
        pr.body
            .contains("Merging this pull request is the approval"),
        "{}",
        pr.body
    );
    assert_eq!(
        tag_in(
            &w.repo
                .read("tagflow/prod", "envs/prod/patch.yaml")
                .expect("branch")
        ),
        "0f1e2d3"
    );
    assert_eq!(
        tag_in(&w.repo.read("main", "envs/prod/patch.yaml").expect("prod")),
        "a1b2c3d",
        "nothing reaches prod's file on main before the merge"
    );
    let url = format!("/pull/{}", pr.number);
    let said = eventually(LIMIT, || {
        w.slack
            .texts()
            .into_iter()
            .find(|t| t.contains("merge it to approve") && t.contains(&url))
    });
    assert!(said.is_some(), "Slack names the PR: {:#?}", w.slack.texts());
    let s = state(&w).expect("state");
    assert!(
        s["rollouts"]["dev/app"]["pullRequest"]
            .as_str()
            .is_some_and(|u| u.ends_with(&url)),
        "the state (and so the status page) names the PR: {s}"
    );

    // The reviewer merges: that is the approval.
    let tree = testbed::git(&w.repo.path, &["rev-parse", "tagflow/prod^{tree}"]);
    let merge = testbed::git(
        &w.repo.path,
        &[
            "commit-tree",
            tree.trim(),
            "-p",
            "main",
            "-p",
            "tagflow/prod",
            "-m",
            "Merge PR",
        ],
    );
    testbed::git(
        &w.repo.path,
        &["update-ref", "refs/heads/main", merge.trim()],
    );
    forge.mark_merged(pr.number);
    wait_phase(&w, "prod/app", "0f1e2d3", "healthy", &r);
    wait_phase(&w, "dev/app", "0f1e2d3", "promoted", &r);
    assert!(
        eventually(LIMIT, || w
            .repo
            .head("tagflow/prod")
            .is_none()
            .then_some(()))
        .is_some(),
        "the merged branch is retired"
    );
    assert!(forge.open().is_empty(), "{:#?}", forge.prs());
    let first_parents = testbed::git(
        &w.repo.path,
        &["log", "--first-parent", "--format=%s", "main"],
    );
    assert!(
        !first_parents.contains("prod app → 0f1e2d3"),
        "tagflow made no promotion commit of its own on main:\n{first_parents}"
    );
    assert!(!r.logs().contains("gate-token-77"), "token in logs");
}
