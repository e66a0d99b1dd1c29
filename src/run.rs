//! `tagflow run` as a library function (the mini-redis shape): serve on `listener`, run cycles
//! and the infra watcher until `shutdown` resolves, then stop in order — a registry scan in
//! progress is cancelled at once (a stalled registry never holds shutdown) while a commit being
//! pushed finishes (a commit is never cut in half), the Lease is released so another replica takes
//! over at once, terraform runs in progress finish, queued Slack messages are flushed, and the
//! HTTP server stops last.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cycle::Reconciler;
pub use crate::cycle::StateStore;
use crate::cycle::run_loop::run_loop;
use crate::gitops::RepoOptions;
use crate::k8s::{ClusterError, leadership};
use crate::metrics::Metrics;
use crate::{infra, notify, server};

/// Leader election on a Lease (turns rollouts on).
#[derive(Debug, Clone)]
pub struct LeaseOptions {
    /// `NAMESPACE/NAME`.
    pub name: String,
    /// This replica's name in the Lease.
    pub identity: String,
    /// Lease duration.
    pub duration: Duration,
    /// Where the rollout state lives: on this Lease or in the config repo.
    pub state: StateStore,
}

/// What `run` needs besides the listener.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The config repo.
    pub repo: RepoOptions,
    /// Leader election, if any.
    pub lease: Option<LeaseOptions>,
    /// How long queued Slack messages may take to go out on shutdown.
    pub flush: Duration,
    /// Bearer token the status page (`/`, `/api/status`) requires; open when `None`.
    pub status_token: Option<crate::secret::SecretRef>,
}

/// Why `run` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Leader election could not start.
    #[error("failed to start leader election: {0}")]
    Lease(#[from] ClusterError),
    /// The HTTP server failed.
    #[error("HTTP server failed: {0}")]
    Http(#[source] std::io::Error),
    /// A task panicked.
    #[error("{0} task failed: {1}")]
    Task(&'static str, String),
}

/// Run until `shutdown` resolves; see the module docs for the shutdown order.
pub async fn run(
    opts: RunOptions,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let metrics = Metrics::new();
    let (notifier, worker) = notify::spawn();
    let election_stop = CancellationToken::new();
    let (lead, election) = match &opts.lease {
        Some(l) => {
            let (lead, task) =
                leadership::start(&l.name, &l.identity, l.duration, election_stop.clone()).await?;
            (Some((lead, l.state)), Some(task))
        }
        None => (None, None),
    };
    let reconciler = Reconciler::new(opts.repo, metrics.clone(), Some(notifier), lead);
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let ready = Arc::new(AtomicBool::new(false));
    let state = Arc::new(server::ServerState {
        metrics: metrics.clone(),
        ready: ready.clone(),
        current: reconciler.current.clone(),
        trigger: tx,
        board: Some(Arc::new(server::board::Board {
            repo: reconciler.repo.clone(),
            current: reconciler.current.clone(),
            token: opts.status_token.clone(),
            activity: reconciler.activity.clone(),
        })),
    });
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(addr = %addr, "serving / (status) /api/status /healthz /readyz /metrics /webhook/registry");
    }
    let stop = CancellationToken::new();
    let http_stop = stop.clone();
    let app = server::router(state);
    let http = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { http_stop.cancelled().await })
            .await
    });
    let loop_stop = CancellationToken::new();
    let signalled = loop_stop.clone();
    let scans = reconciler.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!(
            "shutdown requested (signal received): cancelling the registry scan in progress (a commit being pushed finishes), then exiting"
        );
        scans.stop_scans();
        signalled.cancel();
    });
    let watcher = infra::Watcher::new(infra::Host {
        repo: reconciler.repo.clone(),
        current: reconciler.current.clone(),
        poster: reconciler.poster.clone(),
        metrics: metrics.clone(),
        activity: reconciler.activity.clone(),
    });
    let watcher_task = tokio::spawn(watcher.run(loop_stop.clone()));
    run_loop(reconciler.clone(), ready, rx, loop_stop.clone()).await;
    // After the last cycle: release the Lease so another replica takes over at once.
    election_stop.cancel();
    if let Some(task) = election {
        task.await
            .map_err(|e| RunError::Task("leader election", e.to_string()))?;
    }
    // Terraform runs in progress finish (each within its own timeout): an apply is never cut.
    watcher_task
        .await
        .map_err(|e| RunError::Task("infra watcher", e.to_string()))?;
    drop(reconciler);
    worker.flush(opts.flush).await;
    stop.cancel();
    http.await
        .map_err(|e| RunError::Task("HTTP server", e.to_string()))?
        .map_err(RunError::Http)
}

/// Resolves on SIGTERM or SIGINT: the `shutdown` future the `tagflow run` binary passes to [`run`].
pub async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
