//! An Argo CD Application (`argoproj.io/v1alpha1`) as tagflow reads it, and the pure verdict
//! for tagflow's commit.
//!
//! Fields relied on:
//! - `status.sync.revision` (a multi-source Application: the first of `status.sync.revisions`):
//!   the commit Argo CD compared the live state with; it must be tagflow's commit or a
//!   descendant of it (the caller asks git).
//! - `status.operationState`: `phase` `Failed`/`Error` fails the rollout with its `message`;
//!   `Running`/`Terminating` is waited on. Only an operation about that same revision
//!   (`syncResult.revision`, else `operation.sync.revision`) counts: the last operation may be
//!   an older sync's.
//! - `status.sync.status` `Synced`, then `status.health.status`: `Healthy` is ready, `Degraded`
//!   fails, `Progressing`/`Missing`/`Suspended`/`Unknown` are waited on until the timeout.

use serde_json::Value;

use super::release::revision_commit;
use crate::rollout::Release;

/// The status fields tagflow relies on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Application {
    /// `status.sync.revision`.
    pub sync_revision: Option<String>,
    /// `status.sync.status`: `Synced`, `OutOfSync`, `Unknown`.
    pub sync_status: String,
    /// `status.health.status`.
    pub health: String,
    /// `status.health.message`.
    pub health_message: String,
    /// `status.operationState.phase`.
    pub op_phase: String,
    /// `status.operationState.message`.
    pub op_message: String,
    /// The revision the last operation was about.
    pub op_revision: Option<String>,
}

impl Application {
    /// Read from the object's JSON; fields of the wrong type read as absent.
    pub fn from_value(obj: &Value) -> Self {
        let text = |p: &str| {
            obj.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let some = |p: &str| obj.pointer(p).and_then(Value::as_str).map(str::to_owned);
        Self {
            sync_revision: some("/status/sync/revision")
                .or_else(|| some("/status/sync/revisions/0")),
            sync_status: text("/status/sync/status"),
            health: text("/status/health/status"),
            health_message: text("/status/health/message"),
            op_phase: text("/status/operationState/phase"),
            op_message: text("/status/operationState/message"),
            op_revision: some("/status/operationState/syncResult/revision")
                .or_else(|| some("/status/operationState/operation/sync/revision")),
        }
    }

    /// The commit Argo CD last compared with.
    pub fn commit(&self) -> Option<String> {
        revision_commit(self.sync_revision.as_deref()?)
    }

    /// Whether the last operation was about the revision of `status.sync`.
    fn operation_is_current(&self) -> bool {
        match (
            self.op_revision.as_deref().and_then(revision_commit),
            self.commit(),
        ) {
            (Some(op), Some(at)) => op.starts_with(&at) || at.starts_with(&op),
            (None, _) => true,
            (Some(_), None) => false,
        }
    }
}

fn said(what: &str, status: &str, message: &str) -> String {
    let status = if status.is_empty() { "Unknown" } else { status };
    if message.is_empty() {
        format!("{what} {status}")
    } else {
        format!("{what} {status}: {message}")
    }
}

/// The Application's outcome for tagflow's commit (pure). `reconciled`: `status.sync.revision`
/// is the commit or a descendant of it.
pub fn application_state(app: Option<&Application>, reconciled: bool) -> Release {
    let Some(app) = app else {
        return Release::Pending("Application not found".into());
    };
    if !reconciled {
        let at = app.commit().unwrap_or_else(|| "no revision yet".into());
        return Release::Pending(format!("Application has not compared the commit (at {at})"));
    }
    if app.operation_is_current() {
        match app.op_phase.as_str() {
            "Failed" | "Error" => {
                return Release::Failed(said("sync operation", &app.op_phase, &app.op_message));
            }
            "Running" | "Terminating" => {
                return Release::Pending(said("sync operation", &app.op_phase, &app.op_message));
            }
            _ => {}
        }
    }
    if app.sync_status != "Synced" {
        return Release::Pending(said("sync", &app.sync_status, ""));
    }
    match app.health.as_str() {
        "Healthy" => Release::Ready,
        "Degraded" => Release::Failed(said("health", &app.health, &app.health_message)),
        other => Release::Pending(said("health", other, &app.health_message)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const AT: &str = "3f2a9c1d0e4b5a6c7d8e9f00112233445566778f";
    const OLD: &str = "0000000d0e4b5a6c7d8e9f00112233445566778f";

    fn app(sync: &str, health: &str, op: Option<(&str, &str)>) -> Application {
        let mut status = json!({
            "sync": {"status": sync, "revision": AT},
            "health": {"status": health},
        });
        if let Some((phase, rev)) = op {
            status["operationState"] = json!({
                "phase": phase, "message": "one or more objects failed to apply",
                "operation": {"sync": {"revision": rev}},
            });
        }
        Application::from_value(&json!({"metadata": {"name": "app"}, "status": status}))
    }

    #[test]
    fn the_sync_revision_names_the_commit() {
        assert_eq!(app("Synced", "Healthy", None).commit().as_deref(), Some(AT));
        let multi = Application::from_value(&json!({"status": {"sync": {"revisions": [AT]}}}));
        assert_eq!(multi.commit().as_deref(), Some(AT));
        assert_eq!(Application::from_value(&json!({})).commit(), None);
    }

    #[test]
    fn application_outcomes_table() {
        let failed = "sync operation Failed: one or more objects failed to apply";
        let cases = [
            (app("Synced", "Healthy", None), Release::Ready),
            (
                app("Synced", "Healthy", Some(("Succeeded", AT))),
                Release::Ready,
            ),
            (
                app("Synced", "Progressing", None),
                Release::Pending("health Progressing".into()),
            ),
            (
                app("Synced", "Degraded", None),
                Release::Failed("health Degraded".into()),
            ),
            (
                app("Synced", "Missing", None),
                Release::Pending("health Missing".into()),
            ),
            (
                app("Synced", "Suspended", None),
                Release::Pending("health Suspended".into()),
            ),
            (
                app("OutOfSync", "Degraded", None),
                Release::Pending("sync OutOfSync".into()),
            ),
            (
                app("OutOfSync", "Healthy", Some(("Failed", AT))),
                Release::Failed(failed.into()),
            ),
            (
                app("OutOfSync", "Healthy", Some(("Error", AT))),
                Release::Failed(failed.replace("Failed", "Error")),
            ),
            (
                app("OutOfSync", "Healthy", Some(("Running", AT))),
                Release::Pending(
                    "sync operation Running: one or more objects failed to apply".into(),
                ),
            ),
            // An older sync's failure says nothing about this revision.
            (
                app("OutOfSync", "Healthy", Some(("Failed", OLD))),
                Release::Pending("sync OutOfSync".into()),
            ),
        ];
        for (a, want) in cases {
            assert_eq!(application_state(Some(&a), true), want, "{a:?}");
        }
    }

    #[test]
    fn an_unreconciled_or_missing_application_is_pending() {
        assert_eq!(
            application_state(Some(&app("Synced", "Healthy", None)), false),
            Release::Pending(format!("Application has not compared the commit (at {AT})"))
        );
        assert_eq!(
            application_state(None, true),
            Release::Pending("Application not found".into())
        );
    }
}
