//! Tagflow's own commits in the history: what the last of them set for an (environment, image),
//! read from its trailers, for a replica that has no rollout state for it.

use std::collections::BTreeMap;

use git2::Oid;

use super::{Checkout, GitError, git_err};
use crate::plan::trailer::{self, SetRecord};

/// Tagflow's last commit per (env, image), with what its trailers say.
pub type LastSets = BTreeMap<(String, String), (Oid, SetRecord)>;

/// How far back the first-parent history is read for tagflow's last commit of an image.
pub const HISTORY_DEPTH: usize = 500;

impl Checkout {
    /// For each (env, image) of `wanted`, the last commit on the first-parent history of `from`
    /// (at most [`HISTORY_DEPTH`] commits back) whose trailers say tagflow set that image there,
    /// unless tagflow reverted it since. Keys missing from the answer have no such commit.
    pub fn last_sets(&self, from: Oid, wanted: &[(String, String)]) -> Result<LastSets, GitError> {
        let mut found = BTreeMap::new();
        let mut open: Vec<&(String, String)> = wanted.iter().collect();
        let mut walk = self.repo.revwalk().map_err(git_err("walk history"))?;
        walk.push(from).map_err(git_err("walk history"))?;
        walk.simplify_first_parent()
            .map_err(git_err("walk history"))?;
        for id in walk.take(HISTORY_DEPTH) {
            if open.is_empty() {
                break;
            }
            let id = id.map_err(git_err("walk history"))?;
            let commit = self.repo.find_commit(id).map_err(git_err("read commit"))?;
            let message = String::from_utf8_lossy(commit.message_bytes());
            open.retain(|key @ (env, image)| {
                if trailer::is_revert(&message, env, image) {
                    return false;
                }
                match trailer::parse(&message, env, image) {
                    Some(record) => {
                        found.insert((*key).clone(), (id, record));
                        false
                    }
                    None => true,
                }
            });
        }
        Ok(found)
    }
}

/// Tagflow's update commits after a given one, oldest first.
pub type Since = Vec<(Oid, String)>;

impl Checkout {
    /// Tagflow's commits (those with a `Tagflow-Set:` trailer) on the first-parent history of
    /// `from` after `until`, oldest first, with their messages; `None` when `until` is not
    /// within [`HISTORY_DEPTH`] commits of `from` (history rewritten, or too far behind).
    pub fn tagflow_commits_since(&self, from: Oid, until: Oid) -> Result<Option<Since>, GitError> {
        let mut out = Vec::new();
        let mut walk = self.repo.revwalk().map_err(git_err("walk history"))?;
        walk.push(from).map_err(git_err("walk history"))?;
        walk.simplify_first_parent()
            .map_err(git_err("walk history"))?;
        for id in walk.take(HISTORY_DEPTH) {
            let id = id.map_err(git_err("walk history"))?;
            if id == until {
                out.reverse();
                return Ok(Some(out));
            }
            let commit = self.repo.find_commit(id).map_err(git_err("read commit"))?;
            let message = String::from_utf8_lossy(commit.message_bytes()).into_owned();
            if message.contains("\nTagflow-Set: ") {
                out.push((id, message));
            }
        }
        Ok(None)
    }
}

/// One commit as the status page lists it: (id, subject, commit time in seconds).
pub type Recent = Vec<(Oid, String, i64)>;

impl Checkout {
    /// The last `n` commits by `email` on the fetched branch (first parents, newest first),
    /// without fetching: the cycle keeps the branch fresh.
    pub fn recent_commits(&self, email: &str, n: usize) -> Result<Recent, GitError> {
        let head = self.head()?;
        let mut walk = self.repo.revwalk().map_err(git_err("walk history"))?;
        walk.push(head).map_err(git_err("walk history"))?;
        walk.simplify_first_parent()
            .map_err(git_err("walk history"))?;
        let mut out = Vec::new();
        for id in walk.take(HISTORY_DEPTH) {
            let id = id.map_err(git_err("walk history"))?;
            let commit = self.repo.find_commit(id).map_err(git_err("read commit"))?;
            if commit.author().email().ok() == Some(email) {
                let subject = String::from_utf8_lossy(commit.message_bytes())
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned();
                out.push((id, subject, commit.time().seconds()));
                if out.len() == n {
                    break;
                }
            }
        }
        Ok(out)
    }
}
