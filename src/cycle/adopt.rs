//! Rollouts found in git: tagflow's own commits, read from their trailers, for the
//! (environment, image) pairs the rollout state knows nothing of — a rollout pushed by a
//! replica that died before it saved its state is followed and, if it fails, reverted.

use git2::Oid;

use super::Reconciler;
use crate::plan::PerEnv;
use crate::rollout::{self, Adopted, FromGit, State};

impl Reconciler {
    /// Tagflow's commits in git for the (env, image) pairs the state knows nothing of: a
    /// rollout pushed by a replica that died before it saved its state. A history that cannot
    /// be read means nothing is adopted (the values are then a baseline), said in the log.
    pub(super) async fn found_in_git(&self, state: &State, per_env: &PerEnv, head: Oid) -> FromGit {
        let wanted = rollout::unknown(state, per_env);
        if wanted.is_empty() {
            return FromGit::new();
        }
        match self.repo.last_sets(head, wanted).await {
            Ok(found) => found
                .into_iter()
                .map(|((env, image), (commit, record))| {
                    (State::key(&env, &image), Adopted::new(commit, record))
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read tagflow's commits from the history; taking the values in git as running");
                FromGit::new()
            }
        }
    }
}
