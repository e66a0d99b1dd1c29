//! The committed JSON Schema of config/tagflow.yaml is the one the config types generate, and
//! it agrees with the parser: every config tagflow accepts validates, and the shape mistakes
//! an editor should flag (unknown keys, wrong enums, wrong types) are refused by both.

use std::fs;
use std::path::PathBuf;

use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&tagflow::config::config_schema()).expect("schema compiles")
}

fn yaml_to_json(text: &str) -> Value {
    let v: serde_yaml::Value = serde_yaml::from_str(text).expect("yaml");
    serde_json::to_value(v).expect("yaml maps to json")
}

fn schema_errors(v: &jsonschema::Validator, text: &str) -> Vec<String> {
    v.iter_errors(&yaml_to_json(text))
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[test]
fn committed_schema_is_current() {
    let path = repo().join("config/tagflow.schema.json");
    let committed = fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == tagflow::config::config_schema_json(),
        "{} is stale: run `cargo run -- schema > config/tagflow.schema.json` and commit it",
        path.display()
    );
}

#[test]
fn example_config_points_editors_at_the_schema() {
    let text = fs::read_to_string(repo().join("config/tagflow.yaml")).expect("config");
    assert!(
        text.starts_with("# yaml-language-server: $schema=./tagflow.schema.json\n"),
        "config/tagflow.yaml must start with the yaml-language-server schema line"
    );
}

/// Every config the parser accepts also validates: the repo's own config and each README
/// example. README examples are often fragments (an `environments:` section that names images
/// defined elsewhere), so those are checked for shape only: a block whose top-level keys are
/// config sections must validate, unless it is shown as a mistake (it says `# refused`).
#[test]
fn configs_tagflow_accepts_validate() {
    let v = validator();
    let own = fs::read_to_string(repo().join("config/tagflow.yaml")).expect("config");
    tagflow::config::parse("config/tagflow.yaml", &own).expect("the repo's config parses");
    let errors = schema_errors(&v, &own);
    assert!(
        errors.is_empty(),
        "config/tagflow.yaml fails the schema: {errors:#?}"
    );

    let readme = fs::read_to_string(repo().join("README.md")).expect("README");
    let mut checked = 0;
    for (i, block) in yaml_blocks(&readme).into_iter().enumerate() {
        let Ok(serde_yaml::Value::Mapping(top)) = serde_yaml::from_str(&block) else {
            continue;
        };
        let sections = top
            .keys()
            .all(|k| k.as_str().is_some_and(|k| TOP_LEVEL.contains(&k)));
        if !sections || block.contains("# refused") {
            continue;
        }
        let errors = schema_errors(&v, &block);
        assert!(
            errors.is_empty(),
            "README.md yaml block {} fails the schema: {errors:#?}\n{block}",
            i + 1
        );
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} README config examples found");
}

const TOP_LEVEL: &[&str] = &[
    "interval",
    "git",
    "registries",
    "images",
    "environments",
    "notify",
    "webhook",
    "infra",
];

/// Shape mistakes: each refused by the parser and by the schema (so editors flag them).
#[test]
fn shape_mistakes_are_refused_by_both() {
    let base = "images:\n  app:\n    repository: reg.example.com/app\n    policy:\n      tags: '^[0-9a-f]{7}$'\n      order: built\nenvironments:\n  dev:\n    file: envs/dev/patch.yaml\n";
    let cases = [
        ("unknown top-level key", format!("{base}imagez: {{}}\n")),
        (
            "unknown image key",
            base.replace(
                "      order: built\n",
                "      order: built\n    platfrom: linux/arm64\n",
            ),
        ),
        ("bad order", base.replace("order: built", "order: newest")),
        (
            "wrong type",
            base.replace(
                "      order: built\n",
                "      order: built\n      exclude: nope\n",
            ),
        ),
        (
            "registry concurrency not a number",
            format!("{base}registries:\n  - host: reg.example.com\n    concurrency: many\n"),
        ),
        (
            "secret with an unknown source",
            format!("{base}webhook:\n  bearerToken: {{vault: x}}\n"),
        ),
        ("interval not a string", format!("{base}interval: [1m]\n")),
    ];
    let v = validator();
    assert!(
        tagflow::config::parse("base", base).is_ok(),
        "the base config must parse"
    );
    assert!(
        schema_errors(&v, base).is_empty(),
        "the base config must validate"
    );
    for (what, text) in &cases {
        assert!(
            tagflow::config::parse(what, text).is_err(),
            "{what}: the parser accepted it"
        );
        assert!(
            !schema_errors(&v, text).is_empty(),
            "{what}: the schema accepted it:\n{text}"
        );
    }
}

/// Fenced ```yaml blocks of a markdown file.
fn yaml_blocks(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in md.lines() {
        match &mut cur {
            None if line.trim_start().starts_with("```yaml") => cur = Some(String::new()),
            Some(_) if line.trim_start().starts_with("```") => out.extend(cur.take()),
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None => {}
        }
    }
    out
}
