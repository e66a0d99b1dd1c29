//! What a rollout step says: one line per event in the rollout's Slack thread.

use chrono::{DateTime, Utc};

/// A step worth telling people about (one line in the rollout's Slack thread).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The release reconciled the commit and is Ready (or, with no release to follow, the
    /// commit is pushed), and why it counts as ready.
    Ready(String),
    /// The smoke check passed.
    SmokeOk,
    /// Soaking until the given time.
    Soaking(DateTime<Utc>),
    /// Soak over.
    SoakDone,
    /// Waiting for an approval commit.
    AwaitingApproval(String),
    /// Waiting for the promotion pull request into the named environment to be merged.
    AwaitingMerge(String),
    /// Approved.
    Approved,
    /// All gates passed.
    Healthy,
    /// The rollout failed.
    Failed(String),
}

impl Event {
    /// One line for Slack, prefixed by the environment.
    pub fn text(&self, env: &str, tag: &str) -> String {
        match self {
            Self::Ready(why) => format!("{env}: {why}"),
            Self::SmokeOk => format!("{env}: smoke check OK"),
            Self::Soaking(until) => format!(
                "{env}: soaking until {}",
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            Self::SoakDone => format!("{env}: soak done"),
            Self::AwaitingApproval(to) => format!(
                "{env}: waiting for approval to promote {tag} to {to} (`tagflow approve {to} {tag}`)"
            ),
            Self::AwaitingMerge(to) => format!(
                "{env}: waiting for approval to promote {tag} to {to}: merge the promotion pull request tagflow opens for {to}"
            ),
            Self::Approved => format!("{env}: approved for promotion"),
            Self::Healthy => format!("{env}: healthy"),
            Self::Failed(why) => format!("{env}: FAILED: {why}"),
        }
    }
}
