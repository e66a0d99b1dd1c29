//! Decide drift from `terraform show -json PLAN`, never from the exit code alone (a data source
//! makes `-detailed-exitcode` say 2 with no changes). Pure: JSON in, [`Summary`] out.
//!
//! Output *values* never reach a summary: only addresses, actions and output names. Values marked
//! sensitive are collected by [`sensitive_values`] so the caller can register them for redaction.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The plan JSON could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    /// Not JSON at all.
    #[error("failed to parse terraform show -json output: {0}")]
    Json(#[source] serde_json::Error),
    /// JSON, but not a plan.
    #[error("terraform show -json output is not a plan: {0}")]
    Shape(String),
}

/// What happens to one resource or output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Created.
    Create,
    /// Updated in place.
    Update,
    /// Destroyed and created again (either order).
    Replace,
    /// Destroyed.
    Delete,
    /// Removed from state without destroying.
    Forget,
}

impl Action {
    /// From a plan's `actions` list; `None` for no-op and read (nothing changes).
    pub fn from_actions(actions: &[&str]) -> Option<Self> {
        match actions {
            ["create"] => Some(Self::Create),
            ["update"] => Some(Self::Update),
            ["delete"] => Some(Self::Delete),
            ["forget"] => Some(Self::Forget),
            ["delete", "create"] | ["create", "delete"] => Some(Self::Replace),
            _ => None,
        }
    }

    /// The plan's word for it.
    pub fn word(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Replace => "replace",
            Self::Delete => "delete",
            Self::Forget => "forget",
        }
    }

    fn sign(self) -> &'static str {
        match self {
            Self::Create => "+",
            Self::Update => "~",
            Self::Replace => "-/+",
            Self::Delete => "-",
            Self::Forget => ".",
        }
    }
}

/// One changed resource or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Resource address (`module.x.aws_instance.a[0]`) or output name.
    pub address: String,
    /// What happens.
    pub action: Action,
}

/// A plan, summarised without values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Resources the plan changes (`resource_changes`), in plan order.
    pub resources: Vec<Change>,
    /// Resources changed outside terraform (`resource_drift`).
    pub drifted: Vec<Change>,
    /// Outputs whose value changes (`output_changes`).
    pub outputs: Vec<Change>,
    /// Hash of the changes and the code they were planned from (see [`summarize`]).
    pub plan_id: String,
}

impl Summary {
    /// Whether anything differs between code, state and the world.
    pub fn has_drift(&self) -> bool {
        !(self.resources.is_empty() && self.drifted.is_empty() && self.outputs.is_empty())
    }

    /// Resource changes counted by action.
    pub fn counts(&self) -> BTreeMap<Action, usize> {
        let mut m = BTreeMap::new();
        for c in &self.resources {
            *m.entry(c.action).or_insert(0) += 1;
        }
        m
    }

    /// Resources that will be destroyed and created again.
    pub fn replaced(&self) -> impl Iterator<Item = &Change> {
        self.resources
            .iter()
            .filter(|c| c.action == Action::Replace)
    }

    /// One line: `1 to create, 2 to update, 1 to replace; 1 changed outside terraform; outputs: a, b`.
    pub fn headline(&self) -> String {
        if !self.has_drift() {
            return "no changes".to_owned();
        }
        let counts: Vec<String> = self
            .counts()
            .iter()
            .map(|(a, n)| format!("{n} to {}", a.word()))
            .collect();
        let mut parts = Vec::new();
        if !counts.is_empty() {
            parts.push(counts.join(", "));
        }
        if !self.drifted.is_empty() {
            parts.push(format!("{} changed outside terraform", self.drifted.len()));
        }
        if !self.outputs.is_empty() {
            let names: Vec<&str> = self.outputs.iter().map(|c| c.address.as_str()).collect();
            parts.push(format!("outputs changed: {}", names.join(", ")));
        }
        parts.join("; ")
    }

    /// The headline, then one line per address (replaced resources flagged).
    pub fn render(&self) -> String {
        let mut out = self.headline();
        for c in &self.drifted {
            let _ = write!(
                out,
                "\n  {} {} (changed outside terraform)",
                c.action.sign(),
                c.address
            );
        }
        for c in &self.resources {
            let flag = if c.action == Action::Replace {
                "  [REPLACED: destroyed and created again]"
            } else {
                ""
            };
            let _ = write!(
                out,
                "\n  {} {} ({}){flag}",
                c.action.sign(),
                c.address,
                c.action.word()
            );
        }
        for c in &self.outputs {
            let _ = write!(
                out,
                "\n  {} output.{} ({})",
                c.action.sign(),
                c.address,
                c.action.word()
            );
        }
        out
    }
}

fn actions(change: &Value) -> Vec<&str> {
    change
        .get("actions")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Summarise `terraform show -json` of a saved plan. `code_id` names the code the plan was made
/// from (the workspace's git tree and var files); it goes into the plan id so an approval given
/// for one version of the code cannot apply another.
pub fn summarize(show_json: &[u8], code_id: &str) -> Result<Summary, SummaryError> {
    let plan: Value = serde_json::from_slice(show_json).map_err(SummaryError::Json)?;
    if !plan.is_object() || plan.get("format_version").is_none() {
        return Err(SummaryError::Shape("no format_version".into()));
    }
    let mut hasher = Sha256::new();
    hasher.update(code_id.as_bytes());
    hasher.update([0]);
    let resource_list = |key: &str, hasher: &mut Sha256| -> Result<Vec<Change>, SummaryError> {
        let mut out = Vec::new();
        let Some(items) = plan.get(key) else {
            return Ok(out);
        };
        let items = items
            .as_array()
            .ok_or_else(|| SummaryError::Shape(format!("{key} is not a list")))?;
        for rc in items {
            let address = rc
                .get("address")
                .and_then(Value::as_str)
                .ok_or_else(|| SummaryError::Shape(format!("{key} entry without an address")))?;
            let change = rc.get("change").unwrap_or(&Value::Null);
            let Some(action) = Action::from_actions(&actions(change)) else {
                continue;
            };
            hash_entry(hasher, key, address, change);
            out.push(Change {
                address: address.to_owned(),
                action,
            });
        }
        Ok(out)
    };
    let resources = resource_list("resource_changes", &mut hasher)?;
    let drifted = resource_list("resource_drift", &mut hasher)?;
    let mut outputs = Vec::new();
    if let Some(oc) = plan.get("output_changes") {
        let oc = oc
            .as_object()
            .ok_or_else(|| SummaryError::Shape("output_changes is not a mapping".into()))?;
        // serde_json maps are ordered by key, so the hash does not depend on terraform's order.
        for (name, change) in oc {
            let Some(action) = Action::from_actions(&actions(change)) else {
                continue;
            };
            hash_entry(&mut hasher, "output_changes", name, change);
            outputs.push(Change {
                address: name.clone(),
                action,
            });
        }
    }
    let plan_id = hex::encode(&hasher.finalize()[..6]);
    Ok(Summary {
        resources,
        drifted,
        outputs,
        plan_id,
    })
}

fn hash_entry(hasher: &mut Sha256, key: &str, address: &str, change: &Value) {
    // Only what the plan would do: actions, before/after values and what is unknown until apply.
    let picked: Vec<&Value> = [
        "actions",
        "before",
        "after",
        "after_unknown",
        "action_reason",
    ]
    .iter()
    .map(|k| change.get(*k).unwrap_or(&Value::Null))
    .collect();
    hasher.update(key.as_bytes());
    hasher.update([0]);
    hasher.update(address.as_bytes());
    hasher.update([0]);
    hasher.update(serde_json::to_vec(&picked).unwrap_or_default());
    hasher.update([0]);
}

/// Every scalar the plan marks sensitive (outputs, resource attributes, variables), as text, so
/// the caller can register them with the redactor before any terraform text is shown anywhere.
pub fn sensitive_values(show_json: &[u8]) -> Vec<String> {
    let Ok(plan) = serde_json::from_slice::<Value>(show_json) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for key in ["resource_changes", "resource_drift"] {
        for rc in plan
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let c = rc.get("change").unwrap_or(&Value::Null);
            collect_marked(c.get("before"), c.get("before_sensitive"), &mut out);
            collect_marked(c.get("after"), c.get("after_sensitive"), &mut out);
        }
    }
    for (_, c) in plan
        .get("output_changes")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        collect_marked(c.get("before"), c.get("before_sensitive"), &mut out);
        collect_marked(c.get("after"), c.get("after_sensitive"), &mut out);
    }
    for outputs in [
        plan.pointer("/planned_values/outputs"),
        plan.pointer("/prior_state/values/outputs"),
    ] {
        for (_, o) in outputs.and_then(Value::as_object).into_iter().flatten() {
            collect_marked(o.get("value"), o.get("sensitive"), &mut out);
        }
    }
    for (name, v) in plan
        .pointer("/configuration/root_module/variables")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if v.get("sensitive").and_then(Value::as_bool) == Some(true) {
            collect_marked(
                plan.pointer(&format!("/variables/{name}/value")),
                Some(&Value::Bool(true)),
                &mut out,
            );
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Values of `terraform output -json` that are marked sensitive.
pub fn sensitive_outputs(output_json: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for (_, o) in output_json.as_object().into_iter().flatten() {
        collect_marked(o.get("value"), o.get("sensitive"), &mut out);
    }
    out
}

/// Walk `value` alongside terraform's sensitivity `mask` (true, or a structure of the same
/// shape with true at sensitive leaves) and collect the marked scalars.
fn collect_marked(value: Option<&Value>, mask: Option<&Value>, out: &mut Vec<String>) {
    let (Some(value), Some(mask)) = (value, mask) else {
        return;
    };
    match mask {
        Value::Bool(true) => collect_all(value, out),
        Value::Object(m) => {
            for (k, sub) in m {
                collect_marked(value.get(k), Some(sub), out);
            }
        }
        Value::Array(a) => {
            for (i, sub) in a.iter().enumerate() {
                collect_marked(value.get(i), Some(sub), out);
            }
        }
        _ => {}
    }
}

fn collect_all(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Number(n) => out.push(n.to_string()),
        Value::Array(a) => a.iter().for_each(|v| collect_all(v, out)),
        Value::Object(m) => m.values().for_each(|v| collect_all(v, out)),
        Value::Bool(_) | Value::Null => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rc(address: &str, actions: &[&str]) -> Value {
        json!({"address": address, "change": {"actions": actions, "before": {"input": "a"}, "after": {"input": "b"}}})
    }

    fn plan(changes: Vec<Value>, drift: Vec<Value>, outputs: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "format_version": "1.2",
            "resource_changes": changes,
            "resource_drift": drift,
            "output_changes": outputs,
            "timestamp": "2024-01-01T00:00:00Z",
        }))
        .unwrap()
    }

    #[test]
    fn drift_is_decided_from_actions() {
        let noop = json!({"actions": ["no-op"], "before": 1, "after": 1});
        let cases: Vec<(&str, Vec<u8>, bool, &str)> = vec![
            (
                "no-op and read are not drift",
                plan(
                    vec![rc("a.x", &["no-op"]), rc("data.a.y", &["read"])],
                    vec![],
                    json!({"o": noop}),
                ),
                false,
                "no changes",
            ),
            (
                "update",
                plan(vec![rc("a.x", &["update"])], vec![], json!({})),
                true,
                "1 to update",
            ),
            (
                "replace either order, create, delete",
                plan(
                    vec![
                        rc("a.r1", &["delete", "create"]),
                        rc("a.r2", &["create", "delete"]),
                        rc("a.c", &["create"]),
                        rc("a.d", &["delete"]),
                    ],
                    vec![],
                    json!({}),
                ),
                true,
                "1 to create, 2 to replace, 1 to delete",
            ),
            (
                "changed outside terraform only",
                plan(vec![], vec![rc("a.x", &["update"])], json!({})),
                true,
                "1 changed outside terraform",
            ),
            (
                "an output only",
                plan(
                    vec![],
                    vec![],
                    json!({"inventory": {"actions": ["update"], "before": 1, "after": 2}}),
                ),
                true,
                "outputs changed: inventory",
            ),
        ];
        for (name, json, drift, headline) in cases {
            let s = summarize(&json, "tree").unwrap();
            assert_eq!(s.has_drift(), drift, "{name}");
            assert_eq!(s.headline(), headline, "{name}");
        }
    }

    #[test]
    fn replaced_resources_are_flagged_and_values_never_shown() {
        let j = plan(
            vec![
                rc("terraform_data.w[1]", &["delete", "create"]),
                rc("terraform_data.cp", &["update"]),
            ],
            vec![],
            json!({"token": {"actions": ["update"], "before": "old-secret", "after": "new-secret", "before_sensitive": true, "after_sensitive": true}}),
        );
        let s = summarize(&j, "tree").unwrap();
        assert_eq!(s.replaced().count(), 1);
        let text = s.render();
        assert!(
            text.contains("-/+ terraform_data.w[1] (replace)  [REPLACED"),
            "{text}"
        );
        assert!(text.contains("~ terraform_data.cp (update)"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }

    #[test]
    fn plan_id_covers_changes_and_code_but_not_the_timestamp() {
        let a = plan(vec![rc("a.x", &["update"])], vec![], json!({}));
        let id = summarize(&a, "tree1").unwrap().plan_id;
        assert_eq!(id.len(), 12);
        let mut v: Value = serde_json::from_slice(&a).unwrap();
        v["timestamp"] = json!("2025-01-01T00:00:00Z");
        assert_eq!(
            summarize(&serde_json::to_vec(&v).unwrap(), "tree1")
                .unwrap()
                .plan_id,
            id
        );
        assert_ne!(summarize(&a, "tree2").unwrap().plan_id, id, "code changed");
        v["resource_changes"][0]["change"]["after"] = json!({"input": "c"});
        assert_ne!(
            summarize(&serde_json::to_vec(&v).unwrap(), "tree1")
                .unwrap()
                .plan_id,
            id,
            "values changed"
        );
    }

    #[test]
    fn sensitive_values_are_found_everywhere() {
        let j = serde_json::to_vec(&json!({
            "format_version": "1.2",
            "variables": {"pw": {"value": "var-secret"}, "region": {"value": "eu"}},
            "configuration": {"root_module": {"variables": {"pw": {"sensitive": true}, "region": {}}}},
            "planned_values": {"outputs": {"token": {"sensitive": true, "value": "out-secret"}, "ip": {"sensitive": false, "value": "10.0.0.1"}}},
            "resource_changes": [{"address": "a.x", "change": {"actions": ["update"],
                "before": {"password": "attr-old", "name": "n"}, "before_sensitive": {"password": true},
                "after": {"password": "attr-new", "list": ["l0", "l1"]}, "after_sensitive": {"password": true, "list": [false, true]}}}],
        }))
        .unwrap();
        assert_eq!(
            sensitive_values(&j),
            vec!["attr-new", "attr-old", "l1", "out-secret", "var-secret"]
        );
    }

    #[test]
    fn not_a_plan_is_an_error() {
        assert!(summarize(b"nope", "t").is_err());
        assert!(summarize(b"{}", "t").is_err());
        assert!(summarize(br#"{"format_version":"1.2","resource_changes":{}}"#, "t").is_err());
    }
}
