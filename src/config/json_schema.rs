//! JSON Schema of `config/tagflow.yaml`, generated from the config types so it cannot drift
//! from what [`super::parse`] accepts: the field docs become descriptions, serde's defaults
//! become `default`s. Editors read it through a `# yaml-language-server: $schema=…` line;
//! `tagflow schema` prints it and a test fails when the committed copy is stale.
//!
//! The schema checks shapes (names, types, enums, unknown keys). What needs the whole config —
//! an environment promoting from one that does not exist, a secret sent to a host the operator
//! did not allow — is still only checked by `tagflow validate`.

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use super::{
    EnvironmentConfig, GitConfig, ImageConfig, InfraConfig, NotifyConfig, RegistryConfig,
    TOP_LEVEL, WebhookConfig,
};

/// The schema (JSON Schema 2020-12) of the whole file, as pretty JSON with a final newline.
pub fn config_schema_json() -> String {
    let mut s = serde_json::to_string_pretty(&config_schema()).expect("a JSON value serializes");
    s.push('\n');
    s
}

/// The schema of the whole file.
pub fn config_schema() -> Value {
    let mut generator = SchemaSettings::draft2020_12().into_generator();
    let mut props = Map::new();
    props.insert(
        "interval".into(),
        json!({
            "description": "How often `run` scans when nothing triggers it earlier \
                            (a duration like `30s`, `1m`, `1h 30m`; at least 1s).",
            "type": "string",
            "default": "1m",
        }),
    );
    let mut put = |name: &str, schema: schemars::Schema| {
        props.insert(name.into(), schema.to_value());
    };
    put("git", generator.subschema_for::<GitConfig>());
    put(
        "registries",
        generator.subschema_for::<Vec<RegistryConfig>>(),
    );
    put(
        "images",
        generator.subschema_for::<std::collections::BTreeMap<String, ImageConfig>>(),
    );
    put(
        "environments",
        generator.subschema_for::<std::collections::BTreeMap<String, EnvironmentConfig>>(),
    );
    put("notify", generator.subschema_for::<NotifyConfig>());
    put("webhook", generator.subschema_for::<WebhookConfig>());
    put("infra", generator.subschema_for::<Vec<InfraConfig>>());
    describe(
        &mut props,
        &[
            ("git", "Commit author, subject template and signing."),
            (
                "registries",
                "Registries with credentials and limits, matched by host.",
            ),
            ("images", "Images by name: repository and tag policy."),
            (
                "environments",
                "Environments by name: values file or directory, images, release, gates.",
            ),
            ("notify", "Slack settings; no messages when absent."),
            ("webhook", "Who may trigger scans by webhook."),
            (
                "infra",
                "Terraform workspaces the infra watcher plans on a schedule.",
            ),
        ],
    );
    debug_assert!(TOP_LEVEL.iter().all(|k| props.contains_key(*k)));
    let defs: Map<String, Value> = generator.take_definitions(true).into_iter().collect();
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "tagflow config (config/tagflow.yaml)",
        "type": "object",
        "properties": props,
        "additionalProperties": false,
        "$defs": defs,
    })
}

/// Give the top-level sections a description where their schema is only a `$ref`.
fn describe(props: &mut Map<String, Value>, docs: &[(&str, &str)]) {
    for (k, d) in docs {
        if let Some(Value::Object(o)) = props.get_mut(*k) {
            o.entry("description").or_insert_with(|| json!(d));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_keys_are_exactly_the_parsers() {
        let s = config_schema();
        let mut keys: Vec<&str> = s["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        let mut want = TOP_LEVEL.to_vec();
        want.sort_unstable();
        assert_eq!(keys, want);
        assert_eq!(s["additionalProperties"], json!(false));
    }

    #[test]
    fn durations_are_strings_with_their_defaults() {
        let s = config_schema();
        let reg = &s["$defs"]["RegistryConfig"]["properties"];
        assert_eq!(reg["timeout"]["type"], json!("string"));
        assert_eq!(reg["timeout"]["default"], json!("30s"));
        assert_eq!(reg["concurrency"]["default"], json!(4));
        let order = &s["$defs"]["Order"];
        let text = order.to_string();
        for o in ["built", "git", "semver", "numerical", "alphabetical"] {
            assert!(text.contains(&format!("\"{o}\"")), "{o} missing in {text}");
        }
    }
}
