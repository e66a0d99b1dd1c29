//! The safety net: the output must re-parse to the input with only the targets changed.

use std::collections::BTreeMap;
use std::ops::Range;

use crate::yamlspan::{self, Document, Node, NodeKind};

use super::{Change, RewriteError};

/// Re-parses `output` and checks it has the input's exact structure and values except the
/// changed scalars, which must now hold their new values.
pub(super) fn verify(
    file: &str,
    before: &[Document],
    output: &str,
    edits: &[(Range<usize>, String)],
    changes: &[Change],
) -> Result<(), RewriteError> {
    let fail = |reason: String| RewriteError::Verify {
        file: file.to_string(),
        reason,
    };
    let after =
        yamlspan::parse_stream(output).map_err(|e| fail(format!("output does not parse: {e}")))?;
    if after.len() != before.len() {
        return Err(fail("the number of documents changed".to_string()));
    }
    let expected_at: BTreeMap<usize, &str> = edits
        .iter()
        .zip(changes)
        .map(|((span, _), change)| (span.start, change.new.as_str()))
        .collect();
    // Both trees walked side by side: checking a 10,000-image file copies no scalar and
    // lists no node.
    let count = |docs: &[Document]| {
        let mut n = 0usize;
        for root in docs.iter().filter_map(|d| d.root.as_ref()) {
            root.walk(&mut |_, _| n += 1);
        }
        n
    };
    if count(before) != count(&after) {
        return Err(fail("the document's structure changed".to_string()));
    }
    for (old, new) in before.iter().zip(&after) {
        match (&old.root, &new.root) {
            (Some(old), Some(new)) => same(old, new, &expected_at).map_err(fail)?,
            (None, None) => {}
            _ => return Err(fail("the document's structure changed".to_string())),
        }
    }
    Ok(())
}

/// `new` is `old` with only the scalars at `expected_at` (by their start in the input) changed
/// to the values given there. Depth is bounded by the parser's nesting limit.
fn same(old: &Node, new: &Node, expected_at: &BTreeMap<usize, &str>) -> Result<(), String> {
    let found = Item::of(&new.kind);
    let want = match (expected_at.get(&old.span.start), &old.kind) {
        (Some(value), NodeKind::Scalar { .. }) => Item::Scalar(value),
        _ => Item::of(&old.kind),
    };
    if found != want {
        return Err(format!("expected {want:?}, found {found:?}"));
    }
    match (&old.kind, &new.kind) {
        (NodeKind::Mapping(a), NodeKind::Mapping(b)) => {
            for ((ak, av), (bk, bv)) in a.iter().zip(b.iter()) {
                same(ak, bk, expected_at)?;
                same(av, bv, expected_at)?;
            }
        }
        (NodeKind::Sequence(a), NodeKind::Sequence(b)) => {
            for (x, y) in a.iter().zip(b.iter()) {
                same(x, y, expected_at)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item<'a> {
    Scalar(&'a str),
    Mapping(usize),
    Sequence(usize),
    Alias,
}

impl<'a> Item<'a> {
    fn of(kind: &'a NodeKind) -> Self {
        match kind {
            NodeKind::Scalar { value, .. } => Item::Scalar(value),
            NodeKind::Mapping(pairs) => Item::Mapping(pairs.len()),
            NodeKind::Sequence(list) => Item::Sequence(list.len()),
            NodeKind::Alias => Item::Alias,
        }
    }
}
