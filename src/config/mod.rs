//! Config stage: parse and validate `config/tagflow.yaml`, reporting every problem with file:line.
//!
//! Pure: text in, [`Config`] or a list of [`Problem`]s out. Each top-level entry is deserialized
//! on its own so one broken image does not hide a broken environment.

mod current;
mod duration;
mod environment;
mod infra;
mod json_schema;
mod pull_request;
mod repo_path;
mod rollout;
mod schedule;
mod schema;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_yaml::Value;

pub use current::{Current, Loaded};
pub use environment::{Expect, GateConfig, ReleaseKind, ReleaseRef, SmokeConfig};
pub use infra::{EnvValue, InfraConfig, InfraMode, InventoryConfig};
pub use json_schema::{config_schema, config_schema_json};
pub use pull_request::{ApprovalMode, ForgeProvider, PullRequestConfig, PushConfig, branch_name};
pub use rollout::{
    APPROVALS, Approval, Gates, QUARANTINE, QuarantineEntry, parse_gates, plan_approval, sibling,
};
pub use schedule::{Schedule, ScheduleError};
pub use schema::*;

use crate::yamlspan;

/// One thing wrong with the config, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// File the problem is in (as given to [`parse`]).
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}", self.file, l, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// Every problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The problems, in file order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid config ({} problem{})",
            self.problems.len(),
            plural(self.problems.len())
        )?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
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

/// A config-like file's lines, for locating problems: the span tree is built the first time a
/// problem needs a line, so a valid config is parsed once (by serde) instead of twice. At
/// 10,000 images that tree was 8 MB of a 37 MB parse.
pub(crate) struct Lines<'a> {
    text: &'a str,
    doc: std::cell::OnceCell<Option<yamlspan::Document>>,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            doc: std::cell::OnceCell::new(),
        }
    }

    /// The 1-based line of the node at `path` (see [`yamlspan::Document::line_of`]).
    pub(crate) fn line_of(&self, path: &[&str]) -> Option<usize> {
        self.doc
            .get_or_init(|| yamlspan::parse(self.text).ok())
            .as_ref()?
            .line_of(path)
    }
}

/// Collects problems with lines looked up in the span tree.
pub(crate) struct Report<'a> {
    file: &'a str,
    doc: &'a Lines<'a>,
    problems: Vec<Problem>,
    /// `(section, name)` of named entries that were written but did not deserialize: their own
    /// problem is reported, so checks that look them up must not report them missing as well.
    unparsed: std::collections::BTreeSet<(String, String)>,
}

impl<'a> Report<'a> {
    /// An empty report about `file`.
    pub(crate) fn new(file: &'a str, doc: &'a Lines<'a>) -> Self {
        Self {
            file,
            doc,
            problems: Vec::new(),
            unparsed: std::collections::BTreeSet::new(),
        }
    }

    /// Whether `name` is written in `section` but was dropped for a problem already reported.
    pub(crate) fn unparsed(&self, section: &str, name: &str) -> bool {
        self.unparsed
            .contains(&(section.to_owned(), name.to_owned()))
    }

    /// Record a problem at the node found at `path` (or its nearest existing ancestor).
    pub(crate) fn at(&mut self, path: &[&str], message: impl Into<String>) {
        let mut p = path;
        let line = loop {
            if let Some(l) = self.doc.line_of(p) {
                break Some(l);
            }
            if p.is_empty() {
                break None;
            }
            p = &p[..p.len() - 1];
        };
        self.problems.push(Problem {
            file: self.file.to_owned(),
            line,
            message: message.into(),
        });
    }

    /// Deserialize one entry, recording a located problem on failure.
    fn entry<T: DeserializeOwned>(&mut self, path: &[&str], value: &Value) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(v) => Some(v),
            Err(e) => {
                let inner: Vec<String> = e
                    .path()
                    .iter()
                    .map(|s| s.to_string())
                    .filter(|s| s != "?")
                    .collect();
                let mut full: Vec<&str> = path.to_vec();
                full.extend(inner.iter().map(String::as_str));
                let msg = e.inner().to_string();
                // "unknown field `x`" is best reported on the offending key's own line.
                if let Some(field) = msg
                    .strip_prefix("unknown field `")
                    .and_then(|r| r.split('`').next())
                    && full.last() != Some(&field)
                {
                    full.push(field);
                }
                let shown = full.join(".");
                self.at(&full, format!("{shown}: {msg}"));
                None
            }
        }
    }
}

/// A config-like file's text as a YAML value (for serde) and its [`Lines`]; a syntax error is
/// the one problem, located: the span tree's account of it when the tree refuses the text too
/// (its messages name both lines of a duplicate key), else serde's.
pub(crate) fn load<'a>(file: &str, text: &'a str) -> Result<(Lines<'a>, Value), ConfigError> {
    let one = |line: Option<usize>, message: String| ConfigError {
        problems: vec![Problem {
            file: file.to_owned(),
            line,
            message,
        }],
    };
    match yamlspan::from_str(text) {
        Ok(root) => Ok((Lines::new(text), root)),
        Err(yamlspan::FromStrError::Syntax(e)) => Err(one(Some(e.line), e.message)),
        Err(yamlspan::FromStrError::Serde(e)) => Err(match yamlspan::parse(text) {
            Err(span) => one(Some(span.line), span.message),
            Ok(_) => one(
                e.location().map(|l| l.line()),
                format!("not valid YAML: {e}"),
            ),
        }),
    }
}

/// Parse and validate a config file's text. `file` names it in problems.
pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
    let (doc, root) = load(file, text)?;
    let Value::Mapping(top) = root else {
        return Err(ConfigError {
            problems: vec![Problem {
                file: file.to_owned(),
                line: Some(1),
                message: "the config must be a mapping with `images` and `environments`".into(),
            }],
        });
    };
    let mut r = Report::new(file, &doc);

    for key in top.keys() {
        match key.as_str() {
            Some(k) if TOP_LEVEL.contains(&k) => {}
            Some(k) => r.at(
                &[k],
                format!(
                    "unknown top-level key `{k}`, expected one of {}",
                    TOP_LEVEL.join(", ")
                ),
            ),
            None => r.at(&[], "top-level keys must be strings"),
        }
    }
    let get = |k: &str| top.get(k).filter(|v| !v.is_null());

    let interval = match get("interval") {
        None => Duration::from_secs(60),
        Some(Value::String(s)) => match humantime::parse_duration(s) {
            Ok(d) if d >= Duration::from_secs(1) => d,
            Ok(_) => {
                r.at(&["interval"], "interval: must be at least 1s");
                Duration::from_secs(60)
            }
            Err(e) => {
                r.at(&["interval"], format!("interval: bad duration {s:?}: {e}"));
                Duration::from_secs(60)
            }
        },
        Some(_) => {
            r.at(&["interval"], "interval: must be a duration like 1m or 30s");
            Duration::from_secs(60)
        }
    };
    let git = get("git")
        .and_then(|v| r.entry(&["git"], v))
        .unwrap_or_default();
    let notify = get("notify")
        .and_then(|v| r.entry(&["notify"], v))
        .unwrap_or_default();
    let webhook = get("webhook")
        .and_then(|v| r.entry(&["webhook"], v))
        .unwrap_or_default();

    let mut registries = Vec::new();
    match get("registries") {
        None => {}
        Some(Value::Sequence(items)) => {
            for (i, item) in items.iter().enumerate() {
                let idx = i.to_string();
                if let Some(reg) = r.entry::<RegistryConfig>(&["registries", &idx], item) {
                    registries.push(reg);
                }
            }
        }
        Some(_) => r.at(&["registries"], "registries: must be a list"),
    }
    let mut infra = Vec::new();
    // Positions in the file, so problems of later entries keep their lines.
    let mut infra_at = Vec::new();
    match get("infra") {
        None => {}
        Some(Value::Sequence(items)) => {
            for (i, item) in items.iter().enumerate() {
                let idx = i.to_string();
                if let Some(ws) = r.entry::<InfraConfig>(&["infra", &idx], item) {
                    infra.push(ws);
                    infra_at.push(i);
                }
            }
        }
        Some(_) => r.at(&["infra"], "infra: must be a list of workspaces"),
    }
    let images: BTreeMap<String, ImageConfig> =
        named_entries(&mut r, get("images"), "images", "image");
    let environments: BTreeMap<String, EnvironmentConfig> =
        named_entries(&mut r, get("environments"), "environments", "environment");

    let config = Config {
        interval,
        git,
        registries,
        images,
        environments,
        notify,
        webhook,
        infra,
    };
    validate::validate(&config, &mut r);
    infra::validate(&config.infra, &infra_at, &mut r);
    rollout::validate(&config, &mut r);
    pull_request::validate(&config, &mut r);
    if r.problems.is_empty() {
        Ok(config)
    } else {
        r.problems.sort_by_key(|p| p.line.unwrap_or(0));
        Err(ConfigError {
            problems: r.problems,
        })
    }
}

/// Deserialize each `name: settings` entry of a section on its own. A section that is missing
/// or empty is a problem of its own; one whose entries are all broken is not (each entry's
/// problem says what is wrong, and "at least one is needed" would be false).
fn named_entries<T: DeserializeOwned>(
    r: &mut Report<'_>,
    v: Option<&Value>,
    section: &str,
    noun: &str,
) -> BTreeMap<String, T> {
    let mut out = BTreeMap::new();
    match v {
        Some(Value::Mapping(m)) if !m.is_empty() => {
            for (k, v) in m {
                let Some(name) = k.as_str() else {
                    r.at(&[section], format!("{section}: names must be strings"));
                    continue;
                };
                match r.entry::<T>(&[section, name], v) {
                    Some(entry) => {
                        out.insert(name.to_owned(), entry);
                    }
                    None => {
                        r.unparsed.insert((section.to_owned(), name.to_owned()));
                    }
                }
            }
        }
        None | Some(Value::Mapping(_)) => r.at(
            &[section],
            format!("{section}: at least one {noun} is needed"),
        ),
        Some(_) => r.at(
            &[section],
            format!("{section}: must be a mapping of name to settings"),
        ),
    }
    out
}

impl Config {
    /// The setter policy name markers use for `image` in `env` (None when only paths are used).
    pub fn setter_for(&self, env: &EnvironmentConfig, image: &str) -> Option<String> {
        let target = env.images.as_ref().and_then(|m| m.get(image));
        let explicit = target.and_then(|t| t.setter.clone());
        if explicit.is_some() {
            return explicit;
        }
        if target.is_some_and(|t| t.paths.any()) {
            return None;
        }
        Some(
            self.images
                .get(image)
                .and_then(|i| i.setter.clone())
                .unwrap_or_else(|| format!("flux-system:{image}")),
        )
    }

    /// The images an environment carries, with their targets.
    pub fn targets<'a>(&'a self, env: &'a EnvironmentConfig) -> Vec<(&'a str, TargetConfig)> {
        match &env.images {
            Some(m) => m.iter().map(|(k, t)| (k.as_str(), t.clone())).collect(),
            None => self
                .images
                .keys()
                .map(|k| (k.as_str(), TargetConfig::default()))
                .collect(),
        }
    }

    /// The registry settings for a repository, matched on its registry as docker reads the
    /// name (`nginx` and `index.docker.io/library/nginx` are both `docker.io`).
    pub fn registry_for(&self, repository: &str) -> Option<&RegistryConfig> {
        let host = crate::reference::RepoRef::parse(repository).host;
        self.registries
            .iter()
            .find(|r| crate::reference::canonical_host(&r.host) == host)
    }
}

#[cfg(test)]
mod tests;
