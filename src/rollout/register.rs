//! Register (pure): what a commit or an unchanged head means for the rollout state, which
//! promotions are due, and each environment's settings for the state machine.

use std::time::Duration;

use chrono::Utc;
use git2::Oid;

use super::{EnvPolicy, Phase, Pinned, Promotion, Rollout, State};
use crate::config::{self, Config};
use crate::plan::{Desired, EnvChange, PerEnv};
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
                approval: g.approval,
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

#[cfg(test)]
mod tests;
