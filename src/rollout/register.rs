//! Register (pure): what a commit or an unchanged head means for the rollout state, which
//! promotions are due, and each environment's settings for the state machine.

use std::time::Duration;

use chrono::Utc;
use git2::Oid;

use super::{EnvPolicy, Phase, Pinned, Promotion, Rollout, State};
use crate::config::{self, Config};
use crate::plan::{Desired, EnvChange, PerEnv, trailer};
use crate::rollout;

/// How often rollouts in flight are looked at when no watch event comes first.
pub const RESYNC: Duration = Duration::from_secs(30);

/// Rollout settings of `env` for the state machine.
pub fn env_policy(cfg: &Config, env: &str) -> Option<EnvPolicy> {
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
                approval: g.approval.required(),
                by_pull_request: g.approval == config::ApprovalMode::PullRequest,
            }
        });
    Some(EnvPolicy {
        release: e.release.as_ref().map(|r| r.kind),
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

/// A commit of tagflow found in git for an (environment, image) the state knows nothing of.
#[derive(Debug, Clone, PartialEq)]
pub struct Adopted {
    /// The commit.
    pub commit: Oid,
    /// What it set.
    pub set: Pinned,
    /// What it replaced (its `Tagflow-Previous:` trailer).
    pub previous: Option<Pinned>,
}

impl Adopted {
    /// From a commit's trailers.
    pub fn new(commit: Oid, record: trailer::SetRecord) -> Self {
        Adopted {
            commit,
            set: pinned(record.set),
            previous: record.previous.map(pinned),
        }
    }
}

/// [`Adopted`] commits by [`State::key`].
pub type FromGit = std::collections::BTreeMap<String, Adopted>;

/// The (env, image) keys of `per_env` that the state knows nothing of: where to look in git.
pub fn unknown(state: &State, per_env: &PerEnv) -> Vec<(String, String)> {
    per_env
        .iter()
        .flat_map(|(env, m)| m.keys().map(move |img| (env.clone(), img.clone())))
        .filter(|(env, img)| state.get(env, img).is_none())
        .collect()
}

/// What this cycle saw in git.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    /// The changes of the commit this cycle made (empty without one).
    pub changes: &'a [EnvChange],
    /// The commit this cycle made.
    pub commit: Option<Oid>,
    /// The head after it.
    pub head: Oid,
    /// Tagflow's commits found in git for pairs the state knows nothing of.
    pub from_git: &'a FromGit,
}

/// What a commit (or an unchanged head) means for the state: new rollouts, superseded ones,
/// promoted sources (pure).
pub fn register(
    cfg: &Config,
    state: &mut State,
    per_env: &PerEnv,
    seen: &Seen<'_>,
    now: chrono::DateTime<Utc>,
) -> Registered {
    let Seen {
        changes,
        commit,
        head,
        from_git,
    } = *seen;
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
            // A commit of tagflow that set these very values, found in git with no state for it:
            // a rollout whose replica died before saving it (follow it, revert it if it fails).
            let adopted = from_git
                .get(&key)
                .filter(|a| existing.is_none() && !changed_here && a.set == pinned);
            if same && !changed_here {
                // Nothing new here.
            } else if existing.is_none()
                && !changed_here
                && adopted.is_none()
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
                    .or_else(|| old_values(changes, env, image, &pinned))
                    .or_else(|| adopted.and_then(|a| a.previous.clone()));
                if let Some(old) =
                    existing.filter(|r| !r.phase.is_terminal() && r.phase != Phase::Failed)
                {
                    tracing::info!(env = %env, image = %image, old = %old.pinned.tag, new = %pinned.tag, "rollout superseded");
                    out.superseded
                        .push(rollout::superseded(&old, now, &pinned.tag));
                }
                let at = match (changed_here, commit, adopted) {
                    (true, Some(c), _) => c,
                    // Found in git: follow it from the commit that made it.
                    (_, _, Some(a)) => a.commit,
                    // Made by a previous leader whose state save was lost: adopt it at the head.
                    _ => head,
                };
                if let Some(a) = adopted {
                    tracing::info!(env = %env, image = %image, tag = %pinned.tag, commit = %crate::gitops::short(a.commit), previous = ?a.previous.as_ref().map(|p| &p.tag), "no state for this commit of tagflow: following it from git");
                }
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
                if let Some(s) = state.rollouts.get(&skey)
                    && s.pinned == pinned
                    && s.phase == Phase::Healthy
                {
                    let p = rollout::promoted(s, now);
                    state.rollouts.insert(skey, p);
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
fn old_values(changes: &[EnvChange], env: &str, image: &str, set: &Pinned) -> Option<Pinned> {
    let set = trailer::Values {
        tag: set.tag.clone(),
        digest: set.digest.clone(),
    };
    trailer::previous_values(changes, env, image, &set).map(pinned)
}

fn pinned(v: trailer::Values) -> Pinned {
    Pinned {
        tag: v.tag,
        digest: v.digest,
    }
}

#[cfg(test)]
mod tests;
