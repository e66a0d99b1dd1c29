//! What the cycle says in Slack about rollouts, and how a persisting error is summarised.

use std::collections::BTreeMap;
use std::time::Duration;

use super::Agent;
use crate::config;
use crate::notify::Notifier;

/// A persisting error is summarised at most this often ("still failing, 12 times in 1h").
pub const SUMMARY_EVERY: Duration = Duration::from_secs(3600);

/// Counts of one persisting error, for its summary (pure apart from the `now` passed in).
#[derive(Debug, Clone, Copy, Default)]
pub struct Repeats {
    /// Failed cycles with this error, the first included.
    pub count: u32,
    /// Count when the last summary (or the first alert) went out.
    said: u32,
    /// When the last summary (or the first alert) went out.
    at: Option<std::time::Instant>,
}

impl Repeats {
    /// The first failure, alerted at `now`.
    pub fn new(now: std::time::Instant) -> Self {
        Self {
            count: 1,
            said: 1,
            at: Some(now),
        }
    }

    /// One more failed cycle with the same error.
    pub fn failed_again(&mut self) {
        self.count = self.count.saturating_add(1);
    }

    /// "still failing, N times in 1h" once `every` has passed since the last word, if it failed
    /// again meanwhile.
    pub fn summary(&mut self, now: std::time::Instant, every: Duration) -> Option<String> {
        let since = self.at?;
        let elapsed = now.saturating_duration_since(since);
        if elapsed < every || self.count == self.said {
            return None;
        }
        let n = self.count - self.said;
        self.said = self.count;
        self.at = Some(now);
        let span = humantime::format_duration(Duration::from_secs(elapsed.as_secs() / 60 * 60));
        Some(format!(
            "still failing, {n} time{} in {span}",
            if n == 1 { "" } else { "s" }
        ))
    }
}

pub(super) fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

/// The Slack bot, when a token and a channel are configured and the token can be read.
pub(super) fn bot_of(slack: &config::SlackConfig) -> Option<crate::notify::Bot> {
    let (Some(token), Some(channel)) = (&slack.bot_token, &slack.channel) else {
        return None;
    };
    match token.read() {
        Ok(token) => Some(crate::notify::Bot {
            api_url: slack.api_url.clone(),
            token,
            channel: channel.clone(),
        }),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the Slack bot token");
            None
        }
    }
}

impl Agent {
    /// Say one step of a rollout: a reply in the thread of (image, tag) with the parent's status
    /// line updated when a bot token is configured, else a flat webhook message.
    pub(super) fn rollout_post(
        &self,
        state: &crate::rollout::State,
        r: &crate::rollout::Rollout,
        text: &str,
    ) {
        let (Some(n), Some(cfg)) = (&self.notifier, self.config()) else {
            return;
        };
        let Some(slack) = &cfg.notify.slack else {
            return;
        };
        let subject = format!("{} {}", r.image, r.pinned.tag);
        match bot_of(slack) {
            Some(bot) => {
                let mut phases: BTreeMap<&str, String> = state
                    .rollouts
                    .values()
                    .filter(|o| o.image == r.image && o.pinned.tag == r.pinned.tag)
                    .map(|o| (o.env.as_str(), o.phase.to_string()))
                    .collect();
                phases.insert(r.env.as_str(), r.phase.to_string());
                let status = format!(
                    "tagflow: {subject} — {}",
                    phases
                        .iter()
                        .map(|(e, p)| format!("{e}: {p}"))
                        .collect::<Vec<_>>()
                        .join(" · ")
                );
                n.thread(
                    bot,
                    &format!("{}:{}", r.image, r.pinned.tag),
                    status,
                    text.to_owned(),
                );
            }
            None => self.post(&format!("tagflow: {subject}: {text}")),
        }
    }

    pub(super) fn notifier_threads(&self) -> BTreeMap<String, String> {
        self.notifier
            .as_ref()
            .map(Notifier::threads)
            .unwrap_or_default()
    }

    pub(super) fn notifier_threads_seed(&self, state: &crate::rollout::State) {
        if let Some(n) = &self.notifier {
            n.seed_threads(&state.threads);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persisting_errors_are_summarised_hourly() {
        let t0 = std::time::Instant::now();
        let hour = Duration::from_secs(3600);
        let mut r = Repeats::new(t0);
        assert_eq!(
            r.summary(t0 + hour, hour),
            None,
            "nothing new since the alert"
        );
        for _ in 0..12 {
            r.failed_again();
        }
        assert_eq!(r.summary(t0 + hour / 2, hour), None, "not before the hour");
        assert_eq!(
            r.summary(t0 + hour, hour).as_deref(),
            Some("still failing, 12 times in 1h")
        );
        r.failed_again();
        assert_eq!(r.summary(t0 + hour + hour / 2, hour), None);
        assert_eq!(
            r.summary(t0 + hour * 2, hour).as_deref(),
            Some("still failing, 1 time in 1h")
        );
        assert_eq!(r.count, 14);
    }
}
