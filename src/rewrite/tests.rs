//! Unit tests for the rewrite flow; byte-exact cases live in tests/testdata (golden).

use super::targets::line_at;
use super::*;

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn update(setter: Option<&str>, tag: &str) -> ImageUpdate {
    ImageUpdate {
        image: "app".to_string(),
        setter: setter.map(str::to_string),
        paths: PathTargets::default(),
        repository: "registry.example.com/team/app".to_string(),
        tag: tag.to_string(),
        digest: Some(DIGEST.to_string()),
    }
}

fn tag_path(path: &str, tag: &str) -> ImageUpdate {
    let mut u = update(None, tag);
    u.paths.tag = Some(path.to_string());
    u
}

fn run(src: &str, updates: &[ImageUpdate]) -> Result<(String, Vec<Change>), RewriteError> {
    rewrite("f.yaml", src.as_bytes(), updates)
        .map(|r| (String::from_utf8(r.output).unwrap(), r.changes))
}

#[test]
fn rewrites_only_the_target_bytes() {
    let m = r#"# {"$imagepolicy": "ns:app:tag"}"#;
    let cases = [
        (format!("tag: old {m}\n"), format!("tag: new1 {m}\n")),
        (format!("tag: 'old' {m}\n"), format!("tag: 'new1' {m}\n")),
        (
            format!("tag: \"old\"\t{m}\r\n"),
            format!("tag: \"new1\"\t{m}\r\n"),
        ),
        (format!("- tag: old {m}"), format!("- tag: new1 {m}")),
        (
            format!("x: [old]\nl:\n  - old {m}\n"),
            format!("x: [old]\nl:\n  - new1 {m}\n"),
        ),
        (
            format!("x: {{tag: old}} # é\ntag: old {m}\n"),
            format!("x: {{tag: old}} # é\ntag: new1 {m}\n"),
        ),
        // A SHA made only of digits would become a number if written plain.
        (format!("tag: old {m}\n"), format!("tag: \"1234567\" {m}\n")),
    ];
    for (i, (src, want)) in cases.iter().enumerate() {
        let tag = if i == 6 { "1234567" } else { "new1" };
        let (out, changes) = run(src, &[update(Some("ns:app"), tag)]).unwrap();
        assert_eq!(&out, want, "{src:?}");
        assert_eq!(changes.len(), 1);
        assert_eq!(
            (changes[0].old.as_str(), changes[0].new.as_str()),
            ("old", tag)
        );
    }
}

#[test]
fn fields_and_values() {
    let src = "a: x # {\"$imagepolicy\": \"ns:app\"}\nb: x # {\"$imagepolicy\": \"ns:app:name\"}\n\
               c: x # {\"$imagepolicy\": \"ns:app:tag\"}\nd: x # {\"$imagepolicy\": \"ns:app:digest\"}\n";
    let (_, changes) = run(src, &[update(Some("ns:app"), "v1")]).unwrap();
    let got: Vec<(Field, usize, &str)> = changes
        .iter()
        .map(|c| (c.field, c.line, c.new.as_str()))
        .collect();
    let pinned = format!("registry.example.com/team/app:v1@{DIGEST}");
    assert_eq!(
        got,
        [
            (Field::Full, 1, pinned.as_str()),
            (Field::Name, 2, "registry.example.com/team/app"),
            (Field::Tag, 3, "v1"),
            (Field::Digest, 4, DIGEST),
        ]
    );
    let mut unpinned = update(Some("ns:app"), "v1");
    unpinned.digest = None;
    let (_, changes) = run("a: x # {\"$imagepolicy\": \"ns:app\"}\n", &[unpinned]).unwrap();
    assert_eq!(
        changes[0].new, "registry.example.com/team/app:v1",
        "no digest, no pin"
    );
}

#[test]
fn errors() {
    let marker = |s: &str| format!("# {{\"$imagepolicy\": \"{s}\"}}");
    let mut no_digest = update(Some("ns:app"), "v1");
    no_digest.digest = None;
    let cases: Vec<(String, Vec<ImageUpdate>, &str)> = vec![
        (
            format!("t: x {}\n", marker("ns:app:bogus")),
            vec![update(Some("ns:app"), "v1")],
            "unknown suffix",
        ),
        (
            format!("t: {}\n", marker("ns:app:tag")),
            vec![update(Some("ns:app"), "v1")],
            "no scalar value",
        ),
        (
            format!("t:\n  {}\n  x: y\n", marker("ns:app:tag")),
            vec![update(Some("ns:app"), "v1")],
            "f.yaml:2: bad image policy marker",
        ),
        (
            format!("t: [x] {}\n", marker("ns:app:tag")),
            vec![update(Some("ns:app"), "v1")],
            "no scalar value",
        ),
        (
            format!("t: x {}\n", marker("ns:app:digest")),
            vec![no_digest],
            "no digest to write",
        ),
        (
            format!("t: x {}\n", marker("ns:other:tag")),
            vec![update(Some("ns:app"), "v1")],
            "no target for image app",
        ),
        (
            format!("t: x {}\n", marker("ns:app:tag")),
            vec![update(Some("ns:app"), "v1"), update(Some("ns:app"), "v1")],
            "targeted by both",
        ),
        (
            format!("t: x {}\n", marker("ns:app:tag")),
            vec![{
                let mut u = update(Some("ns:app"), "v1");
                u.paths.tag = Some("t".into());
                u
            }],
            "both a path and a marker (lines 1, 1)",
        ),
        (
            "t: x\n".to_string(),
            vec![tag_path("t.x", "v1")],
            "path t.x (tag) does not exist",
        ),
        (
            "t: x\n".to_string(),
            vec![tag_path("t..x", "v1")],
            "invalid path",
        ),
        (
            "t: x\n".to_string(),
            vec![update(Some("ns"), "v1")],
            "invalid setter",
        ),
        (
            "t: x\n".to_string(),
            vec![update(None, "v1")],
            "no setter and no paths",
        ),
        (
            "t: x\n".to_string(),
            vec![tag_path("t", "v1\n")],
            "invalid tag \"v1\\n\"",
        ),
    ];
    for (src, updates, want) in cases {
        let err = run(&src, &updates).unwrap_err().to_string();
        assert!(err.contains(want), "{src:?}: {err}");
    }
}

#[test]
fn unrelated_markers_are_ignored_even_when_malformed() {
    let src = "a: x # {\"$imagepolicy\": \"ns:other\"\nb: y # {\"$imagepolicy\": \"ns:app:tag\"}\n";
    let (out, changes) = run(src, &[update(Some("ns:app"), "v2")]).unwrap();
    assert_eq!(changes.len(), 1);
    assert!(out.contains("b: v2 #"));
}

#[test]
fn no_op_returns_input_unchanged() {
    let src = "t: 'v1' # {\"$imagepolicy\": \"ns:app:tag\"}";
    let r = rewrite("f", src.as_bytes(), &[update(Some("ns:app"), "v1")]).unwrap();
    assert!(r.changes.is_empty());
    assert_eq!(r.output, src.as_bytes());
}

#[test]
fn lines() {
    let cases = [
        ("a\nb", 2, 2),
        ("a\r\nb", 3, 2),
        ("a\rb", 2, 2),
        ("ab", 1, 1),
        ("a\n", 9, 2),
    ];
    for (src, offset, want) in cases {
        assert_eq!(line_at(src, offset), want, "{src:?}");
    }
}

/// A tiny deterministic generator so the "fuzz" cases are reproducible without a dependency.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn hostile_input_never_panics() {
    let valid = "# é日本 header\nimage:\n  repository: registry.example.com/team/app # {\"$imagepolicy\": \"ns:app:name\"}\n  \
                 tag: 'a1b2c3d' # {\"$imagepolicy\": \"ns:app:tag\"}\n  digest: \"\" # {\"$imagepolicy\": \"ns:app:digest\"}\n\
                 list:\n  - {a: [1, \"two\", 'x''y'], b: &x z}\n  - *x\n  - |\n    block # no\n";
    let mut u = update(Some("ns:app"), "v9");
    u.paths.full = Some("list.0.a.1".to_string());
    let updates = [u];
    assert!(rewrite("f", valid.as_bytes(), &updates).is_ok());
    let bytes = valid.as_bytes();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for cut in 0..=bytes.len() {
        let _ = rewrite("f", &bytes[..cut], &updates);
    }
    for _ in 0..2000 {
        let mut mutated = bytes.to_vec();
        for _ in 0..1 + xorshift(&mut seed) % 4 {
            let at = (xorshift(&mut seed) as usize) % mutated.len();
            let pick = b"\"'#:{}[]-&*|>!\n\r\t \\\xc3\xff";
            let byte = pick[(xorshift(&mut seed) as usize) % pick.len()];
            match xorshift(&mut seed) % 3 {
                0 => mutated[at] = byte,
                1 => mutated.insert(at, byte),
                _ => {
                    mutated.remove(at);
                }
            }
        }
        let cut = (xorshift(&mut seed) as usize) % (mutated.len() + 1);
        let _ = rewrite("f", &mutated[..cut], &updates);
        let _ = rewrite("f", &mutated, &updates);
    }
}

#[test]
fn error_stays_small_enough_to_wrap() {
    // Callers wrap it with context (an env name, 24 bytes); clippy's result_large_err flags
    // errors of 128 bytes and more.
    assert!(std::mem::size_of::<RewriteError>() <= 96);
}
