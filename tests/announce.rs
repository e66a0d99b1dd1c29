//! Commit announcements are owed until Slack has them: a commit whose post was lost (Slack down
//! longer than the worker's retries, or a `kill -9` between the push and the post) is announced
//! by a later run from git, once, and never again after. Tier 1: in-process registry and Slack
//! stand-ins, the config repo over file://.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Local, file_url, ok, once, pinned_values, scripted_registry};
use testbed::{BareRepo, Response, Scripted};

/// A Slack incoming webhook that answers 503 while `down`.
fn slack(down: Arc<AtomicBool>) -> Scripted {
    Scripted::start(move |_| {
        if down.load(Ordering::SeqCst) {
            Response::text(503, "down")
        } else {
            Response::text(200, "ok")
        }
    })
}

/// The texts Slack accepted (answered 200) that announce a commit.
fn announcements(s: &Scripted, accepted_after: usize) -> Vec<String> {
    s.requests()
        .iter()
        .skip(accepted_after)
        .map(|r| r.body_text())
        .filter(|b| b.contains("tagflow pushed"))
        .collect()
}

#[test]
fn a_commit_announced_while_slack_was_down_is_announced_by_the_next_run_once() {
    let (_registry, _) = scripted_registry(serde_json::json!(["b2c3d4e"]), Duration::ZERO);
    let host = _registry.base_url.trim_start_matches("http://").to_owned();
    let down = Arc::new(AtomicBool::new(true));
    let hook = slack(down.clone());
    let local = Local::new();
    let url_file = local.file("slack-url", &hook.url("/hook"));
    let config = format!(
        "registries:\n  - {{host: \"{host}\", insecure: true}}\nimages:\n  app:\n    repository: {host}/team/app\n    policy: {{tags: '.*', order: alphabetical}}\nenvironments:\n  dev:\n    file: envs/dev/patch.yaml\nnotify:\n  slack: {{webhookUrl: {{file: {}}}}}\n",
        url_file.display()
    );
    let repo = BareRepo::new(&[
        ("config/tagflow.yaml", &config),
        (
            "envs/dev/patch.yaml",
            &pinned_values(&format!("{host}/team/app")),
        ),
    ]);
    let url = file_url(&repo);

    // Slack is down for the whole first run: the commit lands, its post is given up on.
    let first = once(&url, &local, &[]);
    let l = ok(&first);
    assert!(l.contains("cycle done: committed"), "{l}");
    assert!(
        common::logs(&first).contains("gave up on a Slack message"),
        "{}",
        common::logs(&first)
    );
    let tried = hook.requests().len();
    assert!(tried > 0, "the post was tried");
    let commit = repo.log("main")[0].sha[..7].to_owned();

    // Slack is back: the next run has nothing to commit, and announces what is owed.
    down.store(false, Ordering::SeqCst);
    let second = once(&url, &local, &[]);
    assert!(
        ok(&second).contains("cycle done: no change"),
        "{}",
        common::logs(&second)
    );
    let said = announcements(&hook, tried);
    assert_eq!(said.len(), 1, "announced once: {said:#?}");
    assert!(
        said[0].contains(&format!("tagflow pushed {commit} to main")),
        "{}",
        said[0]
    );
    assert!(
        said[0].contains("dev app tag: a1b2c3d → b2c3d4e"),
        "{}",
        said[0]
    );

    // And only once: a third run owes nothing.
    let third = once(&url, &local, &[]);
    ok(&third);
    assert_eq!(announcements(&hook, tried).len(), 1, "not announced again");
    assert_eq!(repo.log("main").len(), 2, "one commit in all");
}
