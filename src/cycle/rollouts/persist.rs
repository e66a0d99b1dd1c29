//! Reading and saving the rollout state (on the Lease or on `refs/tagflow/state`).

use std::collections::BTreeSet;

use super::{Rollouts, StateStore};
use crate::cycle::{CycleError, Reconciler};
use crate::k8s::lease::LeaseError;
use crate::rollout::State;

impl Reconciler {
    pub(super) async fn load_state(&self, ro: &Rollouts) -> Result<State, CycleError> {
        if let Some(s) = ro.memory().state.clone() {
            return Ok(s);
        }
        let text = match (ro.store, &ro.elector) {
            (StateStore::Lease, Some(e)) => e.state().await.map(String::into_bytes),
            _ => {
                let read = self.repo.read_state().await?;
                ro.memory().state_commit = read.as_ref().map(|(c, _)| *c);
                read.map(|(_, t)| t)
            }
        };
        let state = match text {
            Some(text) => match serde_json::from_slice::<State>(&text) {
                Ok(s) => {
                    tracing::info!(
                        rollouts = s.rollouts.len(),
                        store = ?ro.store,
                        "resumed rollout state"
                    );
                    s
                }
                Err(e) => {
                    tracing::error!(error = %e, store = ?ro.store, "the stored rollout state is unreadable; starting from git");
                    State::default()
                }
            },
            None => State::default(),
        };
        self.poster.seed_threads(&state.threads);
        Ok(state)
    }

    pub(super) async fn save_state(&self, ro: &Rollouts, state: &State) {
        let mut state = state.clone();
        // Only threads of tags still tracked, so the annotation stays small.
        let live: BTreeSet<String> = state
            .rollouts
            .values()
            .map(|r| format!("{}:{}", r.image, r.pinned.tag))
            .collect();
        state.threads = self.poster.threads();
        state.threads.retain(|k, _| live.contains(k));
        let text = match serde_json::to_string(&state) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot serialize the rollout state");
                return;
            }
        };
        if ro.store == StateStore::Git {
            let base = ro.memory().state_commit;
            let git = self
                .current
                .config()
                .map(|c| c.git.clone())
                .unwrap_or_default();
            match self.repo.save_state(base, text.into_bytes(), git).await {
                Ok(Some(commit)) => {
                    let mut mem = ro.memory();
                    mem.state = Some(state);
                    mem.state_commit = Some(commit);
                }
                Ok(None) => {
                    tracing::warn!(
                        "another writer saved the rollout state first; reading it again next cycle"
                    );
                    self.metrics.error("state");
                    ro.forget();
                }
                Err(e) => {
                    // Keep it in memory and try again next cycle; git holds the values meanwhile.
                    tracing::warn!(error = %e, "could not save the rollout state; retrying next cycle");
                    ro.memory().state = Some(state);
                }
            }
            return;
        }
        let Some(elector) = &ro.elector else {
            return;
        };
        match elector.save_state(&text).await {
            Ok(()) => ro.memory().state = Some(state),
            Err(LeaseError::NotLeader) => {
                tracing::warn!(
                    "lost the Lease before saving the rollout state; the new leader goes on from git and its state"
                );
                ro.forget();
            }
            Err(e) => {
                // Keep it in memory and try again next cycle; git holds the values meanwhile.
                tracing::warn!(error = %e, "could not save the rollout state; retrying next cycle");
                ro.memory().state = Some(state);
            }
        }
    }
}
