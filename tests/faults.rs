//! The fault matrix, walked against `tagflow run` (the binary) in one place: registry down,
//! 5xx, 429, garbage, truncated, stalled; git down and refusing the password; a racing writer;
//! `kill -9` at random points; Slack down; a full disk. Each fault asserts no bad, lost or
//! duplicate commit, exactly one alert (and one recovery word) in Slack, and recovery.
//!
//! Real servers for what they can do — docker-registry killed and restarted on its port,
//! lighttpd + git-http-backend likewise and with its password changed, a tmpfs work dir filled
//! to the last byte — and in-process stand-ins only for what they cannot (the registry's odd
//! answers, Slack). Tier 2 (`scripts/test`): `cargo test --test faults -- --include-ignored`.
//!
//! Deeper proofs live beside their code and are not repeated here: the alert key's stability
//! (src/cycle/alerts.rs, cycle/mod.rs), a writer racing replicas (tests/race_git.rs,
//! tests/e2e_git.rs), announcements owed across runs (tests/announce.rs).

mod common;
#[path = "faults/world.rs"]
mod world;

use std::time::{Duration, Instant};

use world::{Mode, World};

/// One fault: `inject` it, let a new `tag` appear, see cycles fail with one alert and no
/// commit, `heal`, then see `tag` committed once and one recovery word. `tag_after_heal` for
/// a registry that cannot take a push while it is down.
fn walk(
    w: &mut World,
    fault: &str,
    tag: &str,
    inject: impl FnOnce(&mut World),
    heal: impl FnOnce(&mut World),
    tag_after_heal: bool,
) {
    let (alerts, recoveries) = (w.slack.alerts(), w.slack.recoveries());
    let bad = w.bad_cycles();
    let started = Instant::now();
    inject(w);
    if !tag_after_heal {
        w.add_tag(tag);
    }
    // Two failed cycles at least: the first alerts, the next must not.
    w.wait_bad_cycles(bad, 2);
    w.wait_slack("a cycle failed", alerts + 1);
    assert_eq!(w.committed(tag), 0, "{fault}: committed during the fault");
    heal(w);
    if tag_after_heal {
        w.add_tag(tag);
    }
    w.wait_committed(tag);
    w.wait_slack("cycles succeed again", recoveries + 1);
    // A few clean cycles more: nothing may come twice.
    let done = w.running().cycles_done();
    w.running().wait_cycles(done + 2);
    assert_eq!(
        w.committed(tag),
        1,
        "{fault}: {tag} committed more than once"
    );
    assert_eq!(
        w.slack.alerts(),
        alerts + 1,
        "{fault}: one alert, not one per cycle: {:#?}",
        w.slack.all()
    );
    assert_eq!(
        w.slack.recoveries(),
        recoveries + 1,
        "{fault}: one recovery word"
    );
    w.check_history();
    eprintln!(
        "faults: {fault}: alerted once, recovered in {:?}",
        started.elapsed()
    );
}

/// A first tag committed and announced: the world is healthy before any fault.
fn healthy(w: &mut World) {
    w.add_tag("100");
    w.start();
    w.wait_committed("100");
}

#[test]
#[ignore = "real servers: run by scripts/test"]
fn registry_down_then_back() {
    let mut w = World::new(true);
    healthy(&mut w);
    walk(
        &mut w,
        "registry down",
        "101",
        |w| w.real_registry().stop(),
        |w| w.real_registry().restart(),
        true,
    );
}

/// The stand-in switched into `modes` one after another, each its own fault.
fn registry_answers(modes: &[(&str, Mode)]) {
    let mut w = World::new(false);
    healthy(&mut w);
    for (i, (fault, mode)) in modes.iter().enumerate() {
        let tag = (101 + i).to_string();
        walk(
            &mut w,
            fault,
            &tag,
            |w| w.set_mode(*mode),
            |w| w.set_mode(Mode::Up),
            false,
        );
    }
}

#[test]
#[ignore = "real servers: run by scripts/test"]
fn registry_5xx() {
    registry_answers(&[("registry 500", Mode::Status(500))]);
}

#[test]
#[ignore = "real servers: run by scripts/test"]
fn registry_429() {
    registry_answers(&[("registry 429", Mode::TooMany)]);
}

#[test]
#[ignore = "real servers: run by scripts/test"]
fn registry_garbage_and_truncated() {
    registry_answers(&[
        ("registry garbage", Mode::Garbage),
        ("registry truncated body", Mode::Truncated),
    ]);
}

#[test]
#[ignore = "real servers: run by scripts/test"]
fn registry_stall() {
    registry_answers(&[("registry stall", Mode::Stall)]);
}

#[test]
#[ignore = "real servers: run by scripts/test"]
fn git_down_and_git_refusing_the_password() {
    let mut w = World::new(false);
    healthy(&mut w);
    walk(
        &mut w,
        "git down",
        "101",
        |w| w.git.stop(),
        |w| w.git.restart(),
        false,
    );
    let password = w.git.password.clone();
    walk(
        &mut w,
        "git auth",
        "102",
        |w| w.git.set_password("not-what-tagflow-has"),
        move |w| w.git.set_password(&password),
        false,
    );
    assert!(
        !w.logs().contains(&w.git.password),
        "the git password leaked into the logs"
    );
}

/// Seeded from the clock unless `TAGFLOW_FAULT_SEED` is set; printed so a failure replays.
fn rng() -> impl FnMut(u64) -> u64 {
    let seed = std::env::var("TAGFLOW_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("faults: TAGFLOW_FAULT_SEED={seed}");
    let mut x = seed | 1;
    move |below| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % below
    }
}

/// `kill -9` at random points of `tagflow run` — starting, fetching, committing, pushing,
/// announcing — with a new tag before each start. Afterwards the newest tag is in, no tag was
/// committed twice, every commit parses, and every commit is announced exactly once.
#[test]
#[ignore = "real servers: run by scripts/test"]
fn kill_9_at_random_points() {
    let mut w = World::new(false);
    let mut random = rng();
    let rounds = 12;
    for round in 0..rounds {
        w.add_tag(&(100 + round).to_string());
        let pw = common::p(&w.local.dir.path().join("git-password"));
        let run = common::Running::start(
            &w.git.url,
            &w.local,
            &[
                "--git-username",
                &w.git.username,
                "--git-password-file",
                &pw,
            ],
        );
        w.run = Some(run);
        std::thread::sleep(Duration::from_millis(200 + random(1800)));
        w.kill9();
    }
    w.start();
    let newest = (100 + rounds - 1).to_string();
    w.wait_committed(&newest);
    let done = w.running().cycles_done();
    w.running().wait_cycles(done + 3);
    w.check_history();
    let ours: Vec<_> = w
        .repo
        .log("main")
        .into_iter()
        .filter(|c| c.subject.starts_with("tagflow:"))
        .collect();
    assert!(!ours.is_empty());
    for c in &ours {
        let said = format!("tagflow pushed {}", &c.sha[..7]);
        w.wait_slack(&said, 1);
        assert_eq!(w.slack.count(&said), 1, "{said}: {:#?}", w.slack.all());
    }
    eprintln!(
        "faults: kill -9 × {rounds}: {} commits, each announced once",
        ours.len()
    );
}

/// Slack down (503) while a commit lands and for a while after: the commit is not held up,
/// and once Slack is back it hears of the commit exactly once.
#[test]
#[ignore = "real servers: run by scripts/test"]
fn slack_down_loses_no_announcement() {
    let mut w = World::new(false);
    healthy(&mut w);
    w.slack
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    w.add_tag("101");
    w.wait_committed("101");
    let done = w.running().cycles_done();
    w.running().wait_cycles(done + 5);
    w.slack
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let sha = w.repo.log("main")[0].sha[..7].to_owned();
    let said = format!("tagflow pushed {sha}");
    w.wait_slack(&said, 1);
    let done = w.running().cycles_done();
    w.running().wait_cycles(done + 3);
    assert_eq!(w.slack.count(&said), 1, "{:#?}", w.slack.all());
    assert_eq!(w.committed("101"), 1);
    assert_eq!(w.slack.alerts(), 0, "Slack down is no cycle failure");
    w.check_history();
}

/// A tmpfs mounted on the work dir, filled to the last byte while a new tag waits, then
/// emptied. Needs root (mount); tier 2 runs as root.
#[test]
#[ignore = "real servers: run by scripts/test"]
fn disk_full_then_freed() {
    let mut w = World::new(false);
    let work = w.local.workdir();
    std::fs::create_dir_all(&work).expect("work dir");
    let _mount = Tmpfs::mount(&work, "32m");
    healthy(&mut w);
    let filler = work.join("filler");
    walk(
        &mut w,
        "disk full",
        "101",
        |_| fill(&filler),
        |_| std::fs::remove_file(&filler).expect("free the disk"),
        false,
    );
    let alerts: Vec<String> = w
        .slack
        .all()
        .into_iter()
        .filter(|t| t.contains("a cycle failed"))
        .collect();
    assert!(
        alerts.iter().any(|t| t.contains("No space left on device")),
        "the alert names the full disk: {alerts:#?}"
    );
}

/// Write `path` until the file system says it is full.
fn fill(path: &std::path::Path) {
    use std::io::Write as _;
    let mut f = std::fs::File::create(path).expect("filler");
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.flush();
}

/// A tmpfs mount, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path, size: &str) -> Tmpfs {
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "the disk-full case mounts a tmpfs and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A writer pushing to the same branch over smart HTTP as fast as it can for 5 s while a new
/// tag waits: tagflow lands its commit once (during the race or right after it), and every
/// commit the writer pushed is still there. How long tagflow can be starved by a writer that
/// never stops is issue 11 §3's measure, not this fault's.
#[test]
#[ignore = "real servers: run by scripts/test"]
fn a_racing_writer_loses_nothing() {
    let mut w = World::new(false);
    healthy(&mut w);
    let clone = w.local.dir.path().join("writer");
    let url = w.git.url_with_credentials();
    testbed::git(w.local.dir.path(), &["clone", "-q", &url, "writer"]);
    w.add_tag("101");
    let race = Instant::now();
    let writer = std::thread::spawn(move || {
        let git = |args: &[&str]| testbed::try_git(&clone, args, &[]).is_ok();
        let mut pushed = Vec::new();
        let mut i = 0;
        while race.elapsed() < Duration::from_secs(5) {
            i += 1;
            let msg = format!("writer {i}");
            let _ = std::fs::write(clone.join("writer.txt"), format!("{i}\n"));
            if !(git(&["add", "writer.txt"]) && git(&["commit", "-q", "-m", &msg])) {
                continue;
            }
            let landed = git(&["push", "-q", "origin", "HEAD:main"])
                || (git(&["pull", "-q", "--rebase", "origin", "main"])
                    && git(&["push", "-q", "origin", "HEAD:main"]));
            if landed {
                pushed.push(msg);
            }
        }
        pushed
    });
    let pushed = writer.join().expect("writer");
    let during = w.committed("101") > 0;
    w.wait_committed("101");
    let done = w.running().cycles_done();
    w.running().wait_cycles(done + 2);
    let log: Vec<String> = w.repo.log("main").into_iter().map(|c| c.subject).collect();
    for m in &pushed {
        assert!(log.contains(m), "the writer's {m:?} was lost");
    }
    assert!(!pushed.is_empty(), "the writer never pushed");
    assert_eq!(w.committed("101"), 1);
    assert!(w.slack.alerts() <= 1, "{:#?}", w.slack.all());
    w.check_history();
    eprintln!(
        "faults: racing writer: {} writer pushes in 5 s; tagflow landed {} the race, once",
        pushed.len(),
        if during { "during" } else { "right after" }
    );
}
