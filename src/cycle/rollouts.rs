//! The cycle with rollouts on (a Kubernetes client and a Lease): only the leader writes; it
//! promotes what passed its gates, commits the policy's picks and the promotions in one commit,
//! then observes every rollout in flight and reverts + quarantines what failed.
//!
//! State is read from the Lease when this replica becomes the leader and saved back after every
//! cycle that changed it; git stays the truth for values, so a commit whose state save was lost
//! is adopted from the head instead of being made twice.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use git2::Oid;
use tokio::sync::Notify;

use super::{Agent, CycleError, Report, Scope, lock};
use crate::cluster::{self, Cluster};
use crate::config::{self, Config};
use crate::gitops::{self, CommitError, Pushed};
use crate::lease::{Elector, LeaseError};
use crate::plan::{self, EnvChange, PerEnv};
use crate::rollout::{self, Observation, Phase, State, env_policy, promotions, register};

/// How an unreachable API server is reported (details go to the log).
pub const KUBE_UNREACHABLE: &str = "cannot reach the Kubernetes API";

/// What rollouts need besides git: the cluster client, the Lease and the watch wake-up.
#[derive(Debug)]
pub struct Deploy {
    /// Kubernetes client and smoke checker.
    pub cluster: Cluster,
    /// Leader election and state storage.
    pub elector: Arc<Elector>,
    /// Notified by HelmRelease watches and leadership changes.
    pub wake: Arc<Notify>,
    /// Stops the watches.
    pub stop: tokio_util::sync::CancellationToken,
}

impl Agent {
    /// The rollout machinery, when `run` was given a Lease.
    pub fn deploy(&self) -> Option<&Arc<Deploy>> {
        self.deploy.get()
    }

    /// Turn rollouts on (once, before the first cycle).
    pub fn set_deploy(&self, d: Arc<Deploy>) {
        let _ = self.deploy.set(d);
    }

    async fn load_state(&self, d: &Deploy) -> State {
        if let Some(s) = lock(&self.memory).state.clone() {
            return s;
        }
        let state = match d.elector.state().await {
            Some(text) => match serde_json::from_str::<State>(&text) {
                Ok(s) => {
                    tracing::info!(
                        rollouts = s.rollouts.len(),
                        "resumed rollout state from the Lease"
                    );
                    s
                }
                Err(e) => {
                    tracing::error!(error = %e, "the rollout state on the Lease is unreadable; starting from git");
                    State::default()
                }
            },
            None => State::default(),
        };
        self.notifier_threads_seed(&state);
        state
    }

    /// One cycle with rollouts. Only the leader gets here.
    pub(super) async fn rollout_cycle(
        &self,
        d: &Deploy,
        head: Oid,
        cfg: Arc<Config>,
        scope: &Scope,
    ) -> Result<Report, CycleError> {
        self.ensure_watches(d, &cfg);
        let gates = self.gates();
        let (desired, image_errors) = self.select(&cfg, scope).await;
        let mut state = self.load_state(d).await;
        let before = state.clone();
        let now = Utc::now();

        let mut per_env = plan::policy_targets(&cfg, &desired);
        for (env, m) in promotions(&cfg, &state, &gates) {
            per_env.entry(env).or_default().extend(m);
        }
        per_env.retain(|_, m| !m.is_empty());
        let (commit, changes, at) = if per_env.is_empty() {
            (None, Vec::new(), head)
        } else if !d.elector.is_leader().await {
            // Lost the Lease during this cycle: write nothing; the new leader has the state.
            lock(&self.memory).state = None;
            return Ok(Report {
                head,
                commit: None,
                changes: Vec::new(),
                desired,
                image_errors,
                requeue: None,
                follower: true,
            });
        } else {
            self.commit_plan(&cfg, &per_env).await?
        };
        let reg = register(&cfg, &mut state, &per_env, &changes, commit, at, now);
        for old in &reg.superseded {
            self.rollout_post(&state, old, &format!("{}: {}", old.env, old.reason));
        }
        if let Some(c) = commit {
            self.announce_commit(&cfg, &state, &reg.started, &changes, c);
        }
        let (wake, errors) = self.advance(&cfg, d, &gates, &mut state).await;
        if state == before {
            lock(&self.memory).state = Some(state);
        } else {
            self.save_state(d, &state).await;
        }
        if errors.iter().any(|e| e == KUBE_UNREACHABLE) {
            // Said the same way as a follower cut off from its Lease, so Slack hears it once.
            return Err(CycleError::Cluster(KUBE_UNREACHABLE.to_owned()));
        }
        let mut image_errors = image_errors;
        image_errors.extend(errors.into_iter().map(|e| ("rollouts".to_owned(), e)));
        Ok(Report {
            head: at,
            commit,
            changes,
            desired,
            image_errors,
            requeue: wake,
            follower: false,
        })
    }

    fn ensure_watches(&self, d: &Deploy, cfg: &Config) {
        let refs: Vec<config::ReleaseRef> = cfg
            .environments
            .values()
            .filter_map(|e| e.release.clone())
            .collect();
        let mut mem = lock(&self.memory);
        let new: Vec<config::ReleaseRef> = refs
            .into_iter()
            .filter(|r| mem.watched.insert(format!("{}/{}", r.namespace, r.name)))
            .collect();
        drop(mem);
        if !new.is_empty() {
            d.cluster.watch(&new, d.wake.clone(), d.stop.clone());
        }
    }

    /// Commit the desired values of every environment in one commit; (commit, changes, head).
    pub(super) async fn commit_plan(
        &self,
        cfg: &Arc<Config>,
        per_env: &PerEnv,
    ) -> Result<(Option<Oid>, Vec<EnvChange>, Oid), CycleError> {
        let author = cfg.git.author.clone();
        let plan_cfg = cfg.clone();
        let plan_desired = per_env.clone();
        let pushed = self
            .with_git(move |c| {
                c.commit_and_push(&author, |snap| {
                    plan::plan_env_edits(&plan_cfg, &plan_desired, |p| snap.read(p))
                })
            })
            .await?;
        match pushed {
            Ok(Pushed::Unchanged { head }) => Ok((None, Vec::new(), head)),
            Ok(Pushed::Committed {
                commit,
                attempts,
                detail,
            }) => {
                self.metrics.commit();
                tracing::info!(commit = %gitops::short(commit), attempts, changes = detail.len(), "pushed");
                for c in &detail {
                    tracing::info!(commit = %gitops::short(commit), "{}", plan::describe(c));
                }
                Ok((Some(commit), detail, commit))
            }
            Err(CommitError::Git(e)) => Err(e.into()),
            Err(CommitError::Plan(e)) => {
                self.metrics.error("plan");
                Err(e.into())
            }
        }
    }

    fn announce_commit(
        &self,
        cfg: &Config,
        state: &State,
        started: &[(String, String)],
        changes: &[EnvChange],
        commit: Oid,
    ) {
        let link = crate::notify::commit_link(&self.opts.url, &commit.to_string());
        let shown = match &link {
            Some(l) => format!("<{l}|{}>", gitops::short(commit)),
            None => gitops::short(commit),
        };
        for (env, image) in started {
            let Some(r) = state.get(env, image) else {
                continue;
            };
            let promoted = cfg
                .environments
                .get(env)
                .and_then(|e| e.promote_from.as_deref());
            if promoted.is_none() {
                self.rollout_post(
                    state,
                    r,
                    &format!("new tag {} found for {image}", r.pinned.tag),
                );
            }
            let lines: Vec<String> = changes
                .iter()
                .filter(|c| c.env == *env && c.change.image == *image)
                .map(plan::describe)
                .collect();
            self.rollout_post(
                state,
                r,
                &format!("{env}: committed {shown} ({})", lines.join("; ")),
            );
        }
    }

    /// Observe and step every rollout in flight; revert what failed. Returns the earliest wake-up
    /// and the errors met (cluster unreachable, revert not pushed).
    async fn advance(
        &self,
        cfg: &Arc<Config>,
        d: &Deploy,
        gates: &config::Gates,
        state: &mut State,
    ) -> (Option<Duration>, Vec<String>) {
        let mut wake: Option<Duration> = None;
        let mut errors = Vec::new();
        let keys: Vec<String> = state.rollouts.keys().cloned().collect();
        for key in keys {
            let Some(r) = state.rollouts.get(&key).cloned() else {
                continue;
            };
            if r.phase.is_terminal() {
                continue;
            }
            let Some(policy) = env_policy(cfg, &r.env) else {
                state.rollouts.remove(&key);
                continue;
            };
            let env = &cfg.environments[&r.env];
            let needs = rollout::needs(&r, &policy);
            let mut obs = Observation {
                approved: policy
                    .downstream
                    .as_ref()
                    .is_some_and(|g| gates.approved(&g.to, &r.image, &r.pinned.tag)),
                ..Observation::default()
            };
            if needs.release
                && let Some(rel) = &env.release
            {
                match d.cluster.helm_release(rel).await {
                    Ok(obj) => {
                        let reconciled = match obj.as_ref().and_then(cluster::attempted_commit) {
                            Some(rev) => self.reconciled(&rev, &r.commit).await,
                            None => false,
                        };
                        obs.release = Some(cluster::release_state(obj.as_ref(), reconciled));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the HelmRelease");
                        errors.push(KUBE_UNREACHABLE.to_owned());
                        wake = min_wake(wake, Some(policy.resync));
                        continue;
                    }
                }
            }
            if needs.smoke
                && !matches!(obs.release, Some(rollout::Release::Failed(_)))
                && let Some(s) = &env.smoke
            {
                obs.smoke = Some(d.cluster.smoke(s, &r.pinned.tag).await);
            }
            let step = rollout::step(&r, &obs, &policy, Utc::now());
            if step.next.phase != r.phase {
                tracing::info!(env = %r.env, image = %r.image, tag = %r.pinned.tag, from = %r.phase, to = %step.next.phase, reason = %step.next.reason, "rollout");
            }
            for e in &step.events {
                self.rollout_post(state, &step.next, &e.text(&r.env, &r.pinned.tag));
            }
            let mut next = step.next;
            let mut w = step.wake;
            if next.phase == Phase::Failed && d.elector.is_leader().await {
                match self.revert(cfg, &next).await {
                    Ok(commit) => {
                        let back = next
                            .previous
                            .as_ref()
                            .map_or("(nothing)".to_owned(), |p| p.tag.clone());
                        let shown = commit.map_or("(already in git)".to_owned(), gitops::short);
                        next = rollout::reverted(&next, Utc::now());
                        self.rollout_post(
                            state,
                            &next,
                            &format!("{}: reverted in {shown}: back to {back}", r.env),
                        );
                        self.rollout_post(state, &next, &format!("{} {} quarantined: the policy will not pick it and it will not be promoted until a commit removes it from config/quarantine.yaml", r.image, r.pinned.tag));
                        w = Some(Duration::ZERO);
                    }
                    Err(e) => {
                        errors.push(format!(
                            "revert of {} {} in {}: {e}",
                            r.image, r.pinned.tag, r.env
                        ));
                        w = Some(Duration::from_secs(5));
                    }
                }
            }
            state.rollouts.insert(key, next);
            wake = min_wake(wake, w);
        }
        (wake, errors)
    }

    /// Whether revision `rev` (a full or abbreviated sha) is `commit` or descends from it.
    async fn reconciled(&self, rev: &str, commit: &str) -> bool {
        let (rev, commit) = (rev.to_owned(), commit.to_owned());
        self.with_git(move |c| c.contains(&rev, &commit))
            .await
            .unwrap_or(false)
    }

    async fn save_state(&self, d: &Deploy, state: &State) {
        let mut state = state.clone();
        // Only threads of tags still tracked, so the annotation stays small.
        let live: std::collections::BTreeSet<String> = state
            .rollouts
            .values()
            .map(|r| format!("{}:{}", r.image, r.pinned.tag))
            .collect();
        state.threads = self.notifier_threads();
        state.threads.retain(|k, _| live.contains(k));
        let text = match serde_json::to_string(&state) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot serialize the rollout state");
                return;
            }
        };
        match d.elector.save_state(&text).await {
            Ok(()) => lock(&self.memory).state = Some(state),
            Err(LeaseError::NotLeader) => {
                tracing::warn!(
                    "lost the Lease before saving the rollout state; the new leader goes on from git and its state"
                );
                lock(&self.memory).state = None;
            }
            Err(e) => {
                // Keep it in memory and try again next cycle; git holds the values meanwhile.
                tracing::warn!(error = %e, "could not save the rollout state; retrying next cycle");
                lock(&self.memory).state = Some(state);
            }
        }
    }
}

fn min_wake(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}
