//! The safety net: the output must re-parse to the input with only the targets changed.

use std::collections::BTreeMap;
use std::ops::Range;

use crate::yamlspan::{self, Document, NodeKind};

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
    let old = flatten(before);
    let new = flatten(&after);
    if old.len() != new.len() {
        return Err(fail("the document's structure changed".to_string()));
    }
    for ((start, old_item), (_, new_item)) in old.iter().zip(&new) {
        let want = match (expected_at.get(start), old_item) {
            (Some(value), Item::Scalar(_)) => Item::Scalar((*value).to_string()),
            _ => old_item.clone(),
        };
        if *new_item != want {
            return Err(fail(format!("expected {want:?}, found {new_item:?}")));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Scalar(String),
    Mapping(usize),
    Sequence(usize),
    Alias,
}

fn flatten(docs: &[Document]) -> Vec<(usize, Item)> {
    let mut items = Vec::new();
    for root in docs.iter().filter_map(|d| d.root.as_ref()) {
        root.walk(&mut |node, _| {
            let item = match &node.kind {
                NodeKind::Scalar { value, .. } => Item::Scalar(value.clone()),
                NodeKind::Mapping(pairs) => Item::Mapping(pairs.len()),
                NodeKind::Sequence(list) => Item::Sequence(list.len()),
                NodeKind::Alias => Item::Alias,
            };
            items.push((node.span.start, item));
        });
    }
    items
}
