//! The checks of environments' rollout settings (`release`, `smoke`, `promoteFrom`, `gate`,
//! `timeout`) and the two lists kept in git next to the config: `approvals.yaml` and
//! `quarantine.yaml`.
//!
//! Pure: text in, values or located problems out.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_yaml::Value;

use super::{Config, ConfigError, Problem, Report};
use crate::yamlspan;

/// One approval: `tag` may be promoted into `env` (for `image`, or any image when omitted).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Approval {
    /// Environment receiving the tag.
    pub env: String,
    /// The approved tag.
    pub tag: String,
    /// Image, when the environment carries several.
    pub image: Option<String>,
}

/// One quarantined tag: never selected by the policy, never promoted.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct QuarantineEntry {
    /// Image.
    pub image: String,
    /// Tag.
    pub tag: String,
    /// Why (written by tagflow when a rollout fails).
    #[serde(default)]
    pub reason: String,
    /// When (RFC 3339), informative.
    #[serde(default)]
    pub at: String,
}

/// The approval and quarantine lists at the config repo's head.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gates {
    /// Approvals.
    pub approvals: Vec<Approval>,
    /// Quarantined tags.
    pub quarantine: Vec<QuarantineEntry>,
}

impl Gates {
    /// Whether `tag` of `image` may be promoted into `env` by approval.
    pub fn approved(&self, env: &str, image: &str, tag: &str) -> bool {
        self.approvals
            .iter()
            .any(|a| a.env == env && a.tag == tag && a.image.as_deref().is_none_or(|i| i == image))
    }

    /// Whether `tag` of `image` is quarantined.
    pub fn quarantined(&self, image: &str, tag: &str) -> bool {
        self.quarantine
            .iter()
            .any(|q| q.image == image && q.tag == tag)
    }

    /// Quarantined tags of `image`.
    pub fn quarantined_tags(&self, image: &str) -> BTreeSet<String> {
        self.quarantine
            .iter()
            .filter(|q| q.image == image)
            .map(|q| q.tag.clone())
            .collect()
    }
}

/// Path of a list file next to the config file (`config/tagflow.yaml` → `config/approvals.yaml`).
pub fn sibling(config_path: &str, name: &str) -> String {
    match config_path.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{name}"),
        None => name.to_owned(),
    }
}

/// File name of the approvals list, next to the config file.
pub const APPROVALS: &str = "approvals.yaml";
/// File name of the quarantine list, next to the config file.
pub const QUARANTINE: &str = "quarantine.yaml";

/// Parse one list file (`key: [entries]`); an absent file or an empty list is an empty list.
fn parse_list<T: serde::de::DeserializeOwned>(
    file: &str,
    text: Option<&str>,
    key: &str,
) -> Result<Vec<T>, ConfigError> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    let (doc, root) = super::load(file, text)?;
    let mut r = Report::new(file, &doc);
    let mut out = Vec::new();
    match root {
        Value::Null => {}
        Value::Mapping(m) => {
            for k in m.keys() {
                // approvals.yaml also holds `terraform: {WORKSPACE: PLAN_ID}`, the infra
                // watcher's plan approvals, which it reads and checks itself.
                let foreign = key == "approvals" && k.as_str() == Some("terraform");
                if k.as_str() != Some(key) && !foreign {
                    let name = k.as_str().unwrap_or("?").to_owned();
                    r.at(&[&name], format!("unknown key `{name}`, expected `{key}`"));
                }
            }
            match m.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::Sequence(items)) => {
                    for (i, item) in items.iter().enumerate() {
                        let idx = i.to_string();
                        if let Some(v) = r.entry::<T>(&[key, &idx], item) {
                            out.push(v);
                        }
                    }
                }
                Some(_) => r.at(&[key], format!("{key}: must be a list")),
            }
        }
        _ => r.at(&[], format!("must be a mapping with `{key}`")),
    }
    if r.problems.is_empty() {
        Ok(out)
    } else {
        Err(ConfigError {
            problems: r.problems,
        })
    }
}

/// Parse both lists, checking each entry against the config; every problem with file:line.
pub fn parse_gates(
    config: &Config,
    approvals: (&str, Option<&str>),
    quarantine: (&str, Option<&str>),
) -> Result<Gates, ConfigError> {
    let mut problems = Vec::new();
    let a = parse_list::<Approval>(approvals.0, approvals.1, "approvals");
    let q = parse_list::<QuarantineEntry>(quarantine.0, quarantine.1, "quarantine");
    let (a, q) = match (a, q) {
        (Ok(a), Ok(q)) => (a, q),
        (a, q) => {
            for e in [a.err(), q.err()].into_iter().flatten() {
                problems.extend(e.problems);
            }
            return Err(ConfigError { problems });
        }
    };
    // Entries naming unknown environments or images are reported, not silently ignored: a typo
    // in an approval would otherwise wait forever, one in the quarantine would not protect.
    for (i, ap) in a.iter().enumerate() {
        if !config.environments.contains_key(&ap.env) {
            problems.push(locate(
                approvals,
                "approvals",
                i,
                format!("approvals[{i}].env: no environment {}", ap.env),
            ));
        }
        if let Some(img) = &ap.image
            && !config.images.contains_key(img)
        {
            problems.push(locate(
                approvals,
                "approvals",
                i,
                format!("approvals[{i}].image: no image {img}"),
            ));
        }
        if !crate::rewrite::valid_tag(&ap.tag) {
            problems.push(locate(
                approvals,
                "approvals",
                i,
                format!("approvals[{i}].tag: {:?} is not a valid tag", ap.tag),
            ));
        }
    }
    for (i, qe) in q.iter().enumerate() {
        if !config.images.contains_key(&qe.image) {
            problems.push(locate(
                quarantine,
                "quarantine",
                i,
                format!("quarantine[{i}].image: no image {}", qe.image),
            ));
        }
        if !crate::rewrite::valid_tag(&qe.tag) {
            problems.push(locate(
                quarantine,
                "quarantine",
                i,
                format!("quarantine[{i}].tag: {:?} is not a valid tag", qe.tag),
            ));
        }
    }
    if problems.is_empty() {
        Ok(Gates {
            approvals: a,
            quarantine: q,
        })
    } else {
        Err(ConfigError { problems })
    }
}

fn locate(file: (&str, Option<&str>), key: &str, i: usize, message: String) -> Problem {
    let line = file
        .1
        .and_then(|t| yamlspan::parse(t).ok())
        .and_then(|d| d.line_of(&[key, &i.to_string()]));
    Problem {
        file: file.0.to_owned(),
        line,
        message,
    }
}

/// The approved plan id for `workspace` in the approvals file (`terraform: {WORKSPACE: ID}`).
/// Other top-level keys belong to other approvals and are ignored.
pub fn plan_approval(text: &str, workspace: &str) -> Result<Option<String>, String> {
    let v: serde_yaml::Value =
        crate::yamlspan::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
    let Some(tf) = v.get("terraform") else {
        return Ok(None);
    };
    if tf.is_null() {
        return Ok(None);
    }
    let m = tf
        .as_mapping()
        .ok_or("`terraform` must map workspace names to plan ids")?;
    match m.get(workspace) {
        None | Some(serde_yaml::Value::Null) => Ok(None),
        Some(serde_yaml::Value::String(s)) => Ok(Some(s.trim().to_owned())),
        Some(other) => Err(format!(
            "terraform.{workspace}: {other:?} is not a plan id (quote ids that look like numbers)"
        )),
    }
}

/// Semantic checks of the rollout fields of every environment.
pub(super) fn validate(c: &Config, r: &mut Report<'_>) {
    let mut sources: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, env) in &c.environments {
        let at = |f: &'static str| vec!["environments", name.as_str(), f];
        if let Some(rel) = &env.release {
            for (field, v) in [("namespace", &rel.namespace), ("name", &rel.name)] {
                if !dns_name(v) {
                    r.at(
                        &["environments", name, "release", field],
                        format!(
                            "environments.{name}.release.{field}: {v:?} is not a Kubernetes name"
                        ),
                    );
                }
            }
        }
        if let Some(s) = &env.smoke {
            match url::Url::parse(&s.url.replace("{tag}", "t")) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => r.at(
                    &["environments", name, "smoke", "url"],
                    format!(
                        "environments.{name}.smoke.url: {:?} is not an http(s) URL",
                        s.url
                    ),
                ),
            }
            if !(100..=599).contains(&s.expect.status) {
                r.at(
                    &["environments", name, "smoke", "expect", "status"],
                    format!(
                        "environments.{name}.smoke.expect.status: {} is not an HTTP status",
                        s.expect.status
                    ),
                );
            }
            for (field, d) in [
                ("interval", s.interval),
                ("deadline", s.deadline),
                ("timeout", s.timeout),
            ] {
                if d.is_zero() {
                    r.at(
                        &["environments", name, "smoke", field],
                        format!("environments.{name}.smoke.{field}: must be positive"),
                    );
                }
            }
        }
        if env.timeout.is_zero() {
            r.at(
                &at("timeout"),
                format!("environments.{name}.timeout: must be positive"),
            );
        }
        match &env.promote_from {
            Some(src) if src == name => r.at(
                &at("promoteFrom"),
                format!(
                    "environments.{name}.promoteFrom: an environment cannot promote from itself"
                ),
            ),
            Some(src) if !c.environments.contains_key(src) && !r.unparsed("environments", src) => r
                .at(
                    &at("promoteFrom"),
                    format!(
                        "environments.{name}.promoteFrom: no environment {src} (known: {})",
                        c.environments
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ),
            Some(src) => {
                if let Some(other) = sources.insert(src.as_str(), name.as_str()) {
                    r.at(
                        &at("promoteFrom"),
                        format!("environments.{name}.promoteFrom: {other} already promotes from {src}; chain them instead (dev → staging → prod)"),
                    );
                }
            }
            None => {
                if env.gate.is_some() {
                    r.at(
                        &at("gate"),
                        format!("environments.{name}.gate: only used with promoteFrom"),
                    );
                }
            }
        }
    }
    // A promotion loop would never start.
    for name in c.environments.keys() {
        let mut seen = BTreeSet::new();
        let mut cur = name.as_str();
        while let Some(src) = c
            .environments
            .get(cur)
            .and_then(|e| e.promote_from.as_deref())
        {
            if !seen.insert(cur) {
                r.at(
                    &["environments", name, "promoteFrom"],
                    format!("environments.{name}.promoteFrom: promotion loop through {cur}"),
                );
                break;
            }
            cur = src;
        }
    }
    if let Some(slack) = &c.notify.slack {
        if slack.webhook_url.is_none() && slack.bot_token.is_none() {
            r.at(
                &["notify", "slack"],
                "notify.slack: give webhookUrl, botToken or both",
            );
        }
        if slack.bot_token.is_some() && slack.channel.is_none() {
            r.at(
                &["notify", "slack", "botToken"],
                "notify.slack.channel: needed with botToken",
            );
        }
        for (key, s) in [
            ("webhookUrl", &slack.webhook_url),
            ("botToken", &slack.bot_token),
        ] {
            if let Some(Err(e)) = s.as_ref().map(crate::secret::SecretRef::validate) {
                r.at(
                    &["notify", "slack", key],
                    format!("notify.slack.{key}: {e}"),
                );
            }
        }
        let egress = crate::egress::current();
        if slack.bot_token.is_some()
            && let Some(host) = crate::egress::authority(&slack.api_url)
            && !egress.allows(&host)
        {
            r.at(
                &["notify", "slack", "apiUrl"],
                format!(
                    "notify.slack.apiUrl: sending the bot token to {host} is not allowed: the operator allows secrets only to {} (--secret-hosts / TAGFLOW_SECRET_HOSTS, set outside the config repo)",
                    egress.describe()
                ),
            );
        }
        if url::Url::parse(&slack.api_url).is_err() || !slack.api_url.ends_with('/') {
            r.at(
                &["notify", "slack", "apiUrl"],
                "notify.slack.apiUrl: must be a URL ending in /",
            );
        }
    }
}

/// A DNS-1123 label (namespaces and most object names).
fn dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests;
