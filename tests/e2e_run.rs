//! `tagflow run` end to end: config by git commits, webhooks, hostile input.

mod common;

use std::time::Duration;

use common::*;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use testbed::{BareRepo, Registry, RegistryOpts, Scripted, SlackCapture};

const BUILT: &str = "{tags: '^[0-9a-f]{7}$', order: built}";

fn slack_block(local: &Local, slack: &SlackCapture) -> String {
    let f = local.file("slack-url", &slack.url);
    format!("notify:\n  slack:\n    webhookUrl: {{file: {}}}\n", p(&f))
}

/// A broken config commit keeps the last good config running, is alerted once (not once per
/// cycle), and the next good commit takes over.
#[test]
#[ignore = "real servers: run by scripts/test"]
fn a_broken_config_keeps_the_last_good_one_and_alerts_once() {
    let reg = Registry::start(RegistryOpts::default());
    push_three(&reg);
    let local = Local::new();
    let slack = SlackCapture::start();
    let good = config(&reg, &local, BUILT, &slack_block(&local, &slack));
    let repo = BareRepo::new(&[
        ("config/tagflow.yaml", &good),
        (
            "envs/dev/patch.yaml",
            &dev_values(&format!("{}/team/app", reg.host)),
        ),
    ]);
    let run = Running::start(&file_url(&repo), &local, &[]);
    run.wait_ready();
    assert!(
        eventually(Duration::from_secs(30), || (repo.log("main").len() == 2)
            .then_some(()))
        .is_some()
    );

    let broken = good.replace("order: built", "order: newest");
    repo.commit_files(
        "main",
        &[("config/tagflow.yaml", &broken)],
        "break the config",
    );
    let still = || run.logs().matches("config still invalid").count();
    assert!(
        eventually(Duration::from_secs(30), || (still() >= 3).then_some(())).is_some(),
        "{}",
        run.logs()
    );
    let alerts: Vec<String> = slack
        .texts()
        .into_iter()
        .filter(|t| t.contains("is invalid"))
        .collect();
    assert_eq!(
        alerts.len(),
        1,
        "one alert for {} cycles: {alerts:?}",
        still() + 1
    );
    assert!(
        alerts[0].contains("config/tagflow.yaml:")
            && alerts[0].contains("unknown variant `newest`"),
        "{}",
        alerts[0]
    );
    assert!(
        alerts[0].contains("still running the last good config"),
        "{}",
        alerts[0]
    );

    // The last good config keeps working: a new image is still picked up.
    reg.push_image("team/app", "c0ffee1", "2024-01-02T00:00:00Z", None);
    let found = eventually(Duration::from_secs(30), || {
        repo.read("main", "envs/dev/patch.yaml")
            .filter(|f| f.contains("tag: c0ffee1 #"))
    });
    assert!(found.is_some(), "{}", run.logs());

    // Fixing it is noticed and said once.
    repo.commit_files("main", &[("config/tagflow.yaml", &good)], "fix the config");
    let ok = eventually(Duration::from_secs(30), || {
        slack
            .texts()
            .into_iter()
            .find(|t| t.contains("valid again"))
    });
    assert!(ok.is_some(), "{:?}", slack.texts());
    assert_eq!(
        slack
            .texts()
            .iter()
            .filter(|t| t.contains("is invalid"))
            .count(),
        1
    );
}

/// A registry push notification triggers a scan and a commit without waiting for the interval.
#[test]
#[ignore = "real servers: run by scripts/test"]
fn a_registry_webhook_triggers_a_commit_without_waiting() {
    let port = testbed::free_port();
    let token = "hook-token-0123456789";
    let reg = Registry::start(RegistryOpts {
        notify: Some((
            format!("http://127.0.0.1:{port}/webhook/registry"),
            token.to_owned(),
        )),
        ..RegistryOpts::default()
    });
    push_three(&reg);
    let local = Local::new();
    let tok = local.file("webhook-token", token);
    let hmac_key = local.file("webhook-hmac", "hmac-key-0123456789");
    let cfg = config(&reg, &local, BUILT, &format!("webhook:\n  bearerToken: {{file: {}}}\n  hmacSecret: {{file: {}}}\n  maxBodyBytes: 4096\n", p(&tok), p(&hmac_key)))
        .replace("interval: 1s", "interval: 1h");
    let repo = BareRepo::new(&[
        ("config/tagflow.yaml", &cfg),
        (
            "envs/dev/patch.yaml",
            &dev_values(&format!("{}/team/app", reg.host)),
        ),
    ]);
    let run = Running::start_at(port, &file_url(&repo), &local, &[]);
    run.wait_ready();
    assert!(
        eventually(Duration::from_secs(30), || (repo.log("main").len() == 2)
            .then_some(()))
        .is_some()
    );

    // Hostile deliveries are refused and change nothing.
    let http = reqwest::blocking::Client::new();
    let hook = run.url("/webhook/registry");
    let events = serde_json::json!({"events": [{"action": "push", "target": {"repository": "team/app", "tag": "a1b2c3d"}, "request": {"host": reg.host}}]}).to_string();
    let post = |body: String, headers: &[(&str, &str)]| {
        let mut r = http.post(&hook).body(body);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.send().expect("post").status().as_u16()
    };
    let mt = (
        "Content-Type",
        "application/vnd.docker.distribution.events.v1+json",
    );
    assert_eq!(post(events.clone(), &[mt]), 401, "no token");
    assert_eq!(
        post(events.clone(), &[mt, ("Authorization", "Bearer wrong")]),
        401,
        "wrong token"
    );
    let generic = r#"{"repository":"team/app"}"#.to_owned();
    assert_eq!(
        post(generic.clone(), &[("X-Tagflow-Signature", "sha256=00ff")]),
        401,
        "bad signature"
    );
    assert_eq!(
        post(
            "x".repeat(10_000),
            &[mt, ("Authorization", &format!("Bearer {token}"))]
        ),
        413,
        "too large"
    );
    let unknown = events.replace("team/app", "team/other");
    assert_eq!(
        post(
            unknown,
            &[mt, ("Authorization", &format!("Bearer {token}"))]
        ),
        200,
        "unknown repository: ignored, so the registry does not retry it"
    );
    assert_eq!(
        post(
            "{nope".into(),
            &[mt, ("Authorization", &format!("Bearer {token}"))]
        ),
        400,
        "not JSON"
    );
    // A correctly signed generic body is accepted.
    let mut mac = Hmac::<Sha256>::new_from_slice(b"hmac-key-0123456789").expect("key");
    mac.update(generic.as_bytes());
    let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let before = run.cycles_done();
    assert_eq!(post(generic, &[("X-Tagflow-Signature", &sig)]), 202);
    // The accepted delivery triggers a scan (the interval is 1h): once it is done, nothing changed.
    run.wait_cycles(before + 1);
    assert_eq!(repo.log("main").len(), 2, "no deliveries changed anything");

    // The real registry's own notification for a new push: commit well before the 1h interval.
    reg.push_image("team/app", "c0ffee1", "2024-01-02T00:00:00Z", None);
    let found = eventually(Duration::from_secs(30), || {
        repo.read("main", "envs/dev/patch.yaml")
            .filter(|f| f.contains("tag: c0ffee1 #"))
    });
    assert!(
        found.is_some(),
        "no commit after the webhook; logs:\n{}",
        run.logs()
    );
    assert!(run.logs().contains("webhook: scanning now"));
    let metrics = reqwest::blocking::get(run.url("/metrics"))
        .expect("metrics")
        .text()
        .expect("text");
    assert!(
        metrics.contains(r#"tagflow_webhooks_total{result="unauthorized"} 3"#),
        "{metrics}"
    );
    assert!(metrics.contains("tagflow_commits_total 2"), "{metrics}");
    assert!(
        metrics.contains("tagflow_last_success_timestamp_seconds"),
        "{metrics}"
    );
}

fn scripted_repo(server: &Scripted) -> (BareRepo, String) {
    let host = server.base_url.trim_start_matches("http://").to_owned();
    let cfg = format!(
        "interval: 1h\nregistries:\n  - {{host: \"{host}\", insecure: true}}\nimages:\n  app:\n    repository: {host}/team/app\n    policy: {{tags: '.*', order: alphabetical}}\nenvironments:\n  dev:\n    file: envs/dev/patch.yaml\n"
    );
    let values = pinned_values(&format!("{host}/team/app"));
    (
        BareRepo::new(&[
            ("config/tagflow.yaml", &cfg),
            ("envs/dev/patch.yaml", &values),
        ]),
        values,
    )
}

/// A registry that lists hostile tags (newlines, YAML syntax, 200 characters) cannot get them
/// into a values file: they never qualify, and the newest valid tag is chosen.
#[test]
fn hostile_tags_never_reach_a_values_file() {
    let long = "z".repeat(200);
    let tags = serde_json::json!([
        "a1b2c3d",
        "zzzzzzz\nx: y",
        "zz: {a}",
        "zz zz",
        long,
        "zzz\"q",
        "b2c3d4e"
    ]);
    let (server, manifest_digest) = scripted_registry(tags, Duration::ZERO);
    let (repo, values) = scripted_repo(&server);
    let local = Local::new();
    ok(&once(&file_url(&repo), &local, &[]));
    let dev = repo.read("main", "envs/dev/patch.yaml").expect("file");
    assert!(dev.contains("tag: b2c3d4e #"), "{dev}");
    assert!(
        dev.contains(&format!("digest: \"{manifest_digest}\"")),
        "{dev}"
    );
    assert_eq!(dev.lines().count(), values.lines().count());
    // Only the winner's manifest was read, and nothing hostile was ever asked for.
    let asked: Vec<String> = server
        .requests()
        .iter()
        .map(testbed::Request::uri)
        .collect();
    assert!(asked.iter().all(|u| !u.contains("zz")), "{asked:?}");
}

/// SIGTERM while the registry stalls mid-scan: the scan is cancelled at once (the stalled
/// answer does not hold shutdown), nothing is committed, and tagflow exits 0.
#[test]
fn sigterm_mid_scan_exits_at_once_and_commits_nothing() {
    // Without cancellation the cycle would wait out 4 attempts × the 30 s timeout.
    let (server, _) = scripted_registry(serde_json::json!(["b2c3d4e"]), Duration::from_secs(600));
    let (repo, values) = scripted_repo(&server);
    let before = repo.log("main").len();
    let local = Local::new();
    let mut run = Running::start(&file_url(&repo), &local, &[]);
    // The tags listing is in flight (stalled) when the signal arrives.
    assert_eq!(
        server.wait_for(1, Duration::from_secs(30)).len(),
        1,
        "{}",
        run.logs()
    );
    let asked = std::time::Instant::now();
    let status = run.terminate();
    let took = asked.elapsed();
    assert!(status.success(), "{status:?}\n{}", run.logs());
    // Generous: it takes well under a second; the stalled scan alone would take minutes.
    assert!(
        took < Duration::from_secs(10),
        "exit took {took:?}\n{}",
        run.logs()
    );
    assert_eq!(repo.log("main").len(), before, "nothing committed");
    assert_eq!(
        repo.read("main", "envs/dev/patch.yaml").as_deref(),
        Some(values.as_str())
    );
    let logs = run.logs();
    assert!(logs.contains("scan cancelled"), "{logs}");
    assert!(
        !logs.contains("cycle failed"),
        "a cancelled scan is no failure:\n{logs}"
    );
}
