//! Prometheus metrics shared by the stages and served on `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    registry: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: String,
}

/// All of tagflow's metrics.
pub struct Metrics {
    registry: Registry,
    cycles: Family<ResultLabel, Counter>,
    commits: Counter,
    requests: Family<RequestLabels, Counter>,
    errors: Family<StageLabel, Counter>,
    webhooks: Family<ResultLabel, Counter>,
    last_success: Gauge<f64, AtomicU64>,
    requests_total: AtomicU64,
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
        Arc::new(Self {
            registry,
            cycles,
            commits,
            requests,
            errors,
            webhooks,
            last_success,
            requests_total: AtomicU64::new(0),
        })
    }

    /// Count a finished cycle (`committed`, `unchanged`, `failed`, …).
    pub fn cycle(&self, result: &str) {
        self.cycles
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
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

    /// Record the time of a successful cycle.
    pub fn success_at(&self, unix_seconds: f64) {
        self.last_success.set(unix_seconds);
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
        m.cycle("unchanged");
        let text = m.encode();
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
}
