//! Prometheus metrics shared by the stages and served on `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    revision: String,
}

/// Upper bounds (seconds) of the cycle-duration buckets: an unchanged world takes well under a
/// second; a clone, a push and a rollout step can take minutes.
const CYCLE_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    registry: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkspaceLabel {
    workspace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkspaceResult {
    workspace: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkspaceStage {
    workspace: String,
    stage: String,
}

/// The infra watcher's metrics.
#[derive(Default)]
struct Infra {
    runs: Family<WorkspaceResult, Counter>,
    failures: Family<WorkspaceStage, Counter>,
    drift: Family<WorkspaceLabel, Gauge>,
    last_run: Family<WorkspaceLabel, Gauge<f64, AtomicU64>>,
    duration: Family<WorkspaceLabel, Gauge<f64, AtomicU64>>,
}

/// All of tagflow's metrics.
pub struct Metrics {
    registry: Registry,
    cycles: Family<ResultLabel, Counter>,
    cycle_duration: Histogram,
    commits: Counter,
    requests: Family<RequestLabels, Counter>,
    errors: Family<StageLabel, Counter>,
    webhooks: Family<ResultLabel, Counter>,
    last_success: Gauge<f64, AtomicU64>,
    last_cycle_duration: Gauge<f64, AtomicU64>,
    leader: Gauge,
    requests_total: AtomicU64,
    infra: Infra,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A fresh set of metrics, registered under the `tagflow_` prefix.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("tagflow");
        let cycles = Family::<ResultLabel, Counter>::default();
        let commits = Counter::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let errors = Family::<StageLabel, Counter>::default();
        let webhooks = Family::<ResultLabel, Counter>::default();
        let last_success = Gauge::<f64, AtomicU64>::default();
        registry.register("cycles", "Cycles run, by result", cycles.clone());
        let cycle_duration = Histogram::new(CYCLE_BUCKETS);
        registry.register(
            "cycle_duration_seconds",
            "Wall time of each cycle, from fetch to notify",
            cycle_duration.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: crate::build_info::VERSION.to_owned(),
                revision: crate::build_info::REVISION.to_owned(),
            })
            .set(1);
        registry.register(
            "build_info",
            "Always 1; the labels say which tagflow version and git revision runs",
            build_info,
        );
        registry.register(
            "commits",
            "Commits pushed to the config repo",
            commits.clone(),
        );
        registry.register(
            "registry_requests",
            "Registry HTTP requests, by registry and status",
            requests.clone(),
        );
        registry.register("errors", "Errors, by stage", errors.clone());
        registry.register(
            "webhooks",
            "Webhook deliveries, by result",
            webhooks.clone(),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the last successful cycle",
            last_success.clone(),
        );
        let last_cycle_duration = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "last_cycle_duration_seconds",
            "Wall time of the last cycle (fetch, scan, commit, rollouts, notify)",
            last_cycle_duration.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the Lease (run --lease), else 0",
            leader.clone(),
        );
        let infra = Infra::default();
        registry.register(
            "infra_runs",
            "Infra watcher runs, by workspace and result (clean, drift, applied, failed, skipped)",
            infra.runs.clone(),
        );
        registry.register(
            "infra_failures",
            "Infra watcher failures, by workspace and stage (init, plan, timeout, …)",
            infra.failures.clone(),
        );
        registry.register(
            "infra_drift",
            "1 while the workspace's last plan had changes, else 0",
            infra.drift.clone(),
        );
        registry.register(
            "infra_last_run_timestamp_seconds",
            "Unix time the workspace's last run ended",
            infra.last_run.clone(),
        );
        registry.register(
            "infra_run_duration_seconds",
            "Wall time of the workspace's last run",
            infra.duration.clone(),
        );
        Arc::new(Self {
            registry,
            cycles,
            cycle_duration,
            commits,
            requests,
            errors,
            webhooks,
            last_success,
            last_cycle_duration,
            leader,
            requests_total: AtomicU64::new(0),
            infra,
        })
    }

    /// How long the cycle that just ended took.
    pub fn cycle_took(&self, took: std::time::Duration) {
        self.last_cycle_duration.set(took.as_secs_f64());
    }

    /// Count a finished cycle (`committed`, `unchanged`, `failed`, …).
    pub fn cycle(&self, result: &str) {
        self.cycles
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }

    /// Record how long a cycle took.
    pub fn cycle_duration(&self, seconds: f64) {
        self.cycle_duration.observe(seconds);
    }

    /// Count a pushed commit.
    pub fn commit(&self) {
        self.commits.inc();
    }

    /// Count one registry request; `status` is the HTTP status or `error`.
    pub fn registry_request(&self, registry: &str, status: &str) {
        self.requests
            .get_or_create(&RequestLabels {
                registry: registry.to_owned(),
                status: status.to_owned(),
            })
            .inc();
        self.requests_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Registry requests so far, all registries and statuses.
    pub fn registry_requests_total(&self) -> u64 {
        self.requests_total.load(Ordering::Relaxed)
    }

    /// Count an error in a stage.
    pub fn error(&self, stage: &str) {
        self.errors
            .get_or_create(&StageLabel {
                stage: stage.to_owned(),
            })
            .inc();
    }

    /// Count a webhook delivery by result (`accepted`, `unauthorized`, …).
    pub fn webhook(&self, result: &str) {
        self.webhooks
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }

    /// Record whether this replica leads.
    pub fn leader(&self, leads: bool) {
        self.leader.set(i64::from(leads));
    }

    /// Record the time of a successful cycle.
    pub fn success_at(&self, unix_seconds: f64) {
        self.last_success.set(unix_seconds);
    }

    /// Record an infra run's result; `duration` (seconds) is absent for skipped runs.
    pub fn infra_run(&self, workspace: &str, result: &str, duration: Option<f64>) {
        self.infra
            .runs
            .get_or_create(&WorkspaceResult {
                workspace: workspace.to_owned(),
                result: result.to_owned(),
            })
            .inc();
        if let Some(d) = duration {
            let w = WorkspaceLabel {
                workspace: workspace.to_owned(),
            };
            self.infra.duration.get_or_create(&w).set(d);
            let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
            self.infra.last_run.get_or_create(&w).set(now);
        }
    }

    /// Record whether a workspace's last plan had changes.
    pub fn infra_drift(&self, workspace: &str, drift: bool) {
        self.infra
            .drift
            .get_or_create(&WorkspaceLabel {
                workspace: workspace.to_owned(),
            })
            .set(i64::from(drift));
    }

    /// Count an infra failure at a stage.
    pub fn infra_failure(&self, workspace: &str, stage: &str) {
        self.infra
            .failures
            .get_or_create(&WorkspaceStage {
                workspace: workspace.to_owned(),
                stage: stage.to_owned(),
            })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_counters_by_label() {
        let m = Metrics::new();
        m.registry_request("r.example.com", "200");
        m.registry_request("r.example.com", "200");
        m.registry_request("r.example.com", "429");
        m.cycle_took(std::time::Duration::from_millis(250));
        m.cycle("unchanged");
        let text = m.encode();
        assert!(
            text.contains("tagflow_last_cycle_duration_seconds 0.25"),
            "{text}"
        );
        assert!(
            text.contains(
                r#"tagflow_registry_requests_total{registry="r.example.com",status="200"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"tagflow_cycles_total{result="unchanged"} 1"#),
            "{text}"
        );
        assert_eq!(m.registry_requests_total(), 3);
    }

    #[test]
    fn exposes_build_info_and_the_cycle_duration_histogram() {
        let m = Metrics::new();
        m.cycle_duration(0.3);
        m.cycle_duration(42.0);
        let text = m.encode();
        let info = format!(
            r#"tagflow_build_info{{version="{}",revision="{}"}} 1"#,
            crate::build_info::VERSION,
            crate::build_info::REVISION
        );
        assert!(text.contains(&info), "{text}");
        for line in [
            "# TYPE tagflow_cycle_duration_seconds histogram",
            "tagflow_cycle_duration_seconds_count 2",
            "tagflow_cycle_duration_seconds_sum 42.3",
            r#"tagflow_cycle_duration_seconds_bucket{le="0.25"} 0"#,
            r#"tagflow_cycle_duration_seconds_bucket{le="0.5"} 1"#,
            r#"tagflow_cycle_duration_seconds_bucket{le="60.0"} 2"#,
            r#"tagflow_cycle_duration_seconds_bucket{le="+Inf"} 2"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
