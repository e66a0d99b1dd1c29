//! Policy stage (pure): which tags qualify, and which one is newest — with the reason why.
//!
//! The IO shell gathers what an ordering needs (build times from the registry, commit ranks from
//! the source repo) and passes it in; nothing here reads a clock, a network or a disk.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use regex::Regex;

use crate::config::{Direction, Order, PolicyConfig};

mod range;

pub use range::{Range, RangeError};

/// A compiled policy.
#[derive(Debug, Clone)]
pub struct Policy {
    tags: Regex,
    extract: Option<String>,
    exclude: Vec<Regex>,
    /// The ordering.
    pub order: Order,
    direction: Direction,
    range: Option<Range>,
    allow_numeric_semver: bool,
}

/// A policy that does not compile (config validation reports these with lines first).
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Bad regex.
    #[error("failed to compile tag regex: {0}")]
    Regex(#[from] regex::Error),
    /// Bad semver range.
    #[error("failed to parse semver range: {0}")]
    Range(#[from] RangeError),
}

/// A tag that passed the filter, with the value the ordering looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qualified {
    /// The registry tag.
    pub tag: String,
    /// The extracted value (the tag itself without `extract`).
    pub key: String,
}

/// What the IO shell learned about a qualified tag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// Image config `created` (for `order: built`).
    pub created: Option<DateTime<Utc>>,
    /// Position on the source branch, 0 = branch head (for `order: git`), or why it has none.
    pub commit_rank: Option<Result<usize, String>>,
}

/// Why the chosen tag won.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Latest image build time.
    NewestBuild {
        /// Its `created`.
        created: DateTime<Utc>,
        /// Other tags built at the same instant; the tie went to the greatest tag name.
        tied_with: Vec<String>,
    },
    /// Most recent commit on the branch.
    NewestCommit {
        /// Commits between the branch head and this tag's commit.
        behind_head: usize,
    },
    /// Highest semantic version.
    HighestVersion(semver::Version),
    /// Highest (or lowest, with `direction: desc`) number.
    Number(u128),
    /// Last (or first) in byte order.
    Alphabetical,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NewestBuild { created, tied_with } if tied_with.is_empty() => {
                write!(f, "newest build ({})", created.to_rfc3339())
            }
            Self::NewestBuild { created, tied_with } => write!(
                f,
                "newest build ({}), tied with {} — the greatest tag name wins ties",
                created.to_rfc3339(),
                tied_with.join(", ")
            ),
            Self::NewestCommit { behind_head: 0 } => write!(f, "its commit is the branch head"),
            Self::NewestCommit { behind_head } => {
                write!(
                    f,
                    "most recent commit on the branch ({behind_head} commits behind head)"
                )
            }
            Self::HighestVersion(v) => write!(f, "highest version {v}"),
            Self::Number(n) => write!(f, "number {n}"),
            Self::Alphabetical => write!(f, "alphabetical order"),
        }
    }
}

/// The outcome of a selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The winning tag.
    pub tag: String,
    /// Why it won.
    pub reason: Reason,
    /// Qualified tags considered.
    pub considered: usize,
    /// Tags left out and why (not on the branch, no build time, …).
    pub skipped: Vec<(String, String)>,
}

/// Nothing to choose.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no tag qualifies ({considered} matched the filter; {})", summarize(.skipped))]
pub struct NoCandidate {
    /// Tags that matched the filter.
    pub considered: usize,
    /// Why each was left out.
    pub skipped: Vec<(String, String)>,
}

fn summarize(skipped: &[(String, String)]) -> String {
    if skipped.is_empty() {
        return "none left out".to_owned();
    }
    let shown: Vec<String> = skipped
        .iter()
        .take(3)
        .map(|(t, w)| format!("{t}: {w}"))
        .collect();
    let more = skipped.len().saturating_sub(3);
    if more > 0 {
        format!("{}; and {more} more", shown.join("; "))
    } else {
        shown.join("; ")
    }
}

impl Policy {
    /// Compile a policy from config.
    pub fn compile(c: &PolicyConfig) -> Result<Self, PolicyError> {
        Ok(Self {
            tags: Regex::new(&c.tags)?,
            extract: c.extract.clone(),
            exclude: c
                .exclude
                .iter()
                .map(|e| Regex::new(e))
                .collect::<Result<_, _>>()?,
            order: c.order,
            direction: c.direction,
            range: c.range.as_deref().map(Range::parse).transpose()?,
            allow_numeric_semver: c.allow_numeric_semver,
        })
    }

    /// Keep the tags that match the filter, are not excluded and are valid for the ordering.
    /// Tags are returned sorted, so the result does not depend on the registry's listing order.
    pub fn filter<'a>(&self, tags: impl IntoIterator<Item = &'a str>) -> Vec<Qualified> {
        let mut out: Vec<Qualified> = tags
            .into_iter()
            .filter(|t| crate::rewrite::valid_tag(t))
            .filter(|t| !self.exclude.iter().any(|e| e.is_match(t)))
            .filter_map(|t| {
                let caps = self.tags.captures(t)?;
                let key = match &self.extract {
                    Some(tpl) => {
                        let mut s = String::new();
                        caps.expand(tpl, &mut s);
                        s
                    }
                    None => t.to_owned(),
                };
                Some(Qualified {
                    tag: t.to_owned(),
                    key,
                })
            })
            .filter(|q| match self.order {
                Order::Semver => self.version(&q.key).is_some(),
                Order::Numerical => q.key.parse::<u128>().is_ok(),
                _ => !q.key.is_empty(),
            })
            .collect();
        out.sort_by(|a, b| a.tag.cmp(&b.tag));
        out.dedup_by(|a, b| a.tag == b.tag);
        out
    }

    fn version(&self, key: &str) -> Option<semver::Version> {
        let s = key.strip_prefix('v').unwrap_or(key);
        // A 7-hex short hash made only of digits would otherwise parse as a version.
        if !self.allow_numeric_semver && !s.contains('.') {
            return None;
        }
        // With the flag, an all-digit tag is the major version (`1234567` → 1234567.0.0).
        let numeric =
            self.allow_numeric_semver && !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let v = if numeric {
            semver::Version::new(s.parse().ok()?, 0, 0)
        } else {
            semver::Version::parse(s).ok()?
        };
        match &self.range {
            Some(r) if !r.matches(&v) => None,
            _ => Some(v),
        }
    }

    /// Pick the newest qualified tag. `facts` holds what the ordering needs, keyed by tag.
    pub fn select(
        &self,
        qualified: &[Qualified],
        facts: &BTreeMap<String, Facts>,
    ) -> Result<Decision, NoCandidate> {
        let mut skipped = Vec::new();
        let considered = qualified.len();
        let none = |skipped| NoCandidate {
            considered,
            skipped,
        };
        let decision = |tag: &str, reason, skipped| Decision {
            tag: tag.to_owned(),
            reason,
            considered,
            skipped,
        };
        match self.order {
            Order::Built => {
                let mut dated = Vec::new();
                for q in qualified {
                    match facts.get(&q.tag).and_then(|f| f.created) {
                        Some(c) => dated.push((c, q)),
                        None => skipped.push((
                            q.tag.clone(),
                            "image has no build time (created)".to_owned(),
                        )),
                    }
                }
                let Some(newest) = dated.iter().map(|(c, _)| *c).max() else {
                    return Err(none(skipped));
                };
                let mut tied: Vec<&str> = dated
                    .iter()
                    .filter(|(c, _)| *c == newest)
                    .map(|(_, q)| q.tag.as_str())
                    .collect();
                tied.sort_unstable();
                let winner = tied.pop().unwrap_or_default();
                let tied_with = tied.iter().map(|t| (*t).to_owned()).collect();
                Ok(decision(
                    winner,
                    Reason::NewestBuild {
                        created: newest,
                        tied_with,
                    },
                    skipped,
                ))
            }
            Order::Git => {
                let mut best: Option<(usize, &Qualified)> = None;
                for q in qualified {
                    match facts.get(&q.tag).and_then(|f| f.commit_rank.clone()) {
                        Some(Ok(rank)) => {
                            if best.is_none_or(|(b, bq)| rank < b || (rank == b && q.tag > bq.tag))
                            {
                                best = Some((rank, q));
                            }
                        }
                        Some(Err(why)) => skipped.push((q.tag.clone(), why)),
                        None => skipped.push((q.tag.clone(), "commit not looked up".to_owned())),
                    }
                }
                let (rank, q) = best.ok_or_else(|| none(skipped.clone()))?;
                Ok(decision(
                    &q.tag,
                    Reason::NewestCommit { behind_head: rank },
                    skipped,
                ))
            }
            Order::Semver => {
                let pick = self
                    .best_by(qualified, |q| self.version(&q.key))
                    .ok_or_else(|| none(Vec::new()))?;
                Ok(decision(
                    &pick.0.tag,
                    Reason::HighestVersion(pick.1),
                    skipped,
                ))
            }
            Order::Numerical => {
                let pick = self
                    .best_by(qualified, |q| q.key.parse::<u128>().ok())
                    .ok_or_else(|| none(Vec::new()))?;
                Ok(decision(&pick.0.tag, Reason::Number(pick.1), skipped))
            }
            Order::Alphabetical => {
                let pick = self
                    .best_by(qualified, |q| Some(q.key.clone()))
                    .ok_or_else(|| none(Vec::new()))?;
                Ok(decision(&pick.0.tag, Reason::Alphabetical, skipped))
            }
        }
    }

    /// Greatest key (smallest with `desc`); equal keys go to the greatest tag name.
    fn best_by<'q, K: Ord>(
        &self,
        qualified: &'q [Qualified],
        key: impl Fn(&Qualified) -> Option<K>,
    ) -> Option<(&'q Qualified, K)> {
        let mut keyed: Vec<(K, &Qualified)> = qualified
            .iter()
            .filter_map(|q| key(q).map(|k| (k, q)))
            .collect();
        keyed.sort_by(|(ka, qa), (kb, qb)| {
            let by_key = match self.direction {
                Direction::Asc => ka.cmp(kb),
                Direction::Desc => kb.cmp(ka),
            };
            by_key.then_with(|| qa.tag.cmp(&qb.tag))
        });
        keyed.pop().map(|(k, q)| (q, k))
    }

    /// Whether the ordering needs image build times from the registry.
    pub fn needs_build_time(&self) -> bool {
        self.order == Order::Built
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
