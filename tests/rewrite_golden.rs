//! Golden tests for the rewriter: every `tests/testdata/<case>/` with an `input.yaml` holds
//! `updates.json` and either `expected.yaml` + `changes.txt` or `error.txt`.
//!
//! To add a case, copy a directory, edit it and add its name to `golden!` below; every rewrite
//! bug gets one. Each case is its own test: `cargo test --test rewrite_golden golden::<case>`.

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

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata")
}

fn cases() -> Vec<PathBuf> {
    let root = root();
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

/// One `#[test]` per case directory, named after it, so `cargo test golden::crlf_line_endings`
/// runs one case; [`every_case_directory_has_a_test`] keeps the list and the directories equal.
macro_rules! golden {
    ($($case:ident),* $(,)?) => {
        const CASES: &[&str] = &[$(stringify!($case)),*];
        mod golden {
            $(
                #[test]
                fn $case() {
                    super::run(stringify!($case));
                }
            )*
        }
    };
}

golden! {
    byte_order_mark,
    comments_and_blank_lines_everywhere,
    crlf_line_endings,
    document_start_marker_and_anchors_elsewhere,
    double_quoted_value,
    empty_digest_single_quoted,
    err_aliased_target,
    err_all_or_nothing_second_image_fails,
    err_anchored_target,
    err_bad_digest,
    err_bad_repository,
    err_block_scalar_target,
    err_digest_target_without_digest,
    err_double_quoted_with_escape,
    err_duplicate_key,
    err_mapping_target,
    err_marker_bad_json,
    err_marker_on_own_line,
    err_marker_unknown_suffix,
    err_marker_without_value,
    err_multiline_flow_scalar,
    err_not_utf8,
    err_null_target,
    err_one_policy_two_images,
    err_path_in_two_documents,
    err_tab_indentation,
    err_tag_200_chars,
    err_tag_brace,
    err_tag_with_newline,
    err_tag_with_space,
    err_tag_yaml_colon,
    err_tagged_target,
    err_target_marker_missing,
    err_target_path_missing,
    err_target_twice_marker_and_path,
    err_two_images_one_scalar,
    err_unparsable,
    kustomization_images_and_block_patch,
    marker_and_path_for_different_fields,
    marker_in_sequence,
    multi_document_deployment_and_service,
    multi_document_helm_repository_and_release,
    multi_document_path_in_one_document,
    no_trailing_newline,
    no_trailing_newline_path_last_byte,
    noop_already_at_value,
    numeric_sha_is_quoted_to_stay_a_string,
    path_full_in_sequence,
    path_into_flow_mapping,
    path_targets,
    quote_existing_style_is_kept,
    quote_go_yaml_numbers_and_bools,
    quote_semver_and_date_tags_stay_plain,
    setter_digest_replaces_old_digest,
    setter_full,
    setter_full_keeps_digest_pin,
    setter_full_keeps_repository_spelling,
    setter_name_and_tag_with_port_host,
    setter_same_policy_several_fields,
    setter_tag_and_digest_dev_values,
    several_images,
    single_quoted_value,
    unicode_comment_before_target,
    unrelated_markers_ignored_even_if_malformed,
}

fn run(case: &str) {
    let dir = root().join(case);
    if let Err(e) = check(&dir) {
        panic!("case {case}: {e}");
    }
}

#[test]
fn every_case_directory_has_a_test() {
    let dirs: Vec<String> = cases()
        .iter()
        .map(|d| {
            d.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let listed: Vec<String> = CASES.iter().map(ToString::to_string).collect();
    assert_eq!(
        dirs, listed,
        "add the case to golden! {{ … }} (sorted), or remove its name"
    );
}
