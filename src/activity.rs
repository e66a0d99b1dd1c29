//! What this process last saw, for the status page: the last error of each stage (config, git,
//! scan, commit, rollout, cluster, each infra workspace) and each infra workspace's last plan.
//! The cycle and the infra watcher write it, the page reads it; nothing is persisted (the
//! durable facts live in git and on `refs/tagflow/state`). Every message is redacted before it
//! is stored, so no secret reaches the page.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

/// Stages of a cycle, as the page names them.
pub mod stage {
    /// Loading `config/tagflow.yaml` and its lists.
    pub const CONFIG: &str = "config";
    /// Fetching the config repo.
    pub const GIT: &str = "git";
    /// Listing and reading registry tags.
    pub const SCAN: &str = "scan";
    /// Committing and pushing.
    pub const COMMIT: &str = "commit";
    /// Following releases, smoke checks, promotions and reverts.
    pub const ROLLOUT: &str = "rollout";
    /// The Kubernetes API and the Lease.
    pub const CLUSTER: &str = "cluster";
    /// Stages a clean cycle proves healthy.
    pub const CYCLE: [&str; 6] = [CONFIG, GIT, SCAN, COMMIT, ROLLOUT, CLUSTER];

    /// The stage of an infra workspace.
    pub fn infra(workspace: &str) -> String {
        format!("infra {workspace}")
    }
}

/// The last error of one stage.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StageError {
    /// Stage name (see [`stage`]).
    pub stage: String,
    /// The error, redacted.
    pub message: String,
    /// When it was first seen in this run of failures.
    pub since: DateTime<Utc>,
    /// When it was last seen.
    pub last: DateTime<Utc>,
    /// Failures in a row.
    pub count: u32,
    /// When the stage worked again; `None` while it still fails.
    pub resolved: Option<DateTime<Utc>>,
}

/// An infra workspace's last run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InfraRun {
    /// Workspace name.
    pub workspace: String,
    /// `drift`, `clean`, `applied` or `failed`.
    pub state: String,
    /// Id of the last plan (empty when the run failed before planning).
    pub plan_id: String,
    /// One line on what the plan would change, or why the run failed (redacted).
    pub summary: String,
    /// When the run ended.
    pub at: DateTime<Utc>,
}

#[derive(Debug, Default)]
struct Inner {
    errors: BTreeMap<String, StageError>,
    infra: BTreeMap<String, InfraRun>,
}

/// Shared by the cycle, the infra watcher and the status page.
#[derive(Debug, Default)]
pub struct Activity {
    inner: Mutex<Inner>,
}

impl Activity {
    /// Nothing seen yet.
    pub fn new() -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `stage` failed with `message` at `now`.
    pub fn failed(&self, stage: &str, message: &str, now: DateTime<Utc>) {
        let message = crate::secret::redact(message);
        let mut inner = self.lock();
        let e = inner
            .errors
            .entry(stage.to_owned())
            .or_insert_with(|| StageError {
                stage: stage.to_owned(),
                message: String::new(),
                since: now,
                last: now,
                count: 0,
                resolved: None,
            });
        if e.resolved.take().is_some() {
            e.since = now;
            e.count = 0;
        }
        e.message = message;
        e.last = now;
        e.count = e.count.saturating_add(1);
    }

    /// `stage` worked at `now`: its last error, if any, is kept and marked resolved.
    pub fn worked(&self, stage: &str, now: DateTime<Utc>) {
        if let Some(e) = self.lock().errors.get_mut(stage)
            && e.resolved.is_none()
        {
            e.resolved = Some(now);
        }
    }

    /// An infra workspace's run ended.
    pub fn infra_ran(&self, mut run: InfraRun) {
        run.summary = crate::secret::redact(&run.summary);
        self.lock().infra.insert(run.workspace.clone(), run);
    }

    /// The last error of every stage that ever failed, by stage name.
    pub fn errors(&self) -> Vec<StageError> {
        self.lock().errors.values().cloned().collect()
    }

    /// Every infra workspace's last run, by name.
    pub fn infra(&self) -> Vec<InfraRun> {
        self.lock().infra.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    #[test]
    fn a_failure_is_counted_resolved_and_started_afresh() {
        let a = Activity::default();
        a.failed(stage::GIT, "fetch failed: pack_1", t(0));
        a.failed(stage::GIT, "fetch failed: pack_2", t(10));
        let e = &a.errors()[0];
        assert_eq!((e.count, e.since, e.last), (2, t(0), t(10)));
        assert_eq!(e.message, "fetch failed: pack_2");
        a.worked(stage::GIT, t(20));
        a.worked(stage::GIT, t(30));
        assert_eq!(
            a.errors()[0].resolved,
            Some(t(20)),
            "resolved when it first worked"
        );
        a.failed(stage::GIT, "again", t(40));
        let e = &a.errors()[0];
        assert_eq!((e.count, e.since, e.resolved), (1, t(40), None));
        a.worked(stage::SCAN, t(50));
        assert_eq!(
            a.errors().len(),
            1,
            "a stage that never failed is not listed"
        );
    }

    #[test]
    fn secrets_are_redacted_before_they_are_kept() {
        crate::secret::register("hunter2-very-secret");
        let a = Activity::default();
        a.failed(stage::SCAN, "401 for token hunter2-very-secret", t(0));
        a.infra_ran(InfraRun {
            workspace: "net".into(),
            state: "failed".into(),
            plan_id: String::new(),
            summary: "terraform: bad key hunter2-very-secret".into(),
            at: t(0),
        });
        assert!(!a.errors()[0].message.contains("hunter2"));
        assert!(!a.infra()[0].summary.contains("hunter2"));
    }
}
