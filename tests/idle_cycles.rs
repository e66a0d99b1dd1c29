//! Observe, then skip (issue 10): an unchanged world costs one tags request per repository and
//! no other work — no policy compiled again, no cache file written, no plan of an unchanged
//! head — while anything that did change (a new tag, a hand edit moving the head) is still
//! acted on. In-process: a scripted registry counts the requests, the cycles run on a
//! [`Reconciler`] over a `file://` repo.

mod common;

use std::time::Duration;

use common::{Local, file_url, scripted_registry};
use tagflow::cycle::{Outcome, Reconciler, Scope};
use tagflow::gitops::{GitAuth, RepoOptions};
use tagflow::metrics::Metrics;
use testbed::BareRepo;

const IMAGES: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_cycles_cost_one_listing_per_repository_and_nothing_else() {
    let tags = serde_json::json!(["a1b2c3d", "b2c3d4e"]);
    let (server, _) = scripted_registry(tags, Duration::ZERO);
    let host = server.base_url.trim_start_matches("http://").to_owned();
    let mut cfg = format!(
        "interval: 1h\nregistries:\n  - {{host: \"{host}\", insecure: true, rateLimit: 10000, concurrency: 8}}\nimages:\n"
    );
    let mut values = String::new();
    for i in 0..IMAGES {
        // Two repositories, one policy for all: the policy compiles once.
        let repo = if i % 2 == 0 { "team/a" } else { "team/b" };
        cfg.push_str(&format!(
            "  app{i:02}: {{repository: {host}/{repo}, policy: {{tags: '^[0-9a-f]{{7}}$', order: alphabetical}}}}\n"
        ));
        values.push_str(&format!(
            "app{i:02}:\n  image:\n    repository: {host}/{repo}\n    tag: a1b2c3d # {{\"$imagepolicy\": \"flux-system:app{i:02}:tag\"}}\n"
        ));
    }
    cfg.push_str("environments:\n  dev: {file: envs/dev/patch.yaml}\n");
    let repo = BareRepo::new(&[
        ("config/tagflow.yaml", &cfg),
        ("envs/dev/patch.yaml", &values),
    ]);
    let local = Local::new();
    let work = local.dir.path().join("work");
    let opts = RepoOptions::new(
        file_url(&repo),
        "main".into(),
        "config/tagflow.yaml".into(),
        Some(work.clone()),
        GitAuth::default(),
    );
    let rec = Reconciler::new(opts, Metrics::new(), None, None);
    let listings = || {
        server
            .requests()
            .iter()
            .filter(|r| r.path.contains("/tags/list"))
            .count()
    };

    let first = rec.cycle(&Scope::All).await.expect("first cycle");
    assert_eq!(first.outcome(), Outcome::Committed);
    assert_eq!(
        repo.read("main", "envs/dev/patch.yaml")
            .expect("file")
            .matches("tag: b2c3d4e #")
            .count(),
        IMAGES
    );
    assert_eq!(listings(), 2, "one listing per repository");
    let cache = work.join("registry-cache.json");
    assert!(cache.exists(), "what was learnt is saved");
    assert_eq!(rec.policy_compiles(), 1, "one policy for {IMAGES} images");

    // Idle cycles: the same requests as the first one's listings, nothing written.
    std::fs::remove_file(&cache).expect("remove the cache");
    let before = server.requests().len();
    for _ in 0..3 {
        let idle = rec.cycle(&Scope::All).await.expect("idle cycle");
        assert_eq!(idle.outcome(), Outcome::Unchanged);
    }
    let during: Vec<String> = server.requests()[before..]
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(
        during.len(),
        6,
        "one tags request per repository per cycle: {during:?}"
    );
    assert!(
        during.iter().all(|p| p.contains("/tags/list")),
        "{during:?}"
    );
    assert!(!cache.exists(), "an unchanged cache is not written again");
    assert_eq!(rec.policy_compiles(), 1, "no policy compiled again");
    assert_eq!(
        rec.reused_decisions(),
        3 * IMAGES as u64,
        "same listing, policy and quarantine: the same decision, not made again"
    );
    assert_eq!(repo.log("main").len(), 2, "idle cycles commit nothing");

    assert_eq!(
        rec.plans_skipped(),
        3,
        "the first cycle's commit of these picks settled them: no idle cycle plans"
    );

    // A new process on the same work dir (a `once`, a restarted `run`) does not plan the same
    // head and picks again either.
    let next = Reconciler::new(
        RepoOptions::new(
            file_url(&repo),
            "main".into(),
            "config/tagflow.yaml".into(),
            Some(work.clone()),
            GitAuth::default(),
        ),
        Metrics::new(),
        None,
        None,
    );
    next.one_cycle();
    let restarted = next
        .cycle(&Scope::All)
        .await
        .expect("a new process's cycle");
    assert_eq!(restarted.outcome(), Outcome::Unchanged);
    assert_eq!(
        next.plans_skipped(),
        1,
        "the work dir remembers the unchanged plan"
    );
    drop(next);

    // A hand edit moves the head: the unchanged-plan memo must not hide it.
    repo.commit_files(
        "main",
        &[("envs/dev/patch.yaml", &values)],
        "back to a1b2c3d by hand",
    );
    let again = rec.cycle(&Scope::All).await.expect("cycle after the edit");
    assert_eq!(again.outcome(), Outcome::Committed, "the pin is set again");
    assert_eq!(
        rec.reused_decisions(),
        4 * IMAGES as u64,
        "a reused decision still plans against the moved head"
    );
    assert_eq!(repo.log("main").len(), 4);
    assert_eq!(
        repo.read("main", "envs/dev/patch.yaml")
            .expect("file")
            .matches("tag: b2c3d4e #")
            .count(),
        IMAGES
    );
}
