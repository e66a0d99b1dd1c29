//! A Flux HelmRelease as tagflow reads it: the typed slice of its status that decides a
//! rollout, and the pure reader that turns it into a [`Release`] outcome. A Kustomization has
//! the same status shape ([`FluxObject`]); [`super::kustomization`] judges it.

use serde::Deserialize;
use serde_json::Value;

use crate::rollout::Release;

/// One status condition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Stalled`, `Remediated`, `TestSuccess`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    #[serde(default)]
    pub status: String,
    /// Machine-readable reason.
    #[serde(default)]
    pub reason: String,
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
}

/// The status fields tagflow relies on (see the module docs of [`super`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseStatus {
    /// The generation the status describes.
    pub observed_generation: Option<i64>,
    /// The source revision last attempted.
    pub last_attempted_revision: Option<String>,
    /// The source revision last applied.
    pub last_applied_revision: Option<String>,
    /// Conditions.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// A Flux HelmRelease or Kustomization: its spec generation and status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FluxObject {
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `status`, empty when absent or unreadable.
    pub status: ReleaseStatus,
}

impl FluxObject {
    /// Read from the object's JSON; fields of the wrong type read as absent.
    pub fn from_value(obj: &Value) -> Self {
        Self {
            generation: obj.pointer("/metadata/generation").and_then(Value::as_i64),
            status: obj
                .get("status")
                .and_then(|s| serde_json::from_value(s.clone()).ok())
                .unwrap_or_default(),
        }
    }

    pub(super) fn condition(&self, kind: &str) -> Option<&Condition> {
        self.status.conditions.iter().find(|c| c.kind == kind)
    }
}

pub(super) fn describe(c: &Condition) -> String {
    let s = if c.status.is_empty() {
        "Unknown"
    } else {
        &c.status
    };
    let text = format!("{}={s} {}: {}", c.kind, c.reason, c.message);
    text.trim_end_matches(": ").to_owned()
}

/// The commit named by a Flux object's last attempted revision (else its last applied one).
pub fn attempted_commit(hr: &FluxObject) -> Option<String> {
    let rev = hr
        .status
        .last_attempted_revision
        .as_deref()
        .or(hr.status.last_applied_revision.as_deref())?;
    revision_commit(rev)
}

/// The commit a revision names: the trailing hex run of `main@sha1:<sha>`, `<sha>` or
/// `0.1.0+<sha12>` (at least 7 digits), lower-cased.
pub fn revision_commit(rev: &str) -> Option<String> {
    let hex: String = rev
        .chars()
        .rev()
        .take_while(char::is_ascii_hexdigit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    (hex.len() >= 7).then(|| hex.to_ascii_lowercase())
}

/// What every Flux kind waits on before its conditions mean anything: the object exists, its
/// attempted revision is the commit or a descendant (`reconciled`) and its status is about the
/// current spec. `Err` is the pending outcome to report.
pub(super) fn flux_current<'a>(
    kind: &str,
    obj: Option<&'a FluxObject>,
    reconciled: bool,
) -> Result<&'a FluxObject, Release> {
    let Some(hr) = obj else {
        return Err(Release::Pending(format!("{kind} not found")));
    };
    if !reconciled {
        let at = attempted_commit(hr).unwrap_or_else(|| "no revision yet".into());
        return Err(Release::Pending(format!(
            "{kind} has not reconciled the commit (at {at})"
        )));
    }
    if let (Some(g), Some(o)) = (hr.generation, hr.status.observed_generation)
        && o < g
    {
        return Err(Release::Pending(format!(
            "status is for generation {o}, spec is at {g}"
        )));
    }
    Ok(hr)
}

/// The release's outcome for tagflow's commit (pure). `reconciled`: the attempted revision is
/// the commit or a descendant of it (the caller asks git).
pub fn release_state(hr: Option<&FluxObject>, reconciled: bool) -> Release {
    let hr = match flux_current("HelmRelease", hr, reconciled) {
        Ok(hr) => hr,
        Err(pending) => return pending,
    };
    for (kind, bad) in [
        ("Stalled", "True"),
        ("Remediated", "True"),
        ("TestSuccess", "False"),
    ] {
        if let Some(c) = hr.condition(kind)
            && c.status == bad
        {
            return Release::Failed(describe(c));
        }
    }
    match hr.condition("Ready") {
        Some(c) if c.status == "True" => Release::Ready,
        Some(c) => Release::Pending(describe(c)),
        None => Release::Pending("no Ready condition yet".into()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn read(v: &Value) -> FluxObject {
        FluxObject::from_value(v)
    }

    fn hr(rev: &str, conditions: Value) -> Value {
        serde_json::json!({
            "metadata": {"name": "app", "namespace": "dev", "generation": 2},
            "status": {"observedGeneration": 2, "lastAttemptedRevision": rev, "conditions": conditions}
        })
    }

    fn cond(kind: &str, status: &str, reason: &str) -> Value {
        json!({"type": kind, "status": status, "reason": reason, "message": "m"})
    }

    #[test]
    fn revisions_in_every_form_name_the_commit() {
        let sha = "3f2a9c1d0e4b5a6c7d8e9f00112233445566778f";
        for rev in [
            format!("main@sha1:{sha}"),
            sha.to_owned(),
            "0.1.0+3F2A9C1D0E4B".to_owned(),
        ] {
            let got = attempted_commit(&read(&hr(&rev, json!([])))).expect("commit");
            assert!(sha.starts_with(&got), "{rev} → {got}");
        }
        assert_eq!(attempted_commit(&read(&hr("0.1.0", json!([])))), None);
        assert_eq!(attempted_commit(&read(&json!({"status": {}}))), None);
    }

    #[test]
    fn release_outcomes_table() {
        let ready = cond("Ready", "True", "UpgradeSucceeded");
        let cases: Vec<(Value, bool, Release)> = vec![
            (hr("x", json!([ready.clone()])), true, Release::Ready),
            (
                hr(
                    "x",
                    json!([ready.clone(), cond("TestSuccess", "True", "TestSucceeded")]),
                ),
                true,
                Release::Ready,
            ),
            (
                hr("x", json!([ready.clone()])),
                false,
                Release::Pending(
                    "HelmRelease has not reconciled the commit (at no revision yet)".into(),
                ),
            ),
            (
                hr("x", json!([cond("Ready", "False", "UpgradeFailed")])),
                true,
                Release::Pending("Ready=False UpgradeFailed: m".into()),
            ),
            (
                hr(
                    "x",
                    json!([
                        cond("Ready", "False", "TestFailed"),
                        cond("TestSuccess", "False", "TestFailed")
                    ]),
                ),
                true,
                Release::Failed("TestSuccess=False TestFailed: m".into()),
            ),
            (
                hr(
                    "x",
                    json!([
                        cond("Ready", "False", "RollbackSucceeded"),
                        cond("Remediated", "True", "RollbackSucceeded")
                    ]),
                ),
                true,
                Release::Failed("Remediated=True RollbackSucceeded: m".into()),
            ),
            (
                hr(
                    "x",
                    json!([
                        cond("Ready", "False", "RetriesExceeded"),
                        cond("Stalled", "True", "RetriesExceeded")
                    ]),
                ),
                true,
                Release::Failed("Stalled=True RetriesExceeded: m".into()),
            ),
            (
                hr("x", json!([])),
                true,
                Release::Pending("no Ready condition yet".into()),
            ),
        ];
        for (obj, reconciled, want) in cases {
            assert_eq!(release_state(Some(&read(&obj)), reconciled), want, "{obj}");
        }
        let mut stale = hr("x", json!([ready]));
        stale["metadata"]["generation"] = json!(3);
        assert!(matches!(
            release_state(Some(&read(&stale)), true),
            Release::Pending(_)
        ));
        assert!(matches!(release_state(None, true), Release::Pending(_)));
    }
}
