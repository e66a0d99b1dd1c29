//! What to do after a plan: report, resolve, apply or refuse. Pure, table-tested.

use crate::config::InfraMode;

/// Remembered per workspace between runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Seen {
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
pub fn next_step(mode: InfraMode, plan: Planned<'_>, approval: Option<&str>, mem: &Seen) -> Step {
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

#[cfg(test)]
mod tests {
    use super::*;
    use InfraMode::{Approve, Auto, Detect};

    fn mem(reported: Option<&str>, seen: Option<&str>) -> Seen {
        Seen {
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
        type Case<'a> = (&'a str, InfraMode, Planned<'a>, Option<&'a str>, Seen, Step);
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
            assert_eq!(next_step(mode, plan, approval, &m), want, "{name}");
        }
    }
}
