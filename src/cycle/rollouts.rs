//! The cycle with rollouts on (a Kubernetes client and a Lease): only the leader writes; it
//! promotes what passed its gates, commits the policy's picks and the promotions in one commit,
//! then observes every rollout in flight and reverts + quarantines what failed.
//!
//! State is read from the Lease when this replica becomes the leader and saved back after every
//! cycle that changed it; git stays the truth for values, so a commit whose state save was lost
//! is adopted from the head instead of being made twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use git2::Oid;
use tokio::sync::Notify;

use super::{Agent, CycleError, Report, Scope, lock};
use crate::cluster::{self, Cluster};
use crate::config::{self, Config};
use crate::gitops::{self, CommitError, Edit, Prepared, Pushed};
use crate::lease::{Elector, LeaseError};
use crate::plan::{self, Desired, EnvChange, PerEnv};
use crate::rollout::{self, EnvPolicy, Observation, Phase, Pinned, Promotion, Rollout, State};

/// How an unreachable API server is reported (details go to the log).
pub const KUBE_UNREACHABLE: &str = "cannot reach the Kubernetes API";

/// How often rollouts in flight are looked at when no watch event comes first.
pub const RESYNC: Duration = Duration::from_secs(30);

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

/// Rollout settings of `env` for the state machine.
fn env_policy(cfg: &Config, env: &str) -> Option<EnvPolicy> {
    let e = cfg.environments.get(env)?;
    let downstream = cfg
        .environments
        .iter()
        .find(|(_, d)| d.promote_from.as_deref() == Some(env))
        .map(|(to, d)| {
            let g = d.gate.clone().unwrap_or_default();
            rollout::Gate {
                to: to.clone(),
                soak: g.soak,
                approval: g.approval,
            }
        });
    Some(EnvPolicy {
        has_release: e.release.is_some(),
        timeout: e.timeout,
        smoke: e.smoke.as_ref().map(|s| rollout::SmokePolicy {
            retries: s.retries,
            interval: s.interval,
            deadline: s.deadline,
        }),
        downstream,
        resync: RESYNC.min(cfg.interval),
    })
}

/// Whether the config asks for anything only rollouts can do.
pub fn wants_rollouts(cfg: &Config) -> bool {
    cfg.environments
        .values()
        .any(|e| e.release.is_some() || e.promote_from.is_some() || e.smoke.is_some())
}

/// Promotions due now: for each environment with `promoteFrom`, the source's tag and digest
/// once its rollout is healthy (pure).
pub fn promotions(cfg: &Config, state: &State, gates: &config::Gates) -> PerEnv {
    let mut out = PerEnv::new();
    for (env, e) in &cfg.environments {
        let Some(src) = &e.promote_from else { continue };
        for (image, _) in cfg.targets(e) {
            let Some(r) = state.get(src, image) else {
                continue;
            };
            let Some(img) = cfg.images.get(image) else {
                continue;
            };
            match rollout::promotion(r, gates.quarantined(image, &r.pinned.tag)) {
                Promotion::Go(p) => {
                    out.entry(env.clone()).or_default().insert(
                        image.to_owned(),
                        Desired {
                            image: image.to_owned(),
                            repository: img.repository.clone(),
                            tag: p.tag,
                            digest: p.digest,
                            reason: format!("passed {src}'s gates"),
                        },
                    );
                }
                Promotion::Hold(why) => {
                    tracing::debug!(env = %env, image = %image, reason = %why, "no promotion")
                }
            }
        }
    }
    out
}

/// What [`register`] changed.
#[derive(Debug, Default, PartialEq)]
pub struct Registered {
    /// (env, image) of the rollouts that started.
    pub started: Vec<(String, String)>,
    /// Rollouts replaced before they finished, in their last state.
    pub superseded: Vec<Rollout>,
}

/// What a commit (or an unchanged head) means for the state: new rollouts, superseded ones,
/// promoted sources (pure).
pub fn register(
    cfg: &Config,
    state: &mut State,
    per_env: &PerEnv,
    changes: &[EnvChange],
    commit: Option<Oid>,
    head: Oid,
    now: chrono::DateTime<Utc>,
) -> Registered {
    let mut out = Registered::default();
    for (env, images) in per_env {
        for (image, d) in images {
            let pinned = Pinned {
                tag: d.tag.clone(),
                digest: d.digest.clone(),
            };
            let key = State::key(env, image);
            let existing = state.rollouts.get(&key).cloned();
            let changed_here = changes
                .iter()
                .any(|c| c.env == *env && c.change.image == *image);
            let same = existing.as_ref().is_some_and(|r| {
                r.pinned == pinned
                    || (r.phase == Phase::Quarantined && r.previous.as_ref() == Some(&pinned))
            });
            if same && !changed_here {
                // Nothing new here.
            } else if existing.is_none()
                && !changed_here
                && !promoting(cfg, state, env, image, &pinned)
            {
                // First sight of this environment: what runs now is the baseline.
                let mut r =
                    Rollout::committed(env, image, pinned.clone(), None, &head.to_string(), now);
                r.phase = Phase::Healthy;
                r.reason = "running when tagflow first looked".into();
                state.rollouts.insert(key.clone(), r);
            } else {
                let previous = existing
                    .as_ref()
                    .and_then(rollout::last_good)
                    .or_else(|| old_values(changes, env, image));
                if let Some(old) =
                    existing.filter(|r| !r.phase.is_terminal() && r.phase != Phase::Failed)
                {
                    tracing::info!(env = %env, image = %image, old = %old.pinned.tag, new = %pinned.tag, "rollout superseded");
                    out.superseded
                        .push(rollout::superseded(&old, now, &pinned.tag));
                }
                let at = match (changed_here, commit) {
                    (true, Some(c)) => c,
                    // Made by a previous leader whose state save was lost: adopt it at the head.
                    _ => head,
                };
                let r =
                    Rollout::committed(env, image, pinned.clone(), previous, &at.to_string(), now);
                state.rollouts.insert(key.clone(), r);
                out.started.push((env.clone(), image.clone()));
            }
            // A promotion that is in git marks its source promoted.
            if let Some(src) = cfg
                .environments
                .get(env)
                .and_then(|e| e.promote_from.clone())
            {
                let skey = State::key(&src, image);
                if let Some(s) = state.rollouts.get(&skey) {
                    if s.pinned == pinned && s.phase == Phase::Healthy {
                        let p = rollout::promoted(s, now);
                        state.rollouts.insert(skey, p);
                    }
                }
            }
        }
    }
    out
}

/// Whether `pinned` in (env, image) is a promotion of a healthy source not yet marked promoted
/// (then the values in git are a promotion to watch, not a baseline).
fn promoting(cfg: &Config, state: &State, env: &str, image: &str, pinned: &Pinned) -> bool {
    cfg.environments
        .get(env)
        .and_then(|e| e.promote_from.as_deref())
        .and_then(|src| state.get(src, image))
        .is_some_and(|s| s.phase == Phase::Healthy && s.pinned == *pinned)
}

/// The tag and digest an environment's file had before this commit, from the change list.
fn old_values(changes: &[EnvChange], env: &str, image: &str) -> Option<Pinned> {
    let mine = changes
        .iter()
        .filter(|c| c.env == env && c.change.image == image);
    let mut tag = None;
    let mut digest = String::new();
    for c in mine {
        match c.change.field {
            crate::rewrite::Field::Tag => tag = Some(c.change.old.clone()),
            crate::rewrite::Field::Digest => digest = c.change.old.clone(),
            crate::rewrite::Field::Full => {
                tag = c.change.old.rsplit_once(':').map(|(_, t)| t.to_owned());
            }
            crate::rewrite::Field::Name => {}
        }
    }
    tag.filter(|t| !t.is_empty())
        .map(|tag| Pinned { tag, digest })
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
    async fn commit_plan(
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
        let link = super::commit_link(&self.opts.url, &commit.to_string());
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
            if needs.release {
                if let Some(rel) = &env.release {
                    match d.cluster.helm_release(rel).await {
                        Ok(obj) => {
                            let reconciled = match obj.as_ref().and_then(cluster::attempted_commit)
                            {
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
            }
            if needs.smoke && !matches!(obs.release, Some(rollout::Release::Failed(_))) {
                if let Some(s) = &env.smoke {
                    obs.smoke = Some(d.cluster.smoke(s, &r.pinned.tag).await);
                }
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

    /// Commit the previous values of the failed rollout's environment and quarantine its tag.
    async fn revert(&self, cfg: &Arc<Config>, r: &Rollout) -> Result<Option<Oid>, CycleError> {
        let mut per_env = PerEnv::new();
        if let Some(prev) = &r.previous {
            let img = cfg
                .images
                .get(&r.image)
                .ok_or_else(|| CycleError::Internal(format!("no image {}", r.image)))?;
            let digest = if prev.digest.is_empty() {
                self.registries
                    .resolve(cfg, &img.repository, &prev.tag, &img.platform)
                    .await
                    .map_err(|e| CycleError::Images(vec![(r.image.clone(), e.to_string())]))?
                    .digest
            } else {
                prev.digest.clone()
            };
            per_env.insert(
                r.env.clone(),
                BTreeMap::from([(
                    r.image.clone(),
                    Desired {
                        image: r.image.clone(),
                        repository: img.repository.clone(),
                        tag: prev.tag.clone(),
                        digest,
                        reason: "revert".into(),
                    },
                )]),
            );
        }
        let quarantine_path = config::sibling(&self.opts.config_path, config::QUARANTINE);
        let author = cfg.git.author.clone();
        let plan_cfg = cfg.clone();
        let r2 = r.clone();
        let pushed = self
            .with_git(move |c| {
                c.commit_and_push(
                    &author,
                    |snap| -> Result<Option<Prepared<Vec<EnvChange>>>, CycleError> {
                        let values = plan::plan_env_edits(&plan_cfg, &per_env, |p| snap.read(p))?;
                        let old = snap.read(&quarantine_path)?;
                        let old = old.map(|b| String::from_utf8_lossy(&b).into_owned());
                        let at = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                        let reason = format!("{}: {}", r2.env, r2.reason);
                        let list = config::append_entry(
                            &quarantine_path,
                            old.as_deref(),
                            "quarantine",
                            "# Tags the policy never selects and tagflow never promotes.\n",
                            &[
                                ("image", &r2.image),
                                ("tag", &r2.pinned.tag),
                                ("reason", &reason),
                                ("at", &at),
                            ],
                        )
                        .map_err(|e| CycleError::Internal(e.to_string()))?;
                        let (mut edits, detail) = match values {
                            Some(p) => (p.edits, p.detail),
                            None => (Vec::new(), Vec::new()),
                        };
                        if let Some(text) = list {
                            edits.push(Edit {
                                path: quarantine_path.clone(),
                                content: text.into_bytes(),
                            });
                        }
                        if edits.is_empty() {
                            return Ok(None);
                        }
                        let back = r2
                            .previous
                            .as_ref()
                            .map_or("(nothing to revert to)".to_owned(), |p| p.tag.clone());
                        let mut message = format!(
                            "tagflow: revert {} {} {} → {back}, quarantine {}\n\n{}\n\n",
                            r2.env, r2.image, r2.pinned.tag, r2.pinned.tag, r2.reason
                        );
                        for c in &detail {
                            message.push_str(&format!(
                                "{} ({}:{})\n",
                                plan::describe(c),
                                c.change.file,
                                c.change.line
                            ));
                        }
                        message.push_str(&format!(
                            "\nTagflow-Quarantine: {} {}\n",
                            r2.image, r2.pinned.tag
                        ));
                        Ok(Some(Prepared {
                            edits,
                            message,
                            detail,
                        }))
                    },
                )
            })
            .await?;
        match pushed {
            Ok(Pushed::Committed { commit, .. }) => {
                self.metrics.commit();
                tracing::info!(commit = %gitops::short(commit), env = %r.env, tag = %r.pinned.tag, "reverted and quarantined");
                Ok(Some(commit))
            }
            Ok(Pushed::Unchanged { .. }) => Ok(None),
            Err(CommitError::Git(e)) => Err(e.into()),
            Err(CommitError::Plan(e)) => Err(e),
        }
    }

    async fn save_state(&self, d: &Deploy, state: &State) {
        let mut state = state.clone();
        state.threads = self.notifier_threads();
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

impl Agent {
    /// Commit an approval for (`env`, `tag`) to the approvals list and push it, as a person would
    /// by hand. `None` when the same approval is already there.
    pub async fn approve(
        &self,
        env: &str,
        tag: &str,
        image: Option<&str>,
    ) -> Result<Option<Oid>, CycleError> {
        let (_, cfg) = self.refresh().await?;
        let bad = |m: String| {
            CycleError::Config(config::ConfigError {
                problems: vec![config::Problem {
                    file: "tagflow approve".into(),
                    line: None,
                    message: m,
                }],
            })
        };
        if !cfg.environments.contains_key(env) {
            return Err(bad(format!(
                "no environment {env} (known: {})",
                cfg.environments
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if let Some(i) = image.filter(|i| !cfg.images.contains_key(*i)) {
            return Err(bad(format!("no image {i}")));
        }
        if !crate::rewrite::valid_tag(tag) {
            return Err(bad(format!("{tag:?} is not a valid tag")));
        }
        let path = config::sibling(&self.opts.config_path, config::APPROVALS);
        let mut fields = vec![
            ("env".to_owned(), env.to_owned()),
            ("tag".to_owned(), tag.to_owned()),
        ];
        if let Some(i) = image {
            fields.push(("image".to_owned(), i.to_owned()));
        }
        let author = cfg.git.author.clone();
        let subject = format!("tagflow: approve {tag} for {env}");
        let pushed = self
            .with_git(move |c| {
                c.commit_and_push(&author, |snap| -> Result<Option<Prepared<()>>, CycleError> {
                    let old = snap.read(&path)?.map(|b| String::from_utf8_lossy(&b).into_owned());
                    let f: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    let Some(text) = config::append_entry(
                        &path,
                        old.as_deref(),
                        "approvals",
                        "# Approvals for gated promotions (`tagflow approve ENV TAG` appends one).\n",
                        &f,
                    )
                    .map_err(|e| CycleError::Internal(e.to_string()))?
                    else {
                        return Ok(None);
                    };
                    Ok(Some(Prepared {
                        edits: vec![Edit {
                            path: path.clone(),
                            content: text.into_bytes(),
                        }],
                        message: format!("{subject}\n"),
                        detail: (),
                    }))
                })
            })
            .await?;
        match pushed {
            Ok(Pushed::Committed { commit, .. }) => Ok(Some(commit)),
            Ok(Pushed::Unchanged { .. }) => Ok(None),
            Err(CommitError::Git(e)) => Err(e.into()),
            Err(CommitError::Plan(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests;
