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

/// How long [`Checkout::commit_and_push`] keeps re-planning on a branch that other writers
/// keep moving before it gives up until the next cycle: a time, not a count, so a burst of
/// pushes is outlasted however fast each lost round is.
pub(super) const RETRY_BUDGET: Duration = Duration::from_secs(15);
/// Attempts allowed within [`RETRY_BUDGET`] (a cap for a remote that rejects in no time).
pub(super) const MAX_ATTEMPTS: u32 = 100;

/// The pause after the `attempt`-th lost race, `elapsed` into the retries; `None` once the
/// budget or the attempt cap is spent. `unit` is a uniform random number in `[0, 1)`.
///
/// Short and fully jittered: the rival who just moved the branch is busy making its next commit,
/// so re-fetching at once is the best chance, and a random pause (up to 250 ms, about one period
/// of a writer pushing flat out) keeps tagflow's attempts from locking into the same phase of
/// a writer's rhythm, or of another replica's, round after round.
pub(super) fn retry_delay(attempt: u32, elapsed: Duration, unit: f64) -> Option<Duration> {
    if attempt >= MAX_ATTEMPTS || elapsed >= RETRY_BUDGET {
        return None;
    }
    let ceiling = Duration::from_millis(20 << attempt.min(4)).min(Duration::from_millis(250));
    Some(
        ceiling
            .mul_f64(unit.clamp(0.0, 1.0))
            .min(RETRY_BUDGET - elapsed),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn retry_delays_are_short_jittered_and_bounded_by_time() {
        // (attempt, elapsed, unit) -> delay
        let cases = [
            (1, MS(0), 0.0, Some(MS(0))),
            (1, MS(0), 0.5, Some(MS(20))),
            (2, MS(300), 0.999, Some(MS(80).mul_f64(0.999))),
            (3, MS(600), 1.0, Some(MS(160))),
            (4, MS(900), 1.0, Some(MS(250))),
            (60, MS(9_000), 1.0, Some(MS(250))),
            // Never sleeps past the budget, then stops.
            (20, RETRY_BUDGET - MS(10), 1.0, Some(MS(10))),
            (20, RETRY_BUDGET, 0.1, None),
            (MAX_ATTEMPTS, MS(1_000), 0.1, None),
        ];
        for (attempt, elapsed, unit, want) in cases {
            assert_eq!(
                retry_delay(attempt, elapsed, unit),
                want,
                "attempt {attempt} at {elapsed:?}, unit {unit}"
            );
        }
    }

    #[test]
    fn more_than_eight_lost_races_are_retried_within_the_budget() {
        // The old policy gave up after 8 attempts whatever the time; a writer pushing flat
        // out wins 8 rounds in about 2 s.
        let mut elapsed = Duration::ZERO;
        let mut attempt = 1;
        while let Some(d) = retry_delay(attempt, elapsed, 0.5) {
            elapsed += d + MS(150); // a lost round: fetch, plan, rejected push
            attempt += 1;
        }
        assert!(attempt > 50, "{attempt} attempts");
        assert!(elapsed >= RETRY_BUDGET && elapsed < RETRY_BUDGET + MS(400));
    }
}
