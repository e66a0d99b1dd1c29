//! Plan (pure): from what tagflow wants (a [`ChangeSet`]) and the files at the fetched head,
//! decide the edits of one commit, word its message and show its diff. Every commit tagflow
//! makes — policy updates, promotions, reverts with their quarantine entry, approvals,
//! inventories — is planned here; `gitops` only pushes what a plan prepared.

mod change;
mod files;
mod message;
pub mod trailer;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::config::Config;
use crate::rewrite::{self, Change, ImageUpdate, PathTargets, RewriteError};

pub use change::{ChangeSet, QuarantineNote, prepare};
pub use files::{Files, is_yaml, yaml_symlink};
pub use message::{MAX_LISTED, MAX_TRAILERS, commit_message, describe, listed};

/// A file to write in the next commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// Path in the repo.
    pub path: String,
    /// New content.
    pub content: Vec<u8>,
}

/// One commit, planned: the files to write, the message, and the values changes it makes
/// (empty for commits that only append to a list or write an inventory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// Files to write.
    pub edits: Vec<Edit>,
    /// Commit message.
    pub message: String,
    /// The values changes, for logs and Slack.
    pub changes: Vec<EnvChange>,
}

/// A file of the head could not be read (a symlink, not a regular file, a git failure).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to read {path}: {reason}")]
pub struct ReadError {
    /// Path in the repo.
    pub path: String,
    /// Why.
    pub reason: String,
}

/// The files of the head being planned on.
pub type Read<'a> = dyn Files + 'a;

/// The image tagflow wants deployed for one configured image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// Config name of the image.
    pub image: String,
    /// Repository.
    pub repository: String,
    /// Tag.
    pub tag: String,
    /// Digest the tag pointed at when selected.
    pub digest: String,
    /// Why this tag (policy reason).
    pub reason: String,
}

/// A change in one environment's values file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvChange {
    /// Environment name.
    pub env: String,
    /// The rewrite's change.
    pub change: Change,
}

/// Why no commit could be planned. Nothing is written when this happens.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A values file is missing.
    #[error("environment {env}: values file {file} does not exist at the repo head")]
    MissingFile {
        /// Environment.
        env: String,
        /// File.
        file: String,
    },
    /// A directory environment's directory is missing.
    #[error("environment {env}: directory {dir} does not exist at the repo head")]
    MissingDir {
        /// Environment.
        env: String,
        /// Directory.
        dir: String,
    },
    /// An image of a directory environment has a marker in none of its files.
    #[error(
        "environment {env}: no file under {dir} has a {{\"$imagepolicy\": \"{setter}[:tag|:name|:digest]\"}} marker for image {image}"
    )]
    NoMarkerInDir {
        /// Environment.
        env: String,
        /// Directory.
        dir: String,
        /// Image key.
        image: String,
        /// The setter policy looked for.
        setter: String,
    },
    /// A file could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// A list file (approvals, quarantine) cannot take another entry.
    #[error(transparent)]
    Append(#[from] rewrite::AppendError),
    /// The rewrite refused the file.
    #[error("environment {env}: {source}")]
    Rewrite {
        /// Environment.
        env: String,
        /// Why.
        #[source]
        source: RewriteError,
    },
}

/// One env file's rewrite input.
fn updates_for(
    config: &Config,
    env_name: &str,
    desired: &BTreeMap<String, Desired>,
) -> Vec<ImageUpdate> {
    let env = &config.environments[env_name];
    let targets = config.targets(env);
    // Sized up front: collected from a filter, 10,000 updates (~200 bytes each) grew to room
    // for 16,384.
    let mut out = Vec::with_capacity(
        targets
            .iter()
            .filter(|(i, _)| desired.contains_key(*i))
            .count(),
    );
    out.extend(targets.into_iter().filter_map(|(image, target)| {
        let d = desired.get(image)?;
        Some(ImageUpdate {
            image: image.to_owned(),
            setter: config.setter_for(env, image),
            paths: PathTargets {
                name: target.paths.repository.clone(),
                tag: target.paths.tag.clone(),
                digest: target.paths.digest.clone(),
                full: target.paths.full.clone(),
            },
            repository: d.repository.clone(),
            tag: d.tag.clone(),
            digest: Some(d.digest.clone()),
        })
    }));
    out
}

/// Desired images per environment: environment → image → desired.
pub type PerEnv = BTreeMap<String, BTreeMap<String, Desired>>;

/// Every environment that takes the policy's pick gets `desired`; environments with
/// `promoteFrom` are left out (they only receive promotions, see [`plan_env_edits`]).
pub fn policy_targets(config: &Config, desired: &BTreeMap<String, Desired>) -> PerEnv {
    policy_targets_from(config, desired.clone())
}

/// [`policy_targets`], taking `desired` rather than copying it for the last environment.
pub fn policy_targets_from(config: &Config, desired: BTreeMap<String, Desired>) -> PerEnv {
    let mut envs: Vec<&String> = config
        .environments
        .iter()
        .filter(|(_, env)| env.promote_from.is_none())
        .map(|(name, _)| name)
        .collect();
    let Some(last) = envs.pop() else {
        return PerEnv::new();
    };
    let mut out: PerEnv = envs
        .into_iter()
        .map(|name| (name.clone(), desired.clone()))
        .collect();
    out.insert(last.clone(), desired);
    out
}

/// Rewrite every environment's file for the desired images; `None` when nothing changes.
pub fn plan_edits(
    config: &Config,
    desired: &BTreeMap<String, Desired>,
    read: &Read<'_>,
) -> Result<Option<Prepared>, PlanError> {
    plan_env_edits(config, &policy_targets(config, desired), read)
}

/// Rewrite each environment's file for its own desired images; `None` when nothing changes.
pub fn plan_env_edits(
    config: &Config,
    per_env: &PerEnv,
    read: &Read<'_>,
) -> Result<Option<Prepared>, PlanError> {
    let mut edits = Vec::new();
    let mut changes = Vec::new();
    for (env_name, env) in &config.environments {
        let Some(desired) = per_env.get(env_name) else {
            continue;
        };
        let updates = updates_for(config, env_name, desired);
        if updates.is_empty() {
            continue;
        }
        for (path, out) in env_rewrites(env_name, env, &updates, read)? {
            changes.reserve_exact(out.changes.len());
            changes.extend(out.changes.into_iter().map(|change| EnvChange {
                env: env_name.clone(),
                change,
            }));
            edits.push(Edit {
                path,
                content: out.output,
            });
        }
    }
    if edits.is_empty() {
        return Ok(None);
    }
    let message = commit_message(&config.git.commit_subject, &changes, per_env);
    Ok(Some(Prepared {
        edits,
        message,
        changes,
    }))
}

/// The files of one environment that change, with their rewrites: its values file, or every
/// marked YAML file under its directory. All or nothing: any file's problem fails the whole
/// environment, so a commit never carries half a directory.
fn env_rewrites(
    env_name: &str,
    env: &crate::config::EnvironmentConfig,
    updates: &[ImageUpdate],
    read: &Read<'_>,
) -> Result<Vec<(String, rewrite::Rewritten)>, PlanError> {
    let refused = |source| PlanError::Rewrite {
        env: env_name.to_owned(),
        source,
    };
    let Some(dir) = &env.dir else {
        let input = read
            .read(&env.file)?
            .ok_or_else(|| PlanError::MissingFile {
                env: env_name.to_owned(),
                file: env.file.clone(),
            })?;
        let out = rewrite::rewrite(&env.file, &input, updates).map_err(refused)?;
        let changed = !out.changes.is_empty();
        return Ok(changed
            .then(|| (env.file.clone(), out))
            .into_iter()
            .collect());
    };
    let paths = read.yaml_files(dir)?.ok_or_else(|| PlanError::MissingDir {
        env: env_name.to_owned(),
        dir: dir.clone(),
    })?;
    let mut found = vec![false; updates.len()];
    let mut out = Vec::new();
    for path in paths {
        let input = read.read(&path)?.unwrap_or_default();
        let r = rewrite::rewrite_if_marked(&path, &input, updates).map_err(refused)?;
        for (seen, here) in found.iter_mut().zip(&r.found) {
            *seen |= here;
        }
        if !r.changes.is_empty() {
            out.push((path, r));
        }
    }
    if let Some((u, _)) = updates.iter().zip(&found).find(|(_, seen)| !**seen) {
        return Err(PlanError::NoMarkerInDir {
            env: env_name.to_owned(),
            dir: dir.clone(),
            image: u.image.clone(),
            setter: u.setter.clone().unwrap_or_default(),
        });
    }
    Ok(out)
}

/// Every problem with every environment's targets, found by rewriting each file with
/// placeholder values and throwing the result away (for `tagflow check`).
pub fn check_targets(config: &Config, read: &Read<'_>) -> Vec<String> {
    let mut problems = Vec::new();
    let desired: BTreeMap<String, Desired> = config
        .images
        .iter()
        .map(|(name, img)| {
            let d = Desired {
                image: name.clone(),
                repository: img.repository.clone(),
                tag: "tagflow-check".into(),
                digest: format!("sha256:{}", "0".repeat(64)),
                reason: String::new(),
            };
            (name.clone(), d)
        })
        .collect();
    for (env_name, env) in &config.environments {
        let updates = updates_for(config, env_name, &desired);
        match env_rewrites(env_name, env, &updates, read) {
            Ok(_) => {}
            Err(PlanError::MissingFile { file, .. }) => problems.push(format!(
                "{file}: environment {env_name}: values file does not exist"
            )),
            Err(PlanError::MissingDir { dir, .. }) => problems.push(format!(
                "{dir}: environment {env_name}: directory does not exist"
            )),
            Err(PlanError::Rewrite { source, .. }) => {
                problems.push(format!("environment {env_name}: {source}"));
            }
            Err(e) => problems.push(e.to_string()),
        }
    }
    problems
}

/// Unified diff of the planned edits against the files they replace.
pub fn diff(edits: &[Edit], read: impl Fn(&str) -> Option<Vec<u8>>) -> String {
    let mut out = String::new();
    for e in edits {
        let old = read(&e.path).unwrap_or_default();
        let old = String::from_utf8_lossy(&old);
        let new = String::from_utf8_lossy(&e.content);
        let d = similar::TextDiff::from_lines(old.as_ref(), new.as_ref());
        let _ = write!(
            out,
            "{}",
            d.unified_diff()
                .context_radius(3)
                .header(&format!("a/{}", e.path), &format!("b/{}", e.path))
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "images:\n  app: {repository: r.example.com/team/app, policy: {tags: '.*', order: built}}\nenvironments:\n  dev: {file: envs/dev/patch.yaml}\n  prod: {file: envs/prod/patch.yaml}\n";
    const DEV: &str = "image:\n  repository: r.example.com/team/app\n  tag: a1b2c3d # {\"$imagepolicy\": \"flux-system:app:tag\"}\n  digest: \"\" # {\"$imagepolicy\": \"flux-system:app:digest\"}\n";

    fn desired(tag: &str) -> BTreeMap<String, Desired> {
        let d = Desired {
            image: "app".into(),
            repository: "r.example.com/team/app".into(),
            tag: tag.into(),
            digest: format!("sha256:{}", "ab".repeat(32)),
            reason: "test".into(),
        };
        BTreeMap::from([("app".to_owned(), d)])
    }

    #[test]
    fn plans_one_edit_per_changed_file() {
        let config = crate::config::parse("c", CONFIG).expect("config");
        let files = BTreeMap::from([
            ("envs/dev/patch.yaml", DEV.to_owned()),
            ("envs/prod/patch.yaml", DEV.replace("a1b2c3d", "0f1e2d3")),
        ]);
        let read = files.clone();
        let p = plan_edits(&config, &desired("0f1e2d3"), &read)
            .expect("plans")
            .expect("changes");
        assert_eq!(
            p.edits.len(),
            2,
            "dev gets tag+digest, prod only the digest"
        );
        assert!(
            p.message
                .starts_with("tagflow: dev app → 0f1e2d3, prod app → 0f1e2d3\n\n"),
            "{}",
            p.message
        );
        assert!(
            p.message
                .contains("dev app tag: a1b2c3d → 0f1e2d3 (envs/dev/patch.yaml:3)"),
            "{}",
            p.message
        );
        assert!(
            p.message
                .contains("Tagflow-Set: dev app r.example.com/team/app:0f1e2d3 sha256:abab"),
            "{}",
            p.message
        );
        // What each commit replaced, so a replica that never saw it can still revert it.
        assert!(
            p.message.contains("Tagflow-Previous: dev app a1b2c3d\n"),
            "{}",
            p.message
        );
        assert!(
            p.message.contains("Tagflow-Previous: prod app 0f1e2d3\n"),
            "prod had no digest before: {}",
            p.message
        );
        let d = diff(&p.edits, |path| {
            files.get(path).map(|s| s.as_bytes().to_vec())
        });
        assert!(
            d.contains("-  tag: a1b2c3d") && d.contains("+  tag: 0f1e2d3"),
            "{d}"
        );
    }

    #[test]
    fn nothing_to_do_is_none_and_missing_file_is_an_error() {
        let config = crate::config::parse("c", CONFIG).expect("config");
        let done = DEV.replace("\"\"", &format!("\"sha256:{}\"", "ab".repeat(32)));
        let files = BTreeMap::from([
            ("envs/dev/patch.yaml", done.clone()),
            ("envs/prod/patch.yaml", done),
        ]);
        let read = files.clone();
        assert!(
            plan_edits(&config, &desired("a1b2c3d"), &read)
                .expect("ok")
                .is_none()
        );
        let none = BTreeMap::<String, String>::new();
        assert!(matches!(
            plan_edits(&config, &desired("a1b2c3d"), &none),
            Err(PlanError::MissingFile { .. })
        ));
    }

    #[test]
    fn promoted_envs_only_get_what_is_promoted_to_them() {
        let cfg = CONFIG.replace(
            "prod: {file: envs/prod/patch.yaml}",
            "prod: {file: envs/prod/patch.yaml, promoteFrom: dev}",
        );
        let config = crate::config::parse("c", &cfg).expect("config");
        let files = BTreeMap::from([
            ("envs/dev/patch.yaml", DEV.to_owned()),
            ("envs/prod/patch.yaml", DEV.to_owned()),
        ]);
        let read = files.clone();
        let p = plan_edits(&config, &desired("0f1e2d3"), &read)
            .expect("plans")
            .expect("changes");
        assert_eq!(p.edits.len(), 1, "the policy's pick goes to dev only");
        assert_eq!(p.edits[0].path, "envs/dev/patch.yaml");
        let per_env = PerEnv::from([("prod".to_owned(), desired("b2c3d4e"))]);
        let p = plan_env_edits(&config, &per_env, &read)
            .expect("plans")
            .expect("changes");
        assert_eq!(p.edits[0].path, "envs/prod/patch.yaml");
        assert!(
            p.message
                .contains("Tagflow-Set: prod app r.example.com/team/app:b2c3d4e sha256:abab"),
            "{}",
            p.message
        );
    }

    /// A cycle that moved `n` images in each of dev and prod.
    fn huge(n: usize) -> (Vec<EnvChange>, PerEnv) {
        let mut changes = Vec::new();
        let mut per_env = PerEnv::new();
        for env in ["dev", "prod"] {
            for i in 0..n {
                let image = format!("app{i:05}");
                changes.push(EnvChange {
                    env: env.into(),
                    change: Change {
                        file: format!("envs/{env}/patch.yaml"),
                        image: image.clone(),
                        field: rewrite::Field::Tag,
                        line: i + 1,
                        old: "a1b2c3d".into(),
                        new: "0f1e2d3".into(),
                    },
                });
                let mut d = desired("0f1e2d3").remove("app").expect("app");
                d.image.clone_from(&image);
                per_env.entry(env.into()).or_default().insert(image, d);
            }
        }
        (changes, per_env)
    }

    #[test]
    fn a_huge_change_is_summarised_past_the_limits() {
        let (changes, per_env) = huge(5_000);
        let msg = commit_message("tagflow: {summary}", &changes, &per_env);
        assert!(
            msg.starts_with("tagflow: update 10000 images in dev, prod\n"),
            "{}",
            &msg[..80]
        );
        assert!(
            msg.contains("\n… and 9800 more changes (dev: 4800, prod: 5000)\n"),
            "counted per environment"
        );
        assert!(msg.contains("Tagflow-Truncated: 9500 more images set\n"));
        assert_eq!(msg.matches("\nTagflow-Set: ").count(), MAX_TRAILERS);
        assert!(msg.len() < 150_000, "{} bytes", msg.len());
        let (few, few_env) = huge(3);
        let small = commit_message("tagflow: {summary}", &few, &few_env);
        assert!(!small.contains("more changes") && !small.contains("Truncated"));
        assert_eq!(listed(&few, 10, false).len(), 6);
    }
}
