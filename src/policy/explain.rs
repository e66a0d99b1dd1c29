//! Why tags were left out, told so that a person can fix the policy: "no tag qualifies" says how
//! many tags the registry listed, how many matched the regex, and for each reason a tag was left
//! out how many and which.

use std::fmt;
use std::time::Duration;

/// Examples shown per reason.
const EXAMPLES: usize = 3;

/// The listed tags sorted into those that qualify and those left out (with why).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Screened {
    /// Tags that passed the filter, sorted by tag.
    pub qualified: Vec<super::Qualified>,
    /// Distinct tags the registry listed.
    pub listed: usize,
    /// Listed tags that matched the `tags` regex.
    pub matched: usize,
    /// Tags left out after matching (or for not being valid tags), with the reason.
    pub left_out: Vec<(String, String)>,
    pattern: String,
    /// A few listed tags the regex did not match.
    unmatched: Vec<String>,
}

impl Screened {
    pub(super) fn new(pattern: &str, listed: usize) -> Self {
        Self {
            qualified: Vec::new(),
            listed,
            matched: 0,
            left_out: Vec::new(),
            pattern: pattern.to_owned(),
            unmatched: Vec::new(),
        }
    }

    pub(super) fn unmatched(&mut self, tag: &str) {
        if self.unmatched.len() < EXAMPLES + 1 {
            self.unmatched.push(tag.to_owned());
        }
    }

    /// Leave out the tag `tag` for `why` (a reason shared by a family of tags: "quarantined").
    pub fn leave_out(&mut self, tag: &str, why: impl Into<String>) {
        self.qualified.retain(|q| q.tag != tag);
        self.left_out.push((tag.to_owned(), why.into()));
    }

    /// The explanation when, after `skipped` (left out while ordering), nothing is left.
    pub(super) fn none_qualifies(&self, skipped: Vec<(String, String)>) -> NoCandidate {
        let mut left_out = self.left_out.clone();
        left_out.extend(skipped);
        NoCandidate {
            listed: self.listed,
            matched: self.matched,
            pattern: self.pattern.clone(),
            unmatched: self.unmatched.clone(),
            left_out,
        }
    }
}

/// Nothing to choose, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct NoCandidate {
    /// Distinct tags the registry listed.
    pub listed: usize,
    /// Listed tags that matched the regex.
    pub matched: usize,
    /// The `tags` regex.
    pub pattern: String,
    /// A few listed tags that did not match it.
    pub unmatched: Vec<String>,
    /// Each tag left out and why.
    pub left_out: Vec<(String, String)>,
}

impl fmt::Display for NoCandidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no tag qualifies: ")?;
        if self.listed == 0 {
            return write!(f, "the registry lists no tags");
        }
        let s = if self.listed == 1 { "" } else { "s" };
        write!(f, "the registry listed {} tag{s}, ", self.listed)?;
        match self.matched {
            0 => write!(f, "none matched `{}`", self.pattern)?,
            n => write!(f, "{n} matched `{}`", self.pattern)?,
        }
        if self.matched == 0 && !self.unmatched.is_empty() {
            write!(f, " ({})", examples(&self.unmatched, self.listed))?;
        }
        // One entry per reason, in the order reasons first came up.
        let mut families: Vec<(&str, Vec<String>)> = Vec::new();
        for (tag, why) in &self.left_out {
            match families.iter_mut().find(|(w, _)| w == why) {
                Some((_, tags)) => tags.push(tag.clone()),
                None => families.push((why, vec![tag.clone()])),
            }
        }
        for (why, tags) in &families {
            write!(f, "; {} {why}: {}", tags.len(), examples(tags, tags.len()))?;
        }
        Ok(())
    }
}

/// `a, b, c…` — the first few of `total`.
fn examples(tags: &[String], total: usize) -> String {
    let shown: Vec<&str> = tags.iter().take(EXAMPLES).map(String::as_str).collect();
    let more = if total > shown.len() { "…" } else { "" };
    format!("{}{more}", shown.join(", "))
}

/// `12m`, `1h 30m`: whole seconds, as the config writes durations.
pub(crate) fn duration(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}
