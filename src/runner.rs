//! The `run` loop: a cycle, then wait for the interval, a webhook trigger or shutdown.
//!
//! Shutdown is only looked at between cycles, so a commit in progress always finishes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cycle::{Agent, Scope, error_policy};
use crate::server::Shared;

/// Interval used before any config has loaded.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// Run cycles until `shutdown` is cancelled.
pub async fn run_loop(
    agent: Arc<Agent>,
    shared: Arc<Shared>,
    mut triggers: mpsc::Receiver<BTreeSet<String>>,
    shutdown: CancellationToken,
) {
    let mut scope = Scope::All;
    let mut failures = 0u32;
    loop {
        let result = agent.cycle(&scope).await;
        let config = agent.config();
        if let Some(c) = &config {
            *shared
                .config
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(c.clone());
        }
        match &result {
            Ok(r) => {
                failures = 0;
                shared.ready.store(true, Ordering::Relaxed);
                match r.commit {
                    None if r.follower => {
                        tracing::debug!("cycle done: following (another replica holds the Lease)")
                    }
                    Some(c) => {
                        tracing::info!(commit = %crate::gitops::short(c), changes = r.changes.len(), "cycle done: committed")
                    }
                    None => {
                        tracing::info!(head = %crate::gitops::short(r.head), "cycle done: no change")
                    }
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::error!(error = %e, transient = e.is_transient(), "cycle failed");
            }
        }
        let interval = config.map_or(DEFAULT_INTERVAL, |c| c.interval);
        let mut delay = error_policy(&result, interval, failures);
        if let Ok(Some(soon)) = result.as_ref().map(|r| r.requeue) {
            // A rollout in flight looks again sooner (never spinning: at least a second).
            delay = delay.min(soon.max(Duration::from_secs(1)));
        }
        let wake = agent.deploy().map(|d| d.wake.clone());
        scope = tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(delay) => Scope::All,
            // A HelmRelease changed or leadership moved: look at rollouts now, without a
            // registry scan (the next tick scans as usual).
            () = async { match &wake { Some(w) => w.notified().await, None => std::future::pending().await } } => Scope::Images(BTreeSet::new()),
            Some(first) = triggers.recv() => {
                // Coalesce a burst of pushes into one scan.
                let mut images = first;
                while let Ok(more) = triggers.try_recv() {
                    images.extend(more);
                }
                Scope::Images(images)
            }
        };
    }
    tracing::info!("shutting down: no cycle in progress");
}
