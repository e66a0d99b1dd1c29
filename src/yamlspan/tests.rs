//! Unit tests of the span-aware YAML tree.

use super::*;

fn scalar<'a>(doc: &'a Document, path: &[&str]) -> (&'a str, ScalarStyle, Range<usize>) {
    let node = doc.get(path).expect("path exists");
    match &node.kind {
        NodeKind::Scalar { value, style } => (value, *style, node.span.clone()),
        other => panic!("not a scalar: {other:?}"),
    }
}

#[test]
fn scalar_spans_are_exact_source_text() {
    let src = "# é日本 comment\nimage:\n  repo: 'a''b' # ü\n  tag: \"v\\\"1\"  # c\n  \
               plain: x y\nlist:\n  - é # 'x'\n  - &a 'z'\n  - {k: \"é\", l: 'm'}\n";
    let doc = parse(src).unwrap();
    let cases: &[(&[&str], &str, &str, ScalarStyle)] = &[
        (
            &["image", "repo"],
            "a'b",
            "'a''b'",
            ScalarStyle::SingleQuoted,
        ),
        (
            &["image", "tag"],
            "v\"1",
            "\"v\\\"1\"",
            ScalarStyle::DoubleQuoted,
        ),
        (&["image", "plain"], "x y", "x y", ScalarStyle::Plain),
        (&["list", "0"], "é", "é", ScalarStyle::Plain),
        (&["list", "1"], "z", "'z'", ScalarStyle::SingleQuoted),
        (&["list", "2", "k"], "é", "\"é\"", ScalarStyle::DoubleQuoted),
        (&["list", "2", "l"], "m", "'m'", ScalarStyle::SingleQuoted),
    ];
    for (path, value, text, style) in cases {
        let (v, s, span) = scalar(&doc, path);
        assert_eq!((v, s, &src[span]), (*value, *style, *text), "{path:?}");
    }
}

#[test]
fn lines_and_key_lines() {
    let src = "a:\n  b:\n    c: 1\n  d:\n    - x\n    - y\n";
    let doc = parse(src).unwrap();
    let cases: &[(&[&str], Option<usize>)] = &[
        (&[], Some(1)),
        (&["a"], Some(1)),
        (&["a", "b", "c"], Some(3)),
        (&["a", "d"], Some(4)),
        (&["a", "d", "1"], Some(6)),
        (&["a", "d", "2"], None),
        (&["a", "d", "x"], None),
        (&["nope"], None),
    ];
    for (path, line) in cases {
        assert_eq!(doc.line_of(path), *line, "{path:?}");
    }
}

#[test]
fn empty_and_comment_only_files_have_no_root() {
    for src in ["", "# just a comment\n", "\n\n"] {
        assert_eq!(parse(src).unwrap().root, None, "{src:?}");
    }
}

#[test]
fn null_value_is_empty_plain_with_empty_span() {
    let doc = parse("a:\nb: ~\n").unwrap();
    let (v, s, span) = scalar(&doc, &["a"]);
    assert_eq!((v, s, span.is_empty()), ("", ScalarStyle::Plain, true));
    assert_eq!(scalar(&doc, &["b"]).0, "~");
}

#[test]
fn anchors_aliases_tags() {
    let doc = parse("a: &x v\nb: *x\nc: !!str 1\n").unwrap();
    assert!(doc.get(&["a"]).unwrap().anchored);
    assert_eq!(doc.get(&["b"]).unwrap().kind, NodeKind::Alias);
    assert_eq!(
        doc.get(&["c"]).unwrap().tag.as_deref(),
        Some("tag:yaml.org,2002:str")
    );
}

#[test]
fn errors() {
    let cases = [
        (
            "a: 1\nb: 2\na: 3\n",
            3,
            "duplicate key \"a\" (first at line 1, again at line 3)",
        ),
        ("a: 1\n---\nb: 2\n", 2, "more than one YAML document"),
        ("a: [1, 2\n", 2, ""),
        ("a:\n\t- b\n", 2, "tabs"),
        ("x: 1\n- y\n", 2, ""),
    ];
    for (src, line, msg) in cases {
        let err = parse(src).unwrap_err();
        assert_eq!(err.line, line, "{src:?}: {err}");
        assert!(err.to_string().contains(msg), "{src:?}: {err}");
        assert!(
            err.to_string().starts_with(&format!("line {line} col ")),
            "{err}"
        );
    }
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    let src = "[".repeat(10_000);
    assert!(parse(&src).is_err());
    let mut block = String::new();
    for i in 0..1000 {
        block.push_str(&" ".repeat(i));
        block.push_str("a:\n");
    }
    assert!(parse(&block).is_err());
}

#[test]
fn byte_order_mark_is_skipped() {
    let src = "\u{feff}# é\nt: 'v1'\n";
    let doc = parse(src).unwrap();
    assert_eq!(&src[scalar(&doc, &["t"]).2], "'v1'");
    assert_eq!(doc.line_of(&["t"]), Some(2));
}

#[test]
fn crlf_spans() {
    let src = "a: b\r\nc: 'd'\r\n";
    let doc = parse(src).unwrap();
    assert_eq!(&src[scalar(&doc, &["c"]).2], "'d'");
    assert_eq!(doc.line_of(&["c"]), Some(2));
}

#[test]
fn streams_hold_every_document_with_whole_file_spans() {
    let src = "---\na: 1\n...\n# between\n---\nb: 'x'\n---\n";
    let docs = parse_stream(src).unwrap();
    assert_eq!(docs.len(), 3, "{docs:?}");
    assert_eq!(&src[scalar(&docs[1], &["b"]).2], "'x'");
    assert_eq!(docs[1].line_of(&["b"]), Some(6));
    assert_eq!(docs[2].root.as_ref().and_then(Node::as_str), Some(""));
    assert!(parse_stream("").unwrap().is_empty());
    assert!(parse_stream("a: 1\n---\na: 1\na: 2\n").is_err());
}

#[test]
fn absent_values_are_empty_with_empty_spans_in_every_form() {
    // Found by fuzzing (scripts/fuzz yaml): the parser gave these a "~" value and the span of
    // the next token, so the tree claimed text that is not the value.
    let cases: &[(&str, &[&str])] = &[
        ("{a}\n", &["a"]),
        ("x: {tag}\n", &["x", "tag"]),
        ("? d\n", &["d"]),
        ("a:\n", &["a"]),
        ("image: {repository: r, tag: !t}  # c\n", &["image", "tag"]),
        ("k: [!t , x]\n", &["k", "0"]),
    ];
    for (src, path) in cases {
        let doc = parse(src).unwrap();
        let (value, style, span) = scalar(&doc, path);
        assert_eq!(
            (value, style, span.len()),
            ("", ScalarStyle::Plain, 0),
            "{src:?}"
        );
    }
    let docs = parse_stream("a: 1\n---\n---\n").unwrap();
    for d in &docs {
        if let Some(root) = &d.root {
            root.walk(&mut |n, _| {
                if let NodeKind::Scalar { value, .. } = &n.kind {
                    assert_eq!(&**value, &"a: 1\n---\n---\n"[n.span.clone()]);
                }
            });
        }
    }
    let tilde = parse("a: ~\n").unwrap();
    let (value, _, span) = scalar(&tilde, &["a"]);
    assert_eq!(
        (value, span.len()),
        ("~", 1),
        "an explicit ~ keeps its text"
    );
}

#[test]
fn a_non_ascii_directive_is_refused_not_mis_spanned() {
    // Found by fuzzing: after `%日本`, the parser's positions ran bytes ahead of characters.
    // And behind a bare CR, which YAML reads as a line break (`str::lines` does not).
    for src in [
        "%日本語\n---\n0 0000000a\n",
        "#ó\n%ö\n---\n#本\n0 \n",
        "\n  \r%:1b2cag:\0\u{1}g: \u{520}ea  \r%:1f:  #\n---\ne:\n ith a UPPe:  \0\u{1}g: \u{520}eab",
    ] {
        let e = parse_stream(src).expect_err(src);
        assert!(e.message.contains("directive"), "{e}");
    }
    assert_eq!(
        super::non_ascii_directive("a: 1\r\n\r%é\n"),
        Some(3),
        "CRLF is one break"
    );
    let ok = parse_stream("%YAML 1.2\n---\na: é\n").unwrap();
    let (value, _, span) = scalar(&ok[0], &["a"]);
    assert_eq!((value, &"%YAML 1.2\n---\na: é\n"[span]), ("é", "é"));
}

/// `from_str` reads what serde_yaml reads, however many brackets the text has, as long as it
/// is not nested deeper than serde_yaml's limit; past it, the line at fault is named.
#[test]
fn from_str_bounds_nesting_and_otherwise_reads_as_serde() {
    let many = format!(
        "q: '{}'\nlist:\n{}deep: {}1{}\n",
        "[".repeat(300),
        "- [a, {b: c}]\n".repeat(200),
        "[".repeat(120),
        "]".repeat(120)
    );
    let ours: serde_yaml::Value = from_str(&many).expect("reads");
    let theirs: serde_yaml::Value = serde_yaml::from_str(&many).expect("serde reads");
    assert_eq!(ours, theirs);
    let deep = format!("a: 1\nb: {}1{}\n", "[".repeat(129), "]".repeat(129));
    match from_str::<serde_yaml::Value>(&deep) {
        Err(FromStrError::Syntax(e)) => {
            assert_eq!(
                (e.line, e.message.as_str()),
                (2, "nesting deeper than 128 levels")
            );
        }
        other => panic!("{other:?}"),
    }
    // Not nested past the limit but not YAML either: refused, and located.
    let broken = format!("a: 1\nb: {}\nc: ]\n", "[x] ".repeat(200));
    let err = from_str::<serde_yaml::Value>(&broken).unwrap_err();
    assert_eq!(err.line(), Some(2), "{err}");
}
