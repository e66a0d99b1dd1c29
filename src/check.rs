//! `tagflow check`: validate the config, the approvals and quarantine lists, and every target
//! in every values file; each problem as `file:line: message`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config;
use crate::gitops::{Checkout, GitError, RepoOptions};
use crate::plan::{self, Files, ReadError};

/// What `check` found: the problems (empty when all is well) and a summary line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// Every problem, `file:line: message`.
    pub problems: Vec<String>,
    /// `ok: N image(s), M environment(s)` when there is none.
    pub summary: String,
}

/// Why `check` could not look at all.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// A local file could not be read.
    #[error("failed to read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Fetching the repo failed.
    #[error(transparent)]
    Git(#[from] GitError),
    /// The config file is not in the repo.
    #[error("{0} does not exist at the repo head")]
    NoConfig(String),
}

/// Check the files `files` gives (pure: a local dir or a fetched head).
pub fn check_files(config_path: &str, files: &plan::Read<'_>) -> Checked {
    let read = |p: &str| files.read(p).ok().flatten();
    let Some(text) = read(config_path) else {
        return Checked {
            problems: vec![format!("{config_path}: does not exist")],
            summary: String::new(),
        };
    };
    let Ok(text) = String::from_utf8(text) else {
        return Checked {
            problems: vec![format!("{config_path}: not UTF-8")],
            summary: String::new(),
        };
    };
    let cfg = match config::parse(config_path, &text) {
        Ok(c) => c,
        Err(e) => {
            return Checked {
                problems: e.problems.iter().map(ToString::to_string).collect(),
                summary: String::new(),
            };
        }
    };
    let mut problems = plan::check_targets(&cfg, files);
    let lists =
        [config::APPROVALS, config::QUARANTINE].map(|name| config::sibling(config_path, name));
    let texts = lists
        .clone()
        .map(|f| read(&f).map(|b| String::from_utf8_lossy(&b).into_owned()));
    if let Err(e) = config::parse_gates(
        &cfg,
        (&lists[0], texts[0].as_deref()),
        (&lists[1], texts[1].as_deref()),
    ) {
        problems.extend(e.problems.iter().map(ToString::to_string));
    }
    Checked {
        summary: format!(
            "ok: {} image(s), {} environment(s)",
            cfg.images.len(),
            cfg.environments.len()
        ),
        problems,
    }
}

/// Check a local checkout.
pub fn check_dir(dir: &Path, config_path: &str) -> Result<Checked, CheckError> {
    let path = dir.join(config_path);
    std::fs::read(&path).map_err(|source| CheckError::Read {
        path: path.display().to_string(),
        source,
    })?;
    Ok(check_files(config_path, &LocalDir(dir.to_owned())))
}

/// A local checkout read as the planner reads a head: regular files only, no symlink followed.
struct LocalDir(PathBuf);

impl Files for LocalDir {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, ReadError> {
        Ok(std::fs::read(self.0.join(path)).ok())
    }

    fn yaml_files(&self, dir: &str) -> Result<Option<Vec<String>>, ReadError> {
        let root = self.0.join(dir);
        if !std::fs::symlink_metadata(&root).is_ok_and(|m| m.is_dir()) {
            return Ok(None);
        }
        let mut out = Vec::new();
        let mut todo = vec![dir.to_owned()];
        while let Some(d) = todo.pop() {
            let entries = std::fs::read_dir(self.0.join(&d)).map_err(|e| ReadError {
                path: d.clone(),
                reason: e.to_string(),
            })?;
            for entry in entries.flatten() {
                let path = format!("{d}/{}", entry.file_name().to_string_lossy());
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_symlink() && plan::is_yaml(&path) {
                    return Err(plan::yaml_symlink(&path));
                } else if kind.is_dir() && entry.file_name() != ".git" {
                    todo.push(path);
                } else if kind.is_file() && plan::is_yaml(&path) {
                    out.push(path);
                }
            }
        }
        out.sort();
        Ok(Some(out))
    }
}

/// Fetch the repo (into `opts.workdir`) and check its head.
pub fn check_repo(opts: &RepoOptions) -> Result<Checked, CheckError> {
    let files = fetch_all(opts)?;
    if !files.contains_key(&opts.config_path) {
        return Err(CheckError::NoConfig(opts.config_path.clone()));
    }
    Ok(check_files(&opts.config_path, &files))
}

/// Fetch the repo and read the config plus every file it may name.
fn fetch_all(opts: &RepoOptions) -> Result<BTreeMap<String, Vec<u8>>, GitError> {
    let c = Checkout::open(
        &opts.url,
        &opts.branch,
        &opts.workdir.join("config.git"),
        opts.auth.clone(),
    )?;
    let head = c.fetch()?;
    let snap = c.snapshot(head)?;
    let mut out = BTreeMap::new();
    if let Some(t) = snap.read(&opts.config_path)? {
        if let Ok(cfg) = config::parse(&opts.config_path, &String::from_utf8_lossy(&t)) {
            for env in cfg.environments.values() {
                let dir_files = match &env.dir {
                    Some(dir) => snap.yaml_files(dir)?.unwrap_or_default(),
                    None => vec![env.file.clone()],
                };
                for path in dir_files {
                    if let Some(b) = snap.read(&path)? {
                        out.insert(path, b);
                    }
                }
            }
        }
        out.insert(opts.config_path.clone(), t);
        for name in [config::APPROVALS, config::QUARANTINE] {
            let path = config::sibling(&opts.config_path, name);
            if let Some(b) = snap.read(&path)? {
                out.insert(path, b);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_of_config_values_and_lists_is_reported_with_its_file() {
        let files: BTreeMap<&str, &str> = BTreeMap::from([
            (
                "config/tagflow.yaml",
                "images:\n  app: {repository: r.example.com/app, policy: {tags: '.*', order: built}}\nenvironments:\n  dev: {file: envs/dev/patch.yaml}\n",
            ),
            ("envs/dev/patch.yaml", "image:\n  tag: a1b2c3d\n"),
            (
                "config/quarantine.yaml",
                "quarantine:\n  - {image: web, tag: a}\n",
            ),
        ]);
        let c = check_files("config/tagflow.yaml", &files);
        assert_eq!(c.problems.len(), 2, "{:#?}", c.problems);
        assert!(
            c.problems[0].contains("envs/dev/patch.yaml"),
            "{}",
            c.problems[0]
        );
        assert!(
            c.problems[1].starts_with("config/quarantine.yaml:2: "),
            "{}",
            c.problems[1]
        );
        let missing = check_files("config/tagflow.yaml", &BTreeMap::<String, String>::new());
        assert_eq!(missing.problems, ["config/tagflow.yaml: does not exist"]);
    }

    #[cfg(unix)]
    #[test]
    fn a_local_directory_environment_is_checked_file_by_file_and_follows_no_symlink() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |p: &str, text: &str| {
            let path = dir.path().join(p);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        };
        write(
            "config/tagflow.yaml",
            "images:\n  app: {repository: r.example.com/app, policy: {tags: '.*', order: built}}\nenvironments:\n  dev: {dir: envs/dev}\n",
        );
        write(
            "envs/dev/a/values.yaml",
            "tag: a1 # {\"$imagepolicy\": \"flux-system:app:tag\"}\n",
        );
        write("envs/dev/b.yaml", "{{ not yaml, and no marker }}: [\n");
        let c = check_dir(dir.path(), "config/tagflow.yaml").expect("checks");
        assert_eq!(c.problems, Vec::<String>::new());
        std::os::unix::fs::symlink(
            "../../config/tagflow.yaml",
            dir.path().join("envs/dev/c.yml"),
        )
        .expect("symlink");
        let c = check_dir(dir.path(), "config/tagflow.yaml").expect("checks");
        assert_eq!(c.problems.len(), 1, "{:?}", c.problems);
        assert!(
            c.problems[0].contains("envs/dev/c.yml: is a symlink under a directory environment"),
            "{}",
            c.problems[0]
        );
    }
}
