//! A span-aware YAML tree: every node knows the exact bytes it came from.
//!
//! Built from `saphyr-parser` events so the rewriter can replace one scalar's bytes and leave
//! everything else — comments, quoting, indentation, line endings — untouched. Only what the
//! rewriter and the config module need: no alias resolution, no merge keys, no type resolution.

use std::fmt;
use std::ops::Range;

use saphyr_parser::{Event, Parser, Span, StrInput};

/// Deepest nesting accepted; hostile input must not blow the stack when the tree is walked.
const MAX_DEPTH: usize = 256;

/// A parse failure with a 1-based position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub col: usize,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {} col {}: {}", self.line, self.col, self.message)
    }
}

impl std::error::Error for YamlError {}

/// How a scalar was written in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalarStyle {
    /// `value`
    Plain,
    /// `'value'`
    SingleQuoted,
    /// `"value"`
    DoubleQuoted,
    /// `| ...`
    Literal,
    /// `> ...`
    Folded,
}

/// What a node is.
///
/// Strings and collections are boxed at their exact size: one values file may hold every image
/// (10,000 blocks of four or five nodes), and `Vec`'s growth gave each small mapping room for
/// four pairs, ~27 MB of tree for a 1.5 MB file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    /// A scalar; an empty plain value (`key:`) has value `""` and an empty span.
    Scalar {
        /// The scalar's value after unquoting/unescaping (no type resolution).
        value: Box<str>,
        /// How it was written.
        style: ScalarStyle,
    },
    /// A mapping's (key, value) pairs in source order.
    Mapping(Box<[(Node, Node)]>),
    /// A sequence's items in source order.
    Sequence(Box<[Node]>),
    /// An alias (`*name`); not resolved.
    Alias,
}

/// One node of the tree with its source position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// What the node is.
    pub kind: NodeKind,
    /// 1-based line where the node starts.
    pub line: usize,
    /// 1-based column (in characters) where the node starts.
    pub col: usize,
    /// Byte range in the source: exact text (with quotes) for flow scalars; approximate for
    /// collections; block scalars start at their content, not at the `|`/`>` indicator.
    pub span: Range<usize>,
    /// Whether the node carries an anchor (`&name`).
    pub anchored: bool,
    /// The node's explicit tag, expanded (`!!str` is `tag:yaml.org,2002:str`), if any.
    pub tag: Option<Box<str>>,
}

impl Node {
    /// The scalar's value, if this is a scalar.
    #[must_use]
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    /// Visits this node and all nodes under it in source order, keys before their values.
    pub fn walk<'a>(&'a self, visit: &mut dyn FnMut(&'a Node, bool)) {
        self.walk_inner(false, visit);
    }

    fn walk_inner<'a>(&'a self, is_key: bool, visit: &mut dyn FnMut(&'a Node, bool)) {
        visit(self, is_key);
        match &self.kind {
            NodeKind::Mapping(pairs) => {
                for (k, v) in pairs {
                    k.walk_inner(true, visit);
                    v.walk_inner(false, visit);
                }
            }
            NodeKind::Sequence(items) => {
                for item in items {
                    item.walk_inner(false, visit);
                }
            }
            NodeKind::Scalar { .. } | NodeKind::Alias => {}
        }
    }

    /// The child at one path step: a mapping key, or a sequence index in decimal.
    fn child(&self, step: &str) -> Option<(&Node, Option<&Node>)> {
        match &self.kind {
            NodeKind::Mapping(pairs) => pairs
                .iter()
                .find(|(k, _)| k.as_str() == Some(step))
                .map(|(k, v)| (v, Some(k))),
            NodeKind::Sequence(items) => {
                let index: usize = step.parse().ok()?;
                items.get(index).map(|n| (n, None))
            }
            NodeKind::Scalar { .. } | NodeKind::Alias => None,
        }
    }
}

/// One parsed YAML document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// The root node; `None` for a file with no document (empty or only comments).
    pub root: Option<Node>,
}

impl Document {
    /// The node at `path` (mapping keys; sequence indices as decimal strings); `[]` is the root.
    #[must_use]
    pub fn get(&self, path: &[&str]) -> Option<&Node> {
        self.lookup(path).map(|(node, _)| node)
    }

    /// 1-based line of the node at `path`; for a mapping value, the line of its key.
    #[must_use]
    pub fn line_of(&self, path: &[&str]) -> Option<usize> {
        self.lookup(path)
            .map(|(node, key)| key.map_or(node.line, |k| k.line))
    }

    fn lookup(&self, path: &[&str]) -> Option<(&Node, Option<&Node>)> {
        let mut node = self.root.as_ref()?;
        let mut key = None;
        for step in path {
            let (child, child_key) = node.child(step)?;
            node = child;
            key = child_key;
        }
        Some((node, key))
    }
}

/// Parses exactly one YAML document (an empty file gives `root: None`).
///
/// # Errors
/// Syntax errors, more than one document, duplicate mapping keys, nesting deeper than 256.
pub fn parse(src: &str) -> Result<Document, YamlError> {
    let mut docs = build(src, true)?;
    Ok(docs.pop().unwrap_or(Document { root: None }))
}

/// Parses every document of a stream (`---` between them, `...` ends allowed), in order; an
/// empty file gives no document. Spans are byte offsets into the whole of `src`.
///
/// # Errors
/// Syntax errors, duplicate mapping keys, nesting deeper than 256.
pub fn parse_stream(src: &str) -> Result<Vec<Document>, YamlError> {
    build(src, false)
}

fn build(src: &str, single: bool) -> Result<Vec<Document>, YamlError> {
    let mut tree = Tree::default();
    for step in Steps::new(src, single) {
        tree.step(step?)?;
    }
    Ok(tree.done)
}

/// Deepest nesting [`from_str`] lets through to serde_yaml: serde_yaml's own recursion limit,
/// which it applies only after libyaml has read the whole text.
const SERDE_DEPTH: usize = 128;

/// serde_yaml's `from_str` for text from outside (a config commit, an approval list), with the
/// nesting bounded first.
///
/// libyaml, under serde_yaml, rechecks every open flow collection (`[`, `{`) at every token, so
/// its time grows with the square of the flow nesting: 80 KB of `{a: ` took 0.8 s, 1 MB took
/// minutes, before serde_yaml's recursion limit refused it. A text with more than
/// [`SERDE_DEPTH`] opening brackets is first read by [`steps`] (linear, and it stops at the
/// first error); one nested deeper than that, or that does not parse, is refused here.
///
/// # Errors
/// [`FromStrError::Syntax`] with the line at fault, or serde_yaml's error.
pub fn from_str<T: serde::de::DeserializeOwned>(src: &str) -> Result<T, FromStrError> {
    let brackets = src.bytes().filter(|b| matches!(b, b'[' | b'{')).count();
    if brackets > SERDE_DEPTH {
        let mut depth = 0usize;
        for step in steps(src) {
            match step.map_err(FromStrError::Syntax)? {
                Step::Open(node) => {
                    depth += 1;
                    if depth > SERDE_DEPTH {
                        return Err(FromStrError::Syntax(YamlError {
                            line: node.line,
                            col: node.col,
                            message: format!("nesting deeper than {SERDE_DEPTH} levels"),
                        }));
                    }
                }
                Step::Close(_) => depth = depth.saturating_sub(1),
                Step::DocumentStart | Step::DocumentEnd | Step::Leaf(_) => {}
            }
        }
    }
    serde_yaml::from_str(src).map_err(FromStrError::Serde)
}

/// Why [`from_str`] refused a text.
#[derive(Debug)]
pub enum FromStrError {
    /// Nested too deep, or not YAML, as [`steps`] read it.
    Syntax(YamlError),
    /// serde_yaml's error.
    Serde(serde_yaml::Error),
}

impl FromStrError {
    /// The 1-based line at fault, when known.
    #[must_use]
    pub fn line(&self) -> Option<usize> {
        match self {
            FromStrError::Syntax(e) => Some(e.line),
            FromStrError::Serde(e) => e.location().map(|l| l.line()),
        }
    }
}

impl fmt::Display for FromStrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FromStrError::Syntax(e) => e.fmt(f),
            FromStrError::Serde(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for FromStrError {}

/// One step through a stream, with the nodes as the tree holds them: what [`parse_stream`]
/// builds its tree from, for a caller that wants to look at a document without keeping it
/// (the rewriter's safety net reads a 10,000-image input and output side by side this way).
#[derive(Debug)]
pub enum Step {
    /// A document begins.
    DocumentStart,
    /// The document ends.
    DocumentEnd,
    /// A scalar or an alias.
    Leaf(Node),
    /// A mapping or a sequence begins: its node, with no pairs or items yet.
    Open(Node),
    /// The innermost open collection ends, at this byte (its node's `span.end`).
    Close(usize),
}

/// Every step of a stream, in order, as [`parse_stream`] sees them, without building a tree.
/// Duplicate keys are not looked for (that takes the tree's keys). After an error (a syntax
/// error, nesting deeper than 256) there is no further step.
#[must_use]
pub fn steps(src: &str) -> Steps<'_> {
    Steps::new(src, false)
}

/// The iterator of [`steps`].
pub struct Steps<'a> {
    reader: Reader<'a>,
    events: Parser<'a, StrInput<'a>>,
    /// The directive guard ran.
    checked: bool,
    /// An error was returned: nothing follows it.
    stopped: bool,
}

impl<'a> Steps<'a> {
    fn new(src: &'a str, single: bool) -> Self {
        let reader = Reader::new(src, single);
        let events = Parser::new_from_str(reader.body);
        Steps {
            reader,
            events,
            checked: false,
            stopped: false,
        }
    }

    fn next_step(&mut self) -> Option<Result<Step, YamlError>> {
        if !self.checked {
            self.checked = true;
            // saphyr-parser 0.0.11 advances its character index by bytes over a directive's
            // name and parameters, so every span after `%日本` would point a few bytes off
            // (found by fuzzing). No values file needs such a directive: refuse it rather than
            // mis-place.
            if let Some(line) = non_ascii_directive(self.reader.body) {
                return Some(Err(YamlError {
                    line,
                    col: 1,
                    message: "a directive (%…) with non-ASCII characters is not supported"
                        .to_string(),
                }));
            }
        }
        loop {
            let (event, span) = match self.events.next()? {
                Ok(x) => x,
                Err(e) => {
                    // saphyr-parser counts flow levels in a u8 and says only this.
                    let message = match e.info() {
                        "recursion limit exceeded" => "flow nesting deeper than 255 levels",
                        other => other,
                    };
                    return Some(Err(YamlError {
                        line: e.marker().line(),
                        col: e.marker().col() + 1,
                        message: message.to_string(),
                    }));
                }
            };
            match self.reader.step(event, &span) {
                Ok(Some(step)) => return Some(Ok(step)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

impl Iterator for Steps<'_> {
    type Item = Result<Step, YamlError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.stopped {
            return None;
        }
        let step = self.next_step();
        self.stopped = matches!(step, Some(Err(_)));
        step
    }
}

/// A collection being built.
enum Open {
    Mapping {
        start: Node,
        pairs: Vec<(Node, Node)>,
        key: Option<Node>,
        /// Hashes of the string keys so far → index in `pairs`, so duplicate detection stays
        /// linear in a mapping with thousands of keys (one values file holding every image)
        /// without a second copy of every key.
        seen: std::collections::HashMap<u64, usize>,
    },
    Sequence {
        start: Node,
        items: Vec<Node>,
    },
}

/// The parser's events as [`Step`]s: positions in bytes, quoted scalars ending at their
/// quote, absent values empty, nesting bounded.
struct Reader<'a> {
    src: &'a str,
    /// `src` after a leading byte-order mark, which saphyr-parser would read as content.
    body: &'a str,
    /// Byte length of that mark (0 or 3).
    base: usize,
    /// Byte offset of each char index; empty when the source is ASCII (identity).
    char_to_byte: Vec<usize>,
    /// The spans of the collections open now.
    open: Vec<usize>,
    documents: usize,
    /// Refuse a second document.
    single: bool,
}

impl<'a> Reader<'a> {
    fn new(src: &'a str, single: bool) -> Self {
        let body = src.strip_prefix('\u{feff}').unwrap_or(src);
        // saphyr-parser's Marker::index counts characters, not bytes.
        let char_to_byte = if body.is_ascii() {
            Vec::new()
        } else {
            body.char_indices()
                .map(|(b, _)| b)
                .chain(std::iter::once(body.len()))
                .collect()
        };
        Reader {
            src,
            body,
            base: src.len() - body.len(),
            char_to_byte,
            open: Vec::new(),
            documents: 0,
            single,
        }
    }

    fn byte_offset(&self, char_index: usize, span: &Span) -> Result<usize, YamlError> {
        let byte = if self.char_to_byte.is_empty() {
            Some(char_index).filter(|&b| b <= self.body.len())
        } else {
            self.char_to_byte.get(char_index).copied()
        };
        let byte = byte.map(|b| b + self.base);
        byte.ok_or_else(|| YamlError {
            line: span.start.line(),
            col: span.start.col() + 1,
            message: "parser position out of range".to_string(),
        })
    }

    fn node(
        &self,
        kind: NodeKind,
        span: &Span,
        anchor: usize,
        tag: Option<Box<str>>,
    ) -> Result<Node, YamlError> {
        let start = self.byte_offset(span.start.index(), span)?;
        let end = self.byte_offset(span.end.index(), span)?.max(start);
        Ok(Node {
            kind,
            line: span.start.line(),
            col: span.start.col() + 1,
            span: start..end,
            anchored: anchor != 0,
            tag,
        })
    }

    fn step(&mut self, event: Event<'_>, span: &Span) -> Result<Option<Step>, YamlError> {
        let at = |message: String| YamlError {
            line: span.start.line(),
            col: span.start.col() + 1,
            message,
        };
        let is_mapping = matches!(event, Event::MappingStart(..));
        Ok(Some(match event {
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.single && self.documents > 1 {
                    return Err(at(
                        "more than one YAML document; this file must hold exactly one".to_string(),
                    ));
                }
                Step::DocumentStart
            }
            Event::Scalar(value, style, anchor, tag) => {
                let style = match style {
                    saphyr_parser::ScalarStyle::Plain => ScalarStyle::Plain,
                    saphyr_parser::ScalarStyle::SingleQuoted => ScalarStyle::SingleQuoted,
                    saphyr_parser::ScalarStyle::DoubleQuoted => ScalarStyle::DoubleQuoted,
                    saphyr_parser::ScalarStyle::Literal => ScalarStyle::Literal,
                    saphyr_parser::ScalarStyle::Folded => ScalarStyle::Folded,
                };
                let mut node = self.node(
                    NodeKind::Scalar {
                        value: value.into(),
                        style,
                    },
                    span,
                    anchor,
                    tag.map(|t| format!("{}{}", t.handle, t.suffix).into()),
                )?;
                // saphyr-parser ends a quoted scalar's span after any trailing blanks and comment;
                // find the closing quote ourselves.
                if matches!(style, ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted) {
                    node.span.end = quoted_end(self.src, node.span.start).ok_or_else(|| {
                        at("cannot locate the quoted scalar in the source".to_string())
                    })?;
                }
                // The parser reports an absent value (`key:`) as a plain "~" with an empty span —
                // or, for `{a}`, `? a`, an empty document and a tag with no value (`!t}`), as
                // "~" or "" with the span of the next token (`}`, `? `, `---`, `, `; found by
                // fuzzing). Either way there is no text: say so.
                let absent = style == ScalarStyle::Plain
                    && (node.span.is_empty() || absent_value(&node.kind, self.src, &node.span));
                if absent {
                    node.kind = NodeKind::Scalar {
                        value: Box::default(),
                        style,
                    };
                    node.span.end = node.span.start;
                }
                Step::Leaf(node)
            }
            Event::Alias(_) => Step::Leaf(self.node(NodeKind::Alias, span, 0, None)?),
            Event::MappingStart(anchor, tag) | Event::SequenceStart(anchor, tag) => {
                if self.open.len() >= MAX_DEPTH {
                    return Err(at(format!("nesting deeper than {MAX_DEPTH} levels")));
                }
                let tag = tag.map(|t| format!("{}{}", t.handle, t.suffix).into());
                let kind = if is_mapping {
                    NodeKind::Mapping(Box::default())
                } else {
                    NodeKind::Sequence(Box::default())
                };
                let start = self.node(kind, span, anchor, tag)?;
                self.open.push(start.span.start);
                Step::Open(start)
            }
            Event::MappingEnd | Event::SequenceEnd => {
                let end = self.byte_offset(span.end.index(), span)?;
                let Some(start) = self.open.pop() else {
                    return Err(at("unbalanced collection end".to_string()));
                };
                Step::Close(end.max(start))
            }
            Event::DocumentEnd => Step::DocumentEnd,
            Event::Nothing | Event::StreamStart | Event::StreamEnd => return Ok(None),
        }))
    }
}
/// The tree [`parse_stream`] returns, assembled step by step.
#[derive(Default)]
struct Tree {
    stack: Vec<Open>,
    root: Option<Node>,
    /// The documents finished so far.
    done: Vec<Document>,
    /// Hashes mapping keys for duplicate detection (randomly keyed: a file cannot aim at it).
    keys: std::collections::hash_map::RandomState,
}

impl Tree {
    fn step(&mut self, step: Step) -> Result<(), YamlError> {
        match step {
            Step::DocumentStart => {}
            Step::DocumentEnd => self.done.push(Document {
                root: self.root.take(),
            }),
            Step::Leaf(node) => self.push(node)?,
            Step::Open(start) => self.stack.push(match start.kind {
                NodeKind::Mapping(_) => Open::Mapping {
                    start,
                    pairs: Vec::new(),
                    key: None,
                    seen: std::collections::HashMap::new(),
                },
                _ => Open::Sequence {
                    start,
                    items: Vec::new(),
                },
            }),
            Step::Close(end) => {
                // The reader closes only what it opened.
                let node = match self.stack.pop() {
                    Some(Open::Mapping {
                        mut start, pairs, ..
                    }) => {
                        start.kind = NodeKind::Mapping(pairs.into_boxed_slice());
                        start.span.end = end;
                        start
                    }
                    Some(Open::Sequence { mut start, items }) => {
                        start.kind = NodeKind::Sequence(items.into_boxed_slice());
                        start.span.end = end;
                        start
                    }
                    None => return Ok(()),
                };
                self.push(node)?;
            }
        }
        Ok(())
    }

    /// Attaches a finished node to the open collection, or makes it the root.
    fn push(&mut self, node: Node) -> Result<(), YamlError> {
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Open::Sequence { items, .. }) => items.push(node),
            Some(Open::Mapping {
                pairs, key, seen, ..
            }) => match key.take() {
                None => {
                    if let Some(name) = node.as_str() {
                        let hash = std::hash::BuildHasher::hash_one(&self.keys, name);
                        // A hash seen before is a duplicate only if the key's text is the same;
                        // two keys sharing a hash are looked for the slow way, as rare as that is.
                        let first = match seen.get(&hash) {
                            Some(&i) if pairs[i].0.as_str() == Some(name) => Some(i),
                            Some(_) => pairs.iter().position(|(k, _)| k.as_str() == Some(name)),
                            None => None,
                        };
                        if let Some(i) = first {
                            return Err(YamlError {
                                line: node.line,
                                col: node.col,
                                message: format!(
                                    "duplicate key {name:?} (first at line {}, again at line {})",
                                    pairs[i].0.line, node.line
                                ),
                            });
                        }
                        seen.entry(hash).or_insert(pairs.len());
                    }
                    *key = Some(node);
                }
                Some(k) => pairs.push((k, node)),
            },
        }
        Ok(())
    }
}

/// A "~" or "" the source does not hold at the scalar's span: the parser's stand-in for a
/// value that is not written.
fn absent_value(kind: &NodeKind, src: &str, span: &Range<usize>) -> bool {
    matches!(kind, NodeKind::Scalar { value, .. }
        if (&**value == "~" || value.is_empty()) && src.get(span.clone()) != Some(&**value))
}

/// Byte offset just past the closing quote of the quoted scalar starting at `start`.
fn quoted_end(src: &str, start: usize) -> Option<usize> {
    let bytes = src.as_bytes();
    let quote = *bytes.get(start)?;
    let mut i = start + 1;
    match quote {
        b'\'' => loop {
            match bytes.get(i)? {
                b'\'' if bytes.get(i + 1) == Some(&b'\'') => i += 2,
                b'\'' => return Some(i + 1),
                _ => i += 1,
            }
        },
        b'"' => loop {
            match bytes.get(i)? {
                b'\\' => i += 2,
                b'"' => return Some(i + 1),
                _ => i += 1,
            }
        },
        _ => None,
    }
}

/// The line of the first directive with non-ASCII text, if any. Lines as YAML breaks them: LF,
/// CRLF or a bare CR (`str::lines` misses the last, and fuzzing found a directive behind one).
fn non_ascii_directive(body: &str) -> Option<usize> {
    let mut line = 1;
    let mut at_start = true;
    let mut after_cr = false;
    for (i, c) in body.char_indices() {
        if at_start && c == '%' {
            let rest = &body[i..];
            let end = rest.find(['\n', '\r']).unwrap_or(rest.len());
            if !rest[..end].is_ascii() {
                return Some(line);
            }
        }
        at_start = matches!(c, '\n' | '\r');
        if c == '\r' || (c == '\n' && !after_cr) {
            line += 1;
        }
        after_cr = c == '\r';
    }
    None
}

#[cfg(test)]
mod tests;
