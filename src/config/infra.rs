//! The `infra:` section: terraform workspaces the infra watcher plans on a cron schedule.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;

use super::Report;
use super::schema::humantime_serde_compat;
use super::validate::check_repo_path;
use crate::secret::SecretRef;

/// One terraform workspace.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    pub timeout: Duration,
    /// `-lock-timeout` for plan and apply.
    #[serde(default = "default_lock_timeout", with = "humantime_serde_compat")]
    pub lock_timeout: Duration,
    /// What to do about drift.
    #[serde(default)]
    pub mode: InfraMode,
    /// Render a terraform output into an Ansible inventory after each apply.
    pub inventory: Option<InventoryConfig>,
}

/// An environment variable's value.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum EnvValue {
    /// A secret, read when terraform starts and scrubbed from everything tagflow prints.
    Secret(SecretRef),
    /// A value that is not secret (`AWS_REGION: eu-west-1`).
    Plain(String),
}

/// What the watcher does about drift.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
pub(super) fn validate(infra: &[InfraConfig], r: &mut Report<'_>) {
    let mut names = BTreeSet::new();
    for (i, ws) in infra.iter().enumerate() {
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
        if let Err(e) = crate::infra::schedule::Schedule::parse(&ws.schedule) {
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
                    format!("infra.{w}.varFiles: {f:?} {why} (relative to dir)"),
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
