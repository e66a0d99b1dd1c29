//! The cycle with rollouts on (a Kubernetes client and a Lease): only the leader writes; it
//! promotes what passed its gates, commits the policy's picks and the promotions in one commit,
//! then observes every rollout in flight and reverts + quarantines what failed.
//!
//! State lives on the Lease (`--lease`, for HA) or in the config repo itself, on
//! `refs/tagflow/state` (the default without a cluster: one replica, no Kubernetes needed). It is
//! read when this replica starts leading and saved back after every cycle that changed it — on
//! the Lease by resourceVersion, in git by a compare-and-swap push; a lost race re-reads and
//! decides again. Git stays the truth for values, so a commit whose state save was lost is
//! adopted from the head instead of being made twice.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use git2::Oid;
use tokio::sync::Notify;

use super::{CycleError, Reconciler, Report, RevertError, RolloutError, Scope, propose};
use crate::config::{self, Config};
use crate::gitops;
use crate::k8s::events::{EventSink, Step};
use crate::k8s::leadership::Leadership;
use crate::k8s::lease::Elector;
use crate::k8s::observed::{Observed, observed_state};
use crate::k8s::{Cluster, ClusterError};
use crate::plan::{self, ChangeSet, Desired, EnvChange, QuarantineNote};
use crate::rollout::{
    self, Observation, Phase, Rollout, Seen, State, env_policy, promotions, register,
};
use crate::smoke::SmokeChecker;

pub use super::store::StateStore;

mod persist;

/// What rollouts remember between cycles.
#[derive(Debug, Default)]
struct RolloutMemory {
    /// Rollout state as last loaded or saved (`None`: load it again).
    state: Option<State>,
    /// The state commit it was read from or saved as (git store; `None`: none yet).
    state_commit: Option<Oid>,
    /// Releases being watched (`kind/namespace/name`).
    watched: BTreeSet<String>,
}

/// Rollouts: on a cluster with a Lease, or anywhere with state in git.
#[derive(Debug)]
pub struct Rollouts {
    cluster: Option<Cluster>,
    elector: Option<Arc<Elector>>,
    store: StateStore,
    wake: Arc<Notify>,
    stop: tokio_util::sync::CancellationToken,
    smoke: SmokeChecker,
    /// Kubernetes Events on the release objects (nothing without a cluster).
    events: EventSink,
    memory: Mutex<RolloutMemory>,
}

impl Rollouts {
    /// Rollouts driven through `lead` (leader election; releases read on its cluster), with
    /// the state on the Lease or in git.
    pub fn on_cluster(lead: &Leadership, store: StateStore) -> Self {
        Self {
            cluster: Some(lead.cluster.clone()),
            elector: Some(lead.elector.clone()),
            store,
            wake: lead.wake.clone(),
            stop: lead.stop.clone(),
            smoke: SmokeChecker::new(),
            events: EventSink::new(Some(lead.cluster.clone())),
            memory: Mutex::new(RolloutMemory::default()),
        }
    }

    /// Rollouts without a cluster: one replica, state in git, smoke checks and gates only.
    pub fn without_cluster() -> Self {
        Self {
            cluster: None,
            elector: None,
            store: StateStore::Git,
            wake: Arc::new(Notify::new()),
            stop: tokio_util::sync::CancellationToken::new(),
            smoke: SmokeChecker::new(),
            events: EventSink::default(),
            memory: Mutex::new(RolloutMemory::default()),
        }
    }

    /// Notified by release watches and leadership changes.
    pub fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Whether a cluster is connected (releases can be read).
    pub fn has_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    async fn is_leader(&self) -> bool {
        match &self.elector {
            Some(e) => e.is_leader().await,
            None => true,
        }
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, RolloutMemory> {
        self.memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forget the state: it is read again from the Lease on (re)taking the lead.
    fn forget(&self) {
        self.memory().state = None;
    }

    fn ensure_watches(&self, cfg: &Config) {
        let refs: Vec<config::ReleaseRef> = cfg
            .environments
            .values()
            .filter_map(|e| e.release.clone())
            .collect();
        let new: Vec<config::ReleaseRef> = {
            let mut mem = self.memory();
            refs.into_iter()
                .filter(|r| {
                    let key = format!("{}/{}/{}", r.kind, r.namespace, r.name);
                    mem.watched.insert(key)
                })
                .collect()
        };
        if !new.is_empty()
            && let Some(cluster) = &self.cluster
        {
            cluster.watch(&new, self.wake.clone(), self.stop.clone());
        }
    }
}

fn follower_report(head: Oid) -> Report {
    Report {
        head,
        commit: None,
        changes: Vec::new(),
        image_errors: Vec::new(),
        rollout_errors: Vec::new(),
        requeue: None,
        follower: true,
    }
}

/// The parent line of a rollout's Slack thread: each environment's phase for (image, tag).
fn status_line(state: &State, r: &Rollout) -> String {
    let mut phases: std::collections::BTreeMap<&str, String> = state
        .rollouts
        .values()
        .filter(|o| o.image == r.image && o.pinned.tag == r.pinned.tag)
        .map(|o| (o.env.as_str(), o.phase.to_string()))
        .collect();
    phases.insert(r.env.as_str(), r.phase.to_string());
    format!(
        "tagflow: {} {} — {}",
        r.image,
        r.pinned.tag,
        phases
            .iter()
            .map(|(e, p)| format!("{e}: {p}"))
            .collect::<Vec<_>>()
            .join(" · ")
    )
}

impl Reconciler {
    /// Say one step of a rollout: a reply in the thread of (image, tag) with the parent's status
    /// line updated when a bot token is configured, else a flat webhook message.
    fn rollout_post(&self, state: &State, r: &Rollout, text: &str) {
        let key = format!("{}:{}", r.image, r.pinned.tag);
        let flat = format!("tagflow: {} {}: {text}", r.image, r.pinned.tag);
        self.poster.thread(&key, status_line(state, r), text, &flat);
    }

    /// A cycle on a cluster: followers only read the config; the leader runs rollouts.
    pub(super) async fn cluster_cycle(
        &self,
        ro: &Rollouts,
        head: Oid,
        cfg: Arc<Config>,
        scope: &Scope,
    ) -> Result<Report, CycleError> {
        let leads = ro.is_leader().await;
        self.metrics.leader(leads);
        if !leads {
            // Followers write nothing; the leader's state is read again on taking over.
            ro.forget();
            if let Some(e) = &ro.elector
                && let Some(e) = e.last_error().await
            {
                tracing::warn!(error = %e, "cannot reach the Lease");
                return Err(CycleError::Cluster(ClusterError::Lease(e)));
            }
            return Ok(follower_report(head));
        }
        if !ro.has_cluster()
            && let Some((env, _)) = cfg.environments.iter().find(|(_, e)| e.release.is_some())
        {
            return Err(CycleError::NoCluster(env.clone()));
        }
        self.rollout_cycle(ro, head, cfg, scope).await
    }

    /// One cycle with rollouts. Only the leader gets here.
    async fn rollout_cycle(
        &self,
        ro: &Rollouts,
        head: Oid,
        cfg: Arc<Config>,
        scope: &Scope,
    ) -> Result<Report, CycleError> {
        ro.ensure_watches(&cfg);
        let gates = self.current.gates();
        let (desired, image_errors) = self.selector.select(&cfg, &gates, scope).await?;
        let mut state = self.load_state(ro).await?;
        let before = state.clone();
        let now = Utc::now();

        let mut per_env = plan::policy_targets(&cfg, &desired);
        for (env, m) in promotions(&cfg, &state, &gates) {
            per_env.entry(env).or_default().extend(m);
        }
        per_env.retain(|_, m| !m.is_empty());
        // Environments in pull-request mode get their change on a branch; the promotions
        // gated by a merge are proposed there too, and approved once merged.
        let (per_env, branched) = propose::split(&cfg, per_env);
        let (gated, gated_keys) = {
            let g = propose::merge_gated(&cfg, &state, &gates);
            let keys: BTreeSet<propose::Key> = g
                .iter()
                .flat_map(|(e, m)| m.keys().map(move |i| (e.clone(), i.clone())))
                .collect();
            (g, keys)
        };
        let (commit, changes, at) = if per_env.is_empty() {
            (None, Vec::new(), head)
        } else if !ro.is_leader().await {
            // Lost the Lease during this cycle: write nothing; the new leader has the state.
            ro.forget();
            return Ok(follower_report(head));
        } else {
            let c = self
                .repo
                .commit(cfg.clone(), ChangeSet::Update(per_env.clone()))
                .await?;
            (c.commit, c.changes, c.head)
        };
        let mut proposals_in = branched.clone();
        for (env, m) in gated {
            let slot = proposals_in.entry(env).or_default();
            for (image, d) in m {
                slot.entry(image).or_insert(d);
            }
        }
        let stale = propose::stale_promotions(&cfg, &state, &proposals_in);
        let proposing = !proposals_in.is_empty() || !stale.is_empty();
        if proposing && !ro.is_leader().await {
            // Lost the Lease during this cycle: push no branch; the new leader proposes.
            ro.forget();
            return Ok(follower_report(head));
        }
        let proposed = self
            .propose(&cfg, at, proposals_in, (&gated_keys, &stale))
            .await;
        // Rollouts follow what the target carries: a branch's values once they landed there.
        let mut per_env = per_env;
        for (env, m) in branched {
            for (image, d) in m {
                if proposed.landed.contains(&(env.clone(), image.clone())) {
                    per_env.entry(env.clone()).or_default().insert(image, d);
                }
            }
        }
        let merged: BTreeSet<propose::Key> =
            gated_keys.intersection(&proposed.landed).cloned().collect();
        self.note_merge_requests(&cfg, &mut state, &gated_keys, &proposed);
        let from_git = self.found_in_git(&state, &per_env, at).await;
        let reg = register(
            &cfg,
            &mut state,
            &per_env,
            &Seen {
                changes: &changes,
                commit,
                head: at,
                from_git: &from_git,
            },
            now,
        );
        for old in &reg.superseded {
            self.rollout_post(&state, old, &format!("{}: {}", old.env, old.reason));
        }
        if let Some(c) = commit {
            self.announce_rollouts(&cfg, ro, &state, (&reg.started, &changes), c);
        }
        let (wake, mut errors) = self.advance(&cfg, ro, (&gates, &merged), &mut state).await;
        errors.extend(proposed.errors);
        if state == before {
            ro.memory().state = Some(state);
        } else {
            self.save_state(ro, &state).await;
        }
        if let Some(pos) = errors.iter().position(
            |e| matches!(e, RolloutError::Release { source, .. } if source.is_transient()),
        ) && let RolloutError::Release { source, .. } = errors.swap_remove(pos)
        {
            // Said the same way as a follower cut off from its Lease, so Slack hears it once.
            return Err(CycleError::Cluster(source));
        }
        Ok(Report {
            head: at,
            commit,
            changes,
            image_errors,
            rollout_errors: errors,
            requeue: wake,
            follower: false,
        })
    }

    fn announce_rollouts(
        &self,
        cfg: &Config,
        ro: &Rollouts,
        state: &State,
        (started, changes): (&[(String, String)], &[EnvChange]),
        commit: Oid,
    ) {
        let link = crate::notify::commit_link(&self.repo.opts.url, &commit.to_string());
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
            let (tag, short) = (&r.pinned.tag, gitops::short(commit));
            match promoted {
                None => self.rollout_post(state, r, &format!("new tag {tag} found for {image}")),
                Some(src) => ro.events.record(
                    cfg,
                    src,
                    Step::Promoted,
                    &format!("{src}: promoted {image} {tag} to {env} in {short}"),
                ),
            }
            let lines: Vec<String> = changes
                .iter()
                .filter(|c| c.env == *env && c.change.image == *image)
                .map(plan::describe)
                .collect();
            let lines = lines.join("; ");
            self.rollout_post(state, r, &format!("{env}: committed {shown} ({lines})"));
            let note = format!("{env}: committed {short} ({lines})");
            ro.events.record(cfg, env, Step::Committed, &note);
        }
    }

    /// Observe and step every rollout in flight; revert what failed. Returns the earliest wake-up
    /// and the errors met.
    async fn advance(
        &self,
        cfg: &Arc<Config>,
        ro: &Rollouts,
        (gates, merged): (&config::Gates, &BTreeSet<propose::Key>),
        state: &mut State,
    ) -> (Option<Duration>, Vec<RolloutError>) {
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
                approved: policy.downstream.as_ref().is_some_and(|g| {
                    gates.approved(&g.to, &r.image, &r.pinned.tag)
                        || (g.by_pull_request && merged.contains(&(g.to.clone(), r.image.clone())))
                }),
                ..Observation::default()
            };
            if needs.release
                && let Some(rel) = &env.release
                && let Some(cluster) = &ro.cluster
            {
                match cluster.release(rel).await {
                    Ok(obj) => {
                        let reconciled = match obj.as_ref().and_then(Observed::commit) {
                            Some(rev) => self.repo.contains(&rev, &r.commit).await,
                            None => false,
                        };
                        obs.release = Some(observed_state(rel.kind, obj.as_ref(), reconciled));
                    }
                    Err(source) => {
                        tracing::warn!(error = %source, kind = %rel.kind, "cannot read the release");
                        errors.push(RolloutError::Release {
                            env: r.env.clone(),
                            source,
                        });
                        wake = min_wake(wake, Some(policy.resync));
                        continue;
                    }
                }
            }
            if needs.smoke
                && !matches!(obs.release, Some(rollout::Release::Failed(_)))
                && let Some(s) = &env.smoke
            {
                obs.smoke = Some(
                    ro.smoke
                        .check(s, &r.pinned.tag)
                        .await
                        .map_err(|e| e.to_string()),
                );
            }
            let step = rollout::step(&r, &obs, &policy, Utc::now());
            if step.next.phase != r.phase {
                tracing::info!(env = %r.env, image = %r.image, tag = %r.pinned.tag, from = %r.phase, to = %step.next.phase, reason = %step.next.reason, "rollout");
            }
            for e in &step.events {
                let text = e.text(&r.env, &r.pinned.tag);
                self.rollout_post(state, &step.next, &text);
                if let Some(s) = Step::of(e) {
                    ro.events.record(cfg, &r.env, s, &text);
                }
            }
            let mut next = step.next;
            let mut w = step.wake;
            if next.phase == Phase::Failed && ro.is_leader().await {
                match self.revert(cfg, &next).await {
                    Ok(commit) => {
                        let back = next
                            .previous
                            .as_ref()
                            .map_or("(nothing)".to_owned(), |p| p.tag.clone());
                        let shown = commit.map_or("(already in git)".to_owned(), gitops::short);
                        next = rollout::reverted(&next, Utc::now());
                        let text = format!(
                            "{}: reverted in {shown}: back to {back}, {} {} quarantined",
                            r.env, r.image, r.pinned.tag
                        );
                        ro.events.record(cfg, &r.env, Step::Reverted, &text);
                        self.rollout_post(
                            state,
                            &next,
                            &format!("{}: reverted in {shown}: back to {back}", r.env),
                        );
                        self.rollout_post(state, &next, &format!("{} {} quarantined: the policy will not pick it and it will not be promoted until a commit removes it from config/quarantine.yaml", r.image, r.pinned.tag));
                        w = Some(Duration::ZERO);
                    }
                    Err(source) => {
                        errors.push(RolloutError::Revert {
                            env: r.env.clone(),
                            image: r.image.clone(),
                            tag: r.pinned.tag.clone(),
                            source,
                        });
                        w = Some(Duration::from_secs(5));
                    }
                }
            }
            state.rollouts.insert(key, next);
            wake = min_wake(wake, w);
        }
        (wake, errors)
    }

    /// Commit the previous values of the failed rollout's environment and quarantine its tag.
    async fn revert(&self, cfg: &Arc<Config>, r: &Rollout) -> Result<Option<Oid>, RevertError> {
        let previous = match &r.previous {
            None => None,
            Some(prev) => {
                let img = &cfg.images[&r.image];
                let digest = if prev.digest.is_empty() {
                    self.registries
                        .resolve(cfg, &img.repository, &prev.tag, &img.platform)
                        .await?
                        .digest
                } else {
                    prev.digest.clone()
                };
                Some(Desired {
                    image: r.image.clone(),
                    repository: img.repository.clone(),
                    tag: prev.tag.clone(),
                    digest,
                    reason: "revert".into(),
                })
            }
        };
        let change = ChangeSet::Revert {
            env: r.env.clone(),
            image: r.image.clone(),
            previous,
            quarantine: QuarantineNote {
                file: config::sibling(&self.repo.opts.config_path, config::QUARANTINE),
                image: r.image.clone(),
                tag: r.pinned.tag.clone(),
                reason: r.reason.clone(),
                at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            },
        };
        let done = self.repo.commit(cfg.clone(), change).await?;
        if let Some(commit) = done.commit {
            tracing::info!(commit = %gitops::short(commit), env = %r.env, tag = %r.pinned.tag, "reverted and quarantined");
        }
        Ok(done.commit)
    }
}

impl Reconciler {
    /// Record on each rollout awaiting a merge which PR approves it, and say so once in its
    /// thread (the status page reads it from the state).
    fn note_merge_requests(
        &self,
        cfg: &Config,
        state: &mut State,
        gated: &BTreeSet<propose::Key>,
        proposed: &propose::Proposed,
    ) {
        for key @ (env, image) in gated {
            let Some((_, Some(url))) = proposed.waiting.get(key) else {
                continue;
            };
            let Some(src) = cfg
                .environments
                .get(env)
                .and_then(|e| e.promote_from.as_deref())
            else {
                continue;
            };
            let skey = State::key(src, image);
            let Some(r) = state.rollouts.get_mut(&skey) else {
                continue;
            };
            let declined = proposed.declined.contains(key);
            if r.pull_request.as_deref() == Some(url.as_str())
                && r.pull_request_declined == declined
            {
                continue;
            }
            r.pull_request = Some(url.clone());
            r.pull_request_declined = declined;
            let r = r.clone();
            let tag = &r.pinned.tag;
            let text = if declined {
                format!(
                    "{src}: promotion of {tag} to {env}: {url} was closed without merging, so {tag} is not promoted; reopen and merge it (or `tagflow approve {env} {tag}`) to promote it, or a newer tag that soaks gets a new pull request"
                )
            } else {
                format!(
                    "{src}: promotion of {tag} to {env} is waiting in {url}: merge it to approve"
                )
            };
            self.rollout_post(state, &r, &text);
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
