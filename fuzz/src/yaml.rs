//! The span-aware YAML tree: spans in bounds on character boundaries, flow scalars' spans are
//! exactly their source text, one-document parse agrees with the stream parse.

use tagflow::yamlspan::{self, Node, NodeKind, ScalarStyle};

/// Fuzz `yamlspan::parse_stream` and `yamlspan::parse`.
pub fn yaml(data: &[u8]) {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let stream = yamlspan::parse_stream(src);
    let single = yamlspan::parse(src);
    match (&stream, &single) {
        (Ok(docs), Ok(doc)) => {
            assert!(docs.len() <= 1, "parse accepted a stream of {}", docs.len());
            assert_eq!(docs.first().map_or(&None, |d| &d.root), &doc.root);
        }
        (Ok(docs), Err(e)) => assert!(docs.len() > 1, "stream parsed, single failed: {e}"),
        (Err(_), Ok(_)) => panic!("single parsed, stream failed"),
        (Err(e), Err(_)) => assert!(e.line >= 1 && e.col >= 1, "{e:?}"),
    }
    let Ok(docs) = stream else { return };
    for root in docs.iter().filter_map(|d| d.root.as_ref()) {
        let mut keys = Vec::new();
        root.walk(&mut |node, is_key| {
            check_node(src, node);
            if is_key && let Some(k) = node.as_str() {
                keys.push(k.to_owned());
            }
        });
        for doc in &docs {
            for k in keys.iter().take(8) {
                let path: Vec<&str> = k.split('.').collect();
                if let Some(n) = doc.get(&path) {
                    check_node(src, n);
                    assert!(doc.line_of(&path).is_some());
                }
            }
        }
    }
}

fn check_node(src: &str, node: &Node) {
    let span = &node.span;
    assert!(
        span.start <= span.end && span.end <= src.len(),
        "span {span:?} of {}",
        src.len()
    );
    assert!(
        src.is_char_boundary(span.start) && src.is_char_boundary(span.end),
        "span {span:?} not on a char boundary"
    );
    assert!(node.line >= 1 && node.col >= 1);
    let NodeKind::Scalar { value, style } = &node.kind else {
        return;
    };
    let text = &src[span.clone()];
    if text.contains(['\n', '\r']) {
        return; // folded lines: the value is not the text
    }
    match style {
        ScalarStyle::Plain => assert_eq!(text, &**value, "plain scalar span"),
        ScalarStyle::SingleQuoted => {
            assert_eq!(
                text,
                format!("'{}'", value.replace('\'', "''")),
                "single-quoted span"
            );
        }
        ScalarStyle::DoubleQuoted => {
            assert!(
                text.starts_with('"') && text.ends_with('"') && text.len() >= 2,
                "{text:?}"
            );
            if !text.contains('\\') {
                assert_eq!(&text[1..text.len() - 1], &**value, "double-quoted span");
            }
        }
        ScalarStyle::Literal | ScalarStyle::Folded => {}
    }
}
