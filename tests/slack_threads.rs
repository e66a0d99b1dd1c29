//! Slack Web API threads against the capture server: order, 429 with Retry-After, `ok: false`.

use std::collections::BTreeMap;
use std::time::Duration;

use tagflow::notify::{self, Bot};
use testbed::SlackCapture;

fn bot(slack: &SlackCapture) -> Bot {
    Bot {
        api_url: slack.api_url.clone(),
        token: "xoxb-test".into(),
        channel: "#deploys".into(),
    }
}

#[tokio::test]
async fn one_thread_per_key_with_the_parent_status_kept_current() {
    let slack = SlackCapture::start();
    let (n, worker) = notify::spawn();
    for (i, step) in ["dev: committed", "dev: HelmRelease Ready", "dev: healthy"]
        .iter()
        .enumerate()
    {
        n.thread(
            bot(&slack),
            "app:0f1e2d3",
            format!("status {i}"),
            (*step).to_owned(),
        );
    }
    n.thread(
        bot(&slack),
        "app:b2c3d4e",
        "other".into(),
        "dev: committed".into(),
    );
    drop(n);
    worker.flush(Duration::from_secs(30)).await;
    let got = slack.delivered();
    let posts: Vec<_> = got
        .iter()
        .filter(|m| m.path == "/api/chat.postMessage")
        .collect();
    // Two parents (one per key), four replies.
    let parents: Vec<_> = posts
        .iter()
        .filter(|m| m.body.get("thread_ts").is_none())
        .collect();
    assert_eq!(parents.len(), 2, "{got:#?}");
    let first = &posts[1].body["thread_ts"];
    let replies: Vec<&str> = posts
        .iter()
        .filter(|m| &m.body["thread_ts"] == first)
        .map(|m| m.body["text"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        replies,
        ["dev: committed", "dev: HelmRelease Ready", "dev: healthy"]
    );
    assert!(
        got.iter()
            .all(|m| m.header("authorization") == Some("Bearer xoxb-test"))
    );
    let updates: Vec<&str> = got
        .iter()
        .filter(|m| m.path == "/api/chat.update" && &m.body["ts"] == first)
        .map(|m| m.body["text"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(updates, ["status 0", "status 1", "status 2"]);
}

#[tokio::test]
async fn rate_limits_are_waited_out_and_ok_false_is_not_retried() {
    let slack = SlackCapture::start();
    // 429 with Retry-After, then a Web API `ok: false` (HTTP 200) for the parent.
    slack.fail_next(&[(429, Some(1)), (200, None)]);
    let (n, worker) = notify::spawn();
    n.thread(
        bot(&slack),
        "app:0f1e2d3",
        "status".into(),
        "dev: committed".into(),
    );
    n.thread(
        bot(&slack),
        "app:0f1e2d3",
        "status".into(),
        "dev: healthy".into(),
    );
    drop(n);
    worker.flush(Duration::from_secs(30)).await;
    let all = slack.messages();
    assert_eq!(all[0].status, 429);
    assert_eq!(all[1].status, 200, "retried after Retry-After");
    // The refused parent was not retried: the step went out flat instead.
    assert_eq!(all[2].body["text"], "status\ndev: committed", "{all:#?}");
    assert!(all[2].body.get("thread_ts").is_none());
    // The next step starts the thread.
    let rest: Vec<_> = all[3..]
        .iter()
        .map(|m| {
            (
                m.path.as_str(),
                m.body["text"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        rest,
        [
            ("/api/chat.postMessage", "status".to_owned()),
            ("/api/chat.postMessage", "dev: healthy".to_owned()),
            ("/api/chat.update", "status".to_owned()),
        ]
    );
}

#[tokio::test]
async fn a_new_leader_keeps_posting_in_the_stored_thread() {
    let slack = SlackCapture::start();
    let (n, worker) = notify::spawn();
    n.seed_threads(&BTreeMap::from([(
        "app:0f1e2d3".to_owned(),
        "C1 1690000000.000001".to_owned(),
    )]));
    n.thread(
        bot(&slack),
        "app:0f1e2d3",
        "status".into(),
        "prod: healthy".into(),
    );
    drop(n);
    worker.flush(Duration::from_secs(30)).await;
    let got = slack.delivered();
    assert_eq!(
        got.len(),
        2,
        "a reply and an update, no new parent: {got:#?}"
    );
    assert_eq!(got[0].body["thread_ts"], "1690000000.000001");
    assert_eq!(got[1].body["ts"], "1690000000.000001");
}
