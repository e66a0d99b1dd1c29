//! The `infra:` section: terraform workspaces the infra watcher plans on a cron schedule.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;

use super::Report;
use super::duration as humantime_serde_compat;
use super::repo_path::check_repo_path;
use crate::secret::SecretRef;

/// One terraform workspace.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InfraConfig {
    /// Name used in messages, metrics, approvals and `tagflow drift NAME`.
    pub name: String,
    /// Directory of the terraform root module, relative to the config repo root.
    pub dir: String,
    /// Cron expression **with a seconds field** (`0 */30 * * * *`), UTC.
    pub schedule: String,
    /// Terraform binary: a path, or a name looked up on PATH.
    #[serde(default = "default_terraform_bin")]
    pub terraform_bin: String,
    /// `-var-file`s, relative to `dir`.
    #[serde(default)]
    pub var_files: Vec<String>,
    /// Extra environment for terraform: plain values, or secrets as `{file: …}` / `{env: …}`.
    #[serde(default)]
    pub env: BTreeMap<String, EnvValue>,
    /// Deadline of one whole run (init + plan + show [+ apply + output]); then the process group
    /// is killed.
    #[serde(default = "default_timeout", with = "humantime_serde_compat")]
    #[schemars(with = "String")]
    pub timeout: Duration,
    /// `-lock-timeout` for plan and apply.
    #[serde(default = "default_lock_timeout", with = "humantime_serde_compat")]
    #[schemars(with = "String")]
    pub lock_timeout: Duration,
    /// What to do about drift.
    #[serde(default)]
    pub mode: InfraMode,
    /// Render a terraform output into an Ansible inventory after each apply.
    pub inventory: Option<InventoryConfig>,
}

/// An environment variable's value.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum EnvValue {
    /// A secret, read when terraform starts and scrubbed from everything tagflow prints.
    Secret(SecretRef),
    /// A value that is not secret (`AWS_REGION: eu-west-1`).
    Plain(String),
}

/// What the watcher does about drift.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InfraMode {
    /// Report only.
    #[default]
    Detect,
    /// Apply a saved plan once its id is approved in git (`config/approvals.yaml`).
    Approve,
    /// Apply every drift fix at once. Only when set explicitly.
    Auto,
}

/// Where the inventory comes from and goes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InventoryConfig {
    /// Terraform output holding `{hosts = {NAME = {ip, ansible_host, roles}}}`.
    pub output: String,
    /// Inventory file, relative to the config repo root.
    pub file: String,
}

fn default_terraform_bin() -> String {
    "terraform".to_owned()
}

fn default_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}

fn default_lock_timeout() -> Duration {
    Duration::from_secs(60)
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Check every workspace, recording each problem at its line.
/// `at[n]` is the position in the file's list of `infra[n]`.
pub(super) fn validate(infra: &[InfraConfig], at: &[usize], r: &mut Report<'_>) {
    let mut names = BTreeSet::new();
    for (ws, &i) in infra.iter().zip(at) {
        let idx = i.to_string();
        let at = |f: &'static str| vec!["infra", idx.as_str(), f];
        let w = &ws.name;
        if !valid_name(w) {
            r.at(
                &at("name"),
                format!("infra[{i}].name: {w:?} must be 1-63 letters, digits, - or _"),
            );
        } else if !names.insert(w.as_str()) {
            r.at(&at("name"), format!("infra: workspace {w} is listed twice"));
        }
        // "." is the repo root itself.
        let dir_ok = if ws.dir == "." {
            Ok(())
        } else {
            check_repo_path(&ws.dir)
        };
        if let Err(why) = dir_ok {
            r.at(&at("dir"), format!("infra.{w}.dir: {:?} {why}", ws.dir));
        }
        if let Err(e) = super::Schedule::parse(&ws.schedule) {
            r.at(&at("schedule"), format!("infra.{w}.schedule: {e}"));
        }
        if ws.terraform_bin.trim().is_empty() {
            r.at(
                &at("terraformBin"),
                format!("infra.{w}.terraformBin: empty"),
            );
        }
        for f in &ws.var_files {
            if let Err(why) = check_repo_path(f) {
                r.at(
                    &at("varFiles"),
                    format!("infra.{w}.varFiles: {f:?} must be a relative path inside dir ({why})"),
                );
            }
        }
        for (k, v) in &ws.env {
            let ok_name = !k.is_empty()
                && !k.starts_with(|c: char| c.is_ascii_digit())
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok_name {
                r.at(
                    &["infra", &idx, "env", k],
                    format!("infra.{w}.env: {k:?} is not an environment variable name"),
                );
            }
            if let EnvValue::Secret(s) = v
                && let Err(e) = s.validate()
            {
                r.at(
                    &["infra", &idx, "env", k],
                    format!("infra.{w}.env.{k}: {e}"),
                );
            }
        }
        if ws.timeout < Duration::from_secs(1) {
            r.at(
                &at("timeout"),
                format!("infra.{w}.timeout: must be at least 1s"),
            );
        }
        if let Some(inv) = &ws.inventory {
            if let Err(why) = check_repo_path(&inv.file) {
                r.at(
                    &["infra", &idx, "inventory", "file"],
                    format!("infra.{w}.inventory.file: {:?} {why}", inv.file),
                );
            }
            if inv.output.is_empty() {
                r.at(
                    &["infra", &idx, "inventory", "output"],
                    format!("infra.{w}.inventory.output: empty"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{InfraMode, parse};

    const BASE: &str = "images:\n  app:\n    repository: r.example.com/app\n    policy: {tags: '.*', order: semver}\nenvironments:\n  dev: {file: envs/dev.yaml}\n";

    #[test]
    fn the_commented_example_in_config_tagflow_yaml_is_valid() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/tagflow.yaml"))
                .expect("config/tagflow.yaml");
        let start = text.find("# infra:").expect("the commented infra example");
        let uncommented: String = text[start..]
            .lines()
            .map(|l| l.strip_prefix("# ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        let whole = format!("{}{uncommented}\n", &text[..start]);
        let c = parse("config/tagflow.yaml", &whole).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.infra.len(), 1);
        assert_eq!(c.infra[0].mode, InfraMode::Approve);
        assert_eq!(c.infra[0].timeout, std::time::Duration::from_secs(1800));
    }

    #[test]
    fn defaults_and_problems_with_lines() {
        let ok =
            format!("{BASE}infra:\n  - {{name: aws, dir: infra/aws, schedule: '0 0 * * * *'}}\n");
        let c = parse("c.yaml", &ok).unwrap();
        let ws = &c.infra[0];
        assert_eq!(ws.mode, InfraMode::Detect, "auto only when set");
        assert_eq!(ws.terraform_bin, "terraform");
        assert!(ws.inventory.is_none());

        let bad = format!(
            "{BASE}infra:\n  - name: gcp\n    schedule: '0 0 * * * *'\n    dir: x\n    mode: yolo\n  - name: aws\n    dir: ../outside\n    schedule: '*/5 * * * *'\n  - name: aws\n    dir: infra/aws\n    schedule: '0 0 * * * *'\n    env:\n      TOKEN: {{file: a, env: B}}\n    varFiles: [/etc/x.tfvars]\n    inventory: {{output: inventory, file: ../hosts.yaml}}\n"
        );
        let problems: Vec<String> = parse("c.yaml", &bad)
            .unwrap_err()
            .problems
            .iter()
            .map(ToString::to_string)
            .collect();
        let want = [
            "c.yaml:11: infra.0.mode: unknown variant `yolo`",
            "c.yaml:13: infra.aws.dir: \"../outside\" must not contain `..`",
            "c.yaml:14: infra.aws.schedule: bad cron expression \"*/5 * * * *\" (six fields",
            "c.yaml:15: infra: workspace aws is listed twice",
            "c.yaml:19: infra.aws.env.TOKEN: a secret needs exactly one of `file` or `env`",
            "c.yaml:20: infra.aws.varFiles: \"/etc/x.tfvars\" must be a relative path inside dir",
            "c.yaml:21: infra.aws.inventory.file: \"../hosts.yaml\" must not contain `..`",
        ];
        for w in want {
            assert!(
                problems.iter().any(|p| p.starts_with(w)),
                "missing {w:?} in {problems:#?}"
            );
        }
    }
}

#[cfg(test)]
mod approvals_file {
    use crate::config::{parse, parse_gates};

    /// The rollout gates and the infra watcher share config/approvals.yaml.
    #[test]
    fn terraform_approvals_sit_beside_promotion_approvals() {
        let base = "images:\n  app:\n    repository: r.example.com/app\n    policy: {tags: '.*', order: semver}\nenvironments:\n  dev: {file: envs/dev.yaml}\n";
        let c = parse("c.yaml", base).unwrap();
        let text = "terraform:\n  aws: \"1a2b3c4d5e6f\"\napprovals: []\n";
        parse_gates(&c, ("config/approvals.yaml", Some(text)), ("q.yaml", None))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            crate::config::plan_approval(text, "aws")
                .unwrap()
                .as_deref(),
            Some("1a2b3c4d5e6f")
        );
    }
}
