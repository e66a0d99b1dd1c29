//! Policy stage (pure): which tags qualify, and which one is newest — with the reason why.
//!
//! The IO shell gathers what an ordering needs (build times from the registry, commit ranks from
//! the source repo) and passes it in; nothing here reads a clock, a network or a disk.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use regex::Regex;

use crate::config::{Direction, Order, PolicyConfig};

mod cache;
mod explain;

pub use crate::semrange::{Range, RangeError};
pub use cache::Compiled;
pub use explain::{NoCandidate, Screened};

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
    min_age: Option<Duration>,
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
    /// The tag the ordering would have picked had `minAge` not held it back.
    pub held_back: Option<HeldBack>,
}

/// A tag the ordering ranks first but that has not existed for `minAge` yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldBack {
    /// The tag.
    pub tag: String,
    /// How long ago its image was built.
    pub age: Duration,
    /// The policy's `minAge`.
    pub min_age: Duration,
}

impl fmt::Display for HeldBack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "newest qualifying tag {} is {} old, minAge {}",
            self.tag,
            explain::duration(self.age),
            explain::duration(self.min_age)
        )
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
            min_age: c.min_age,
        })
    }

    /// Keep the tags that match the filter, are not excluded and are valid for the ordering.
    pub fn filter<'a>(&self, tags: impl IntoIterator<Item = &'a str>) -> Vec<Qualified> {
        self.screen(tags).qualified
    }

    /// Sort the listed tags into those that qualify and those left out, with why: the
    /// explanation when none qualifies. Qualified tags are sorted, so the result does not
    /// depend on the registry's listing order.
    pub fn screen<'a>(&self, tags: impl IntoIterator<Item = &'a str>) -> Screened {
        let mut listed: Vec<&str> = tags.into_iter().collect();
        listed.sort_unstable();
        listed.dedup();
        let mut out = Screened::new(self.tags.as_str(), listed.len());
        for t in listed {
            if !crate::rewrite::valid_tag(t) {
                out.leave_out(t, "not valid tags");
                continue;
            }
            let Some(caps) = self.tags.captures(t) else {
                out.unmatched(t);
                continue;
            };
            out.matched += 1;
            if let Some(e) = self.exclude.iter().find(|e| e.is_match(t)) {
                out.leave_out(t, format!("excluded by `{e}`"));
                continue;
            }
            let key = match &self.extract {
                Some(tpl) => {
                    let mut s = String::new();
                    caps.expand(tpl, &mut s);
                    s
                }
                None => t.to_owned(),
            };
            let unfit = match self.order {
                Order::Semver => match (self.parse_version(&key), &self.range) {
                    (None, _) => Some("not semver".to_owned()),
                    (Some(v), Some(r)) if !r.matches(&v) => Some(format!("outside range {r}")),
                    _ => None,
                },
                Order::Numerical => key.parse::<u128>().is_err().then(|| "not a number".into()),
                _ => key.is_empty().then(|| "empty after extract".into()),
            };
            match unfit {
                Some(why) => out.leave_out(t, why),
                None => out.qualified.push(Qualified {
                    tag: t.to_owned(),
                    key,
                }),
            }
        }
        out
    }

    fn version(&self, key: &str) -> Option<semver::Version> {
        let v = self.parse_version(key)?;
        match &self.range {
            Some(r) if !r.matches(&v) => None,
            _ => Some(v),
        }
    }

    fn parse_version(&self, key: &str) -> Option<semver::Version> {
        let s = key.strip_prefix('v').unwrap_or(key);
        // A 7-hex short hash made only of digits would otherwise parse as a version.
        if !self.allow_numeric_semver && !s.contains('.') {
            return None;
        }
        // With the flag, an all-digit tag is the major version (`1234567` → 1234567.0.0).
        let numeric =
            self.allow_numeric_semver && !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if numeric {
            Some(semver::Version::new(s.parse().ok()?, 0, 0))
        } else {
            semver::Version::parse(s).ok()
        }
    }

    /// Pick the newest qualified tag. `facts` holds what the ordering needs, keyed by tag;
    /// `now` judges `minAge`.
    pub fn select(
        &self,
        screened: &Screened,
        facts: &BTreeMap<String, Facts>,
        now: DateTime<Utc>,
    ) -> Result<Decision, NoCandidate> {
        let mut skipped = Vec::new();
        let mut old_enough = Vec::new();
        let mut young = Vec::new();
        for q in &screened.qualified {
            let created = facts.get(&q.tag).and_then(|f| f.created);
            match (self.min_age, created) {
                (None, _) => old_enough.push(q),
                (Some(_), None) => skipped.push((
                    q.tag.clone(),
                    "with no build time (image config `created`), which minAge needs".to_owned(),
                )),
                (Some(min), Some(c)) => match age(now, c) {
                    a if a < min => young.push((q, a)),
                    _ => old_enough.push(q),
                },
            }
        }
        // What the ordering would pick without minAge: reported when minAge holds it back.
        let held_back = self.min_age.and_then(|min_age| {
            let mut all: Vec<&Qualified> = old_enough.clone();
            all.extend(young.iter().map(|(q, _)| *q));
            let (tag, _) = self.pick(&all, facts, &mut Vec::new())?;
            let (_, age) = young.iter().find(|(q, _)| q.tag == tag)?;
            Some(HeldBack {
                tag,
                age: *age,
                min_age,
            })
        });
        if let Some(min) = self.min_age {
            skipped.extend(young.iter().map(|(q, _)| {
                (
                    q.tag.clone(),
                    format!("younger than minAge {}", explain::duration(min)),
                )
            }));
        }
        match self.pick(&old_enough, facts, &mut skipped) {
            Some((tag, reason)) => Ok(Decision {
                tag,
                reason,
                considered: screened.qualified.len(),
                skipped,
                held_back,
            }),
            None => Err(screened.none_qualifies(skipped)),
        }
    }

    /// The ordering's pick among `candidates`; tags it cannot rank go to `skipped`.
    fn pick(
        &self,
        candidates: &[&Qualified],
        facts: &BTreeMap<String, Facts>,
        skipped: &mut Vec<(String, String)>,
    ) -> Option<(String, Reason)> {
        match self.order {
            Order::Built => {
                let mut dated = Vec::new();
                for q in candidates {
                    match facts.get(&q.tag).and_then(|f| f.created) {
                        Some(c) => dated.push((c, q)),
                        None => skipped.push((
                            q.tag.clone(),
                            "with no build time (image config `created`)".to_owned(),
                        )),
                    }
                }
                let newest = dated.iter().map(|(c, _)| *c).max()?;
                let mut tied: Vec<&str> = dated
                    .iter()
                    .filter(|(c, _)| *c == newest)
                    .map(|(_, q)| q.tag.as_str())
                    .collect();
                tied.sort_unstable();
                let winner = tied.pop()?.to_owned();
                let tied_with = tied.iter().map(|t| (*t).to_owned()).collect();
                Some((
                    winner,
                    Reason::NewestBuild {
                        created: newest,
                        tied_with,
                    },
                ))
            }
            Order::Git => {
                let mut best: Option<(usize, &Qualified)> = None;
                for q in candidates {
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
                let (rank, q) = best?;
                Some((q.tag.clone(), Reason::NewestCommit { behind_head: rank }))
            }
            Order::Semver => self
                .best_by(candidates, |q| self.version(&q.key))
                .map(|(q, v)| (q.tag.clone(), Reason::HighestVersion(v))),
            Order::Numerical => self
                .best_by(candidates, |q| q.key.parse::<u128>().ok())
                .map(|(q, n)| (q.tag.clone(), Reason::Number(n))),
            Order::Alphabetical => self
                .best_by(candidates, |q| Some(q.key.clone()))
                .map(|(q, _)| (q.tag.clone(), Reason::Alphabetical)),
        }
    }

    /// Greatest key (smallest with `desc`); equal keys go to the greatest tag name.
    fn best_by<'q, K: Ord>(
        &self,
        candidates: &[&'q Qualified],
        key: impl Fn(&Qualified) -> Option<K>,
    ) -> Option<(&'q Qualified, K)> {
        let mut keyed: Vec<(K, &Qualified)> = candidates
            .iter()
            .filter_map(|q| key(q).map(|k| (k, *q)))
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

    /// Whether the ordering or `minAge` needs image build times from the registry.
    pub fn needs_build_time(&self) -> bool {
        self.order == Order::Built || self.min_age.is_some()
    }

    /// Whether the same tags (and facts) always give the same decision: not with `minAge`,
    /// which the clock decides, nor `order: git`, which the source branch's history decides.
    pub fn is_timeless(&self) -> bool {
        self.min_age.is_none() && self.order != Order::Git
    }
}

/// How long ago `created` was; a build time in the future is age zero.
fn age(now: DateTime<Utc>, created: DateTime<Utc>) -> Duration {
    (now - created).to_std().unwrap_or(Duration::ZERO)
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
