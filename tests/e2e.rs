//! End to end: the real `tagflow` binary against Debian's docker-registry and real git servers.

mod common;

use std::time::Duration;

use common::*;
use testbed::{BareRepo, GitHttp, GitSsh, Registry, RegistryOpts, SlackCapture};

const BUILT: &str = "{tags: '^[0-9a-f]{7}$', order: built}";

/// The acceptance scenario: one commit setting dev to the newest build, then an idle cycle that
/// costs the registry nothing but the tags listing.
#[test]
#[ignore = "real servers: run by scripts/test"]
fn built_order_commits_the_newest_build_once_then_only_lists_tags() {
    let slack = SlackCapture::start();
    let (reg, local, repo) = scenario(RegistryOpts::default(), dev_values, |local| {
        let slack_file = local.file("slack-url", &slack.url);
        format!(
            "notify:\n  slack:\n    webhookUrl: {{file: {}}}\n",
            p(&slack_file)
        )
    });
    let before = repo.head("main").expect("head");
    // Slack is having a bad minute: tagflow retries (honouring Retry-After) and the cycle is
    // unaffected.
    slack.fail_next(&[(500, None), (429, Some(1))]);

    let first = once(&file_url(&repo), &local, &[]);
    let l = ok(&first);
    assert!(last_line(&first).contains("cycle done: committed"), "{l}");
    let log = repo.log("main");
    assert_eq!(log.len(), 2, "exactly one new commit");
    assert_eq!(log[1].sha, before);
    assert_eq!(log[0].author_name, "tagflow");
    assert!(
        log[0].subject.contains("dev app → 0f1e2d3"),
        "{}",
        log[0].subject
    );
    assert!(
        log[0]
            .message
            .contains("dev app tag: a1b2c3d → 0f1e2d3 (envs/dev/patch.yaml:4)"),
        "{}",
        log[0].message
    );
    let diff = repo.diff(&before, &log[0].sha);
    assert_eq!(
        changed_lines(&diff),
        vec![
            "-  tag: a1b2c3d # {\"$imagepolicy\": \"flux-system:app:tag\"}".to_owned(),
            "+  tag: 0f1e2d3 # {\"$imagepolicy\": \"flux-system:app:tag\"}".to_owned(),
        ],
        "{diff}"
    );
    assert!(diff.matches("diff --git").count() == 1, "{diff}");

    // Slack heard about the commit, once, on the third try.
    let msgs = slack.wait_for(3, Duration::from_secs(10));
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    let msgs = slack.delivered();
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    let text = msgs[0].body["text"].as_str().unwrap_or_default().to_owned();
    assert!(
        text.contains(&log[0].sha[..7]) && text.contains("dev app tag: a1b2c3d → 0f1e2d3"),
        "{text}"
    );

    // Second cycle, a new process: no commit, and the registry saw only the tags listing
    // (metadata is cached by digest in the work dir).
    let mark = reg.requests().len();
    let second = once(&file_url(&repo), &local, &[]);
    ok(&second);
    assert!(
        last_line(&second).contains("cycle done: no change"),
        "{}",
        logs(&second)
    );
    assert_eq!(repo.log("main").len(), 2, "no second commit");
    let new: Vec<_> = reg.requests().into_iter().skip(mark).collect();
    assert_eq!(new.len(), 1, "{new:?}");
    assert_eq!((new[0].method.as_str(), new[0].status), ("GET", 200));
    assert!(new[0].uri.starts_with("/v2/team/app/tags/list"), "{new:?}");
    assert_eq!(slack.messages().len(), 3, "nothing new to say");
}

/// In the `run` loop, an unchanged repository costs exactly one tags request per cycle.
#[test]
#[ignore = "real servers: run by scripts/test"]
fn idle_cycles_in_run_cost_one_tags_request_each() {
    let (reg, local, repo) = scenario(RegistryOpts::default(), dev_values, |_| String::new());
    let mut run = Running::start(&file_url(&repo), &local, &[]);
    run.wait_ready();
    assert!(
        eventually(Duration::from_secs(30), || (repo.log("main").len() == 2)
            .then_some(()))
        .is_some()
    );
    // Let a couple of idle cycles pass, then count what the next few cost.
    let cycles = || run.logs().matches("cycle done: no change").count();
    assert!(
        eventually(Duration::from_secs(30), || (cycles() >= 1).then_some(())).is_some(),
        "{}",
        run.logs()
    );
    let (c0, r0) = (cycles(), reg.requests().len());
    assert!(
        eventually(Duration::from_secs(30), || (cycles() >= c0 + 3)
            .then_some(()))
        .is_some(),
        "{}",
        run.logs()
    );
    let (c1, reqs) = (cycles(), reg.requests());
    let idle: Vec<_> = reqs.iter().skip(r0).collect();
    // The log read is not synchronised with the cycle, so allow the cycle in flight at either end.
    let n = c1 - c0;
    assert!(
        idle.iter()
            .all(|r| r.method == "GET" && r.uri.starts_with("/v2/team/app/tags/list")),
        "{idle:?}"
    );
    assert!(
        idle.len() >= n.saturating_sub(1) && idle.len() <= n + 1,
        "{} requests over {n} idle cycles",
        idle.len()
    );
    assert!(run.terminate().success());
    assert_eq!(repo.log("main").len(), 2);
}

/// TLS + basic auth registry (CA file, docker config.json), git over SSH with a deploy key.
#[test]
#[ignore = "real servers: run by scripts/test"]
fn tls_auth_registry_and_git_over_ssh() {
    let (reg, local, repo) = scenario(
        RegistryOpts {
            auth: true,
            tls: true,
            notify: None,
            token: false,
        },
        pinned_values,
        |_| String::new(),
    );
    let ssh = GitSsh::start(&repo);
    let key = p(&ssh.key_file);
    let known = p(&ssh.known_hosts_file);
    let out = once(
        &ssh.url,
        &local,
        &["--git-ssh-key-file", &key, "--git-known-hosts-file", &known],
    );
    let l = ok(&out);
    let dev = repo.read("main", "envs/dev/patch.yaml").expect("file");
    assert!(dev.contains("tag: 0f1e2d3 #"), "{dev}");
    let digest_line = dev
        .lines()
        .find(|l| l.contains("digest:"))
        .expect("digest line");
    assert!(
        digest_line.contains("\"sha256:") && digest_line.len() > 70,
        "{digest_line}"
    );
    assert!(
        !l.contains(reg.password.as_deref().expect("password")),
        "password leaked into logs"
    );

    // An unknown host key is refused: nothing fetched, nothing committed.
    let before = repo.log("main").len();
    let wrong = p(&ssh.wrong_known_hosts_file);
    let local2 = Local::new();
    let out = once(
        &ssh.url,
        &local2,
        &["--git-ssh-key-file", &key, "--git-known-hosts-file", &wrong],
    );
    assert!(!out.status.success());
    assert!(
        logs(&out).contains("is not in") && logs(&out).contains("refusing"),
        "{}",
        logs(&out)
    );
    assert_eq!(repo.log("main").len(), before);

    // known_hosts as OpenSSH writes it by default: hashed names (`ssh-keygen -H`).
    let hashed = local.file(
        "known_hosts_hashed",
        &std::fs::read_to_string(&ssh.known_hosts_file).expect("known_hosts"),
    );
    let run = testbed::run_with_timeout(
        std::process::Command::new("ssh-keygen").args(["-H", "-f", &p(&hashed)]),
        None,
        std::time::Duration::from_secs(30),
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = std::fs::read_to_string(&hashed).expect("hashed");
    assert!(
        text.starts_with("|1|") && !text.contains("127.0.0.1"),
        "{text}"
    );
    let local3 = Local::new();
    let out = once(
        &ssh.url,
        &local3,
        &[
            "--git-ssh-key-file",
            &key,
            "--git-known-hosts-file",
            &p(&hashed),
        ],
    );
    ok(&out);
    // The same key marked @revoked is refused even though it is listed.
    let revoked = local.file(
        "known_hosts_revoked",
        &format!(
            "{text}@revoked * {}\n",
            text.split_whitespace()
                .skip(1)
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        ),
    );
    let out = once(
        &ssh.url,
        &Local::new(),
        &[
            "--git-ssh-key-file",
            &key,
            "--git-known-hosts-file",
            &p(&revoked),
        ],
    );
    assert!(!out.status.success(), "a revoked host key is refused");
}

/// The flags that log in to `http` with the password in `file`.
fn http_auth<'a>(http: &'a GitHttp, file: &'a str) -> [&'a str; 4] {
    [
        "--git-username",
        &http.username,
        "--git-password-file",
        file,
    ]
}

/// TLS + basic auth registry, git over smart HTTP with basic auth from a password file.
#[test]
#[ignore = "real servers: run by scripts/test"]
fn tls_auth_registry_and_git_over_http() {
    let (_reg, local, repo) = scenario(
        RegistryOpts {
            auth: true,
            tls: true,
            notify: None,
            token: false,
        },
        dev_values,
        |_| String::new(),
    );
    let http = GitHttp::start(&repo);
    let pw = local.file("git-password", &format!("{}\n", http.password));
    let out = once(&http.url, &local, &http_auth(&http, &p(&pw)));
    let l = ok(&out);
    assert!(
        repo.read("main", "envs/dev/patch.yaml")
            .expect("file")
            .contains("tag: 0f1e2d3 #")
    );
    assert!(!l.contains(&http.password), "git password leaked into logs");

    // Wrong password: a clear failure, no commit.
    let bad = local.file("bad-password", "nope");
    let local2 = Local::new();
    let out = once(&http.url, &local2, &http_auth(&http, &p(&bad)));
    assert!(!out.status.success(), "{}", logs(&out));
    assert!(last_line(&out).contains("cycle failed"), "{}", logs(&out));

    // A password in the URL is refused outright.
    let out = once(&http.url_with_credentials(), &Local::new(), &[]);
    assert!(!out.status.success());
    assert!(
        logs(&out).contains("must not contain a password"),
        "{}",
        logs(&out)
    );
    assert!(
        !logs(&out).contains(&http.password),
        "the refusal must not echo the password"
    );
}

/// `plan` prints the diff and message and leaves the remote and the work dir as they were.
#[test]
#[ignore = "real servers: run by scripts/test"]
fn plan_prints_the_diff_and_touches_nothing() {
    let (_reg, local, repo) = scenario(RegistryOpts::default(), dev_values, |_| String::new());
    let head = repo.head("main");
    let mut c = tagflow();
    c.args(["plan", "--repo", &file_url(&repo), "--workdir"])
        .arg(local.workdir());
    let out = run(&mut c);
    ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("-  tag: a1b2c3d") && stdout.contains("+  tag: 0f1e2d3"),
        "{stdout}"
    );
    assert!(stdout.contains("tagflow: dev app → 0f1e2d3"), "{stdout}");
    assert_eq!(repo.head("main"), head, "remote unchanged");
    assert!(!local.workdir().exists(), "work dir untouched");
}

/// A values file with a duplicate key is refused: clear error, no commit.
#[test]
#[ignore = "real servers: run by scripts/test"]
fn a_values_file_with_a_duplicate_key_changes_nothing() {
    let reg = Registry::start(RegistryOpts::default());
    push_three(&reg);
    let local = Local::new();
    let values = format!(
        "{}image:\n  tag: x\n",
        dev_values(&format!("{}/team/app", reg.host))
    );
    let repo = BareRepo::new(&[
        ("config/tagflow.yaml", &config(&reg, &local, BUILT, "")),
        ("envs/dev/patch.yaml", &values),
    ]);
    let out = once(&file_url(&repo), &local, &[]);
    assert!(!out.status.success());
    assert!(
        logs(&out).contains("envs/dev/patch.yaml") && logs(&out).contains("duplicate"),
        "{}",
        logs(&out)
    );
    assert_eq!(repo.log("main").len(), 1);
    assert_eq!(
        repo.read("main", "envs/dev/patch.yaml").as_deref(),
        Some(values.as_str())
    );
}

/// `check` lists every problem with file:line and exits non-zero.
#[test]
fn check_names_file_and_line() {
    let broken = "images:\n  app:\n    repository: r.example.com/team/app\n    policy: {tags: '([', order: built}\nenvironments:\n  dev:\n    file: envs/dev/patch.yaml\n    colour: blue\n";
    let repo = BareRepo::new(&[
        ("config/tagflow.yaml", broken),
        ("envs/dev/patch.yaml", &dev_values("r.example.com/team/app")),
    ]);
    let mut c = tagflow();
    c.args(["check", "--repo", &file_url(&repo)]);
    let out = run(&mut c);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("config/tagflow.yaml:4: images.app.policy.tags: bad regex"),
        "{stdout}"
    );
    assert!(
        stdout.contains("config/tagflow.yaml:8: environments.dev.colour: unknown field `colour`"),
        "{stdout}"
    );

    // A good config whose values file lacks the marker: the values file is named.
    let good = broken
        .replace("([", "^[0-9a-f]{7}$")
        .replace("    colour: blue\n", "");
    let repo = BareRepo::new(&[
        ("config/tagflow.yaml", &good),
        ("envs/dev/patch.yaml", "image:\n  tag: a1b2c3d\n"),
    ]);
    let mut c = tagflow();
    c.args(["check", "--repo", &file_url(&repo)]);
    let out = run(&mut c);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("envs/dev/patch.yaml") && stdout.contains("no target for image app"),
        "{stdout}"
    );

    // And the repo's own example passes.
    let root = env!("CARGO_MANIFEST_DIR");
    let mut c = tagflow();
    c.args(["check", "--dir", root]);
    let out = run(&mut c);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        logs(&out)
    );
}

/// A rotated git password: the server's password and the mounted file change mid-run and the
/// next cycle pushes. Once the change shows in the file's metadata; once it does not (same size,
/// mtime put back), so only the one re-read after the server's 401 finds it. No password is
/// ever logged.
#[test]
#[ignore = "real servers: run by scripts/test"]
fn a_rotated_git_password_is_picked_up_without_a_restart() {
    let (reg, local, repo) = scenario(RegistryOpts::default(), dev_values, |_| String::new());
    let mut http = GitHttp::start(&repo);
    let first = http.password.clone();
    let pw = local.file("git-password", &format!("{first}\n"));
    let run = Running::start(&http.url, &local, &http_auth(&http, &p(&pw)));
    let tag_is = |tag: &str| {
        eventually(Duration::from_secs(60), || {
            repo.read("main", "envs/dev/patch.yaml")
                .filter(|f| f.contains(&format!("tag: {tag} #")))
        })
        .is_some()
    };
    assert!(tag_is("0f1e2d3"), "{}", run.logs());

    // Rotation as the kubelet does it: new content, new mtime.
    let second = "second-pass-0123456789";
    http.set_password(second);
    std::fs::write(&pw, format!("{second}\n")).expect("rotate");
    reg.push_image("team/app", "1a1a1a1", "2024-02-01T00:00:00Z", None);
    assert!(tag_is("1a1a1a1"), "{}", run.logs());

    // Same length, mtime restored: the metadata says nothing changed.
    let seen = run.logs().len();
    let third = "third-pass--0123456789";
    assert_eq!(third.len(), second.len());
    let mtime = std::fs::metadata(&pw)
        .and_then(|m| m.modified())
        .expect("mtime");
    http.set_password(third);
    std::fs::write(&pw, format!("{third}\n")).expect("rotate");
    std::fs::File::options()
        .write(true)
        .open(&pw)
        .and_then(|f| f.set_modified(mtime))
        .expect("restore mtime");
    reg.push_image("team/app", "2b2b2b2", "2024-02-02T00:00:00Z", None);
    assert!(tag_is("2b2b2b2"), "{}", run.logs());
    let logs = run.logs();
    assert!(
        logs[seen..].contains("git password changed since the remote refused it"),
        "the third password was found only by the re-read after a 401:\n{logs}"
    );
    for secret in [first.as_str(), second, third] {
        assert!(!logs.contains(secret), "a git password reached the logs");
    }
}
