//! Two replicas sharing rollout state in git (no Lease) race for 100 rounds. Each round the
//! registry gets a newer tag; both replicas run cycles at the same time until dev and prod run
//! it. Counted afterwards: one commit per environment and tag (no duplicate), and a state commit
//! on `refs/tagflow/state` for every round's healthy prod (no state update lost), the state
//! history linear (every save was a compare-and-swap on the one before).
//!
//! In-process (two `Reconciler`s, an in-process registry and smoke endpoint, a bare repo made
//! with git2), so it runs in plain `cargo test`.

mod inproc;

use std::path::Path;
use std::sync::{Arc, Mutex};

use inproc::bare_repo;
use sha2::{Digest, Sha256};
use tagflow::cycle::{Reconciler, Scope};
use tagflow::gitops::{GitAuth, RepoOptions};
use tagflow::metrics::Metrics;
use testbed::{Response, Scripted};

const ROUNDS: usize = 100;
/// Cycles per round before giving up: a round needs about four (commit dev, smoke, promote,
/// smoke); more means the replicas keep undoing each other.
const CYCLES_PER_ROUND: usize = 12;

/// The image config of `tag`: its own, so each tag has its own digest.
fn config_blob(tag: &str) -> String {
    serde_json::json!({"created": "2024-01-01T00:00:00Z", "architecture": "amd64", "os": "linux", "config": {"Labels": {"tag": tag}}}).to_string()
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A registry whose tags are `tags`.
fn registry(tags: Arc<Mutex<Vec<String>>>) -> Scripted {
    Scripted::start(move |req| {
        let tags = tags.lock().expect("tags").clone();
        if req.path.ends_with("/tags/list") {
            Response::json(200, &serde_json::json!({"name": "team/app", "tags": tags}))
        } else if let Some((_, tag)) = req.path.split_once("/manifests/") {
            let config = config_blob(tag);
            let body = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config.as_bytes()), "size": config.len()},
                "layers": []
            })
            .to_string();
            Response::text(200, &body)
                .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                .header("Docker-Content-Digest", &sha256(body.as_bytes()))
        } else if let Some((_, digest)) = req.path.split_once("/blobs/") {
            match tags
                .iter()
                .map(|t| config_blob(t))
                .find(|c| sha256(c.as_bytes()) == digest)
            {
                Some(c) => Response::text(200, &c),
                None => Response::new(404),
            }
        } else {
            Response::new(404)
        }
    })
}

fn replica(url: &str, work: &Path, metrics: Arc<Metrics>) -> Arc<Reconciler> {
    let opts = RepoOptions::new(
        url.to_owned(),
        "main".into(),
        "config/tagflow.yaml".into(),
        Some(work.to_path_buf()),
        GitAuth::default(),
    );
    Reconciler::new(opts, metrics, None, None)
}

/// Messages of the commits on `main`, newest first.
fn messages(repo: &git2::Repository) -> Vec<String> {
    let mut walk = repo.revwalk().expect("walk");
    walk.push_ref("refs/heads/main").expect("main");
    walk.map(|id| {
        let c = repo.find_commit(id.expect("id")).expect("commit");
        c.message().unwrap_or_default().to_owned()
    })
    .collect()
}

/// Every saved state document on `refs/tagflow/state`, oldest first, and whether each state
/// commit has exactly one parent (the one it was read from) except the first.
fn state_history(repo: &git2::Repository) -> (Vec<serde_json::Value>, bool) {
    let Ok(head) = repo.refname_to_id("refs/tagflow/state") else {
        return (Vec::new(), true);
    };
    let mut docs = Vec::new();
    let mut linear = true;
    let mut at = Some(repo.find_commit(head).expect("state commit"));
    while let Some(c) = at {
        let blob = c
            .tree()
            .expect("tree")
            .get_path(Path::new("state.json"))
            .and_then(|e| e.to_object(repo))
            .expect("state.json");
        let text = blob.as_blob().expect("blob").content().to_vec();
        docs.push(serde_json::from_slice(&text).expect("state json"));
        linear &= c.parent_count() <= 1;
        at = c.parents().next();
    }
    docs.reverse();
    (docs, linear)
}

fn phase_of(doc: &serde_json::Value, key: &str) -> (String, String) {
    let r = &doc["rollouts"][key];
    (
        r["pinned"]["tag"].as_str().unwrap_or_default().to_owned(),
        r["phase"].as_str().unwrap_or_default().to_owned(),
    )
}

/// The value of the sample `name` in a Prometheus text exposition (0 when absent).
fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_sharing_git_state_race_for_100_rounds_without_a_duplicate_or_a_lost_update() {
    let tags = Arc::new(Mutex::new(vec!["1".to_owned()]));
    let reg = registry(tags.clone());
    let smoke = Scripted::start(|_| Response::text(200, "ok"));
    let host = reg.base_url.trim_start_matches("http://").to_owned();
    let dir = tempfile::tempdir().expect("tempdir");
    let check = format!(
        "    smoke: {{url: '{}', expect: {{status: 200}}, retries: 0, interval: 1s, deadline: 10s}}\n",
        smoke.url("/")
    );
    let cfg = format!(
        "interval: 1h\nregistries:\n  - {{host: \"{host}\", insecure: true}}\nimages:\n  app:\n    repository: {host}/team/app\n    policy: {{tags: '^[0-9]+$', order: numerical}}\nenvironments:\n  dev:\n    file: envs/dev/patch.yaml\n{check}  prod:\n    file: envs/prod/patch.yaml\n    promoteFrom: dev\n{check}"
    );
    let values = format!(
        "image:\n  repository: {host}/team/app\n  tag: \"1\" # {{\"$imagepolicy\": \"flux-system:app:tag\"}}\n  digest: \"\" # {{\"$imagepolicy\": \"flux-system:app:digest\"}}\n"
    );
    let repo = bare_repo(
        &dir.path().join("config.git"),
        &[
            ("config/tagflow.yaml", cfg.as_str()),
            ("envs/dev/patch.yaml", values.as_str()),
            ("envs/prod/patch.yaml", values.as_str()),
        ],
    );
    let url = format!("file://{}", dir.path().join("config.git").display());
    let metrics = [Metrics::new(), Metrics::new()];
    let a = replica(&url, &dir.path().join("a"), metrics[0].clone());
    let b = replica(&url, &dir.path().join("b"), metrics[1].clone());

    let mut cycles = 0;
    let mut slowest = 0;
    for round in 2..=ROUNDS + 1 {
        let tag = round.to_string();
        tags.lock().expect("tags").push(tag.clone());
        let mut done = false;
        for n in 1..=CYCLES_PER_ROUND {
            let (ra, rb) = tokio::join!(a.cycle(&Scope::All), b.cycle(&Scope::All));
            cycles += 2;
            assert!(ra.is_ok() || rb.is_ok(), "both failed: {ra:?} {rb:?}");
            let (docs, _) = state_history(&repo);
            if docs
                .last()
                .is_some_and(|d| phase_of(d, "prod/app") == (tag.clone(), "healthy".into()))
            {
                slowest = slowest.max(n);
                done = true;
                break;
            }
        }
        assert!(
            done,
            "round {round}: prod never got healthy at {tag} in {CYCLES_PER_ROUND} cycles"
        );
    }

    // No duplicate commit: each tag set once in dev and once in prod.
    let msgs = messages(&repo);
    for round in 2..=ROUNDS + 1 {
        for env in ["dev", "prod"] {
            let set = format!("Tagflow-Set: {env} app {host}/team/app:{round} ");
            let n = msgs.iter().filter(|m| m.contains(&set)).count();
            assert_eq!(n, 1, "{env} set to {round} by {n} commits");
        }
    }
    assert_eq!(
        msgs.len(),
        1 + 2 * ROUNDS,
        "init + a dev and a prod commit per round"
    );

    // No lost state update: each round's healthy prod reached git, in order, on a linear
    // history of compare-and-swap saves.
    let (docs, linear) = state_history(&repo);
    assert!(
        linear,
        "a state commit with two parents: a merge, not a CAS"
    );
    let mut healthy: Vec<usize> = docs
        .iter()
        .filter_map(|d| {
            let (t, p) = phase_of(d, "prod/app");
            (p == "healthy").then(|| t.parse().ok()).flatten()
        })
        .collect();
    healthy.dedup();
    let want: Vec<usize> = (2..=ROUNDS + 1).collect();
    assert_eq!(
        healthy, want,
        "every round's healthy prod was saved, in order"
    );
    let last = docs.last().expect("state");
    assert_eq!(
        phase_of(last, "dev/app"),
        ((ROUNDS + 1).to_string(), "promoted".into())
    );
    // The race was real: saves lost a compare-and-swap and were re-read.
    let lost: u64 = metrics
        .iter()
        .map(|m| counter(&m.encode(), "tagflow_errors_total{stage=\"state\"}"))
        .sum();
    let pushes: u64 = metrics
        .iter()
        .map(|m| counter(&m.encode(), "tagflow_commits_total"))
        .sum();
    assert_eq!(
        pushes,
        2 * ROUNDS as u64,
        "each commit pushed by one replica only"
    );
    eprintln!(
        "{ROUNDS} rounds: {cycles} cycles (at most {slowest} per replica per round), {} commits, {} state saves, {lost} saves lost the compare-and-swap and re-read",
        msgs.len(),
        docs.len()
    );
}
