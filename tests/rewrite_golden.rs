//! Golden tests for the rewriter: every `tests/testdata/<case>/` with an `input.yaml` holds
//! `updates.json` and either `expected.yaml` + `changes.txt` or `error.txt`.
//!
//! To add a case, copy a directory and edit it; every rewrite bug gets one.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tagflow::rewrite::{ImageUpdate, PathTargets, rewrite};

/// `updates.json` entries; kept here so the library needs no serde impls for its own types.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Update {
    image: String,
    #[serde(default)]
    setter: Option<String>,
    #[serde(default)]
    paths: Paths,
    repository: String,
    tag: String,
    #[serde(default)]
    digest: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Paths {
    name: Option<String>,
    tag: Option<String>,
    digest: Option<String>,
    full: Option<String>,
}

impl From<Update> for ImageUpdate {
    fn from(u: Update) -> Self {
        ImageUpdate {
            image: u.image,
            setter: u.setter,
            paths: PathTargets {
                name: u.paths.name,
                tag: u.paths.tag,
                digest: u.paths.digest,
                full: u.paths.full,
            },
            repository: u.repository,
            tag: u.tag,
            digest: u.digest,
        }
    }
}

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata");
    let mut dirs: Vec<PathBuf> = fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|entry| entry.expect("readable testdata entry").path())
        .filter(|p| p.join("input.yaml").exists())
        .collect();
    dirs.sort();
    dirs
}

/// Checks one case; returns a description of what is wrong.
fn check(dir: &Path) -> Result<(), String> {
    let read = |name: &str| fs::read(dir.join(name)).map_err(|e| format!("{name}: {e}"));
    let read_text = |name: &str| {
        read(name).and_then(|b| String::from_utf8(b).map_err(|e| format!("{name}: {e}")))
    };
    let input = read("input.yaml")?;
    let updates: Vec<Update> = serde_json::from_str(&read_text("updates.json")?)
        .map_err(|e| format!("updates.json: {e}"))?;
    let updates: Vec<ImageUpdate> = updates.into_iter().map(Into::into).collect();
    let result = rewrite("input.yaml", &input, &updates);

    if dir.join("error.txt").exists() {
        let want = read_text("error.txt")?;
        let want = want.trim_end_matches(['\n', '\r']);
        return match result {
            Ok(r) => Err(format!(
                "expected an error containing {want:?}, got {:?}",
                r.changes
            )),
            Err(e) if e.to_string().contains(want) => Ok(()),
            Err(e) => Err(format!(
                "error {:?} does not contain {want:?}",
                e.to_string()
            )),
        };
    }
    let expected = read("expected.yaml").map_err(|e| format!("{e} (or error.txt)"))?;
    let want_changes = read_text("changes.txt")?;
    let r = result.map_err(|e| format!("unexpected error: {e}"))?;
    if r.output != expected {
        return Err(format!(
            "output differs\n--- expected\n{}\n--- got\n{}",
            String::from_utf8_lossy(&expected),
            String::from_utf8_lossy(&r.output)
        ));
    }
    let got_changes = r.changes.iter().fold(String::new(), |mut out, c| {
        let _ = writeln!(
            out,
            "{} {} {} {} -> {}",
            c.image, c.field, c.line, c.old, c.new
        );
        out
    });
    if got_changes != want_changes {
        return Err(format!(
            "changes differ\n--- expected\n{want_changes}--- got\n{got_changes}"
        ));
    }
    if r.changes.is_empty() && r.output != input {
        return Err("no changes but the output differs from the input".to_string());
    }
    Ok(())
}

#[test]
fn golden_cases() {
    let cases = cases();
    assert!(cases.len() >= 30, "only {} golden cases found", cases.len());
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|dir| {
            check(dir).err().map(|e| {
                let name = dir.file_name().unwrap_or_default().to_string_lossy();
                format!("case {name}: {e}")
            })
        })
        .collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}
