//! A Flux Kustomization (`kustomize.toolkit.fluxcd.io/v1`) judged for tagflow's commit. Its
//! status has the HelmRelease's shape ([`FluxObject`]: `lastAttemptedRevision`,
//! `lastAppliedRevision`, `observedGeneration`, conditions), so only the verdict differs.
//!
//! kustomize-controller has no remediation: a revision that fails to build, apply or pass its
//! health checks stays `Ready=False` and is retried forever. So a `Ready=False` whose reason
//! says the attempt at this revision failed fails the rollout at once (waiting would only run
//! into the environment's `timeout`), while reasons about something else (a dependency not
//! ready, the source artifact not fetched yet) are waited on like any other `Ready=False`.

use super::release::{FluxObject, describe, flux_current};
use crate::rollout::Release;

/// `Ready=False` reasons that judge the attempted revision itself.
const FAILED_REASONS: &[&str] = &[
    "BuildFailed",
    "HealthCheckFailed",
    "ReconciliationFailed",
    "PruneFailed",
];

/// The Kustomization's outcome for tagflow's commit (pure). `reconciled`: its attempted
/// revision is the commit or a descendant of it (the caller asks git).
pub fn kustomization_state(ks: Option<&FluxObject>, reconciled: bool) -> Release {
    let ks = match flux_current("Kustomization", ks, reconciled) {
        Ok(ks) => ks,
        Err(pending) => return pending,
    };
    if let Some(c) = ks.condition("Stalled")
        && c.status == "True"
    {
        return Release::Failed(describe(c));
    }
    let ready = ks.condition("Ready");
    if let Some(c) = ready
        && c.status == "True"
    {
        return Release::Ready;
    }
    // `Progressing`: an attempt is under way; `ProgressingWithRetry` follows a failed one.
    if let Some(c) = ks.condition("Reconciling")
        && c.status == "True"
        && c.reason == "Progressing"
    {
        return Release::Pending(describe(c));
    }
    match ready {
        Some(c) if c.status == "False" && FAILED_REASONS.contains(&c.reason.as_str()) => {
            Release::Failed(describe(c))
        }
        Some(c) => Release::Pending(describe(c)),
        None => Release::Pending("no Ready condition yet".into()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::k8s::release::attempted_commit;

    fn ks(conditions: &Value) -> FluxObject {
        FluxObject::from_value(&json!({
            "metadata": {"name": "apps-dev", "namespace": "flux-system", "generation": 3},
            "status": {
                "observedGeneration": 3,
                "lastAttemptedRevision": "main@sha1:3f2a9c1d0e4b5a6c7d8e9f00112233445566778f",
                "lastAppliedRevision": "main@sha1:0000000d0e4b5a6c7d8e9f00112233445566778f",
                "conditions": conditions,
            }
        }))
    }

    fn cond(kind: &str, status: &str, reason: &str) -> Value {
        json!({"type": kind, "status": status, "reason": reason, "message": "m"})
    }

    #[test]
    fn the_attempted_revision_names_the_commit() {
        let got = attempted_commit(&ks(&json!([]))).expect("commit");
        assert_eq!(got, "3f2a9c1d0e4b5a6c7d8e9f00112233445566778f");
    }

    #[test]
    fn kustomization_outcomes_table() {
        let cases: Vec<(Value, Release)> = vec![
            (
                json!([cond("Ready", "True", "ReconciliationSucceeded")]),
                Release::Ready,
            ),
            (
                json!([
                    cond("Ready", "Unknown", "Progressing"),
                    cond("Reconciling", "True", "Progressing")
                ]),
                Release::Pending("Reconciling=True Progressing: m".into()),
            ),
            (
                json!([
                    cond("Ready", "False", "HealthCheckFailed"),
                    cond("Reconciling", "True", "ProgressingWithRetry")
                ]),
                Release::Failed("Ready=False HealthCheckFailed: m".into()),
            ),
            (
                json!([cond("Ready", "False", "BuildFailed")]),
                Release::Failed("Ready=False BuildFailed: m".into()),
            ),
            (
                json!([cond("Ready", "False", "DependencyNotReady")]),
                Release::Pending("Ready=False DependencyNotReady: m".into()),
            ),
            (
                json!([
                    cond("Ready", "False", "InvalidPathError"),
                    cond("Stalled", "True", "InvalidPathError")
                ]),
                Release::Failed("Stalled=True InvalidPathError: m".into()),
            ),
            (json!([]), Release::Pending("no Ready condition yet".into())),
        ];
        for (conditions, want) in cases {
            assert_eq!(
                kustomization_state(Some(&ks(&conditions)), true),
                want,
                "{conditions}"
            );
        }
    }

    #[test]
    fn an_unreconciled_missing_or_stale_kustomization_is_pending() {
        let ready = json!([cond("Ready", "True", "ReconciliationSucceeded")]);
        assert_eq!(
            kustomization_state(Some(&ks(&ready)), false),
            Release::Pending(
                "Kustomization has not reconciled the commit (at 3f2a9c1d0e4b5a6c7d8e9f00112233445566778f)"
                    .into()
            )
        );
        assert_eq!(
            kustomization_state(None, true),
            Release::Pending("Kustomization not found".into())
        );
        let mut stale = ks(&ready);
        stale.generation = Some(4);
        assert_eq!(
            kustomization_state(Some(&stale), true),
            Release::Pending("status is for generation 3, spec is at 4".into())
        );
    }
}
