//! Git behaviour end to end: ordering by commit ancestry, and racing writers.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use tagflow::config::GitConfig;
use tagflow::gitops::{Checkout, GitAuth, Pushed};
use tagflow::plan::{Edit, Prepared};
use testbed::{BareRepo, Registry, RegistryOpts};

/// Dev's values: a marked tag and a line tagflow does not own.
const MARKED: &str =
    "image:\n  tag: a1b2c3d # {\"$imagepolicy\": \"flux-system:app:tag\"}\nreplicaCount: 1\n";

/// A repo whose dev values carry a marked tag a1b2c3d and another line, and tagflow's bare
/// checkout of it in `local`'s work dir.
fn marked_checkout(local: &Local) -> (BareRepo, Checkout) {
    let repo = BareRepo::new(&[("envs/dev/patch.yaml", MARKED)]);
    let checkout = Checkout::open(
        &file_url(&repo),
        "main",
        &local.workdir(),
        GitAuth::default(),
    )
    .expect("open");
    (repo, checkout)
}

/// The edit these tests plan: dev's tag a1b2c3d → 0f1e2d3 in the file as `snap` has it.
fn set_tag(snap: &tagflow::gitops::Snapshot<'_>) -> Prepared {
    let text = String::from_utf8(
        snap.read("envs/dev/patch.yaml")
            .expect("read")
            .expect("exists"),
    )
    .expect("utf8");
    Prepared {
        edits: vec![Edit {
            path: "envs/dev/patch.yaml".into(),
            content: text.replace("a1b2c3d", "0f1e2d3").into_bytes(),
        }],
        message: "set tag".into(),
        changes: Vec::new(),
    }
}

/// Tags whose build times disagree with commit order are ordered by the commits; a tag whose
/// commit is not on the branch is ignored.
#[test]
#[ignore = "real servers: run by scripts/test"]
fn order_git_follows_commit_ancestry_not_build_time() {
    let source = BareRepo::new(&[("main.go", "package main\n")]);
    let c2 = source.commit_files("main", &[("main.go", "package main // 2\n")], "second");
    let c3 = source.commit_files("main", &[("main.go", "package main // 3\n")], "third");
    let off = source.commit_files("feature", &[("x.go", "package x\n")], "off the branch");
    let c1 = source.log("main").last().expect("root").sha.clone();
    let short = |s: &str| s[..7].to_owned();

    let reg = Registry::start(RegistryOpts::default());
    // Build times say c1 is newest and the off-branch commit newer still: both must lose.
    reg.push_image("team/app", &short(&c1), "2024-01-01T13:00:00Z", None);
    reg.push_image("team/app", &short(&c2), "2024-01-01T10:00:00Z", None);
    reg.push_image("team/app", &short(&c3), "2024-01-01T11:00:00Z", None);
    reg.push_image("team/app", &short(&off), "2024-01-01T14:00:00Z", None);

    let local = Local::new();
    let policy = format!(
        "{{tags: '^[0-9a-f]{{7}}$', order: git}}\n    source: {{url: \"{}\", branch: main}}",
        file_url(&source)
    );
    let repo = BareRepo::new(&[
        ("config/tagflow.yaml", &config(&reg, &local, &policy, "")),
        (
            "envs/dev/patch.yaml",
            &dev_values(&format!("{}/team/app", reg.host)),
        ),
    ]);
    let out = once(&file_url(&repo), &local, &[]);
    let l = ok(&out);
    let dev = repo.read("main", "envs/dev/patch.yaml").expect("file");
    assert!(
        dev.contains(&format!("tag: {} #", short(&c3))),
        "want head commit {}; got:\n{dev}\n{l}",
        short(&c3)
    );
    assert!(l.contains("its commit is the branch head"), "{l}");

    // A new commit on the branch without an image yet changes nothing; once its image is
    // pushed (with an *older* build time), it wins.
    let c4 = source.commit_files("main", &[("main.go", "package main // 4\n")], "fourth");
    ok(&once(&file_url(&repo), &local, &[]));
    assert!(
        repo.read("main", "envs/dev/patch.yaml")
            .expect("file")
            .contains(&short(&c3))
    );
    reg.push_image("team/app", &short(&c4), "2023-06-01T00:00:00Z", None);
    ok(&once(&file_url(&repo), &local, &[]));
    assert!(
        repo.read("main", "envs/dev/patch.yaml")
            .expect("file")
            .contains(&format!("tag: {} #", short(&c4)))
    );
}

/// The cycle hands over the head it fetched a moment ago: nothing to change is decided on it
/// without a second fetch, and a head that moved since is a rejected push, re-applied on a
/// fresh fetch like any other race.
#[test]
fn a_known_head_is_planned_on_without_fetching_and_a_stale_one_costs_one_retry() {
    let local = Local::new();
    let (repo, checkout) = marked_checkout(&local);
    let known = checkout.fetch().expect("fetch");
    let theirs = repo.commit_files(
        "main",
        &[(
            "envs/dev/patch.yaml",
            &MARKED.replace("replicaCount: 1", "replicaCount: 3"),
        )],
        "scale up",
    );
    // Idle: planned on the known head, so the commit that landed since is not even fetched.
    let idle = checkout
        .commit_and_push(
            &GitConfig::default(),
            Some(known),
            |_| -> Result<Option<Prepared>, std::io::Error> { Ok(None) },
        )
        .expect("idle");
    assert!(matches!(idle, Pushed::Unchanged { head } if head == known));
    // A change planned on the stale head: rejected, fetched, planned again on theirs.
    let mut heads = Vec::new();
    let done = checkout
        .commit_and_push(
            &GitConfig::default(),
            Some(known),
            |snap| -> Result<_, std::io::Error> {
                heads.push(snap.commit.to_string());
                Ok(Some(set_tag(snap)))
            },
        )
        .expect("pushed");
    let Pushed::Committed { attempts, .. } = done else {
        panic!("expected a commit")
    };
    assert_eq!(
        attempts, 2,
        "the stale head's push was rejected, never forced"
    );
    assert_eq!(heads, vec![known.to_string(), theirs.clone()]);
    let file = repo.read("main", "envs/dev/patch.yaml").expect("file");
    assert!(
        file.contains("tag: 0f1e2d3") && file.contains("replicaCount: 3"),
        "{file}"
    );
}

/// A writer that lands between tagflow's fetch and push forces a rejection: tagflow fetches,
/// re-applies its values on top of that commit (same file, other line) and pushes — never forced.
#[test]
fn a_rejected_push_is_reapplied_on_the_new_head() {
    let local = Local::new();
    let (repo, checkout) = marked_checkout(&local);
    let mut calls = 0;
    let result = checkout
        .commit_and_push(
            &GitConfig::default(),
            None,
            |snap| -> Result<_, std::io::Error> {
                calls += 1;
                if calls == 1 {
                    // Someone else edits the same file after our fetch.
                    repo.commit_files(
                        "main",
                        &[(
                            "envs/dev/patch.yaml",
                            &MARKED.replace("replicaCount: 1", "replicaCount: 3"),
                        )],
                        "scale up",
                    );
                }
                let text = String::from_utf8(
                    snap.read("envs/dev/patch.yaml")
                        .expect("read")
                        .expect("exists"),
                )
                .expect("utf8");
                let content = text.replace("a1b2c3d", "0f1e2d3").into_bytes();
                Ok(Some(Prepared {
                    edits: vec![Edit {
                        path: "envs/dev/patch.yaml".into(),
                        content,
                    }],
                    message: "set tag".into(),
                    changes: Vec::new(),
                }))
            },
        )
        .expect("pushed");
    let Pushed::Committed { attempts, .. } = result else {
        panic!("expected a commit")
    };
    assert_eq!(attempts, 2, "first push rejected, second accepted");
    assert_eq!(calls, 2);
    let log = repo.log("main");
    assert_eq!(log.len(), 3);
    assert_eq!(
        (log[0].subject.as_str(), log[1].subject.as_str()),
        ("set tag", "scale up")
    );
    assert_eq!(
        log[0].parents,
        vec![log[1].sha.clone()],
        "ours sits on top of theirs"
    );
    let file = repo.read("main", "envs/dev/patch.yaml").expect("file");
    assert!(
        file.contains("tag: 0f1e2d3") && file.contains("replicaCount: 3"),
        "{file}"
    );
}

/// A branch that moves on every one of tagflow's pushes for longer than the old 8 attempts:
/// the retries run for a time budget with short pauses, not a count, so tagflow outlasts the
/// burst and lands on top of all of it (issue 11 §3).
#[test]
fn a_burst_of_lost_races_longer_than_eight_is_outlasted() {
    let local = Local::new();
    let (repo, checkout) = marked_checkout(&local);
    let lost = 12;
    let mut calls = 0;
    let started = std::time::Instant::now();
    let result = checkout
        .commit_and_push(
            &GitConfig::default(),
            None,
            |snap| -> Result<_, std::io::Error> {
                calls += 1;
                if calls <= lost {
                    // Another writer lands between this fetch and the push.
                    repo.commit_files(
                        "main",
                        &[("notes/other.txt", &format!("{calls}\n"))],
                        &format!("other {calls}"),
                    );
                }
                Ok(Some(set_tag(snap)))
            },
        )
        .expect("outlasted the burst");
    let Pushed::Committed { attempts, .. } = result else {
        panic!("expected a commit")
    };
    assert_eq!(attempts, lost + 1);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "short pauses: {:?}",
        started.elapsed()
    );
    let log = repo.log("main");
    assert_eq!(log[0].subject, "set tag");
    assert_eq!(log[0].parents, vec![log[1].sha.clone()], "on top of theirs");
    for i in 1..=lost {
        assert!(
            log.iter().any(|c| c.subject == format!("other {i}")),
            "other {i} lost"
        );
    }
    assert_eq!(log.iter().filter(|c| c.subject == "set tag").count(), 1);
}

/// Many rounds of tagflow committing while another writer pushes as fast as it can: every
/// commit of both writers ends up in the history and tagflow's values are applied.
#[test]
#[ignore = "real servers: run by scripts/test"]
fn a_concurrent_writer_never_loses_a_commit() {
    let reg = Registry::start(RegistryOpts::default());
    reg.push_image("team/app", "a1b2c3d", T1, None);
    let local = Local::new();
    let repo = Arc::new(BareRepo::new(&[
        (
            "config/tagflow.yaml",
            &config(&reg, &local, "{tags: '^[0-9a-f]{7}$', order: built}", ""),
        ),
        (
            "envs/dev/patch.yaml",
            &dev_values(&format!("{}/team/app", reg.host)),
        ),
    ]));
    let rounds = 8;
    let mut other = Vec::new();
    let mut rejected = 0;
    let mut last_tag = String::new();
    for round in 0..rounds {
        let tag = format!("{:07x}", 0xabc0000 + round);
        reg.push_image(
            "team/app",
            &tag,
            &format!("2024-02-01T00:{round:02}:00Z"),
            None,
        );
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (repo, stop) = (repo.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut shas = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) && i < 20 {
                    let name = format!("notes/r{round}-{i}.txt");
                    shas.push(repo.commit_files(
                        "main",
                        &[(&name, "x\n")],
                        &format!("note {round}-{i}"),
                    ));
                    i += 1;
                }
                shas
            })
        };
        let out = once(&file_url(&repo), &local, &[]);
        stop.store(true, Ordering::Relaxed);
        let l = ok(&out);
        rejected += l.matches("push rejected").count();
        other.extend(writer.join().expect("writer"));
        last_tag = tag;
    }
    let log = repo.log("main");
    let shas: std::collections::HashSet<&str> = log.iter().map(|c| c.sha.as_str()).collect();
    for sha in &other {
        assert!(
            shas.contains(sha.as_str()),
            "the other writer's commit {sha} was lost"
        );
    }
    let ours = log.iter().filter(|c| c.author_name == "tagflow").count();
    assert_eq!(ours, rounds as usize, "one tagflow commit per round");
    let dev = repo.read("main", "envs/dev/patch.yaml").expect("file");
    assert!(dev.contains(&format!("tag: {last_tag} #")), "{dev}");
    // Linear history: nothing was force-pushed over (every commit has one parent but the root).
    assert!(log.iter().all(|c| c.parents.len() <= 1));
    eprintln!(
        "{} other commits, {} tagflow commits, {rejected} rejected pushes re-applied",
        other.len(),
        ours
    );
}
