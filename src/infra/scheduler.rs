//! Running every workspace on its cron schedule, never one workspace twice at a time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::{RESCAN, Watcher, cron};

impl Watcher {
    /// Run every workspace on its schedule until `shutdown`; runs in progress then finish.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let started = Utc::now();
        let mut anchors: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            let now = Utc::now();
            let mut wait = RESCAN;
            for ws in self
                .host
                .current
                .config()
                .map(|c| c.infra.clone())
                .unwrap_or_default()
            {
                let Ok(s) = cron::Schedule::parse(&ws.schedule) else {
                    continue;
                };
                let anchor = *anchors.entry(ws.name.clone()).or_insert(started);
                match cron::due(&s, anchor, now) {
                    cron::Due::Run { at, missed } => {
                        anchors.insert(ws.name.clone(), at);
                        // Sleep until the next fire time, not the rescan period.
                        if let cron::Due::Wait { until } = cron::due(&s, at, now) {
                            wait = wait.min((until - now).to_std().unwrap_or_default());
                        }
                        if missed > 0 {
                            tracing::info!(workspace = %ws.name, missed, "missed fire times fold into one run");
                        }
                        if self.is_busy(&ws.name) {
                            tracing::warn!(workspace = %ws.name, scheduled = %at, "infra run skipped: the previous run is still going");
                            self.host.metrics.infra_run(&ws.name, "skipped", None);
                            continue;
                        }
                        let me = self.clone();
                        tasks.spawn(async move {
                            let _ = me.tick(&ws.name).await;
                        });
                    }
                    cron::Due::Wait { until } => {
                        wait = wait.min((until - now).to_std().unwrap_or_default());
                    }
                    cron::Due::Never => {}
                }
            }
            while tasks.try_join_next().is_some() {}
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(wait.max(Duration::from_millis(50))) => {}
            }
        }
        if !tasks.is_empty() {
            tracing::info!(runs = tasks.len(), "waiting for infra runs in progress");
        }
        while tasks.join_next().await.is_some() {}
    }
}
