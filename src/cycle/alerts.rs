//! What a failing cycle says in Slack: the first failure of a kind once, an hourly summary
//! while it persists, and one word when cycles succeed again — keyed by a stable identity of
//! the failure, so a message whose text varies (a temp file name) is still "the same error".

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::notify::Poster;

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
    at: Option<Instant>,
}

impl Repeats {
    /// The first failure, alerted at `now`.
    pub fn new(now: Instant) -> Self {
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
    pub fn summary(&mut self, now: Instant, every: Duration) -> Option<String> {
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

/// The failure being reported and how often it repeated.
#[derive(Debug, Default)]
struct Reported {
    key: Option<String>,
    repeats: Repeats,
    /// Failed cycles since the last success, whatever their kind.
    failed: u32,
}

/// Alerts for failing cycles.
#[derive(Debug)]
pub struct Alerts {
    poster: Poster,
    reported: Mutex<Reported>,
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

impl Alerts {
    /// Alerts posted through `poster`.
    pub fn new(poster: Poster) -> Self {
        Self {
            poster,
            reported: Mutex::new(Reported::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Reported> {
        self.reported
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A cycle failed with `text`; `key` is its stable identity. Posted when the key is new,
    /// summarised hourly while it repeats.
    pub fn failed(&self, key: &str, text: &str) {
        self.failed_at(key, text, Instant::now());
    }

    fn failed_at(&self, key: &str, text: &str, now: Instant) {
        let mut r = self.lock();
        r.failed = r.failed.saturating_add(1);
        if r.key.as_deref() == Some(key) {
            r.repeats.failed_again();
            let summary = r.repeats.summary(now, SUMMARY_EVERY);
            drop(r);
            if let Some(s) = summary {
                self.poster
                    .post(&format!("tagflow: {s}: {}", first_line(text)));
            }
            return;
        }
        r.key = Some(key.to_owned());
        r.repeats = Repeats::new(now);
        drop(r);
        self.poster.post(&format!(
            "tagflow: a cycle failed (reported once until it changes):\n```\n{text}\n```"
        ));
    }

    /// A cycle succeeded: if a failure was reported, say it is over and how many cycles failed.
    /// Returns that count (0 when nothing was reported).
    pub fn succeeded(&self) -> u32 {
        let mut r = self.lock();
        let n = r.failed;
        r.failed = 0;
        if r.key.take().is_none() {
            return 0;
        }
        drop(r);
        self.poster.post(&format!(
            "tagflow: cycles succeed again (after {n} failed cycle{}).",
            if n == 1 { "" } else { "s" }
        ));
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_alert_per_kind_and_the_recovery_counts_every_failed_cycle() {
        let alerts = Alerts::new(Poster::new(None, crate::config::Current::new()));
        let t0 = Instant::now();
        // The text varies (a temp pack file name), the key does not: one alert, six cycles.
        for i in 0..6 {
            alerts.failed_at(
                "git:fetch:Os",
                &format!("cannot extend packfile 'pack_{i}'"),
                t0,
            );
        }
        assert_eq!(alerts.lock().repeats.count, 6);
        assert_eq!(alerts.succeeded(), 6);
        assert_eq!(alerts.succeeded(), 0, "said once");
    }

    #[test]
    fn persisting_errors_are_summarised_hourly() {
        let t0 = Instant::now();
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
