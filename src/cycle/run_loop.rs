//! The `run` loop: a cycle, then wait for the interval, a webhook trigger, a watch event or
//! shutdown. Shutdown cancels a cycle's registry scan at once ([`Reconciler::stop_scans`],
//! which `run` calls) and is otherwise looked at between cycles, so a commit being pushed
//! always finishes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::pipeline::log_outcome;
use super::{Reconciler, Scope, error_policy};

/// Interval used before any config has loaded.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// Run cycles until `shutdown` is cancelled. `ready` turns true after the first cycle that
/// ran with a good config, whether or not every image could be scanned: readiness says the
/// process works, `tagflow_cycles_total{result}` says how each cycle went.
pub async fn run_loop(
    reconciler: Arc<Reconciler>,
    ready: Arc<AtomicBool>,
    mut triggers: mpsc::Receiver<BTreeSet<String>>,
    shutdown: CancellationToken,
) {
    let mut scope = Scope::All;
    let mut failures = 0u32;
    let wake = reconciler.wake();
    loop {
        let result = reconciler.cycle(&scope).await;
        log_outcome(&result);
        // What the cycle loaded (values files, YAML trees, the plan) is dropped by now: hand
        // the pages back, or glibc keeps a large file's peak for the life of the process.
        crate::memory::give_back();
        match &result {
            Ok(r) => {
                ready.store(true, Ordering::Relaxed);
                if r.retry_soon() {
                    failures = failures.saturating_add(1);
                } else {
                    failures = 0;
                }
            }
            Err(_) => failures = failures.saturating_add(1),
        }
        let interval = reconciler.config().map_or(DEFAULT_INTERVAL, |c| c.interval);
        let mut delay = error_policy(&result, interval, failures.saturating_sub(1));
        if let Ok(Some(soon)) = result.as_ref().map(|r| r.requeue) {
            // A rollout in flight looks again sooner (never spinning: at least a second).
            delay = delay.min(soon.max(Duration::from_secs(1)));
        }
        tracing::debug!(delay = %humantime::format_duration(delay), failures, "next cycle");
        scope = tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(delay) => Scope::All,
            // A release changed or leadership moved: look at rollouts now, without a
            // registry scan (the next tick scans as usual).
            () = wake.notified() => Scope::Images(BTreeSet::new()),
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
