//! Flux-compatible setter markers: `# {"$imagepolicy": "ns:name[:tag|:name|:digest]"}`.
//!
//! Comments are found in the raw source (the parser drops them), skipping every byte that
//! belongs to a scalar, so a `#` inside a quoted value is never taken for a comment.

use std::ops::Range;

use super::Field;

/// A comment: byte range from `#` to the end of its line (line break excluded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Comment {
    /// Bytes of the comment, starting at `#`.
    pub span: Range<usize>,
}

/// Every comment in `src`; `scalars` are the byte ranges of all scalars and aliases.
pub(super) fn comments(src: &str, scalars: &mut [Range<usize>]) -> Vec<Comment> {
    // Sorted in place and empty ones skipped below: no second list of a 10,000-image file's
    // 70,000 scalars.
    scalars.sort_unstable_by_key(|r| r.start);
    let spans = scalars;
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut next_span = 0;
    let mut i = 0;
    while i < bytes.len() {
        while next_span < spans.len() && (spans[next_span].end <= i || spans[next_span].is_empty())
        {
            next_span += 1;
        }
        if let Some(span) = spans.get(next_span).filter(|s| s.start <= i) {
            i = span.end;
            continue;
        }
        let after_blank = i == 0
            || matches!(bytes[i - 1], b' ' | b'\t' | b'\n' | b'\r')
            || src.get(..i) == Some("\u{feff}");
        if bytes[i] == b'#' && after_blank {
            let end = bytes[i..]
                .iter()
                .position(|&b| b == b'\n' || b == b'\r')
                .map_or(bytes.len(), |n| i + n);
            out.push(Comment { span: i..end });
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

/// What a comment mentioning `$imagepolicy` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Marker {
    /// A well-formed marker for policy `ns:name` with the raw suffix after it, if any.
    Policy {
        /// `ns:name`
        policy: String,
        /// Everything after `ns:name:` (`tag`, `name`, `digest`, or something unknown).
        suffix: Option<String>,
    },
    /// Mentions `$imagepolicy` but is not `{"$imagepolicy": "<ns>:<name>[:suffix]"}`.
    Malformed(String),
}

/// Reads the marker in a comment's text (after `#`); `None` when it has no `$imagepolicy`.
pub(super) fn parse(comment: &str) -> Option<Marker> {
    if !comment.contains("$imagepolicy") {
        return None;
    }
    let json: serde_json::Value = match serde_json::from_str(comment.trim()) {
        Ok(v) => v,
        Err(e) => return Some(Marker::Malformed(format!("not a JSON object: {e}"))),
    };
    let Some(value) = json.get("$imagepolicy") else {
        return Some(Marker::Malformed(
            "expected {\"$imagepolicy\": \"<namespace>:<name>[:tag|:name|:digest]\"}".to_string(),
        ));
    };
    let Some(value) = value.as_str() else {
        return Some(Marker::Malformed(
            "the $imagepolicy value must be a string".to_string(),
        ));
    };
    let mut parts = value.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(ns), Some(name), suffix) if !ns.is_empty() && !name.is_empty() => {
            Some(Marker::Policy {
                policy: format!("{ns}:{name}"),
                suffix: suffix.map(str::to_string),
            })
        }
        _ => Some(Marker::Malformed(format!(
            "policy {value:?} is not \"<namespace>:<name>\""
        ))),
    }
}

/// The field a marker suffix selects, or `None` for an unknown suffix.
pub(super) fn field(suffix: Option<&str>) -> Option<Field> {
    match suffix {
        None => Some(Field::Full),
        Some("tag") => Some(Field::Tag),
        Some("name") => Some(Field::Name),
        Some("digest") => Some(Field::Digest),
        Some(_) => None,
    }
}

/// Whether a malformed marker's text names `policy` (`ns:name` not followed by more name).
pub(super) fn mentions(text: &str, policy: &str) -> bool {
    text.match_indices(policy).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + policy.len()..].chars().next();
        let name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        !before.is_some_and(name_char) && !after.is_some_and(name_char)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_skip_scalars() {
        let src = "a: 'x # no' # yes\n# top\nb: c#d\n\"k #\": v # é\r\nz: |\n  # in block\n";
        let doc = crate::yamlspan::parse(src).unwrap();
        let mut scalars = Vec::new();
        if let Some(root) = &doc.root {
            root.walk(&mut |node, _| {
                if !matches!(node.kind, crate::yamlspan::NodeKind::Mapping(_)) {
                    scalars.push(node.span.clone());
                }
            });
        }
        let got: Vec<&str> = comments(src, &mut scalars)
            .iter()
            .map(|c| &src[c.span.clone()])
            .collect();
        assert_eq!(got, ["# yes", "# top", "# é"]);
        let bom = "\u{feff}# first\n";
        assert_eq!(
            comments(bom, &mut []),
            [Comment {
                span: 3..bom.len() - 1
            }]
        );
    }

    #[test]
    fn parse_markers() {
        let policy = |p: &str, s: Option<&str>| {
            Some(Marker::Policy {
                policy: p.to_string(),
                suffix: s.map(str::to_string),
            })
        };
        let cases = [
            (" plain comment", None),
            (
                r#" {"$imagepolicy": "flux-system:app"}"#,
                policy("flux-system:app", None),
            ),
            (
                r#"{"$imagepolicy":"flux-system:app:tag"} "#,
                policy("flux-system:app", Some("tag")),
            ),
            (
                r#" {"$imagepolicy": "ns:app:tag:x"}"#,
                policy("ns:app", Some("tag:x")),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), want, "{text:?}");
        }
        for bad in [
            r#" {"$imagepolicy": "flux-system:app:tag""#,
            r#" {"$imagepolicy": 3}"#,
            r#" {"$imagepolicy": "app"}"#,
            r#" {"$imagepolicy": ":app"}"#,
            r#" ["$imagepolicy"]"#,
            r#" {"$imagepolicy": "a:b"} trailing"#,
        ] {
            assert!(matches!(parse(bad), Some(Marker::Malformed(_))), "{bad:?}");
        }
    }

    #[test]
    fn suffixes() {
        let cases = [
            (None, Some(Field::Full)),
            (Some("tag"), Some(Field::Tag)),
            (Some("name"), Some(Field::Name)),
            (Some("digest"), Some(Field::Digest)),
            (Some("Tag"), None),
            (Some(""), None),
        ];
        for (suffix, want) in cases {
            assert_eq!(field(suffix), want, "{suffix:?}");
        }
    }

    #[test]
    fn mentions_whole_policy_names_only() {
        let cases = [
            (r#"{"$imagepolicy": "ns:app:tag""#, true),
            (r#"{"$imagepolicy": "ns:app""#, true),
            (r#"{"$imagepolicy": "ns:app2""#, false),
            (r#"{"$imagepolicy": "xns:app""#, false),
        ];
        for (text, want) in cases {
            assert_eq!(mentions(text, "ns:app"), want, "{text:?}");
        }
    }
}
