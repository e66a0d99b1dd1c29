//! What to do after a plan: report, resolve, apply or refuse. Pure, table-tested.

use crate::config::InfraMode;

/// Remembered per workspace between runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Memory {
    /// Plan id of the drift last reported (None: no drift reported, or resolved since).
    pub reported: Option<String>,
    /// The approval last acted upon (applied or refused), so it is not acted upon every tick.
    pub approval_seen: Option<String>,
    /// The last failure reported, so a persisting failure is reported once.
    pub error_alerted: Option<String>,
}

/// What the plan said.
#[derive(Debug, Clone, Copy)]
pub struct Planned<'a> {
    /// Whether anything would change.
    pub drift: bool,
    /// Its id.
    pub plan_id: &'a str,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing new to say or do.
    Quiet,
    /// A drift not reported before (a new plan id).
    ReportDrift,
    /// The drift last reported is gone.
    ReportResolved,
    /// Apply the saved plan: approved in git (`approve`) or automatically (`auto`).
    Apply {
        /// True for `auto`.
        automatic: bool,
    },
    /// An approval names a plan that is not the current one: refuse, report the current id.
    RefuseStale {
        /// The approved (stale) id.
        approved: String,
    },
    /// An approval arrived for a workspace in `detect` mode.
    IgnoreApproval {
        /// The approved id.
        approved: String,
    },
}

/// Decide from the mode, the plan, the approval committed in git and what was said before.
pub fn decide(mode: InfraMode, plan: Planned<'_>, approval: Option<&str>, mem: &Memory) -> Step {
    let fresh_approval = approval.filter(|a| mem.approval_seen.as_deref() != Some(*a));
    if let Some(a) = fresh_approval {
        match mode {
            InfraMode::Detect => {
                return Step::IgnoreApproval {
                    approved: a.to_owned(),
                };
            }
            InfraMode::Approve | InfraMode::Auto if plan.drift && a == plan.plan_id => {
                return Step::Apply { automatic: false };
            }
            InfraMode::Approve | InfraMode::Auto => {
                return Step::RefuseStale {
                    approved: a.to_owned(),
                };
            }
        }
    }
    if plan.drift {
        if mode == InfraMode::Auto {
            return Step::Apply { automatic: true };
        }
        if mem.reported.as_deref() != Some(plan.plan_id) {
            return Step::ReportDrift;
        }
        return Step::Quiet;
    }
    if mem.reported.is_some() {
        return Step::ReportResolved;
    }
    Step::Quiet
}

/// The approved plan id for `workspace` in the approvals file (`terraform: {WORKSPACE: ID}`).
/// Other top-level keys belong to other approvals and are ignored.
pub fn approval_for(text: &str, workspace: &str) -> Result<Option<String>, String> {
    let v: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
    let Some(tf) = v.get("terraform") else {
        return Ok(None);
    };
    if tf.is_null() {
        return Ok(None);
    }
    let m = tf
        .as_mapping()
        .ok_or("`terraform` must map workspace names to plan ids")?;
    match m.get(workspace) {
        None | Some(serde_yaml::Value::Null) => Ok(None),
        Some(serde_yaml::Value::String(s)) => Ok(Some(s.trim().to_owned())),
        Some(other) => Err(format!(
            "terraform.{workspace}: {other:?} is not a plan id (quote ids that look like numbers)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use InfraMode::{Approve, Auto, Detect};

    fn mem(reported: Option<&str>, seen: Option<&str>) -> Memory {
        Memory {
            reported: reported.map(Into::into),
            approval_seen: seen.map(Into::into),
            error_alerted: None,
        }
    }

    #[test]
    fn table() {
        let drift = |id| Planned {
            drift: true,
            plan_id: id,
        };
        let clean = Planned {
            drift: false,
            plan_id: "p0",
        };
        let stale = |a: &str| Step::RefuseStale { approved: a.into() };
        type Case<'a> = (
            &'a str,
            InfraMode,
            Planned<'a>,
            Option<&'a str>,
            Memory,
            Step,
        );
        #[rustfmt::skip]
        let cases: Vec<Case<'_>> = vec![
            ("no drift, nothing said", Detect, clean, None, mem(None, None), Step::Quiet),
            ("new drift", Detect, drift("p1"), None, mem(None, None), Step::ReportDrift),
            ("same drift again", Detect, drift("p1"), None, mem(Some("p1"), None), Step::Quiet),
            ("drift changed", Approve, drift("p2"), None, mem(Some("p1"), None), Step::ReportDrift),
            ("drift gone", Approve, clean, None, mem(Some("p1"), None), Step::ReportResolved),
            ("approved current", Approve, drift("p1"), Some("p1"), mem(Some("p1"), None), Step::Apply { automatic: false }),
            ("approved old", Approve, drift("p2"), Some("p1"), mem(Some("p2"), None), stale("p1")),
            ("approved, nothing to apply", Approve, clean, Some("p1"), mem(None, None), stale("p1")),
            ("approval already handled", Approve, drift("p2"), Some("p1"), mem(Some("p2"), Some("p1")), Step::Quiet),
            ("approval handled, drift new", Approve, drift("p3"), Some("p1"), mem(Some("p2"), Some("p1")), Step::ReportDrift),
            ("detect ignores approvals", Detect, drift("p1"), Some("p1"), mem(Some("p1"), None), Step::IgnoreApproval { approved: "p1".into() }),
            ("auto applies", Auto, drift("p1"), None, mem(None, None), Step::Apply { automatic: true }),
            ("auto, no drift", Auto, clean, None, mem(None, None), Step::Quiet),
        ];
        for (name, mode, plan, approval, m, want) in cases {
            assert_eq!(decide(mode, plan, approval, &m), want, "{name}");
        }
    }

    #[test]
    fn approvals_file() {
        let text = "prod: {app: a1b2c3d}\nterraform:\n  aws: 1a2b3c4d5e6f\n  gcp: 123456789012\n";
        assert_eq!(
            approval_for(text, "aws").unwrap().as_deref(),
            Some("1a2b3c4d5e6f")
        );
        assert_eq!(approval_for(text, "azure").unwrap(), None);
        assert!(approval_for(text, "gcp").unwrap_err().contains("quote"));
        assert_eq!(approval_for("other: 1\n", "aws").unwrap(), None);
        assert!(approval_for("terraform: [a]\n", "aws").is_err());
        assert!(approval_for(": :\n  - [", "aws").is_err());
    }
}
