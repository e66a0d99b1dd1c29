//! Rollout stage (pure): what happens to a tag after tagflow committed it to an environment.
//!
//! One [`Rollout`] per (environment, image) tracks the tag and digest last committed there.
//! [`step`] takes the rollout, what the IO shell observed (HelmRelease outcome, smoke check,
//! approval), the environment's [`EnvPolicy`] and `now`, and returns the next rollout, the
//! [`Event`]s to report and when to look again. Nothing here reads a clock, a network or git.
//!
//! ```text
//!  committed ──reconciled+Ready──▶ ready ──smoke ok──▶ soaking(since) ──soak over──▶ awaiting approval
//!      │                             │                    │                               │ approval commit
//!      │                             │                    │                               ▼
//!      └──── Ready=False/Stalled/ ───┴── smoke failed ────┴── unhealthy ──▶ failed    healthy ──▶ promoted
//!            Remediated/TestSuccess=False/timeout                             │ revert + quarantine commit
//!                                                                             ▼
//!                                                                         quarantined
//! ```
//! An environment nothing promotes from skips soaking and approval: ready → smoke ok → healthy.

mod event;
mod register;
mod state;

pub use event::Event;
pub use state::{State, status_text};

pub use register::{
    Adopted, FromGit, RESYNC, Registered, Seen, env_policy, promotions, register, unknown,
    wants_rollouts,
};

use std::time::Duration;

use crate::config::ReleaseKind;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A tag and the digest it pointed at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pinned {
    /// Tag.
    pub tag: String,
    /// Digest (`sha256:…`), empty when the values file has no digest target.
    pub digest: String,
}

/// Where a rollout is. Serialized in the state annotation, so variants are never renamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    /// Values pushed; waiting for the HelmRelease to reconcile the commit and report Ready.
    Committed,
    /// The HelmRelease is Ready at the commit; the smoke check runs.
    Ready,
    /// Smoke check passed; the environment must stay healthy until the soak is over.
    Soaking,
    /// Soak over; waiting for an approval commit naming the next environment and this tag.
    AwaitingApproval,
    /// Every gate passed: promotable (or, with nothing downstream, done).
    Healthy,
    /// The next environment was committed with this tag and digest.
    Promoted,
    /// Failed; the revert + quarantine commit is due.
    Failed,
    /// Reverted to the previous values and quarantined.
    Quarantined,
    /// A newer commit replaced the values before this rollout finished.
    Superseded,
}

impl Phase {
    /// No further observation needed.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Healthy | Self::Promoted | Self::Quarantined | Self::Superseded
        )
    }

    /// Lower-case words for logs, Slack and `tagflow status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Committed => "committed",
            Self::Ready => "ready",
            Self::Soaking => "soaking",
            Self::AwaitingApproval => "awaiting approval",
            Self::Healthy => "healthy",
            Self::Promoted => "promoted",
            Self::Failed => "failed",
            Self::Quarantined => "quarantined",
            Self::Superseded => "superseded",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One (environment, image)'s rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// Environment.
    pub env: String,
    /// Config name of the image.
    pub image: String,
    /// What was committed.
    pub pinned: Pinned,
    /// What a revert restores: the last values that were healthy here.
    pub previous: Option<Pinned>,
    /// The commit that set the values; the HelmRelease must have reconciled it (or a descendant).
    pub commit: String,
    /// Phase.
    pub phase: Phase,
    /// When the phase was entered (the soak's start while soaking).
    pub since: DateTime<Utc>,
    /// When the values were committed (the reconcile timeout counts from here).
    pub started: DateTime<Utc>,
    /// Smoke checks failed in a row.
    #[serde(default)]
    pub smoke_failures: u32,
    /// Why the last transition happened (failure message when failed).
    #[serde(default)]
    pub reason: String,
    /// Awaiting approval by merge: the promotion pull request to merge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<String>,
    /// That pull request was closed without merging (tagflow leaves it closed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pull_request_declined: bool,
}

impl Rollout {
    /// A rollout of `pinned` committed at `commit`.
    pub fn committed(
        env: &str,
        image: &str,
        pinned: Pinned,
        previous: Option<Pinned>,
        commit: &str,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            env: env.to_owned(),
            image: image.to_owned(),
            pinned,
            previous,
            commit: commit.to_owned(),
            phase: Phase::Committed,
            since: now,
            started: now,
            smoke_failures: 0,
            reason: String::new(),
            pull_request: None,
            pull_request_declined: false,
        }
    }

    fn enter(&self, phase: Phase, now: DateTime<Utc>, reason: impl Into<String>) -> Self {
        Self {
            phase,
            since: now,
            reason: reason.into(),
            ..self.clone()
        }
    }
}

/// Smoke-check settings as the state machine needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmokePolicy {
    /// Failed checks tolerated before the rollout fails.
    pub retries: u32,
    /// Wait between checks.
    pub interval: Duration,
    /// The rollout fails if the check has not passed this long after Ready.
    pub deadline: Duration,
}

/// Gates of the environment promoted from this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    /// The environment that receives the tag.
    pub to: String,
    /// How long this environment must stay healthy after the smoke check passed.
    pub soak: Duration,
    /// Whether an approval (env `to`, this tag) is needed.
    pub approval: bool,
    /// The approval is merging the promotion PR into `to` (not an `approvals.yaml` entry).
    pub by_pull_request: bool,
}

/// What the state machine needs of an environment's config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvPolicy {
    /// The kind of release watched; without one, a commit counts as Ready at once.
    pub release: Option<ReleaseKind>,
    /// Longest wait from commit to Ready.
    pub timeout: Duration,
    /// Smoke check, if configured.
    pub smoke: Option<SmokePolicy>,
    /// Gates of the next environment, if one promotes from this one.
    pub downstream: Option<Gate>,
    /// How often to look again while waiting on the cluster (the watch usually wakes us first).
    pub resync: Duration,
}

/// The HelmRelease's outcome for the rollout's commit, as read by the IO shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// Not reconciled yet (or no verdict yet), with what was seen.
    Pending(String),
    /// Ready=True for the commit (and helm tests passed or were not run).
    Ready,
    /// Ready=False for good, Stalled, Remediated or TestSuccess=False, with the message.
    Failed(String),
}

/// What the IO shell saw this time; `None` fields were not looked at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    /// The HelmRelease's outcome.
    pub release: Option<Release>,
    /// Smoke check: `Ok(())` passed, `Err(why)` failed.
    pub smoke: Option<Result<(), String>>,
    /// An approval for (downstream env, this tag) is committed.
    pub approved: bool,
}

/// What the IO shell should observe for a rollout in its current phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// Read the HelmRelease.
    pub release: bool,
    /// Run the smoke check.
    pub smoke: bool,
}

/// What to observe before calling [`step`].
pub fn needs(r: &Rollout, p: &EnvPolicy) -> Needs {
    let watching = matches!(
        r.phase,
        Phase::Committed | Phase::Ready | Phase::Soaking | Phase::AwaitingApproval
    );
    Needs {
        release: watching && p.release.is_some(),
        smoke: matches!(r.phase, Phase::Ready | Phase::Soaking) && p.smoke.is_some(),
    }
}

/// The outcome of one [`step`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The rollout after the step (equal to the input when nothing happened).
    pub next: Rollout,
    /// What happened, in order.
    pub events: Vec<Event>,
    /// Look again after this long (`None`: only when something else wakes the loop).
    pub wake: Option<Duration>,
}

fn elapsed(from: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (now - from).to_std().unwrap_or(Duration::ZERO)
}

fn remaining(from: DateTime<Utc>, span: Duration, now: DateTime<Utc>) -> Duration {
    span.saturating_sub(elapsed(from, now))
}

fn failed(r: &Rollout, now: DateTime<Utc>, why: String, mut events: Vec<Event>) -> Step {
    events.push(Event::Failed(why.clone()));
    Step {
        next: r.enter(Phase::Failed, now, why),
        events,
        wake: Some(Duration::ZERO),
    }
}

/// Advance a rollout by what was observed. Pure: the same inputs give the same step.
pub fn step(r: &Rollout, obs: &Observation, p: &EnvPolicy, now: DateTime<Utc>) -> Step {
    let stay = |wake: Option<Duration>| Step {
        next: r.clone(),
        events: Vec::new(),
        wake,
    };
    if let Some(Release::Failed(why)) = &obs.release
        && !r.phase.is_terminal()
        && r.phase != Phase::Failed
    {
        return failed(r, now, why.clone(), Vec::new());
    }
    match r.phase {
        Phase::Committed => {
            let ready = p.release.is_none() || obs.release == Some(Release::Ready);
            if ready {
                let why = match p.release {
                    Some(kind) => format!("{kind} Ready"),
                    None => "no release to follow: on to the smoke check".to_owned(),
                };
                let next = r.enter(Phase::Ready, now, &why);
                let mut events = vec![Event::Ready(why)];
                // Run the smoke check (or pass the gates) in the same cycle.
                let more = step(
                    &next,
                    &Observation {
                        release: None,
                        ..obs.clone()
                    },
                    p,
                    now,
                );
                if more.next != next {
                    events.extend(more.events);
                    return Step { events, ..more };
                }
                return Step {
                    next,
                    events,
                    wake: Some(Duration::ZERO),
                };
            }
            if elapsed(r.started, now) >= p.timeout {
                let seen = match &obs.release {
                    Some(Release::Pending(s)) => format!(": {s}"),
                    _ => String::new(),
                };
                return failed(
                    r,
                    now,
                    format!(
                        "not Ready {} after the commit{seen}",
                        humantime::format_duration(p.timeout)
                    ),
                    Vec::new(),
                );
            }
            stay(Some(p.resync.min(remaining(r.started, p.timeout, now))))
        }
        Phase::Ready => match (&p.smoke, &obs.smoke) {
            (None, _) | (Some(_), Some(Ok(()))) => passed_smoke(r, p, now),
            (Some(s), Some(Err(why))) => {
                let failures = r.smoke_failures + 1;
                if failures > s.retries || elapsed(r.since, now) >= s.deadline {
                    return failed(
                        r,
                        now,
                        format!("smoke check failed {failures} time(s): {why}"),
                        Vec::new(),
                    );
                }
                let next = Rollout {
                    smoke_failures: failures,
                    reason: why.clone(),
                    ..r.clone()
                };
                Step {
                    next,
                    events: Vec::new(),
                    wake: Some(s.interval),
                }
            }
            (Some(s), None) => stay(Some(s.interval)),
        },
        Phase::Soaking => {
            if let (Some(s), Some(Err(why))) = (&p.smoke, &obs.smoke) {
                let failures = r.smoke_failures + 1;
                if failures > s.retries {
                    return failed(
                        r,
                        now,
                        format!("smoke check failed {failures} time(s) while soaking: {why}"),
                        Vec::new(),
                    );
                }
                let next = Rollout {
                    smoke_failures: failures,
                    ..r.clone()
                };
                return Step {
                    next,
                    events: Vec::new(),
                    wake: Some(s.interval),
                };
            }
            let soak = p.downstream.as_ref().map_or(Duration::ZERO, |g| g.soak);
            let left = remaining(r.since, soak, now);
            if left.is_zero() {
                let mut events = vec![Event::SoakDone];
                let after = after_soak(r, p, obs, now);
                events.extend(after.events);
                return Step { events, ..after };
            }
            let next = Rollout {
                smoke_failures: if obs.smoke == Some(Ok(())) {
                    0
                } else {
                    r.smoke_failures
                },
                ..r.clone()
            };
            Step {
                next,
                events: Vec::new(),
                wake: Some(left.min(soak_check_every(p))),
            }
        }
        Phase::AwaitingApproval => {
            if obs.approved {
                let mut events = vec![Event::Approved];
                events.push(Event::Healthy);
                return Step {
                    next: r.enter(Phase::Healthy, now, "approved"),
                    events,
                    wake: Some(Duration::ZERO),
                };
            }
            stay(Some(p.resync))
        }
        Phase::Failed => stay(Some(Duration::ZERO)),
        Phase::Healthy | Phase::Promoted | Phase::Quarantined | Phase::Superseded => stay(None),
    }
}

fn passed_smoke(r: &Rollout, p: &EnvPolicy, now: DateTime<Utc>) -> Step {
    let mut events = Vec::new();
    if p.smoke.is_some() {
        events.push(Event::SmokeOk);
    }
    let base = Rollout {
        smoke_failures: 0,
        ..r.clone()
    };
    match &p.downstream {
        Some(g) if !g.soak.is_zero() => {
            let until = now + chrono::Duration::from_std(g.soak).unwrap_or_default();
            events.push(Event::Soaking(until));
            Step {
                next: base.enter(Phase::Soaking, now, "smoke check OK"),
                events,
                wake: Some(g.soak.min(soak_check_every(p))),
            }
        }
        _ => {
            let after = after_soak(&base, p, &Observation::default(), now);
            events.extend(after.events);
            Step { events, ..after }
        }
    }
}

/// How often health is checked while soaking: no more often than the resync.
fn soak_check_every(p: &EnvPolicy) -> Duration {
    p.smoke
        .as_ref()
        .map_or(p.resync, |s| s.interval.max(p.resync))
}

fn after_soak(r: &Rollout, p: &EnvPolicy, obs: &Observation, now: DateTime<Utc>) -> Step {
    match &p.downstream {
        Some(g) if g.approval && !obs.approved => Step {
            next: r.enter(Phase::AwaitingApproval, now, "soak done"),
            events: vec![if g.by_pull_request {
                Event::AwaitingMerge(g.to.clone())
            } else {
                Event::AwaitingApproval(g.to.clone())
            }],
            wake: Some(p.resync),
        },
        _ => Step {
            next: r.enter(Phase::Healthy, now, "every gate passed"),
            events: vec![Event::Healthy],
            wake: Some(Duration::ZERO),
        },
    }
}

/// The rollout after its revert + quarantine commit.
pub fn reverted(r: &Rollout, now: DateTime<Utc>) -> Rollout {
    let reason = r.reason.clone();
    r.enter(Phase::Quarantined, now, reason)
}

/// The rollout after the next environment was committed with its tag.
pub fn promoted(r: &Rollout, now: DateTime<Utc>) -> Rollout {
    r.enter(Phase::Promoted, now, "promoted")
}

/// The rollout after a newer commit replaced its values before it finished.
pub fn superseded(r: &Rollout, now: DateTime<Utc>, by: &str) -> Rollout {
    r.enter(Phase::Superseded, now, format!("superseded by {by}"))
}

/// The values a new rollout of this (env, image) would revert to: the last healthy ones.
pub fn last_good(r: &Rollout) -> Option<Pinned> {
    match r.phase {
        Phase::Soaking | Phase::AwaitingApproval | Phase::Healthy | Phase::Promoted => {
            Some(r.pinned.clone())
        }
        _ => r.previous.clone(),
    }
}

/// Whether the next environment may now receive `src`'s tag and digest, and why (not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Promotion {
    /// Every gate passed: write exactly this tag and digest.
    Go(Pinned),
    /// Not (yet).
    Hold(String),
}

/// Decide promotion from the source environment's rollout. A quarantined tag is never promoted.
pub fn promotion(src: &Rollout, quarantined: bool) -> Promotion {
    if quarantined {
        return Promotion::Hold(format!("{} is quarantined", src.pinned.tag));
    }
    match src.phase {
        Phase::Healthy => Promotion::Go(src.pinned.clone()),
        other => Promotion::Hold(format!("{} in {}: {other}", src.pinned.tag, src.env)),
    }
}

#[cfg(test)]
mod tests;
