//! Refs outside the branches (`refs/tagflow/state`): fetch one, record a commit on it, push it
//! with a compare-and-swap, read a file of it.

use git2::Oid;

use super::{Checkout, GitError, MODE_BLOB, PushResult, git_err};
use crate::config::GitConfig;

impl Checkout {
    /// Fetch the remote's `refname` (outside the branches, e.g. `refs/tagflow/state`) into a
    /// local copy; `None` when the remote has no such ref.
    pub fn fetch_ref(&self, refname: &str) -> Result<Option<Oid>, GitError> {
        let local = format!(
            "refs/tagflow-remote/{}",
            refname.trim_start_matches("refs/")
        );
        let mut remote = self
            .repo
            .find_remote("origin")
            .map_err(git_err("find origin"))?;
        let mut opts = self.fetch_options();
        opts.prune(git2::FetchPrune::Off);
        // Ask what the remote has first: fetching a ref it lacks would fail the whole fetch.
        remote
            .connect_auth(
                git2::Direction::Fetch,
                Some(self.auth.callbacks(&self.remote)),
                None,
            )
            .map_err(git_err(format!(
                "connect to {}",
                crate::secret::display_url(&self.url)
            )))?;
        let exists = remote
            .list()
            .map_err(git_err("list remote refs"))?
            .iter()
            .any(|h| h.name() == refname);
        remote.disconnect().map_err(git_err("disconnect"))?;
        if !exists {
            return Ok(None);
        }
        let spec = format!("+{refname}:{local}");
        remote
            .fetch(&[&spec], Some(&mut opts), None)
            .map_err(git_err(format!("fetch {refname}")))?;
        match self.repo.refname_to_id(&local) {
            Ok(id) => Ok(Some(id)),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(git_err(format!("read {local}"))(e)),
        }
    }

    /// A single-file commit on top of `parent` (or a root commit), not on any branch.
    pub fn record(
        &self,
        parent: Option<Oid>,
        file: &str,
        content: &[u8],
        message: &str,
        git: &GitConfig,
    ) -> Result<Oid, GitError> {
        let blob = self
            .repo
            .blob(content)
            .map_err(git_err("store the state"))?;
        let mut tb = self
            .repo
            .treebuilder(None)
            .map_err(git_err("build the state tree"))?;
        tb.insert(file, blob, MODE_BLOB)
            .map_err(git_err("build the state tree"))?;
        let tree = tb.write().map_err(git_err("write the state tree"))?;
        let tree = self
            .repo
            .find_tree(tree)
            .map_err(git_err("find the state tree"))?;
        let parent = parent
            .map(|p| self.repo.find_commit(p))
            .transpose()
            .map_err(git_err("find the previous state"))?;
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        self.create_commit(git, message, &tree, &parents)
    }

    /// Move the remote's `refname` from `base` to `commit` (compare-and-swap: `false` when the
    /// ref moved since `base` was read).
    pub fn push_ref(
        &self,
        refname: &str,
        commit: Oid,
        base: Option<Oid>,
    ) -> Result<bool, GitError> {
        Ok(matches!(
            self.push(refname, commit, base)?,
            PushResult::Accepted
        ))
    }

    /// The bytes of `file` in the tree of `commit`.
    pub fn read_file_at(&self, commit: Oid, file: &str) -> Result<Option<Vec<u8>>, GitError> {
        self.snapshot(commit)?.read(file)
    }
}
