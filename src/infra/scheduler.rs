//! Running every workspace on its cron schedule, never one workspace twice at a time.
//!
//! The loop sleeps until the earliest next fire time (at most [`RESCAN`], so a config change is
//! seen), so a per-second schedule runs every second. Missed fire times fold into one run only
//! when the loop really was held up (the process paused, the runtime starved); the fold says
//! how late it was. "Now" comes from a [`Clock`], so tests drive the loop on tokio's paused
//! clock.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{RESCAN, Watcher, cron};

/// Shortest sleep between two looks (a guard against spinning on a clock that lags).
const MIN_WAIT: Duration = Duration::from_millis(50);

/// Where the scheduler reads the time.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Clock {
    /// The system's UTC clock (production: cron times are wall times).
    Wall,
    /// `utc0` plus the time tokio's clock moved since `t0`: paused and advanced by tests.
    #[allow(dead_code)] // Only the tests build this one.
    Tokio {
        /// The UTC time at `t0`.
        utc0: DateTime<Utc>,
        /// Tokio's clock at `utc0`.
        t0: Instant,
    },
}

impl Clock {
    fn now(self) -> DateTime<Utc> {
        match self {
            Self::Wall => Utc::now(),
            Self::Tokio { utc0, t0 } => {
                utc0 + chrono::Duration::from_std(t0.elapsed()).unwrap_or_default()
            }
        }
    }
}

/// A fire time that is due now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fire {
    /// Workspace.
    pub name: String,
    /// The fire time being served (the latest one passed).
    pub at: DateTime<Utc>,
    /// Earlier fire times that also passed unserved and fold into this run.
    pub missed: u32,
    /// How long after the oldest unserved fire time the loop looked: the length of the pause
    /// when `missed > 0`.
    pub late: Duration,
}

/// The last fire time served per workspace (pure: `now` is passed in).
#[derive(Debug)]
pub(crate) struct Anchors {
    started: DateTime<Utc>,
    served: BTreeMap<String, DateTime<Utc>>,
}

impl Anchors {
    /// Nothing served yet; fire times after `started` count.
    pub(crate) fn new(started: DateTime<Utc>) -> Self {
        Self {
            started,
            served: BTreeMap::new(),
        }
    }

    /// The runs due at `now` and how long to sleep before the next fire time of any of
    /// `schedules` (at most [`RESCAN`]).
    pub(crate) fn step(
        &mut self,
        schedules: &[(String, cron::Schedule)],
        now: DateTime<Utc>,
    ) -> (Vec<Fire>, Duration) {
        let mut wait = RESCAN;
        let mut fires = Vec::new();
        let left = |until: DateTime<Utc>| (until - now).to_std().unwrap_or_default();
        for (name, s) in schedules {
            let anchor = *self.served.entry(name.clone()).or_insert(self.started);
            let next = match cron::due(s, anchor, now) {
                cron::Due::Run { at, missed } => {
                    let oldest = s.next_after(anchor).unwrap_or(at);
                    self.served.insert(name.clone(), at);
                    fires.push(Fire {
                        name: name.clone(),
                        at,
                        missed,
                        late: (now - oldest).to_std().unwrap_or_default(),
                    });
                    cron::due(s, at, now)
                }
                waiting => waiting,
            };
            if let cron::Due::Wait { until } = next {
                wait = wait.min(left(until));
            }
        }
        (fires, wait.max(MIN_WAIT))
    }
}

/// Run the schedules `workspaces` returns (read again at every look) until `shutdown`: `start`
/// is asked for each due fire time and gives the run to spawn (`None`: skipped). Runs in
/// progress finish before this returns.
pub(crate) async fn drive<F>(
    clock: Clock,
    mut workspaces: impl FnMut() -> Vec<(String, cron::Schedule)>,
    mut start: impl FnMut(&Fire) -> Option<F>,
    shutdown: CancellationToken,
) where
    F: Future<Output = ()> + Send + 'static,
{
    let mut anchors = Anchors::new(clock.now());
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let (fires, wait) = anchors.step(&workspaces(), clock.now());
        for fire in fires {
            if fire.missed > 0 {
                tracing::info!(
                    workspace = %fire.name,
                    missed = fire.missed,
                    late_ms = fire.late.as_millis() as u64,
                    "missed fire times fold into one run (the watcher was held up)"
                );
            }
            if let Some(run) = start(&fire) {
                tasks.spawn(run);
            }
        }
        while tasks.try_join_next().is_some() {}
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
        }
    }
    if !tasks.is_empty() {
        tracing::info!(runs = tasks.len(), "waiting for infra runs in progress");
    }
    while tasks.join_next().await.is_some() {}
}

impl Watcher {
    /// Run every workspace on its schedule until `shutdown`; runs in progress then finish.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let me = self.clone();
        let workspaces = move || {
            me.host
                .current
                .config()
                .map(|c| c.infra.clone())
                .unwrap_or_default()
                .into_iter()
                .filter_map(|ws| Some((ws.name, cron::Schedule::parse(&ws.schedule).ok()?)))
                .collect()
        };
        let start = |fire: &Fire| {
            if self.is_busy(&fire.name) {
                tracing::warn!(workspace = %fire.name, scheduled = %fire.at, "infra run skipped: the previous run is still going");
                self.host.metrics.infra_run(&fire.name, "skipped", None);
                return None;
            }
            let (me, name) = (self.clone(), fire.name.clone());
            Some(async move {
                let _ = me.tick(&name).await;
                // A plan's `show -json` can be large: give its pages back (see memory.rs).
                crate::memory::give_back();
            })
        };
        drive(Clock::Wall, workspaces, start, shutdown).await;
    }
}

#[cfg(test)]
mod tests;
