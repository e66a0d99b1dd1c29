//! `tagflow::run::run` in-process, with an in-process registry and a git repo made with git2:
//! nothing outside Rust is needed, so this runs in plain `cargo test`.
//!
//! The shutdown order: a shutdown that arrives while a cycle is scanning cancels the scan at
//! once (a stalled registry never holds it), nothing is committed, then `run` returns and its
//! HTTP server is gone.

mod common;
mod inproc;

use std::time::Duration;

use inproc::{bare_repo, file_at_main};
use tagflow::gitops::{GitAuth, RepoOptions};
use tagflow::run::{RunOptions, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_mid_scan_cancels_it_commits_nothing_then_stops_the_server() {
    let server =
        common::scripted_registry(serde_json::json!(["b2c3d4e"]), Duration::from_secs(600)).0;
    let host = server.base_url.trim_start_matches("http://").to_owned();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = format!(
        "interval: 1h\nregistries:\n  - {{host: \"{host}\", insecure: true}}\nimages:\n  app:\n    repository: {host}/team/app\n    policy: {{tags: '.*', order: alphabetical}}\nenvironments:\n  dev:\n    file: envs/dev/patch.yaml\n"
    );
    let values = format!(
        "image:\n  repository: {host}/team/app\n  tag: a1b2c3d # {{\"$imagepolicy\": \"flux-system:app:tag\"}}\n"
    );
    let repo = bare_repo(
        &dir.path().join("config.git"),
        &[
            ("config/tagflow.yaml", &cfg),
            ("envs/dev/patch.yaml", &values),
        ],
    );
    let opts = RunOptions {
        repo: RepoOptions::new(
            format!("file://{}", dir.path().join("config.git").display()),
            "main".into(),
            "config/tagflow.yaml".into(),
            Some(dir.path().join("work")),
            GitAuth::default(),
        ),
        lease: None,
        status_token: None,
        flush: Duration::from_secs(1),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(opts, listener, async move {
        let _ = stopped.await;
    }));

    // The tags listing is in flight (stalled) when shutdown is asked for.
    let seen = tokio::task::spawn_blocking(move || {
        let n = server.wait_for(1, Duration::from_secs(30)).len();
        (server, n)
    })
    .await
    .expect("wait");
    let server = seen.0;
    assert_eq!(seen.1, 1, "the scan started");
    let health = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .expect("server up while running");
    assert!(health.status().is_success());
    stop.send(()).expect("run is listening for shutdown");

    // Generous: it takes well under a second; the stalled scan alone would take minutes.
    let result = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("run returns at once, not after the stalled scan")
        .expect("run task");
    assert!(result.is_ok(), "{result:?}");
    assert!(
        file_at_main(&repo, "envs/dev/patch.yaml").contains("tag: a1b2c3d #"),
        "nothing of the cancelled cycle was committed"
    );
    assert_eq!(
        repo.find_reference("refs/heads/main")
            .and_then(|r| r.peel_to_commit())
            .map(|c| c.parent_count())
            .ok(),
        Some(0),
        "main is still the initial commit"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the HTTP server stopped"
    );
    assert!(
        server.requests().iter().all(|r| r.path.starts_with("/v2/")),
        "only registry calls"
    );
}
