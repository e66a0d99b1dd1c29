//! An infra workspace's `schedule`: a cron expression, parsed (and refused when it never fires).
//!
//! Expressions use the `cron` crate's syntax, which **has a seconds field**: six fields
//! `sec min hour day-of-month month day-of-week`, or seven with a trailing year.
//! `0 */30 * * * *` is every 30 minutes on the minute; `0 0 3 * * Mon-Fri` is 03:00 on weekdays.
//! Times are UTC.

use std::str::FromStr;

use chrono::{DateTime, Utc};

/// A schedule that failed to parse.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// Not a cron expression the `cron` crate accepts.
    #[error("bad cron expression {expr:?} (six fields: sec min hour day month weekday): {reason}")]
    Parse {
        /// The expression.
        expr: String,
        /// The parser's reason.
        reason: String,
    },
    /// Parses but never fires (e.g. 30 February).
    #[error("cron expression {0:?} never fires")]
    Never(String),
}

/// A parsed cron schedule.
#[derive(Debug, Clone)]
pub struct Schedule(cron::Schedule);

impl Schedule {
    /// Parse an expression; one that never fires is refused.
    pub fn parse(expr: &str) -> Result<Self, ScheduleError> {
        let s = cron::Schedule::from_str(expr.trim()).map_err(|e| ScheduleError::Parse {
            expr: expr.to_owned(),
            reason: e.to_string(),
        })?;
        if s.upcoming(Utc).next().is_none() {
            return Err(ScheduleError::Never(expr.to_owned()));
        }
        Ok(Self(s))
    }

    /// The first fire time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.0.after(&t).next()
    }

    /// Fire times strictly after `t`, in order.
    pub fn after(&self, t: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        self.0.after(&t)
    }
}
