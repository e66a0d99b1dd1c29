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
        let mut out = Vec::new();
        let exists =
            self.walk_entries(dir, |path, entry| match (entry.kind(), entry.filemode()) {
                (Some(ObjectType::Blob), mode @ (MODE_BLOB | MODE_EXEC)) => {
                    let blob = self
                        .repo
                        .find_blob(entry.id())
                        .map_err(git_err(format!("read {dir}/{path}")))?;
                    out.push((path.to_owned(), blob.content().to_vec(), mode == MODE_EXEC));
                    Ok(())
                }
                _ => Err(GitError::File {
                    path: format!("{dir}/{path}"),
                    reason: "is a symlink or submodule; only regular files are used".into(),
                }),
            })?;
        if !exists {
            return Err(GitError::File {
                path: dir.into(),
                reason: "does not exist at the repo head".into(),
            });
        }
        Ok(out)
    }

    /// Visits every entry under `dir` that is not a directory, with its path relative to `dir`;
    /// an error from `visit` stops the walk and is returned. `Ok(false)` when `dir` is absent.
    fn walk_entries(
        &self,
        dir: &str,
        mut visit: impl FnMut(&str, &git2::TreeEntry<'_>) -> Result<(), GitError>,
    ) -> Result<bool, GitError> {
        let Some(id) = self.tree_id(dir)? else {
            return Ok(false);
        };
        let tree = self
            .repo
            .find_tree(id)
            .map_err(git_err(format!("read tree {dir}")))?;
        let mut stopped = None;
        tree.walk(git2::TreeWalkMode::PreOrder, |parent, entry| {
            if entry.kind() == Some(ObjectType::Tree) {
                return git2::TreeWalkResult::Ok;
            }
            let path = format!("{parent}{}", entry.name().unwrap_or_default());
            match visit(&path, entry) {
                Ok(()) => git2::TreeWalkResult::Ok,
                Err(e) => {
                    stopped = Some(e);
                    git2::TreeWalkResult::Abort
                }
            }
        })
        .or_else(|e| {
            if stopped.is_some() {
                Ok(())
            } else {
                Err(git_err(format!("walk {dir}"))(e))
            }
        })?;
        stopped.map_or(Ok(true), Err)
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
        let mut out = Vec::new();
        let exists = self.walk_entries(dir, |path, entry| {
            let path = format!("{dir}/{path}");
            if !plan::is_yaml(&path) {
                return Ok(());
            }
            match (entry.kind(), entry.filemode()) {
                (Some(ObjectType::Blob), MODE_BLOB | MODE_EXEC) => out.push(path),
                (_, MODE_LINK) => {
                    let e = plan::yaml_symlink(&path);
                    return Err(GitError::File {
                        path: e.path,
                        reason: e.reason,
                    });
                }
                _ => {}
            }
            Ok(())
        })?;
        if !exists {
            return Ok(None);
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
