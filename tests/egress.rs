//! Pushing to the config repo is not reading tagflow's secrets: a config that would send a
//! registry password or the Slack bot token to a host the operator did not allow
//! (`--secret-hosts`) is refused with file:line, no request reaches that host, nothing is
//! committed. Tier 1: in-process stand-ins for the "attacker's" hosts, a repo over file://.

mod common;

use common::{Local, file_url, logs, once, pinned_values, tagflow};
use testbed::{BareRepo, Response, Scripted};

const PASSWORD: &str = "registry-pw-0451";
const TOKEN: &str = "xoxb-bot-token-0451";

/// A server standing in for a host the config repo's writer controls.
fn elsewhere() -> (Scripted, String) {
    let s = Scripted::start(|_| Response::json(200, &serde_json::json!({"ok": true})));
    let host = s.base_url.trim_start_matches("http://").to_owned();
    (s, host)
}

/// A config sending the registry password to `host` (and, with `slack`, the bot token too).
fn repo(local: &Local, host: &str, slack: bool) -> BareRepo {
    let pw = local.file("registry-password", PASSWORD);
    let token = local.file("bot-token", TOKEN);
    let mut config = format!(
        "registries:\n  - host: \"{host}\"\n    insecure: true\n    credentials: {{username: robot, password: {{file: {}}}}}\nimages:\n  app:\n    repository: {host}/team/app\n    policy: {{tags: '.*', order: alphabetical}}\nenvironments:\n  dev:\n    file: envs/dev/patch.yaml\n",
        pw.display()
    );
    if slack {
        config.push_str(&format!(
            "notify:\n  slack: {{botToken: {{file: {}}}, channel: '#deploys', apiUrl: 'http://{host}/api/'}}\n",
            token.display()
        ));
    }
    BareRepo::new(&[
        ("config/tagflow.yaml", &config),
        (
            "envs/dev/patch.yaml",
            &pinned_values(&format!("{host}/team/app")),
        ),
    ])
}

#[test]
fn a_config_sending_a_password_to_a_host_the_operator_did_not_allow_is_refused() {
    let (server, host) = elsewhere();
    let local = Local::new();
    let repo = repo(&local, &host, true);
    let before = repo.log("main").len();

    let out = once(&file_url(&repo), &local, &[]);
    let text = logs(&out);
    assert!(!out.status.success(), "{text}");
    for want in [
        "config/tagflow.yaml:4: registries[0].credentials: sending a password to",
        "config/tagflow.yaml:13: notify.slack.apiUrl: sending the bot token to",
        "the operator allows secrets only to slack.com (--secret-hosts",
    ] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }
    assert!(
        server.requests().is_empty(),
        "a request reached the other host: {:?}",
        server.requests()
    );
    assert_eq!(repo.log("main").len(), before, "nothing committed");
    assert!(!text.contains(PASSWORD) && !text.contains(TOKEN), "{text}");

    // `check` says the same, with the same lines.
    let out = common::run(tagflow().args(["check", "--repo", &file_url(&repo)]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        stdout.contains("config/tagflow.yaml:4: registries[0].credentials"),
        "{stdout}"
    );
}

#[test]
fn the_operator_allows_a_host_outside_the_repo() {
    let (server, host) = elsewhere();
    let local = Local::new();
    let repo = repo(&local, &host, false);
    for allow in ["127.0.0.1", &host, "*"] {
        let out = common::run(
            tagflow()
                .args(["check", "--repo", &file_url(&repo), "--secret-hosts", allow])
                .env_remove("TAGFLOW_SECRET_HOSTS"),
        );
        assert!(out.status.success(), "{allow}: {}", common::logs(&out));
    }
    // The env var works as the flag does, and a host on another port is another host.
    let other_port = format!("127.0.0.1:{}", testbed::free_port());
    let out = common::run(
        tagflow()
            .args(["check", "--repo", &file_url(&repo)])
            .env("TAGFLOW_SECRET_HOSTS", &other_port),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("only to {other_port} (--secret-hosts")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = common::run(tagflow().args(["check", "--secret-hosts", "a b"]));
    assert_eq!(out.status.code(), Some(2), "a bad allowlist stops at once");
    assert!(server.requests().is_empty(), "check sends nothing");
}
