//! What tagflow remembers of rollouts across restarts, and `tagflow status`'s view of it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Rollout, elapsed};

/// Everything tagflow must remember across restarts and failovers, stored as JSON on the Lease.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// The latest rollout per `env/image`.
    #[serde(default)]
    pub rollouts: std::collections::BTreeMap<String, Rollout>,
    /// Slack thread (`ts` of the parent message) per `image:tag`.
    #[serde(default)]
    pub threads: std::collections::BTreeMap<String, String>,
}

impl State {
    /// Key of an (env, image) rollout.
    pub fn key(env: &str, image: &str) -> String {
        format!("{env}/{image}")
    }

    /// The rollout of (env, image), if any.
    pub fn get(&self, env: &str, image: &str) -> Option<&Rollout> {
        self.rollouts.get(&Self::key(env, image))
    }
}

/// `tagflow status`: one line per (environment, image): tag, phase, since when (pure).
pub fn status_text(state: &State, now: DateTime<Utc>) -> String {
    if state.rollouts.is_empty() {
        return "no rollouts recorded yet\n".to_owned();
    }
    let mut out = String::from("ENV\tIMAGE\tTAG\tPHASE\tSINCE\n");
    for r in state.rollouts.values() {
        let ago = humantime::format_duration(Duration::from_secs(elapsed(r.since, now).as_secs()));
        let why = if r.reason.is_empty() {
            String::new()
        } else {
            format!("\t{}", r.reason)
        };
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{} ({ago} ago){why}\n",
            r.env,
            r.image,
            r.pinned.tag,
            r.phase,
            r.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    out
}
