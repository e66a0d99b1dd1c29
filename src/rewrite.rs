//! Rewrite stage: bytes in → bytes out + a change list, like Flux's `UpdateWithSetters`.
//!
//! Finds each image's targets in a values file — Flux setter markers or dotted YAML paths —
//! and replaces exactly those scalars' bytes. All-or-nothing: any problem anywhere in the file
//! means no output. The result is re-parsed and compared before it is returned.

mod append;
mod atomic;
mod marker;
mod scalar;
mod targets;
mod validate;
mod verify;

use std::fmt;

use crate::reference::{ImageRef, RepoRef};
use crate::yamlspan::{self, YamlError};
use targets::{check_coverage, marker_hits, path_hits, path_list};

pub use append::{AppendError, append_entry};
pub use atomic::write_atomic;
pub use validate::{valid_digest, valid_repository, valid_tag};

/// Which part of an image reference a target holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    /// `repository:tag`
    Full,
    /// The repository.
    Name,
    /// The tag.
    Tag,
    /// The digest (`sha256:…`).
    Digest,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Full => "full",
            Field::Name => "name",
            Field::Tag => "tag",
            Field::Digest => "digest",
        })
    }
}

/// Which input of an [`ImageUpdate`] is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// The repository.
    Repository,
    /// The tag.
    Tag,
    /// The digest.
    Digest,
    /// The setter policy.
    Setter,
    /// A YAML path.
    Path,
}

impl fmt::Display for ValueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ValueKind::Repository => "repository",
            ValueKind::Tag => "tag",
            ValueKind::Digest => "digest",
            ValueKind::Setter => "setter",
            ValueKind::Path => "path",
        })
    }
}

/// Dotted YAML paths (`image.tag`) to an image's fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathTargets {
    /// Path to the repository.
    pub name: Option<String>,
    /// Path to the tag.
    pub tag: Option<String>,
    /// Path to the digest.
    pub digest: Option<String>,
    /// Path to `repository:tag`.
    pub full: Option<String>,
}

/// What one image should now point at, and where its fields live in the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageUpdate {
    /// Config key of the image (for messages), e.g. `app`.
    pub image: String,
    /// Setter policy `ns:name` matched by `{"$imagepolicy": …}` markers.
    pub setter: Option<String>,
    /// YAML-path targets.
    pub paths: PathTargets,
    /// Repository to write, e.g. `registry.example.com/team/app`.
    pub repository: String,
    /// Tag to write.
    pub tag: String,
    /// Digest to write (`sha256:<64 hex>`); required if any digest target exists.
    pub digest: Option<String>,
}

/// One scalar that changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// File name as given to [`rewrite`].
    pub file: String,
    /// Config key of the image.
    pub image: String,
    /// Which field changed.
    pub field: Field,
    /// 1-based line of the scalar.
    pub line: usize,
    /// Previous value.
    pub old: String,
    /// New value.
    pub new: String,
}

/// The rewritten file; `changes` empty means `output` equals the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    /// The new file content.
    pub output: Vec<u8>,
    /// The changes, in file order.
    pub changes: Vec<Change>,
    /// Per update (same order): whether it has a target in this file, changed or not.
    pub found: Vec<bool>,
}

/// Why a file was not rewritten. All terminal: the file or the config must change first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    /// The file is not UTF-8.
    #[error("failed to read {file}: not valid UTF-8 (line {line})")]
    NotUtf8 {
        /// File name.
        file: String,
        /// Line of the first invalid byte.
        line: usize,
    },
    /// The file is not well-formed YAML.
    #[error("failed to parse {file}: {source}")]
    Parse {
        /// File name.
        file: String,
        /// Parser error with line and column.
        #[source]
        source: YamlError,
    },
    /// An update's target is not in the file.
    #[error("no target for image {image} in {file}: {detail}")]
    NoTarget {
        /// File name.
        file: String,
        /// Image key.
        image: String,
        /// What was looked for.
        detail: String,
    },
    /// One field of one image is targeted both by a configured path and by a marker.
    #[error(
        "{file}: the {field} of image {image} is targeted by both a path and a marker (lines {}); refusing to guess which is meant",
        join(lines)
    )]
    DuplicateTarget {
        /// File name.
        file: String,
        /// Image key.
        image: String,
        /// The doubly-targeted field.
        field: Field,
        /// Lines of every target.
        lines: Vec<usize>,
    },
    /// One scalar is targeted by two different images or fields.
    #[error("{file}:{line}: this scalar is targeted by both {first} and {second}")]
    OverlappingTargets {
        /// File name.
        file: String,
        /// Line of the scalar.
        line: usize,
        /// `image field` of one target.
        first: String,
        /// `image field` of the other.
        second: String,
    },
    /// A path exists in more than one document of the file.
    #[error(
        "{file}: path {path} of image {image} exists in several documents (lines {}); a path names one place, so tagflow refuses to pick one: use a setter marker in multi-document files",
        join(lines)
    )]
    AmbiguousPath {
        /// File name.
        file: String,
        /// Image key.
        image: String,
        /// The path.
        path: String,
        /// Line of the path's target in each document that has it (boxed: keeps the error
        /// small).
        lines: Box<[usize]>,
    },
    /// A value to write (or a setter/path in the update) is invalid.
    #[error("invalid {what} {value:?} for image {image} (rewriting {file}): {reason}")]
    InvalidValue {
        /// File name.
        file: String,
        /// Image key.
        image: String,
        /// Which input.
        what: ValueKind,
        /// The offending value.
        value: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// A digest target exists but the update has no digest.
    #[error("{file}:{line}: image {image} has a digest target but no digest to write")]
    MissingDigest {
        /// File name.
        file: String,
        /// Image key.
        image: String,
        /// Line of the target.
        line: usize,
    },
    /// The target scalar cannot be rewritten byte-exactly.
    #[error("{file}:{line}: cannot rewrite this target: {reason}")]
    UnsupportedScalar {
        /// File name.
        file: String,
        /// Line of the target.
        line: usize,
        /// Why.
        reason: String,
    },
    /// A marker for a requested policy is unusable.
    #[error("{file}:{line}: bad image policy marker: {reason}")]
    BadMarker {
        /// File name.
        file: String,
        /// Line of the marker.
        line: usize,
        /// Why.
        reason: String,
    },
    /// The output did not re-parse to the input with only the targets changed (a bug).
    #[error("failed to verify the rewrite of {file}: {reason}")]
    Verify {
        /// File name.
        file: String,
        /// What differed.
        reason: String,
    },
}

impl RewriteError {
    /// Always `false`: retrying the same bytes gives the same answer.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        false
    }
}

fn join(lines: &[usize]) -> String {
    lines
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rewrites every target of every update in `input`; `file` is used in messages only.
///
/// # Errors
/// See [`RewriteError`]; on any error nothing is rewritten.
pub fn rewrite(
    file: &str,
    input: &[u8],
    updates: &[ImageUpdate],
) -> Result<Rewritten, RewriteError> {
    rewrite_with(file, input, updates, true)
}

/// Like [`rewrite`] for one file of a directory: an update without a target here is no error
/// (see [`Rewritten::found`]; the caller checks each image is found in some file), and a file
/// whose text names none of the updates' setter policies is returned unparsed and unchanged, so
/// other YAML in the directory (chart templates, CRDs) is never judged.
///
/// # Errors
/// See [`RewriteError`]; on any error nothing is rewritten.
pub fn rewrite_if_marked(
    file: &str,
    input: &[u8],
    updates: &[ImageUpdate],
) -> Result<Rewritten, RewriteError> {
    let text = String::from_utf8_lossy(input);
    let marked = text.contains("$imagepolicy")
        && updates
            .iter()
            .filter_map(|u| u.setter.as_deref())
            .any(|p| marker::mentions(&text, p));
    if !marked {
        return Ok(Rewritten {
            output: input.to_vec(),
            changes: Vec::new(),
            found: vec![false; updates.len()],
        });
    }
    rewrite_with(file, input, updates, false)
}

fn rewrite_with(
    file: &str,
    input: &[u8],
    updates: &[ImageUpdate],
    every_update: bool,
) -> Result<Rewritten, RewriteError> {
    let src = std::str::from_utf8(input).map_err(|e| RewriteError::NotUtf8 {
        file: file.to_string(),
        line: 1 + input[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count(),
    })?;
    for update in updates {
        check_update(file, update)?;
    }
    let docs = yamlspan::parse_stream(src).map_err(|source| RewriteError::Parse {
        file: file.to_string(),
        source,
    })?;
    let mut hits = marker_hits(file, src, &docs, updates)?;
    hits.extend(path_hits(file, &docs, updates)?);
    check_coverage(file, updates, &hits, every_update)?;
    let mut found = vec![false; updates.len()];
    for h in &hits {
        found[h.update] = true;
    }

    // Every target checked while the tree is here; then the tree goes, and the edits, the
    // changes, the output and its check are made from the targets and the source text alone
    // (a 10,000-image values file's tree is ~10 MB).
    hits.sort_by_key(|h| (h.node.span.start, h.update, h.field));
    let mut targets = Vec::with_capacity(hits.len());
    for hit in &hits {
        let update = &updates[hit.update];
        let style =
            scalar::editable(src, hit.node).map_err(|reason| RewriteError::UnsupportedScalar {
                file: file.to_string(),
                line: hit.line,
                reason,
            })?;
        if hit.field == Field::Digest && update.digest.is_none() {
            return Err(RewriteError::MissingDigest {
                file: file.to_string(),
                image: update.image.clone(),
                line: hit.line,
            });
        }
        targets.push(Target {
            update: hit.update,
            field: hit.field,
            span: hit.node.span.clone(),
            line: hit.line,
            node_line: hit.node.line,
            style,
        });
    }
    drop(hits);
    drop(docs);

    let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    let mut changes = Vec::new();
    for t in &targets {
        let update = &updates[t.update];
        let current = scalar::decode(src.get(t.span.clone()).unwrap_or_default(), t.style);
        let new = match t.field {
            Field::Full => full_reference(&current, update),
            Field::Name => update.repository.clone(),
            Field::Tag => update.tag.clone(),
            Field::Digest => update.digest.clone().unwrap_or_default(),
        };
        if current == new {
            continue;
        }
        let text =
            scalar::encode(&new, t.style).map_err(|reason| RewriteError::UnsupportedScalar {
                file: file.to_string(),
                line: t.line,
                reason,
            })?;
        edits.push((t.span.clone(), text));
        changes.push(Change {
            file: file.to_string(),
            image: update.image.clone(),
            field: t.field,
            line: t.node_line,
            old: current,
            new,
        });
    }
    drop(targets);
    if changes.is_empty() {
        return Ok(Rewritten {
            output: input.to_vec(),
            changes,
            found,
        });
    }
    // Exactly the output's size: a 2.7 MB file whose 10,000 digests were filled in outgrew
    // a guess and doubled to 5.4 MB.
    let size = edits.iter().fold(src.len(), |n, (span, text)| {
        n + text.len() - span.len().min(n)
    });
    let mut output = String::with_capacity(size);
    let mut at = 0;
    for (span, text) in &edits {
        output.push_str(src.get(at..span.start).unwrap_or_default());
        output.push_str(text);
        at = span.end;
    }
    output.push_str(src.get(at..).unwrap_or_default());
    verify::verify(file, src, &output, &edits, &changes)?;
    Ok(Rewritten {
        output: output.into_bytes(),
        changes,
        found,
    })
}

/// A hit checked to be rewritable in place, with what the rewrite needs of its node.
struct Target {
    update: usize,
    field: Field,
    /// The scalar's exact source text.
    span: std::ops::Range<usize>,
    /// Where errors point (a marker's line, or the node's).
    line: usize,
    /// The scalar's own line, for the change.
    node_line: usize,
    style: yamlspan::ScalarStyle,
}

/// `name:tag`, or `name:tag@digest` when the update has a digest (as Flux writes a policy's
/// latest reference). `name` keeps the file's spelling when it names the update's repository
/// (`nginx` stays `nginx`, not `docker.io/library/nginx`).
fn full_reference(current: &str, update: &ImageUpdate) -> String {
    let written = ImageRef::split(current).name;
    let same = !written.is_empty() && RepoRef::parse(written) == RepoRef::parse(&update.repository);
    let name = if same { written } else { &update.repository };
    match &update.digest {
        Some(digest) => format!("{name}:{}@{digest}", update.tag),
        None => format!("{name}:{}", update.tag),
    }
}

/// Validates everything an update would write before the file is even parsed.
fn check_update(file: &str, u: &ImageUpdate) -> Result<(), RewriteError> {
    let invalid = |what: ValueKind, value: &str, reason: &'static str| RewriteError::InvalidValue {
        file: file.to_string(),
        image: u.image.clone(),
        what,
        value: value.to_string(),
        reason,
    };
    if !valid_repository(&u.repository) {
        return Err(invalid(
            ValueKind::Repository,
            &u.repository,
            "not an OCI repository name ([host[:port]/]lowercase/path)",
        ));
    }
    if !valid_tag(&u.tag) {
        return Err(invalid(
            ValueKind::Tag,
            &u.tag,
            "a tag is 1-128 of [A-Za-z0-9_.-], not starting with . or -",
        ));
    }
    if let Some(digest) = u.digest.as_ref().filter(|d| !valid_digest(d)) {
        return Err(invalid(
            ValueKind::Digest,
            digest,
            "expected sha256:<64 hex> or sha512:<128 hex>",
        ));
    }
    if let Some(setter) = &u.setter {
        let parts: Vec<&str> = setter.split(':').collect();
        let ok = parts.len() == 2
            && parts.iter().all(|p| {
                !p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            });
        if !ok {
            return Err(invalid(
                ValueKind::Setter,
                setter,
                "expected <namespace>:<name>",
            ));
        }
    }
    for path in path_list(&u.paths).into_iter().map(|(_, p)| p) {
        if path.split('.').any(str::is_empty) {
            return Err(invalid(
                ValueKind::Path,
                path,
                "expected dot-separated keys such as image.tag",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
