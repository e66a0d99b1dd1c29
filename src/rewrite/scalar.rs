//! Reading a target scalar's current value from its exact source text, and writing a new one
//! in the same style.
//!
//! Both directions refuse anything they cannot map byte-for-byte: a rewrite that guesses at
//! folding or escapes could change a value nobody asked to change.

use crate::yamlspan::{Node, NodeKind, ScalarStyle};

use super::validate::plain_is_string;

/// How the target is written, or why it cannot be rewritten in place. When it can, its source
/// text (`src[node.span]`) maps exactly to its value: [`decode`] gives the value back from the
/// text alone, after the tree is gone.
pub(super) fn editable(src: &str, node: &Node) -> Result<ScalarStyle, String> {
    let (value, style) = match &node.kind {
        NodeKind::Scalar { value, style } => (value, *style),
        NodeKind::Alias => {
            return Err("the target is an alias (*name); rewrite the anchored value".to_string());
        }
        NodeKind::Mapping(_) => return Err("the target is a mapping, not a scalar".to_string()),
        NodeKind::Sequence(_) => return Err("the target is a sequence, not a scalar".to_string()),
    };
    if node.anchored {
        return Err("the target carries an anchor (&name) that other nodes may alias".to_string());
    }
    if let Some(tag) = &node.tag {
        return Err(format!("the target has an explicit tag ({tag})"));
    }
    if matches!(style, ScalarStyle::Literal | ScalarStyle::Folded) {
        return Err("the target is a block scalar (| or >)".to_string());
    }
    let text = src
        .get(node.span.clone())
        .ok_or_else(|| "the target's position is outside the file".to_string())?;
    if text.is_empty() {
        return Err("the target has no value; write a placeholder such as \"\"".to_string());
    }
    if text.contains(['\n', '\r']) {
        return Err("the target is a multi-line scalar".to_string());
    }
    let expected = match style {
        ScalarStyle::Plain => value.to_string(),
        ScalarStyle::SingleQuoted => format!("'{}'", value.replace('\'', "''")),
        ScalarStyle::DoubleQuoted if text.contains('\\') => {
            return Err("the target is a double-quoted scalar with escape sequences".to_string());
        }
        ScalarStyle::DoubleQuoted => format!("\"{value}\""),
        ScalarStyle::Literal | ScalarStyle::Folded => String::new(),
    };
    if *text != expected {
        return Err(format!(
            "the target's source text {text:?} does not map exactly to its value {value:?}"
        ));
    }
    Ok(style)
}

/// The value of a scalar's source text that [`editable`] accepted in `style`.
pub(super) fn decode(text: &str, style: ScalarStyle) -> String {
    let inner = || {
        text.get(1..text.len().saturating_sub(1))
            .unwrap_or_default()
    };
    match style {
        ScalarStyle::SingleQuoted => inner().replace("''", "'"),
        // Accepted only without escapes, so the text between the quotes is the value.
        ScalarStyle::DoubleQuoted => inner().to_string(),
        ScalarStyle::Plain | ScalarStyle::Literal | ScalarStyle::Folded => text.to_string(),
    }
}

/// Source text for `value` in `style`; a plain scalar that would not read back as the same
/// string (`1234567` is a number) is double-quoted instead.
pub(super) fn encode(value: &str, style: ScalarStyle) -> Result<String, String> {
    if value.chars().any(char::is_control) {
        return Err(format!("{value:?} contains control characters"));
    }
    let double = || format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""));
    match style {
        ScalarStyle::Plain if plain_is_string(value) => Ok(value.to_string()),
        ScalarStyle::Plain | ScalarStyle::DoubleQuoted => Ok(double()),
        ScalarStyle::SingleQuoted => Ok(format!("'{}'", value.replace('\'', "''"))),
        ScalarStyle::Literal | ScalarStyle::Folded => {
            Err("block scalars are not rewritten".to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yamlspan::parse;

    #[test]
    fn editable_targets() {
        let ok = [
            ("t: a1b2c3d\n", "a1b2c3d", ScalarStyle::Plain),
            ("t: 'a1'\n", "a1", ScalarStyle::SingleQuoted),
            ("t: 'it''s'\n", "it's", ScalarStyle::SingleQuoted),
            ("t: \"a1\"  # c\n", "a1", ScalarStyle::DoubleQuoted),
            ("t: \"\"\n", "", ScalarStyle::DoubleQuoted),
            ("t: null\n", "null", ScalarStyle::Plain),
            ("t: [x, 'y']\n", "x", ScalarStyle::Plain),
        ];
        for (src, value, style) in ok {
            let doc = parse(src).unwrap();
            let node = doc.get(&["t"]).unwrap();
            let node = match &node.kind {
                NodeKind::Sequence(items) => &items[0],
                _ => node,
            };
            let got = editable(src, node).unwrap();
            let text = &src[node.span.clone()];
            assert_eq!((decode(text, got).as_str(), got), (value, style), "{src:?}");
        }
        let refused = [
            ("t: &a x\n", "anchor"),
            ("a: &a x\nt: *a\n", "alias"),
            ("t: !!str x\n", "explicit tag"),
            ("t: |\n  x\n", "block scalar"),
            ("t: >\n  x\n", "block scalar"),
            ("t: \"a\\x41\"\n", "escape"),
            ("t: \"a\n  b\"\n", "multi-line"),
            ("t: 'a\n  b'\n", "multi-line"),
            ("t: a\n  b\n", "multi-line"),
            ("t:\n", "no value"),
            ("t: {a: b}\n", "mapping"),
            ("t: [a]\n", "sequence"),
        ];
        for (src, reason) in refused {
            let doc = parse(src).unwrap();
            let err = editable(src, doc.get(&["t"]).unwrap()).unwrap_err();
            assert!(err.contains(reason), "{src:?}: {err}");
        }
    }

    #[test]
    fn encodings() {
        let cases = [
            ("a1b2c3d", ScalarStyle::Plain, "a1b2c3d"),
            ("1234567", ScalarStyle::Plain, "\"1234567\""),
            ("true", ScalarStyle::Plain, "\"true\""),
            ("a1", ScalarStyle::SingleQuoted, "'a1'"),
            ("it's", ScalarStyle::SingleQuoted, "'it''s'"),
            ("a1", ScalarStyle::DoubleQuoted, "\"a1\""),
            ("a\"b\\", ScalarStyle::DoubleQuoted, "\"a\\\"b\\\\\""),
        ];
        for (value, style, want) in cases {
            assert_eq!(encode(value, style).unwrap(), want, "{value:?} {style:?}");
        }
        assert!(encode("a\nb", ScalarStyle::DoubleQuoted).is_err());
        assert!(encode("a", ScalarStyle::Literal).is_err());
    }
}
