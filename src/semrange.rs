//! Semver ranges as Flux reads them (the Masterminds grammar), which also covers the Cargo-style
//! ranges tagflow took before (`>=1.2, <2`).
//!
//! - comparators separated by spaces or commas must all hold: `>=1.0.0 <2.0.0`, `>=1.2, <2`;
//! - `||` separates alternatives: `^1.2 || ^2.0`;
//! - operators `=` (also no operator), `!=`, `>`, `>=` (`=>`), `<`, `<=` (`=<`), `~` (`~>`), `^`;
//! - partial versions and wildcards: `1.2` and `1.2.x` are every 1.2 patch, `1.x` every 1 minor,
//!   `*` every version; `>1.2` means above every 1.2 patch, `<=1.4` includes every 1.4 patch;
//! - hyphen ranges, inclusive at both ends: `1.2 - 1.4.5` is `>=1.2.0 <=1.4.5`;
//! - a pre-release (`2.0.0-rc.1`) satisfies a comparator only if that comparator names a
//!   pre-release itself (`>=2.0.0-0`), so plain ranges never pick release candidates.
//!
//! Unlike Cargo, a bare version is that version exactly (`1.2.3` is `=1.2.3`), as in Flux.

use std::fmt;

use semver::{BuildMetadata, Prerelease, Version};

/// A parsed range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    text: String,
    /// Alternatives (`||`); each holds when all its comparators do.
    any_of: Vec<Vec<Comparator>>,
}

/// A range that does not parse, with the part at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RangeError(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Tilde,
    Caret,
}

/// A version with parts left out or wildcarded (`1`, `1.2`, `1.x`, `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Partial {
    major: Option<u64>,
    minor: Option<u64>,
    patch: Option<u64>,
    pre: Prerelease,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Comparator {
    op: Op,
    v: Partial,
}

/// Longest first, so `>=` is not read as `>` followed by `=1.2`.
const OPS: &[(&str, Op)] = &[
    (">=", Op::Ge),
    ("=>", Op::Ge),
    ("<=", Op::Le),
    ("=<", Op::Le),
    ("!=", Op::Ne),
    ("~>", Op::Tilde),
    (">", Op::Gt),
    ("<", Op::Lt),
    ("=", Op::Eq),
    ("~", Op::Tilde),
    ("^", Op::Caret),
];

impl Range {
    /// Parse a range.
    pub fn parse(text: &str) -> Result<Self, RangeError> {
        if text.trim().is_empty() {
            return Err(RangeError("empty range".into()));
        }
        let any_of = text
            .split("||")
            .map(parse_all_of)
            .collect::<Result<_, _>>()?;
        Ok(Self {
            text: text.trim().to_owned(),
            any_of,
        })
    }

    /// Whether `v` is in the range.
    pub fn matches(&self, v: &Version) -> bool {
        self.any_of
            .iter()
            .any(|all| all.iter().all(|c| c.matches(v)))
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// One alternative: comparators and hyphen ranges, separated by spaces or commas.
fn parse_all_of(text: &str) -> Result<Vec<Comparator>, RangeError> {
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
        .collect();
    if words.is_empty() {
        return Err(RangeError(format!(
            "empty alternative in {:?} (`||` with nothing on one side)",
            text.trim()
        )));
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let word = words[i];
        if words.get(i + 1) == Some(&"-") {
            let Some(upper) = words.get(i + 2) else {
                return Err(RangeError(format!(
                    "hyphen range {word:?} - needs an upper end"
                )));
            };
            out.push(Comparator {
                op: Op::Ge,
                v: partial(word)?,
            });
            out.push(Comparator {
                op: Op::Le,
                v: partial(upper)?,
            });
            i += 3;
            continue;
        }
        if word == "-" {
            return Err(RangeError("hyphen range needs a lower end".into()));
        }
        let (op, rest) = split_op(word);
        // `>= 1.2.3`: the operator may stand apart from its version.
        let (version, used) = match (rest.is_empty(), words.get(i + 1)) {
            (true, Some(next)) if op.is_some() => (*next, 2),
            (true, _) => {
                return Err(RangeError(format!("{word:?} needs a version after it")));
            }
            _ => (rest, 1),
        };
        out.push(Comparator {
            op: op.unwrap_or(Op::Eq),
            v: partial(version)?,
        });
        i += used;
    }
    Ok(out)
}

fn split_op(word: &str) -> (Option<Op>, &str) {
    OPS.iter()
        .find_map(|(s, op)| word.strip_prefix(s).map(|rest| (Some(*op), rest)))
        .unwrap_or((None, word))
}

fn partial(text: &str) -> Result<Partial, RangeError> {
    let bad = |why: &str| RangeError(format!("{text:?} is not a version: {why}"));
    let s = text.strip_prefix('v').unwrap_or(text);
    let s = s.split_once('+').map_or(s, |(v, _build)| v);
    let (core, pre) = match s.split_once('-') {
        Some((core, pre)) => (
            core,
            Prerelease::new(pre).map_err(|e| bad(&format!("pre-release: {e}")))?,
        ),
        None => (s, Prerelease::EMPTY),
    };
    let parts: Vec<&str> = core.split('.').collect();
    if parts.len() > 3 {
        return Err(bad("more than major.minor.patch"));
    }
    let mut nums = [None; 3];
    let mut wild = false;
    for (n, part) in nums.iter_mut().zip(&parts) {
        if matches!(*part, "x" | "X" | "*") {
            wild = true;
        } else if wild {
            return Err(bad("a number after a wildcard"));
        } else if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(&format!("{part:?} is not a number or x")));
        } else {
            *n = Some(part.parse().map_err(|_| bad("number too large"))?);
        }
    }
    if nums[2].is_none() && !pre.is_empty() {
        return Err(bad("a pre-release needs major.minor.patch"));
    }
    Ok(Partial {
        major: nums[0],
        minor: nums[1],
        patch: nums[2],
        pre,
    })
}

impl Partial {
    /// The lowest version the partial covers (`1.2` → `1.2.0`).
    fn floor(&self) -> Version {
        Version {
            major: self.major.unwrap_or(0),
            minor: self.minor.unwrap_or(0),
            patch: self.patch.unwrap_or(0),
            pre: self.pre.clone(),
            build: BuildMetadata::EMPTY,
        }
    }

    /// Every given part equals `v`'s (`1.2` covers 1.2.7; `1.2.3-rc.1` only itself).
    fn covers(&self, v: &Version) -> bool {
        self.major.is_none_or(|m| m == v.major)
            && self.minor.is_none_or(|m| m == v.minor)
            && self.patch.is_none_or(|p| p == v.patch)
            && (self.patch.is_none() || self.pre == v.pre)
    }
}

impl Comparator {
    fn matches(&self, v: &Version) -> bool {
        // Release candidates only where the range asks for them.
        if !v.pre.is_empty() && self.v.pre.is_empty() {
            return false;
        }
        let v = &Version {
            build: BuildMetadata::EMPTY,
            ..v.clone()
        };
        let p = &self.v;
        let floor = p.floor();
        match self.op {
            Op::Eq => p.covers(v),
            Op::Ne => !p.covers(v),
            Op::Ge => *v >= floor,
            Op::Lt => *v < floor,
            // Above every version the partial covers.
            Op::Gt => match (p.major, p.minor, p.patch) {
                (None, ..) => false,
                (Some(m), None, _) => v.major > m,
                (Some(m), Some(n), None) => v.major > m || (v.major == m && v.minor > n),
                (Some(_), Some(_), Some(_)) => *v > floor,
            },
            // Up to and including every version the partial covers.
            Op::Le => match (p.major, p.minor, p.patch) {
                (None, ..) => true,
                (Some(m), None, _) => v.major <= m,
                (Some(m), Some(n), None) => v.major < m || (v.major == m && v.minor <= n),
                (Some(_), Some(_), Some(_)) => *v <= floor,
            },
            // Patch updates (minor ones when only the major is given).
            Op::Tilde => {
                *v >= floor
                    && p.major.is_none_or(|m| m == v.major)
                    && p.minor.is_none_or(|n| n == v.minor)
            }
            // Updates that do not change the leftmost non-zero part.
            Op::Caret => {
                *v >= floor
                    && match (p.major, p.minor, p.patch) {
                        (None, ..) => true,
                        (Some(m), None, _) => v.major == m,
                        (Some(m), Some(_), _) if m > 0 => v.major == m,
                        (Some(_), Some(n), None) => v.major == 0 && v.minor == n,
                        (Some(_), Some(n), Some(_)) if n > 0 => v.major == 0 && v.minor == n,
                        (Some(_), Some(_), Some(pt)) => {
                            v.major == 0 && v.minor == 0 && v.patch == pt
                        }
                    }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_of_ranges() {
        // (range, version, in range)
        let cases: &[(&str, &str, bool)] = &[
            // Today's Cargo-style syntax.
            (">=1.2, <2", "1.2.0", true),
            (">=1.2, <2", "1.9.9", true),
            (">=1.2, <2", "2.0.0", false),
            (">=1.2, <2", "1.1.9", false),
            ("<1.10", "1.9.9", true),
            ("<1.10", "1.10.0", false),
            ("=1.2.3", "1.2.3", true),
            ("=1.2.3", "1.2.4", false),
            ("1.*", "1.7.0", true),
            ("1.*", "2.0.0", false),
            // Space-separated AND, `||` alternatives.
            (">=1.0.0 <2.0.0", "1.5.0", true),
            (">=1.0.0 <2.0.0", "2.0.0", false),
            (">= 1.0.0, < 2.0.0", "1.0.0", true),
            ("^1.2 || ^3", "1.9.0", true),
            ("^1.2 || ^3", "2.0.0", false),
            ("^1.2 || ^3", "3.4.5", true),
            ("<1 || >=2.1", "0.9.0", true),
            ("<1 || >=2.1", "2.0.5", false),
            // Caret.
            ("^1.2", "1.2.0", true),
            ("^1.2", "1.99.0", true),
            ("^1.2", "1.1.9", false),
            ("^1.2", "2.0.0", false),
            ("^0.2.3", "0.2.9", true),
            ("^0.2.3", "0.3.0", false),
            ("^0.0.3", "0.0.3", true),
            ("^0.0.3", "0.0.4", false),
            ("^0", "0.9.0", true),
            ("^0", "1.0.0", false),
            // Tilde.
            ("~1.2.3", "1.2.3", true),
            ("~1.2.3", "1.2.9", true),
            ("~1.2.3", "1.3.0", false),
            ("~1.2.3", "1.2.2", false),
            ("~1", "1.9.0", true),
            ("~1", "2.0.0", false),
            ("~>1.2", "1.2.5", true),
            // Wildcards and partial versions.
            ("1.2.x", "1.2.8", true),
            ("1.2.x", "1.3.0", false),
            ("1.x", "1.3.0", true),
            ("1.X", "2.0.0", false),
            ("1.2", "1.2.4", true),
            ("*", "0.0.1", true),
            ("*", "99.0.0", true),
            ("x", "3.0.0", true),
            (">1.2", "1.2.9", false),
            (">1.2", "1.3.0", true),
            (">1", "1.9.0", false),
            (">1", "2.0.0", true),
            ("<=1.4", "1.4.9", true),
            ("<=1.4", "1.5.0", false),
            ("!=1.2.3", "1.2.3", false),
            ("!=1.2.x", "1.3.0", true),
            // A bare version is that version, as in Flux.
            ("1.2.3", "1.2.3", true),
            ("1.2.3", "1.2.4", false),
            // Hyphen ranges, inclusive.
            ("1.2 - 1.4.5", "1.2.0", true),
            ("1.2 - 1.4.5", "1.4.5", true),
            ("1.2 - 1.4.5", "1.4.6", false),
            ("1.2 - 1.4.5", "1.1.9", false),
            ("2.3.4 - 4.5", "4.5.9", true),
            ("2.3.4 - 4.5", "4.6.0", false),
            // `v` prefixes and build metadata.
            (">=v1.2.0", "1.2.0", true),
            ("=1.2.3", "1.2.3+build.5", true),
            // Pre-releases only where the comparator asks for one.
            (">=1.0.0", "2.0.0-rc.1", false),
            ("*", "1.0.0-alpha", false),
            (">=2.0.0-0", "2.0.0-rc.1", true),
            (">=2.0.0-rc.2", "2.0.0-rc.1", false),
            ("^2.0.0-0", "2.1.0", true),
        ];
        for (range, version, want) in cases {
            let r = Range::parse(range).unwrap_or_else(|e| panic!("{range}: {e}"));
            let v = Version::parse(version).expect("version");
            assert_eq!(r.matches(&v), *want, "{version} in {range}");
        }
    }

    #[test]
    fn bad_ranges_say_what_is_wrong() {
        for (range, want) in [
            ("", "empty range"),
            (">>1", "\">1\" is not a version"),
            ("^1.2 ||", "empty alternative"),
            ("1.2 -", "needs an upper end"),
            (">=", "needs a version"),
            ("1.x.3", "a number after a wildcard"),
            ("1.2.3.4", "more than major.minor.patch"),
            ("abc", "\"abc\" is not a number"),
            ("1.2-rc.1", "needs major.minor.patch"),
        ] {
            let e = Range::parse(range).expect_err(range).to_string();
            assert!(e.contains(want), "{range}: {e}");
        }
    }
}
