//! The safety net: the output must re-parse to the input with only the targets changed.

use std::ops::Range;

use crate::yamlspan::{self, NodeKind, Step};

use super::{Change, RewriteError};

/// Re-parses `output` and checks it has the input's exact structure and values except the
/// changed scalars, which must now hold their new values. `edits` are sorted by their start in
/// the input, one per change.
///
/// Input and output are read step by step side by side, with no tree: the rewriter has dropped
/// the input's by now, and a 10,000-image values file held two trees of ~10 MB each here.
pub(super) fn verify(
    file: &str,
    input: &str,
    output: &str,
    edits: &[(Range<usize>, String)],
    changes: &[Change],
) -> Result<(), RewriteError> {
    let fail = |reason: String| RewriteError::Verify {
        file: file.to_string(),
        reason,
    };
    let new_value_at = |start: usize| {
        let i = edits
            .binary_search_by_key(&start, |(span, _)| span.start)
            .ok()?;
        changes.get(i).map(|c| c.new.as_str())
    };
    let (mut before, mut after) = (yamlspan::steps(input), yamlspan::steps(output));
    loop {
        let (old, new) = match (before.next(), after.next()) {
            (None, None) => return Ok(()),
            (_, Some(Err(e))) => return Err(fail(format!("output does not parse: {e}"))),
            (Some(Err(e)), _) => return Err(fail(format!("input does not parse again: {e}"))),
            (Some(Ok(old)), Some(Ok(new))) => (old, new),
            (Some(Ok(_)), None) | (None, Some(Ok(_))) => {
                return Err(fail("the number of documents changed".to_string()));
            }
        };
        let same = match (&old, &new) {
            (Step::DocumentStart, Step::DocumentStart)
            | (Step::DocumentEnd, Step::DocumentEnd)
            | (Step::Close(_), Step::Close(_)) => true,
            (Step::Leaf(a), Step::Leaf(b)) | (Step::Open(a), Step::Open(b)) => {
                let want = match (&a.kind, new_value_at(a.span.start)) {
                    (NodeKind::Scalar { .. }, Some(value)) => Item::Scalar(value),
                    (kind, _) => Item::of(kind),
                };
                want == Item::of(&b.kind)
            }
            _ => false,
        };
        if !same {
            let want = match &old {
                Step::Leaf(a) => match (&a.kind, new_value_at(a.span.start)) {
                    (NodeKind::Scalar { .. }, Some(value)) => Item::Scalar(value).to_string(),
                    (kind, _) => Item::of(kind).to_string(),
                },
                step => describe(step),
            };
            let line = match &new {
                Step::Leaf(n) | Step::Open(n) => format!(" at line {}", n.line),
                _ => String::new(),
            };
            return Err(fail(format!(
                "the document changed{line}: expected {want}, found {}",
                describe(&new)
            )));
        }
    }
}

fn describe(step: &Step) -> String {
    match step {
        Step::DocumentStart => "a new document".to_string(),
        Step::DocumentEnd => "the end of the document".to_string(),
        Step::Close(_) => "the end of a collection".to_string(),
        Step::Leaf(n) | Step::Open(n) => Item::of(&n.kind).to_string(),
    }
}

/// What a node is, for comparing: a collection's pairs or items are steps of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item<'a> {
    Scalar(&'a str),
    Mapping,
    Sequence,
    Alias,
}

impl<'a> Item<'a> {
    fn of(kind: &'a NodeKind) -> Self {
        match kind {
            NodeKind::Scalar { value, .. } => Item::Scalar(value),
            NodeKind::Mapping(_) => Item::Mapping,
            NodeKind::Sequence(_) => Item::Sequence,
            NodeKind::Alias => Item::Alias,
        }
    }
}

impl std::fmt::Display for Item<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Item::Scalar(v) => write!(f, "the scalar {v:?}"),
            Item::Mapping => f.write_str("a mapping"),
            Item::Sequence => f.write_str("a sequence"),
            Item::Alias => f.write_str("an alias"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::Field;

    /// `verify` of `output` against `input` where the scalar `old` (first occurrence) was to
    /// become `new`.
    fn check(input: &str, output: &str, old: &str, new: &str) -> Result<(), String> {
        let start = input.find(old).unwrap();
        let edits = vec![(start..start + old.len(), new.to_string())];
        let changes = vec![Change {
            file: "v.yaml".into(),
            image: "app".into(),
            field: Field::Tag,
            line: 1,
            old: old.into(),
            new: new.into(),
        }];
        verify("v.yaml", input, output, &edits, &changes).map_err(|e| e.to_string())
    }

    const INPUT: &str = "app:\n  tag: v1\n  list: [a, b]\n---\nother: x\n";

    #[test]
    fn the_output_with_only_the_target_changed_passes() {
        let out = INPUT.replace("v1", "v2");
        check(INPUT, &out, "v1", "v2").unwrap();
    }

    #[test]
    fn a_target_with_another_value_than_planned_fails() {
        let out = INPUT.replace("v1", "v3");
        let e = check(INPUT, &out, "v1", "v2").unwrap_err();
        assert!(
            e.contains(r#"at line 2: expected the scalar "v2", found the scalar "v3""#),
            "{e}"
        );
    }

    #[test]
    fn any_other_scalar_changed_fails() {
        let out = INPUT.replace("v1", "v2").replace("x\n", "y\n");
        let e = check(INPUT, &out, "v1", "v2").unwrap_err();
        assert!(
            e.contains(r#"at line 5: expected the scalar "x", found the scalar "y""#),
            "{e}"
        );
    }

    #[test]
    fn a_pair_or_item_more_or_less_fails() {
        for out in [
            "app:\n  tag: v2\n  list: [a, b, c]\n---\nother: x\n",
            "app:\n  tag: v2\n  list: [a]\n---\nother: x\n",
            "app:\n  tag: v2\n  list: [a, b]\n  more: 1\n---\nother: x\n",
            "app:\n  tag: v2\n---\nother: x\n",
        ] {
            let e = check(INPUT, out, "v1", "v2").unwrap_err();
            assert!(e.contains("the document changed"), "{out}: {e}");
        }
    }

    #[test]
    fn a_collection_of_another_kind_fails() {
        let out = "app:\n  tag: v2\n  list: {a: b}\n---\nother: x\n";
        let e = check(INPUT, out, "v1", "v2").unwrap_err();
        assert!(
            e.contains("at line 3: expected a sequence, found a mapping"),
            "{e}"
        );
    }

    #[test]
    fn a_document_more_or_less_fails() {
        let one = "app:\n  tag: v2\n  list: [a, b]\n";
        let e = check(INPUT, one, "v1", "v2").unwrap_err();
        assert!(e.contains("number of documents changed"), "{e}");
        let three = format!("{}---\nthird: 1\n", INPUT.replace("v1", "v2"));
        let e = check(INPUT, &three, "v1", "v2").unwrap_err();
        assert!(e.contains("number of documents changed"), "{e}");
    }

    #[test]
    fn an_output_that_does_not_parse_says_so() {
        let out = format!("{}]\n", INPUT.replace("v1", "v2"));
        let e = check(INPUT, &out, "v1", "v2").unwrap_err();
        assert!(e.contains("output does not parse: line"), "{e}");
    }
}
