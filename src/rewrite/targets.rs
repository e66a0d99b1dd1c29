//! Finding targets: setter markers and YAML paths, then the checks that make them unambiguous.

use crate::yamlspan::{Document, Node, NodeKind};

use super::{Field, ImageUpdate, PathTargets, RewriteError, marker};

/// One resolved target.
pub(super) struct Hit<'d> {
    /// Index into the updates.
    pub update: usize,
    /// Which field the target holds.
    pub field: Field,
    /// The target node.
    pub node: &'d Node,
    /// Line reported for the target (the marker's line, or the node's).
    pub line: usize,
    /// Found through a configured path rather than a marker.
    pub by_path: bool,
}

/// The path targets that are set, with their fields.
pub(super) fn path_list(paths: &PathTargets) -> Vec<(Field, &str)> {
    [
        (Field::Full, &paths.full),
        (Field::Name, &paths.name),
        (Field::Tag, &paths.tag),
        (Field::Digest, &paths.digest),
    ]
    .into_iter()
    .filter_map(|(f, p)| p.as_deref().map(|p| (f, p)))
    .collect()
}

/// 1-based line of byte `offset`, counting CRLF, LF and lone CR as the parser does.
#[cfg(test)]
pub(super) fn line_at(src: &str, offset: usize) -> usize {
    Lines::new(src).at(offset)
}

/// Where each line ends, so a file with thousands of markers finds their lines in log time
/// rather than rescanning the file from the top for each (which made big files quadratic).
struct Lines {
    /// Offsets just past each line break (`\n`, `\r\n` counted once, lone `\r`).
    breaks: Vec<usize>,
}

impl Lines {
    fn new(src: &str) -> Self {
        let b = src.as_bytes();
        let breaks = b
            .iter()
            .enumerate()
            .filter(|&(i, &c)| c == b'\n' || (c == b'\r' && b.get(i + 1) != Some(&b'\n')))
            .map(|(i, _)| i + 1)
            .collect();
        Self { breaks }
    }

    /// 1-based line of byte `offset`.
    fn at(&self, offset: usize) -> usize {
        1 + self.breaks.partition_point(|&end| end <= offset)
    }
}

/// Targets found through `{"$imagepolicy": …}` markers of requested policies.
pub(super) fn marker_hits<'d>(
    file: &str,
    src: &str,
    docs: &'d [Document],
    updates: &[ImageUpdate],
) -> Result<Vec<Hit<'d>>, RewriteError> {
    let mut hits = Vec::new();
    if !updates.iter().any(|u| u.setter.is_some()) {
        return Ok(hits);
    }
    // Value scalars and aliases by where their text ends, so a comment finds the value before it.
    // Spans are offsets into the whole file, so every document goes into one list. Sorted
    // lists rather than maps, sized by a first count: at 10,000 images these sit beside the
    // tree at the rewrite's peak.
    let mut scalars = 0;
    for root in docs.iter().filter_map(|d| d.root.as_ref()) {
        root.walk(&mut |node, _| {
            scalars += usize::from(matches!(
                node.kind,
                NodeKind::Scalar { .. } | NodeKind::Alias
            ));
        });
    }
    let mut spans = Vec::with_capacity(scalars);
    let mut by_end: Vec<(usize, &'d Node)> = Vec::with_capacity(scalars);
    for root in docs.iter().filter_map(|d| d.root.as_ref()) {
        root.walk(&mut |node, is_key| {
            if matches!(node.kind, NodeKind::Scalar { .. } | NodeKind::Alias) {
                spans.push(node.span.clone());
                if !is_key && !node.span.is_empty() {
                    by_end.push((node.span.end, node));
                }
            }
        });
    }
    by_end.sort_by_key(|(end, _)| *end);
    let lines = Lines::new(src);
    // Updates by setter policy, so each marker finds its updates without a scan of them all.
    let mut by_policy: Vec<(&str, usize)> = updates
        .iter()
        .enumerate()
        .filter_map(|(i, u)| Some((u.setter.as_deref()?, i)))
        .collect();
    by_policy.sort_unstable();
    for comment in marker::comments(src, &mut spans) {
        let text = src
            .get(comment.span.start + 1..comment.span.end)
            .unwrap_or_default();
        let line = lines.at(comment.span.start);
        let bad = |reason: String| RewriteError::BadMarker {
            file: file.to_string(),
            line,
            reason,
        };
        let (policy, suffix) = match marker::parse(text) {
            None => continue,
            Some(marker::Marker::Malformed(reason)) => {
                let named = updates
                    .iter()
                    .filter_map(|u| u.setter.as_deref())
                    .find(|p| marker::mentions(text, p));
                match named {
                    Some(p) => return Err(bad(format!("{reason} (marker for {p})"))),
                    None => continue,
                }
            }
            Some(marker::Marker::Policy { policy, suffix }) => (policy, suffix),
        };
        let from = by_policy.partition_point(|(p, _)| *p < policy.as_str());
        if by_policy
            .get(from)
            .is_none_or(|(p, _)| *p != policy.as_str())
        {
            continue;
        }
        let indices = by_policy[from..]
            .iter()
            .take_while(|(p, _)| *p == policy.as_str())
            .map(|(_, i)| *i);
        let field = marker::field(suffix.as_deref()).ok_or_else(|| {
            bad(format!(
                "unknown suffix {:?} (expected none, :tag, :name or :digest)",
                suffix.as_deref().unwrap_or_default()
            ))
        })?;
        let before = src.get(..comment.span.start).unwrap_or_default();
        let value_end = before.trim_end_matches([' ', '\t']).len();
        let at = by_end.partition_point(|(end, _)| *end < value_end);
        let node = by_end
            .get(at)
            .filter(|(end, _)| *end == value_end)
            .map(|(_, node)| *node)
            .filter(|_| value_end < comment.span.start)
            .ok_or_else(|| bad("no scalar value before the marker on this line".to_string()))?;
        for update in indices {
            hits.push(Hit {
                update,
                field,
                node,
                line,
                by_path: false,
            });
        }
    }
    Ok(hits)
}

/// Targets found through dotted YAML paths. In a multi-document file a path must exist in
/// exactly one document: a path names one place, and guessing which document is meant could
/// deploy an image to the wrong object.
pub(super) fn path_hits<'d>(
    file: &str,
    docs: &'d [Document],
    updates: &[ImageUpdate],
) -> Result<Vec<Hit<'d>>, RewriteError> {
    let mut hits = Vec::new();
    for (i, update) in updates.iter().enumerate() {
        for (field, path) in path_list(&update.paths) {
            let steps: Vec<&str> = path.split('.').collect();
            let found: Vec<&Node> = docs.iter().filter_map(|d| d.get(&steps)).collect();
            let node = match found.as_slice() {
                [node] => *node,
                [] => {
                    return Err(RewriteError::NoTarget {
                        file: file.to_string(),
                        image: update.image.clone(),
                        detail: format!("path {path} ({field}) does not exist"),
                    });
                }
                several => {
                    return Err(RewriteError::AmbiguousPath {
                        file: file.to_string(),
                        image: update.image.clone(),
                        path: path.to_string(),
                        lines: several.iter().map(|n| n.line).collect(),
                    });
                }
            };
            hits.push(Hit {
                update: i,
                field,
                node,
                line: node.line,
                by_path: true,
            });
        }
    }
    Ok(hits)
}

/// Every update has a target (when `every_update`); no field is hit by both a marker and a path; no scalar is hit
/// by two fields. Several markers of one policy and field are fine: Flux sets them all (an init
/// container and the app container sharing an image).
pub(super) fn check_coverage(
    file: &str,
    updates: &[ImageUpdate],
    hits: &[Hit<'_>],
    every_update: bool,
) -> Result<(), RewriteError> {
    let mut covered = vec![false; updates.len()];
    for h in hits {
        covered[h.update] = true;
    }
    for (i, update) in updates.iter().enumerate() {
        if every_update && !covered[i] {
            // Paths that do not resolve already failed in path_hits.
            let detail = match &update.setter {
                Some(s) => format!("no {{\"$imagepolicy\": \"{s}[:tag|:name|:digest]\"}} marker"),
                None => "no setter and no paths given".to_string(),
            };
            return Err(RewriteError::NoTarget {
                file: file.to_string(),
                image: update.image.clone(),
                detail,
            });
        }
    }
    // Groups by sorting hit indices rather than maps of lists: a file with 10,000 images has
    // 20,000 hits, and maps of them were a megabyte more at the rewrite's peak.
    let mut order: Vec<usize> = (0..hits.len()).collect();
    order.sort_by_key(|&i| (hits[i].update, hits[i].field, i));
    for group in
        order.chunk_by(|&a, &b| (hits[a].update, hits[a].field) == (hits[b].update, hits[b].field))
    {
        if group.len() > 1 && group.iter().any(|&i| hits[i].by_path) {
            let first = &hits[group[0]];
            let mut lines: Vec<usize> = group.iter().map(|&i| hits[i].line).collect();
            lines.sort_unstable();
            return Err(RewriteError::DuplicateTarget {
                file: file.to_string(),
                image: updates[first.update].image.clone(),
                field: first.field,
                lines,
            });
        }
    }
    // Two targets on one node: reported at the first hit (in hit order) that lands on a node
    // an earlier hit took.
    order.sort_by_key(|&i| (hits[i].node.span.start, i));
    let overlap = order
        .chunk_by(|&a, &b| hits[a].node.span.start == hits[b].node.span.start)
        .filter(|run| run.len() > 1)
        .map(|run| (run[1], run[0]))
        .min();
    if let Some((second, first)) = overlap {
        let (hit, first) = (&hits[second], &hits[first]);
        return Err(RewriteError::OverlappingTargets {
            file: file.to_string(),
            line: hit.node.line,
            first: format!("image {} {}", updates[first.update].image, first.field),
            second: format!("image {} {}", updates[hit.update].image, hit.field),
        });
    }
    Ok(())
}
