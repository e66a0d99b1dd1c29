//! The rewriter's promise, checked from outside: an accepted rewrite differs from its input
//! only in the bytes of the changed scalars, and re-parses to the same tree everywhere else.

use tagflow::rewrite::{self, Change, ImageUpdate, PathTargets};
use tagflow::yamlspan::{self, Document, Node, NodeKind};

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// Tags to write; some need quoting to stay strings, one is long.
const TAGS: [&str; 8] = [
    "e4f5a6b",
    "1.2.3",
    "v2.0.0-rc.1",
    "1e10",
    "0777",
    "true",
    "null",
    "a-very-long-tag-that-is-still-valid-0123456789-abcdefghijklmnopqrstuvwxyz_ABC.DEF",
];

fn update(
    image: &str,
    setter: Option<&str>,
    paths: PathTargets,
    tag: &str,
    digest: bool,
) -> ImageUpdate {
    ImageUpdate {
        image: image.into(),
        setter: setter.map(Into::into),
        paths,
        repository: format!("registry.example.com/team/{image}"),
        tag: tag.into(),
        digest: digest.then(|| DIGEST.into()),
    }
}

fn path(
    name: Option<&str>,
    tag: Option<&str>,
    digest: Option<&str>,
    full: Option<&str>,
) -> PathTargets {
    PathTargets {
        name: name.map(Into::into),
        tag: tag.map(Into::into),
        digest: digest.map(Into::into),
        full: full.map(Into::into),
    }
}

/// The update sets a mode byte chooses from (low 3 bits), the tag from the next 3 bits.
fn updates(mode: u8) -> (Vec<ImageUpdate>, bool) {
    let tag = TAGS[usize::from((mode >> 3) & 7)];
    let none = PathTargets::default();
    let app = Some("flux-system:app");
    let set = match mode & 7 {
        0 | 5 => vec![
            update("app", app, none.clone(), tag, true),
            update("worker", Some("flux-system:worker"), none, "w2", false),
        ],
        1 => vec![update(
            "app",
            None,
            path(
                Some("app.image.repository"),
                Some("app.image.tag"),
                Some("app.image.digest"),
                None,
            ),
            tag,
            true,
        )],
        2 => vec![update("app", app, none, tag, false)],
        3 => vec![update(
            "app",
            None,
            path(Some("image.repository"), Some("image.tag"), None, None),
            tag,
            false,
        )],
        4 => vec![update(
            "app",
            None,
            path(None, None, None, Some("spec.containers.0.image")),
            tag,
            true,
        )],
        6 => vec![update(
            "app",
            app,
            path(None, Some("image.tag"), None, None),
            tag,
            false,
        )],
        _ => vec![update(
            "app",
            None,
            path(None, None, None, Some("image")),
            tag,
            false,
        )],
    };
    (set, mode & 7 == 5)
}

/// Fuzz `rewrite::rewrite` (and `rewrite_if_marked`) against the values file in `data`.
pub fn rewrite(data: &[u8]) {
    let Some((mode, input)) = crate::mode(data) else {
        return;
    };
    let (updates, dir_mode) = updates(mode);
    let result = if dir_mode {
        rewrite::rewrite_if_marked("f.yaml", input, &updates)
    } else {
        rewrite::rewrite("f.yaml", input, &updates)
    };
    let Ok(r) = result else { return };
    assert_eq!(r.found.len(), updates.len());
    if r.changes.is_empty() {
        assert_eq!(r.output, input, "no change but the bytes differ");
        return;
    }
    let src = std::str::from_utf8(input).expect("a rewritten input was UTF-8");
    let out = std::str::from_utf8(&r.output).expect("output is UTF-8");
    let before = yamlspan::parse_stream(src).expect("a rewritten input parsed");
    let after = yamlspan::parse_stream(out).expect("the output re-parses");
    same_elsewhere(src, out, &before, &after, &r.changes, &updates);
}

fn flatten(docs: &[Document]) -> Vec<(&Node, bool)> {
    let mut nodes = Vec::new();
    for root in docs.iter().filter_map(|d| d.root.as_ref()) {
        root.walk(&mut |n, is_key| nodes.push((n, is_key)));
    }
    nodes
}

fn shape(n: &Node) -> (u8, usize, bool, Option<&str>) {
    let (kind, len) = match &n.kind {
        NodeKind::Scalar { .. } => (0, 0),
        NodeKind::Mapping(p) => (1, p.len()),
        NodeKind::Sequence(s) => (2, s.len()),
        NodeKind::Alias => (3, 0),
    };
    (kind, len, n.anchored, n.tag.as_deref())
}

fn same_elsewhere(
    src: &str,
    out: &str,
    before: &[Document],
    after: &[Document],
    changes: &[Change],
    updates: &[ImageUpdate],
) {
    assert_eq!(before.len(), after.len(), "document count changed");
    let (b, a) = (flatten(before), flatten(after));
    assert_eq!(b.len(), a.len(), "node count changed");
    let mut rebuilt = String::with_capacity(out.len());
    let mut at = 0;
    let mut changed = 0;
    for ((nb, kb), (na, ka)) in b.iter().zip(&a) {
        assert_eq!(kb, ka);
        assert_eq!(
            shape(nb),
            shape(na),
            "a node changed shape at line {}",
            nb.line
        );
        let (Some(old), Some(new)) = (nb.as_str(), na.as_str()) else {
            continue;
        };
        if old == new {
            continue;
        }
        assert!(!kb, "a mapping key changed: {old:?} → {new:?}");
        let change = changes
            .iter()
            .find(|c| c.line == nb.line && c.old == old && c.new == new)
            .unwrap_or_else(|| panic!("unlisted change at line {}: {old:?} → {new:?}", nb.line));
        let u = updates
            .iter()
            .find(|u| u.image == change.image)
            .expect("update");
        assert!(
            new == u.tag
                || new == u.repository
                || Some(new) == u.digest.as_deref()
                || new.contains(&format!(":{}", u.tag)),
            "{new:?} is none of update {}'s values",
            u.image
        );
        assert!(nb.span.start >= at, "edits overlap");
        rebuilt.push_str(&src[at..nb.span.start]);
        rebuilt.push_str(&out[na.span.clone()]);
        at = nb.span.end;
        changed += 1;
    }
    rebuilt.push_str(&src[at..]);
    assert_eq!(changed, changes.len(), "change list and tree disagree");
    assert_eq!(rebuilt, out, "bytes outside the changed scalars differ");
}
