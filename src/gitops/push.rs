//! Pushing a commit: to a remote over ssh:// or https:// (the server refuses a non-fast-forward),
//! or to a repo on this machine by compare-and-swap; forced only onto tagflow's own PR branches.

use std::time::Duration;

use git2::{Oid, Repository};

use super::{Checkout, GitError, git_err};

impl Checkout {
    /// Put `commit` on the remote's `refname` if it is still at `base` (`None`: absent), never
    /// forced: `commit` must descend from `base`, so the server refuses anything else.
    pub(super) fn push(
        &self,
        refname: &str,
        commit: Oid,
        base: Option<Oid>,
    ) -> Result<PushResult, GitError> {
        self.push_with(refname, commit, base, false)
    }

    /// [`Self::push`], or with `force` a forced update: only for tagflow's own PR branches
    /// ([`branch`]), never the target branch or a ref outside `refs/heads/`.
    pub(super) fn push_with(
        &self,
        refname: &str,
        commit: Oid,
        base: Option<Oid>,
        force: bool,
    ) -> Result<PushResult, GitError> {
        if force
            && (refname == format!("refs/heads/{}", self.branch)
                || !refname.starts_with("refs/heads/"))
        {
            return Err(GitError::Setup(format!("refusing to force-push {refname}")));
        }
        if self.remote.scheme == "file" {
            return self.push_local(refname, commit, base);
        }
        let outgoing = "refs/tagflow/outgoing";
        self.repo
            .reference(outgoing, commit, true, "tagflow outgoing")
            .map_err(git_err("stage the outgoing commit"))?;
        let mut remote = self
            .repo
            .find_remote("origin")
            .map_err(git_err("find origin"))?;
        let rejected = std::cell::RefCell::new(None::<String>);
        let mut cb = self.auth.callbacks(&self.remote);
        cb.push_update_reference(|_ref, status| {
            if let Some(s) = status {
                *rejected.borrow_mut() = Some(s.to_owned());
            }
            Ok(())
        });
        let mut opts = git2::PushOptions::new();
        opts.remote_callbacks(cb);
        // No leading '+' (but on tagflow's own PR branch): a push that is not a fast-forward
        // is refused by the server.
        let spec = format!("{}{outgoing}:{refname}", if force { "+" } else { "" });
        let result = remote.push(&[&spec], Some(&mut opts));
        drop(opts);
        match result {
            Ok(()) => Ok(match rejected.into_inner() {
                Some(why) => PushResult::Rejected(why),
                None => PushResult::Accepted,
            }),
            Err(e) if is_non_fast_forward(&e) => Ok(PushResult::Rejected(e.message().to_owned())),
            Err(e) => Err(git_err(format!(
                "push to {}",
                crate::secret::display_url(&self.url)
            ))(e)),
        }
    }

    /// Push to a repo on this machine. libgit2's own local transport checks fast-forward
    /// against the ref it read at connect time and then writes the ref unconditionally, so a
    /// writer landing in between was overwritten. Instead: copy the objects, then move the ref
    /// only if it still points at `base` (a compare-and-swap under git's ref lock, the same
    /// guarantee `git-receive-pack` gives ssh:// and https:// pushes).
    fn push_local(
        &self,
        name: &str,
        commit: Oid,
        base: Option<Oid>,
    ) -> Result<PushResult, GitError> {
        use std::io::Write as _;
        let path = url::Url::parse(&self.url)
            .ok()
            .and_then(|u| u.to_file_path().ok())
            .ok_or_else(|| GitError::Setup(format!("{} is not a local path", self.url)))?;
        let remote =
            Repository::open(&path).map_err(git_err(format!("open {}", path.display())))?;
        let mut pack = self
            .repo
            .packbuilder()
            .map_err(git_err("pack the commit"))?;
        pack.insert_commit(commit)
            .map_err(git_err("pack the commit"))?;
        let odb = remote.odb().map_err(git_err("open the remote's objects"))?;
        let mut writer = odb
            .packwriter()
            .map_err(git_err("write to the remote's objects"))?;
        let mut failed = None;
        pack.foreach(|chunk| match writer.write_all(chunk) {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        })
        .map_err(git_err("copy objects to the remote"))?;
        if let Some(e) = failed {
            return Err(GitError::Setup(format!(
                "failed to copy objects to {}: {e}",
                path.display()
            )));
        }
        writer
            .commit()
            .map_err(git_err("store objects in the remote"))?;
        let moved = match base {
            Some(base) => remote.reference_matching(name, commit, true, base, "tagflow push"),
            // Create only: fails when someone else created it first.
            None => remote.reference(name, commit, false, "tagflow push"),
        };
        match moved {
            Ok(_) => Ok(PushResult::Accepted),
            Err(e)
                if matches!(
                    e.code(),
                    git2::ErrorCode::Modified
                        | git2::ErrorCode::Locked
                        | git2::ErrorCode::NotFound
                        | git2::ErrorCode::Exists
                ) =>
            {
                Ok(PushResult::Rejected(format!(
                    "{name} moved: {}",
                    e.message()
                )))
            }
            Err(e) => Err(git_err(format!("update {name} in {}", path.display()))(e)),
        }
    }
}

pub(super) enum PushResult {
    Accepted,
    Rejected(String),
}

fn is_non_fast_forward(e: &git2::Error) -> bool {
    e.code() == git2::ErrorCode::NotFastForward
        || e.message().contains("non-fast-forward")
        || e.message().contains("fetch first")
        || e.message().contains("cannot push because a reference that you are trying to update on the remote contains commits")
}

pub(super) fn backoff(attempt: u32) -> Duration {
    // Spread retries of racing writers apart: exponential with a little per-process jitter.
    let jitter = u64::from(std::process::id() % 50) + u64::from(attempt) * 7 % 50;
    Duration::from_millis(50 * 2u64.pow(attempt.min(5)) + jitter)
}
