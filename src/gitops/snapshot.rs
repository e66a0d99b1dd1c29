//! A read-only view of one commit's tree: file bytes, directory listings, modes.

use std::path::Path;

use git2::{FileMode, ObjectType, Oid, Repository};

use super::{GitError, MODE_BLOB, MODE_EXEC, MODE_LINK, git_err};
use crate::plan;

/// Read-only view of one commit's tree.
pub struct Snapshot<'r> {
    pub(super) repo: &'r Repository,
    pub(super) tree: git2::Tree<'r>,
    /// The commit.
    pub commit: Oid,
}

impl Snapshot<'_> {
    /// A regular file's bytes; `Ok(None)` when absent. Symlinks and submodules are refused.
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>, GitError> {
        let entry = match self.tree.get_path(Path::new(path)) {
            Ok(e) => e,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(git_err(format!("look up {path}"))(e)),
        };
        match (entry.kind(), entry.filemode()) {
            (Some(ObjectType::Blob), MODE_BLOB | MODE_EXEC) => {}
            (_, MODE_LINK) => {
                return Err(GitError::File {
                    path: path.into(),
                    reason: "is a symlink; tagflow only edits regular files".into(),
                });
            }
            _ => {
                return Err(GitError::File {
                    path: path.into(),
                    reason: "is not a regular file".into(),
                });
            }
        }
        let blob = self
            .repo
            .find_blob(entry.id())
            .map_err(git_err(format!("read {path}")))?;
        Ok(Some(blob.content().to_vec()))
    }

    /// Id of the tree at directory `dir` (`"."` for the root); `Ok(None)` when absent. Changes
    /// exactly when something under `dir` changes, unlike the commit id.
    pub fn tree_id(&self, dir: &str) -> Result<Option<Oid>, GitError> {
        if dir == "." {
            return Ok(Some(self.tree.id()));
        }
        match self.tree.get_path(Path::new(dir)) {
            Ok(e) if e.kind() == Some(ObjectType::Tree) => Ok(Some(e.id())),
            Ok(_) => Err(GitError::File {
                path: dir.into(),
                reason: "is not a directory".into(),
            }),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(git_err(format!("look up {dir}"))(e)),
        }
    }

    /// Every regular file under directory `dir`, as (path relative to `dir`, bytes, executable).
    /// Symlinks and submodules are refused: their targets are outside what git vouches for.
    pub fn files_under(&self, dir: &str) -> Result<Vec<(String, Vec<u8>, bool)>, GitError> {
        let Some(id) = self.tree_id(dir)? else {
            return Err(GitError::File {
                path: dir.into(),
                reason: "does not exist at the repo head".into(),
            });
        };
        let tree = self
            .repo
            .find_tree(id)
            .map_err(git_err(format!("read tree {dir}")))?;
        let mut out = Vec::new();
        let mut refused = None;
        tree.walk(git2::TreeWalkMode::PreOrder, |parent, entry| {
            let path = format!("{parent}{}", entry.name().unwrap_or_default());
            match (entry.kind(), entry.filemode()) {
                (Some(ObjectType::Tree), _) => git2::TreeWalkResult::Ok,
                (Some(ObjectType::Blob), mode @ (MODE_BLOB | MODE_EXEC)) => {
                    match self.repo.find_blob(entry.id()) {
                        Ok(b) => out.push((path, b.content().to_vec(), mode == MODE_EXEC)),
                        Err(e) => {
                            refused = Some(git_err(format!("read {dir}/{path}"))(e));
                            return git2::TreeWalkResult::Abort;
                        }
                    }
                    git2::TreeWalkResult::Ok
                }
                _ => {
                    refused = Some(GitError::File {
                        path: format!("{dir}/{path}"),
                        reason: "is a symlink or submodule; only regular files are used".into(),
                    });
                    git2::TreeWalkResult::Abort
                }
            }
        })
        .or_else(|e| {
            if refused.is_some() {
                Ok(())
            } else {
                Err(git_err(format!("walk {dir}"))(e))
            }
        })?;
        match refused {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// [`Snapshot::read`] as the pure planner reads files.
    pub fn reader(&self) -> impl Fn(&str) -> Result<Option<Vec<u8>>, plan::ReadError> + '_ {
        |path| {
            self.read(path).map_err(|e| plan::ReadError {
                path: path.to_owned(),
                reason: e.to_string(),
            })
        }
    }

    /// Every `.yaml`/`.yml` regular file under `dir` as repo paths in byte order (see
    /// [`plan::Files::yaml_files`]): a YAML-named symlink is refused, other symlinks and
    /// submodules are skipped, and nothing is followed.
    pub fn yaml_files(&self, dir: &str) -> Result<Option<Vec<String>>, GitError> {
        let Some(id) = self.tree_id(dir)? else {
            return Ok(None);
        };
        let tree = self
            .repo
            .find_tree(id)
            .map_err(git_err(format!("read tree {dir}")))?;
        let mut out = Vec::new();
        let mut link = None;
        tree.walk(git2::TreeWalkMode::PreOrder, |parent, entry| {
            let path = format!("{dir}/{parent}{}", entry.name().unwrap_or_default());
            let is_file = entry.kind() == Some(ObjectType::Blob);
            match entry.filemode() {
                MODE_BLOB | MODE_EXEC if is_file && plan::is_yaml(&path) => out.push(path),
                MODE_LINK if plan::is_yaml(&path) => {
                    link = Some(path);
                    return git2::TreeWalkResult::Abort;
                }
                _ => {}
            }
            git2::TreeWalkResult::Ok
        })
        .or_else(|e| {
            if link.is_some() {
                Ok(())
            } else {
                Err(git_err(format!("walk {dir}"))(e))
            }
        })?;
        if let Some(path) = link {
            let e = plan::yaml_symlink(&path);
            return Err(GitError::File {
                path: e.path,
                reason: e.reason,
            });
        }
        out.sort();
        Ok(Some(out))
    }

    pub(super) fn mode_of(&self, path: &str) -> FileMode {
        match self.tree.get_path(Path::new(path)).map(|e| e.filemode()) {
            Ok(MODE_EXEC) => FileMode::BlobExecutable,
            _ => FileMode::Blob,
        }
    }
}

impl plan::Files for Snapshot<'_> {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, plan::ReadError> {
        Snapshot::read(self, path).map_err(|e| plan::ReadError {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    fn yaml_files(&self, dir: &str) -> Result<Option<Vec<String>>, plan::ReadError> {
        Snapshot::yaml_files(self, dir).map_err(|e| match e {
            GitError::File { path, reason } => plan::ReadError { path, reason },
            other => plan::ReadError {
                path: dir.to_owned(),
                reason: other.to_string(),
            },
        })
    }
}

impl std::fmt::Debug for Snapshot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Snapshot({})", self.commit)
    }
}
