//! What the planner reads: the files of the head being planned on, and the YAML files under a
//! directory environment's directory.

use std::borrow::Borrow;
use std::collections::BTreeMap;

use super::ReadError;

/// The files of one head, as the pure planner sees them.
pub trait Files {
    /// A regular file's bytes; `Ok(None)` when absent.
    ///
    /// # Errors
    /// The path is a symlink or not a regular file, or reading failed.
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, ReadError>;

    /// Every `.yaml`/`.yml` regular file under `dir`, recursively, as repo paths in byte
    /// order; `Ok(None)` when `dir` does not exist. Symlinks are never followed: one with a
    /// YAML name is an error (it may lead out of the directory, and skipping it would quietly
    /// leave a file the user meant un-updated); other symlinks and submodules are skipped.
    ///
    /// # Errors
    /// A YAML-named symlink, `dir` is not a directory, or listing failed.
    fn yaml_files(&self, dir: &str) -> Result<Option<Vec<String>>, ReadError>;
}

/// Whether a path names a YAML file by its extension.
#[must_use]
pub fn is_yaml(path: &str) -> bool {
    path.ends_with(".yaml") || path.ends_with(".yml")
}

/// The error for a YAML-named symlink under a directory environment.
#[must_use]
pub fn yaml_symlink(path: &str) -> ReadError {
    ReadError {
        path: path.to_owned(),
        reason: "is a symlink under a directory environment; tagflow follows no symlink, \
                 replace it with the file or move it out of the directory"
            .to_owned(),
    }
}

/// An in-memory head: path → bytes. Holds no symlinks, so none is ever reported.
impl<K: Borrow<str> + Ord, V: AsRef<[u8]>> Files for BTreeMap<K, V> {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, ReadError> {
        Ok(self.get(path).map(|v| v.as_ref().to_vec()))
    }

    fn yaml_files(&self, dir: &str) -> Result<Option<Vec<String>>, ReadError> {
        let prefix = format!("{dir}/");
        let under: Vec<&str> = self
            .keys()
            .map(Borrow::borrow)
            .filter(|p: &&str| p.starts_with(&prefix))
            .collect();
        if under.is_empty() {
            return Ok(None);
        }
        let mut yaml: Vec<String> = under
            .into_iter()
            .filter(|p| is_yaml(p))
            .map(str::to_owned)
            .collect();
        yaml.sort();
        Ok(Some(yaml))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_lists_yaml_under_a_directory_only() {
        let files = BTreeMap::from([
            ("envs/dev/b.yml", ""),
            ("envs/dev/a/x.yaml", ""),
            ("envs/dev/README.md", ""),
            ("envs/devx/c.yaml", ""),
        ]);
        assert_eq!(
            files.yaml_files("envs/dev").expect("lists"),
            Some(vec![
                "envs/dev/a/x.yaml".to_owned(),
                "envs/dev/b.yml".to_owned()
            ])
        );
        assert_eq!(files.yaml_files("envs/prod").expect("lists"), None);
        assert_eq!(
            files.read("envs/dev/b.yml").expect("reads"),
            Some(Vec::new())
        );
    }

    const DIR_CONFIG: &str = "images:\n  app: {repository: r.example.com/team/app, policy: {tags: '.*', order: built}}\n  worker: {repository: r.example.com/team/worker, policy: {tags: '.*', order: built}}\nenvironments:\n  dev: {dir: envs/dev}\n";
    const APP: &str =
        "image: r.example.com/team/app:a1b2c3d # {\"$imagepolicy\": \"flux-system:app\"}\n";
    const WORKER: &str = "tag: a1b2c3d # {\"$imagepolicy\": \"flux-system:worker:tag\"}\n";

    fn desired() -> BTreeMap<String, crate::plan::Desired> {
        ["app", "worker"]
            .map(|image| {
                let d = crate::plan::Desired {
                    image: image.into(),
                    repository: format!("r.example.com/team/{image}"),
                    tag: "0f1e2d3".into(),
                    digest: format!("sha256:{}", "ab".repeat(32)),
                    reason: "test".into(),
                };
                (image.to_owned(), d)
            })
            .into_iter()
            .collect()
    }

    #[test]
    fn a_directory_environment_edits_every_marked_file_and_nothing_else() {
        let config = crate::config::parse("c", DIR_CONFIG).expect("config");
        let files = BTreeMap::from([
            ("envs/dev/app/deployment.yaml", APP.to_owned()),
            (
                "envs/dev/worker.yml",
                format!("---\nkind: Service\n---\n{WORKER}"),
            ),
            // Not YAML at all, but it names no policy, so it is never parsed.
            (
                "envs/dev/templates/t.yaml",
                "{{ .Values.x }}: [\n".to_owned(),
            ),
            ("envs/dev/notes.txt", APP.to_owned()),
        ]);
        let p = crate::plan::plan_edits(&config, &desired(), &files)
            .expect("plans")
            .expect("changes");
        let paths: Vec<&str> = p.edits.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["envs/dev/app/deployment.yaml", "envs/dev/worker.yml"]
        );
        let lines: Vec<String> = p
            .changes
            .iter()
            .map(|c| format!("{}:{} {}", c.change.file, c.change.line, c.change.new))
            .collect();
        assert_eq!(
            lines,
            [
                format!(
                    "envs/dev/app/deployment.yaml:1 r.example.com/team/app:0f1e2d3@sha256:{}",
                    "ab".repeat(32)
                ),
                "envs/dev/worker.yml:4 0f1e2d3".to_owned(),
            ]
        );
    }

    #[test]
    fn a_directory_environment_is_all_or_nothing() {
        let config = crate::config::parse("c", DIR_CONFIG).expect("config");
        let unmarked = BTreeMap::from([("envs/dev/app.yaml", APP)]);
        let err = crate::plan::plan_edits(&config, &desired(), &unmarked).unwrap_err();
        assert!(
            err.to_string().contains(
                "no file under envs/dev has a {\"$imagepolicy\": \"flux-system:worker[:tag|:name|:digest]\"} marker for image worker"
            ),
            "{err}"
        );
        let broken = format!("{WORKER}x: [\n");
        let one_bad = BTreeMap::from([("envs/dev/a.yaml", APP), ("envs/dev/b.yaml", &broken)]);
        let err = crate::plan::plan_edits(&config, &desired(), &one_bad).unwrap_err();
        assert!(err.to_string().contains("envs/dev/b.yaml"), "{err}");
        let missing = BTreeMap::from([("envs/prod/a.yaml", APP)]);
        assert!(matches!(
            crate::plan::plan_edits(&config, &desired(), &missing),
            Err(crate::plan::PlanError::MissingDir { .. })
        ));
    }
}
