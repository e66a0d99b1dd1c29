//! Is a workspace's cron due? Pure: the schedule, the last anchor and `now` in, a decision out.
//!
//! Expressions use the `cron` crate's syntax, which **has a seconds field**: six fields
//! `sec min hour day-of-month month day-of-week`, or seven with a trailing year.
//! `0 */30 * * * *` is every 30 minutes on the minute; `0 0 3 * * Mon-Fri` is 03:00 on weekdays.
//! Times are UTC.

use chrono::{DateTime, Utc};

pub use crate::config::{Schedule, ScheduleError};

/// What the watcher should do about one workspace now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// The fire time `at` has passed: run now. `missed` fire times after it were also passed
    /// (the agent was busy or down); they collapse into this one run.
    Run {
        /// The fire time being served.
        at: DateTime<Utc>,
        /// Later fire times that also passed and are folded into this run.
        missed: u32,
    },
    /// Nothing to do before `until`.
    Wait {
        /// The next fire time.
        until: DateTime<Utc>,
    },
    /// The schedule has no fire time after `anchor` (a year field in the past).
    Never,
}

/// Is a run due at `now`, given `anchor` = the fire time last served (or when watching began)?
pub fn due(schedule: &Schedule, anchor: DateTime<Utc>, now: DateTime<Utc>) -> Due {
    let Some(first) = schedule.next_after(anchor) else {
        return Due::Never;
    };
    if first > now {
        return Due::Wait { until: first };
    }
    // Serve the latest passed fire time; count the ones skipped over, without looping forever
    // on a per-second schedule after a long pause.
    let mut at = first;
    let mut missed = 0u32;
    for next in schedule.after(first).take(10_000) {
        if next > now {
            break;
        }
        at = next;
        missed += 1;
    }
    Due::Run { at, missed }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn table() {
        let every30 = Schedule::parse("0 */30 * * * *").unwrap();
        let cases = [
            // (anchor, now, expected)
            (
                "2024-01-01T10:00:00Z",
                "2024-01-01T10:10:00Z",
                Due::Wait {
                    until: t("2024-01-01T10:30:00Z"),
                },
            ),
            (
                "2024-01-01T10:00:00Z",
                "2024-01-01T10:30:00Z",
                Due::Run {
                    at: t("2024-01-01T10:30:00Z"),
                    missed: 0,
                },
            ),
            (
                "2024-01-01T10:00:00Z",
                "2024-01-01T11:45:00Z",
                Due::Run {
                    at: t("2024-01-01T11:30:00Z"),
                    missed: 2,
                },
            ),
            // The anchor itself never fires again.
            (
                "2024-01-01T10:30:00Z",
                "2024-01-01T10:30:00Z",
                Due::Wait {
                    until: t("2024-01-01T11:00:00Z"),
                },
            ),
        ];
        for (anchor, now, want) in cases {
            assert_eq!(due(&every30, t(anchor), t(now)), want, "{anchor} {now}");
        }
    }

    #[test]
    fn expressions_have_a_seconds_field() {
        assert!(Schedule::parse("*/30 * * * *").is_err(), "five fields");
        assert!(Schedule::parse("0 */30 * * * *").is_ok());
        assert!(Schedule::parse("0 0 3 * * Mon-Fri *").is_ok(), "year field");
        assert!(Schedule::parse("not cron").is_err());
        let e = Schedule::parse("0 0 0 30 Feb * 2020").unwrap_err();
        assert!(e.to_string().contains("never fires"), "{e}");
    }

    #[test]
    fn a_year_in_the_past_never_fires() {
        let s = Schedule::parse("0 0 0 1 Jan * 2099").unwrap();
        assert_eq!(
            due(&s, t("2100-01-01T00:00:00Z"), t("2100-06-01T00:00:00Z")),
            Due::Never
        );
    }
}
