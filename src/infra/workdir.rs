//! The workspace's terraform code, checked out of the config repo into its local directory.

use std::collections::BTreeSet;
use std::path::Path;

use git2::Oid;

use super::terraform::Terraform;
use super::{InfraError, Watcher, io_err};
use crate::config::{EnvValue, InfraConfig};

impl Watcher {
    /// The workspace's code at `head` in its local dir, and a terraform to run there; also the
    /// code's tree id and the approvals file.
    pub(super) async fn prepare(
        &self,
        ws: &InfraConfig,
        head: Oid,
    ) -> Result<(Terraform, Oid, Option<Vec<u8>>), InfraError> {
        let base = self.base(&ws.name);
        let code = base.join("code");
        let dir = ws.dir.clone();
        let approvals_path = self.approvals_path();
        let (tree, files, approvals) = self
            .host
            .repo
            .read_at(head, move |snap| {
                let tree = snap.tree_id(&dir)?;
                let files = snap.files_under(&dir)?;
                let approvals = snap.read(&approvals_path)?;
                Ok((tree, files, approvals))
            })
            .await?;
        let tree =
            tree.ok_or_else(|| InfraError::Other(format!("{}: no such directory", ws.dir)))?;
        sync_dir(&code, &base.join("code-files.txt"), &files)?;
        let mut env = Vec::new();
        for (k, v) in &ws.env {
            let value = match v {
                EnvValue::Plain(s) => s.clone(),
                EnvValue::Secret(r) => r.read().map_err(|source| InfraError::Secret {
                    var: k.clone(),
                    source,
                })?,
            };
            env.push((k.clone(), value));
        }
        let tf = Terraform {
            bin: ws.terraform_bin.clone(),
            dir: code,
            env,
            deadline: tokio::time::Instant::now() + ws.timeout,
            timeout: ws.timeout,
        };
        Ok((tf, tree, approvals))
    }
}

/// Make `dir` hold exactly `files` (relative paths) plus what terraform keeps there
/// (`.terraform/`, lock file, local state): files from the previous sync that are gone from git
/// are removed, unchanged files are not rewritten.
fn sync_dir(
    dir: &Path,
    manifest: &Path,
    files: &[(String, Vec<u8>, bool)],
) -> Result<(), InfraError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let wanted: BTreeSet<&str> = files.iter().map(|(p, _, _)| p.as_str()).collect();
    for old in std::fs::read_to_string(manifest)
        .unwrap_or_default()
        .lines()
    {
        if !old.is_empty() && !wanted.contains(old) && safe_rel(old) {
            let _ = std::fs::remove_file(dir.join(old));
        }
    }
    for (rel, content, exec) in files {
        if !safe_rel(rel) {
            return Err(InfraError::Other(format!("refusing path {rel:?} from git")));
        }
        let path = dir.join(rel);
        if std::fs::read(&path).ok().as_deref() != Some(content.as_slice()) {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io_err(parent))?;
            }
            crate::rewrite::write_atomic(&path, content).map_err(io_err(&path))?;
        }
        let mode = if *exec { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(io_err(&path))?;
    }
    let list: Vec<&str> = wanted.into_iter().collect();
    std::fs::write(manifest, list.join("\n")).map_err(io_err(manifest))?;
    Ok(())
}

/// A relative path with no `..`, `.`, empty or `.git` components.
fn safe_rel(p: &str) -> bool {
    !p.starts_with('/')
        && p.split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && c != ".git")
}
