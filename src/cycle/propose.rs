//! Pull-request mode in the cycle: environments with `push.branch` get their change on
//! tagflow's own branch (one per rendered name) instead of the target branch, with one PR/MR
//! per branch when `pullRequest` is set. Each cycle, per branch: rebuilt on the target's head
//! (no push when it already carries exactly this change), its PR opened or updated with the
//! change list, and closed — before the branch moves — when a newer change supersedes it or
//! the target already has the values (then the branch is deleted).
//!
//! What the target branch carries is what rollouts follow: an (environment, image) counts as
//! deployed-to only once its values are on the target (the PR was merged), and a promotion
//! gated by `approval: pullRequest` is approved by exactly that.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use git2::Oid;

use super::{Reconciler, RolloutError};
use crate::config::{self, Config};
use crate::forge::{Forge, ForgeError, Found};
use crate::gitops::{BranchPlan, CommitError, Decision, GitError};
use crate::plan::{self, ChangeSet, PerEnv, Prepared};

/// Why a branch or its PR could not be brought up to date (the others were).
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// Planning, building or pushing the branch.
    #[error(transparent)]
    Git(#[from] CommitError),
    /// The forge API.
    #[error(transparent)]
    Forge(#[from] ForgeError),
}

impl From<GitError> for ProposeError {
    fn from(e: GitError) -> Self {
        Self::Git(e.into())
    }
}

impl ProposeError {
    /// Worth retrying soon.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Git(e) => e.is_transient(),
            Self::Forge(e) => e.is_transient(),
        }
    }
}

/// (environment, image).
pub type Key = (String, String);

/// What pull-request mode did this cycle.
#[derive(Debug, Default)]
pub struct Proposed {
    /// Pairs whose values the target branch already carries (merged, or nothing to change).
    pub landed: BTreeSet<Key>,
    /// Pairs waiting on a branch: the branch and its PR's web page, when one is open (or was
    /// closed by hand: then the pair is in `declined` too).
    pub waiting: BTreeMap<Key, (String, Option<String>)>,
    /// Pairs whose PR someone closed without merging; tagflow leaves it closed.
    pub declined: BTreeSet<Key>,
    /// Branches that could not be brought up to date.
    pub errors: Vec<RolloutError>,
}

/// How long a PR tagflow saw stays trusted without asking the forge again: long enough that an
/// unchanged branch costs no forge request per cycle, short enough that a PR someone closed
/// (or reopened) by hand is noticed within minutes, not at the next restart.
const RECHECK: std::time::Duration = std::time::Duration::from_secs(600);

/// What tagflow last saw of a branch's PR.
#[derive(Debug, Clone)]
struct Seen {
    /// The branch tip the PR described.
    tip: Oid,
    pr: Found,
    /// Closed by hand without merging (left closed).
    declined: bool,
    at: std::time::Instant,
}

/// The PR tagflow last saw for each branch, with the tip it describes: an unchanged branch
/// costs no forge request (for [`RECHECK`]).
#[derive(Debug, Default)]
pub struct Memory(Mutex<BTreeMap<String, Seen>>);

impl Memory {
    fn get(&self, branch: &str) -> Option<Seen> {
        self.lock()
            .get(branch)
            .filter(|s| s.at.elapsed() < RECHECK)
            .cloned()
    }
    fn set(&self, branch: &str, seen: Option<Seen>) {
        match seen {
            Some(s) => self.lock().insert(branch.to_owned(), s),
            None => self.lock().remove(branch),
        };
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Seen>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Split what a cycle wants into (committed to the target, proposed on branches) (pure).
pub fn split(cfg: &Config, per_env: PerEnv) -> (PerEnv, PerEnv) {
    per_env
        .into_iter()
        .partition(|(env, _)| cfg.environments.get(env).is_none_or(|e| e.push.is_none()))
}

/// Promotions waiting for their merge: for each environment gated by `approval: pullRequest`,
/// its source's tag once that rollout awaits approval (pure). Quarantined tags never.
pub fn merge_gated(cfg: &Config, state: &crate::rollout::State, gates: &config::Gates) -> PerEnv {
    let mut out = PerEnv::new();
    for (env, e) in &cfg.environments {
        let (Some(src), Some(g)) = (&e.promote_from, &e.gate) else {
            continue;
        };
        if g.approval != config::ApprovalMode::PullRequest {
            continue;
        }
        for (image, _) in cfg.targets(e) {
            let (Some(r), Some(img)) = (state.get(src, image), cfg.images.get(image)) else {
                continue;
            };
            if r.phase != crate::rollout::Phase::AwaitingApproval
                || gates.quarantined(image, &r.pinned.tag)
            {
                continue;
            }
            out.entry(env.clone()).or_default().insert(
                image.to_owned(),
                plan::Desired {
                    image: image.to_owned(),
                    repository: img.repository.clone(),
                    tag: r.pinned.tag.clone(),
                    digest: r.pinned.digest.clone(),
                    reason: format!("soaked in {src}; merging the pull request approves"),
                },
            );
        }
    }
    out
}

/// Promotions whose source moved on (a newer tag in flight, a failure): their branch, if it
/// is still there, proposes values nobody wants any more (pure). `proposed` are left out.
pub fn stale_promotions(
    cfg: &Config,
    state: &crate::rollout::State,
    proposed: &PerEnv,
) -> Vec<Key> {
    use crate::rollout::Phase;
    let mut out = Vec::new();
    for (env, e) in &cfg.environments {
        let (Some(src), Some(_)) = (&e.promote_from, &e.push) else {
            continue;
        };
        for (image, _) in cfg.targets(e) {
            let Some(r) = state.get(src, image) else {
                continue;
            };
            let wanted = proposed.get(env).is_some_and(|m| m.contains_key(image));
            if !wanted && !matches!(r.phase, Phase::Healthy | Phase::AwaitingApproval) {
                out.push((env.clone(), image.to_owned()));
            }
        }
    }
    out
}

/// One branch per rendered `push.branch`, with the pairs it carries (pure).
pub fn branch_plans(cfg: &Config, branched: &PerEnv) -> Vec<(BranchPlan, String, Vec<Key>)> {
    let mut groups: BTreeMap<String, (String, PerEnv)> = BTreeMap::new();
    for (env, images) in branched {
        let Some(push) = cfg.environments.get(env).and_then(|e| e.push.as_ref()) else {
            continue;
        };
        for (image, d) in images {
            let name = config::branch_name(&push.branch, env, image);
            let g = groups
                .entry(name)
                .or_insert_with(|| (env.clone(), PerEnv::new()));
            g.1.entry(env.clone())
                .or_default()
                .insert(image.clone(), d.clone());
        }
    }
    groups
        .into_iter()
        .map(|(branch, (env, per_env))| {
            let keys = per_env
                .iter()
                .flat_map(|(e, m)| m.keys().map(move |i| (e.clone(), i.clone())))
                .collect();
            let plan = BranchPlan {
                branch,
                change: ChangeSet::Update(per_env),
            };
            (plan, env, keys)
        })
        .collect()
}

/// The PR's title and body for a branch's change (pure, so an unchanged change gives the
/// same text and needs no update).
pub fn pr_text(env: &str, target: &str, p: &Prepared, gated: bool) -> (String, String) {
    let title = p.message.lines().next().unwrap_or("tagflow").to_owned();
    let mut body = format!("tagflow proposes these values for **{env}** on `{target}`:\n\n");
    for line in plan::listed(&p.changes, plan::MAX_LISTED, true) {
        let _ = writeln!(body, "- {line}");
    }
    body.push('\n');
    if gated {
        body.push_str("Merging this pull request is the approval of the promotion.\n");
    } else {
        body.push_str("Merging this pull request deploys these values.\n");
    }
    let _ = writeln!(
        body,
        "tagflow rebuilds this branch on `{target}` as it moves, and closes this pull request when a newer change supersedes it or `{target}` already has the values."
    );
    (title, body)
}

impl Reconciler {
    /// Bring every branch of `branched` up to date on `head` (see the module docs). `gated`:
    /// the pairs that are merge-gated promotions (their PR says merging approves).
    pub(super) async fn propose(
        &self,
        cfg: &Arc<Config>,
        head: Oid,
        branched: PerEnv,
        (gated, stale): (&BTreeSet<Key>, &[Key]),
    ) -> Proposed {
        let mut out = Proposed::default();
        let mut plans = branch_plans(cfg, &branched);
        // A stale branch is retired if it exists: planned as "no change", carrying no pair.
        for (env, image) in stale {
            let Some(push) = cfg.environments.get(env).and_then(|e| e.push.as_ref()) else {
                continue;
            };
            let branch = config::branch_name(&push.branch, env, image);
            if plans.iter().all(|(p, ..)| p.branch != branch) {
                let change = ChangeSet::Update(PerEnv::new());
                plans.push((BranchPlan { branch, change }, env.clone(), Vec::new()));
            }
        }
        if plans.is_empty() {
            return out;
        }
        let meta: BTreeMap<String, (String, Vec<Key>)> = plans
            .iter()
            .map(|(p, env, keys)| (p.branch.clone(), (env.clone(), keys.clone())))
            .collect();
        let decided = match self
            .repo
            .decide_branches(
                cfg.clone(),
                head,
                plans.into_iter().map(|(p, ..)| p).collect(),
            )
            .await
        {
            Ok(d) => d,
            Err(e) => {
                out.errors.push(RolloutError::Propose {
                    branch: "(all)".into(),
                    source: e.into(),
                });
                return out;
            }
        };
        for (plan, decision) in decided {
            let (env, keys) = meta[&plan.branch].clone();
            let branch = plan.branch;
            let result = match decision {
                Ok(d) => {
                    let gated = keys.iter().any(|k| gated.contains(k));
                    self.bring_up(cfg, (&env, &branch), d, (gated, &keys), &mut out)
                        .await
                }
                Err(e) => Err(e.into()),
            };
            if let Err(source) = result {
                tracing::warn!(branch = %branch, error = %source, "pull-request branch not brought up to date");
                for k in keys {
                    out.waiting.entry(k).or_insert((branch.clone(), None));
                }
                out.errors.push(RolloutError::Propose { branch, source });
            }
        }
        out
    }

    async fn bring_up(
        &self,
        cfg: &Config,
        (env, branch): (&str, &str),
        decision: Decision,
        (gated, keys): (bool, &[Key]),
        out: &mut Proposed,
    ) -> Result<(), ProposeError> {
        let target = self.repo.opts.branch.clone();
        let forge = match cfg.environments[env].pull_request.as_ref() {
            Some(pr) => Some(Forge::new(pr, &self.repo.opts.url)?),
            None => None,
        };
        let (tip, prepared) = match decision {
            Decision::Nothing => {
                out.landed.extend(keys.iter().cloned());
                return Ok(());
            }
            Decision::Retire { .. } => {
                out.landed.extend(keys.iter().cloned());
                if let Some(f) = &forge {
                    let why = if keys.is_empty() {
                        "Closed by tagflow: superseded — the source environment moved on to a newer tag, which will be proposed once it passes its gates.".to_owned()
                    } else {
                        format!(
                            "Closed by tagflow: `{target}` already has these values (merged, or committed another way)."
                        )
                    };
                    self.close_open(f, branch, &target, &why).await?;
                }
                self.repo.delete_branch(branch.to_owned()).await?;
                self.proposals.set(branch, None);
                tracing::info!(
                    branch,
                    "the target has this branch's values: branch deleted"
                );
                return Ok(());
            }
            Decision::Current { tip, prepared } => (tip, prepared),
            Decision::Rebuild {
                commit,
                old,
                same_change,
                prepared,
            } => {
                if old.is_some()
                    && !same_change
                    && let Some(f) = &forge
                {
                    // Closed before the branch moves, so nobody merges the new values thinking
                    // they are the reviewed ones.
                    let title = prepared.message.lines().next().unwrap_or_default();
                    let why = format!("Closed by tagflow: superseded by a newer change ({title}).");
                    if self.close_open(f, branch, &target, &why).await? {
                        self.poster.post(&format!(
                            "tagflow: {branch}: pull request superseded by {title}"
                        ));
                    }
                    self.proposals.set(branch, None);
                }
                self.repo
                    .push_branch(branch.to_owned(), commit, old)
                    .await?;
                tracing::info!(branch, commit = %crate::gitops::short(commit), rebuilt = old.is_some(), "pushed tagflow's branch");
                (commit, prepared)
            }
        };
        let changed: BTreeSet<Key> = prepared
            .changes
            .iter()
            .map(|c| (c.env.clone(), c.change.image.clone()))
            .collect();
        for k in keys {
            if !changed.contains(k) {
                out.landed.insert(k.clone());
            }
        }
        let (url, declined) = match &forge {
            Some(f) => {
                let (title, body) = pr_text(env, &target, &prepared, gated);
                let (url, declined) = self
                    .ensure_pr(f, branch, &target, tip, &title, &body)
                    .await?;
                (Some(url), declined)
            }
            None => (None, false),
        };
        for k in keys.iter().filter(|k| changed.contains(*k)) {
            out.waiting
                .insert(k.clone(), (branch.to_owned(), url.clone()));
            if declined {
                out.declined.insert(k.clone());
            }
        }
        Ok(())
    }

    /// Close the open PR of `branch`, if any; whether there was one.
    async fn close_open(
        &self,
        f: &Forge,
        branch: &str,
        target: &str,
        why: &str,
    ) -> Result<bool, ForgeError> {
        let Some(pr) = f.find_open(branch, target).await? else {
            return Ok(false);
        };
        f.close(
            pr.number,
            &pr.title,
            &format!("{why}\n\n---\n\n{}", pr.body),
        )
        .await?;
        tracing::info!(branch, pr = pr.number, url = %pr.url, "closed the pull request: {why}");
        Ok(true)
    }

    /// The open PR of `branch` with this title and body: kept, updated or opened — or the one
    /// someone closed without merging while it proposed exactly this, left closed. Its web page,
    /// and whether it is that closed one.
    async fn ensure_pr(
        &self,
        f: &Forge,
        branch: &str,
        target: &str,
        tip: Oid,
        title: &str,
        body: &str,
    ) -> Result<(String, bool), ForgeError> {
        if let Some(seen) = self.proposals.get(branch)
            && seen.tip == tip
            && seen.pr.title == title
            && seen.pr.body == body
        {
            return Ok((seen.pr.url, seen.declined));
        }
        let mut declined = false;
        let pr = match f.find_open(branch, target).await? {
            Some(pr) if pr.title == title && pr.body == body => pr,
            Some(pr) => {
                f.update(pr.number, title, body).await?;
                tracing::info!(branch, pr = pr.number, "updated the pull request");
                Found {
                    title: title.to_owned(),
                    body: body.to_owned(),
                    ..pr
                }
            }
            // Someone closed this very change without merging: a "no" that reopening every
            // cycle (or after a restart) would override. A newer change opens a new one.
            None => match f.find_declined((branch, target), title, body).await? {
                Some(pr) => {
                    tracing::warn!(branch, pr = pr.number, url = %pr.url, "the pull request for this change was closed without merging: not reopening it; a newer change opens a new one");
                    declined = true;
                    pr
                }
                None => {
                    let pr = f.open(branch, target, title, body).await?;
                    tracing::info!(branch, pr = pr.number, url = %pr.url, "opened a pull request");
                    self.poster.post(&format!(
                        "tagflow: opened pull request {} — {title}",
                        pr.url
                    ));
                    pr
                }
            },
        };
        let url = pr.url.clone();
        let at = std::time::Instant::now();
        self.proposals.set(
            branch,
            Some(Seen {
                tip,
                pr,
                declined,
                at,
            }),
        );
        Ok((url, declined))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::{Phase, Pinned, Rollout, State};

    const CONFIG: &str = "images:\n  app: {repository: r.example.com/team/app, policy: {tags: '.*', order: built}}\n  web: {repository: r.example.com/team/web, policy: {tags: '.*', order: built}}\nenvironments:\n  dev:\n    file: envs/dev/patch.yaml\n    push: {branch: 'tagflow/{env}-{image}'}\n  staging: {file: envs/staging/patch.yaml, promoteFrom: dev}\n  prod:\n    file: envs/prod/patch.yaml\n    promoteFrom: staging\n    gate: {approval: pullRequest}\n    push: {branch: 'tagflow/{env}'}\n    pullRequest: {provider: gitea, tokenFile: /t, apiUrl: 'https://gitea.example.com/api/v1'}\n";

    fn desired(image: &str, tag: &str) -> plan::Desired {
        plan::Desired {
            image: image.into(),
            repository: format!("r.example.com/team/{image}"),
            tag: tag.into(),
            digest: format!("sha256:{}", "ab".repeat(32)),
            reason: "test".into(),
        }
    }

    fn both(tag: &str) -> BTreeMap<String, plan::Desired> {
        ["app", "web"]
            .into_iter()
            .map(|i| (i.to_owned(), desired(i, tag)))
            .collect()
    }

    #[test]
    fn branches_per_image_or_one_per_environment() {
        let _allow = crate::egress::test_lock("gitea.example.com");
        let cfg = crate::config::parse("c", CONFIG).expect("config");
        let per_env = PerEnv::from([
            ("dev".to_owned(), both("b2c3d4e")),
            ("staging".to_owned(), both("a1b2c3d")),
            ("prod".to_owned(), both("a1b2c3d")),
        ]);
        let (direct, branched) = split(&cfg, per_env);
        assert_eq!(direct.keys().collect::<Vec<_>>(), ["staging"]);
        let plans = branch_plans(&cfg, &branched);
        let names: Vec<(&str, usize)> = plans
            .iter()
            .map(|(p, _, keys)| (p.branch.as_str(), keys.len()))
            .collect();
        assert_eq!(
            names,
            [
                ("tagflow/dev-app", 1),
                ("tagflow/dev-web", 1),
                ("tagflow/prod", 2)
            ],
            "{{image}} gives a branch per image; without it prod's branch carries both"
        );
    }

    #[test]
    fn merge_gated_and_stale_promotions_follow_the_source() {
        let _allow = crate::egress::test_lock("gitea.example.com");
        let cfg = crate::config::parse("c", CONFIG).expect("config");
        let mut state = State::default();
        let pinned = Pinned {
            tag: "a1b2c3d".into(),
            digest: "sha256:1".into(),
        };
        let mut r = Rollout::committed("staging", "app", pinned, None, "c0", chrono::Utc::now());
        r.phase = Phase::AwaitingApproval;
        state
            .rollouts
            .insert(State::key("staging", "app"), r.clone());
        let gates = config::Gates::default();
        let g = merge_gated(&cfg, &state, &gates);
        assert_eq!(g["prod"]["app"].tag, "a1b2c3d");
        assert!(stale_promotions(&cfg, &state, &g).is_empty());
        let quarantined = config::Gates {
            quarantine: vec![config::QuarantineEntry {
                image: "app".into(),
                tag: "a1b2c3d".into(),
                reason: String::new(),
                at: String::new(),
            }],
            ..config::Gates::default()
        };
        assert!(merge_gated(&cfg, &state, &quarantined).is_empty());
        // Staging moved on to a newer tag: prod's branch proposes nothing anyone wants.
        r.phase = Phase::Soaking;
        state.rollouts.insert(State::key("staging", "app"), r);
        assert!(merge_gated(&cfg, &state, &gates).is_empty());
        assert_eq!(
            stale_promotions(&cfg, &state, &PerEnv::new()),
            [("prod".to_owned(), "app".to_owned())]
        );
    }

    #[test]
    fn the_pr_text_is_the_change_list_and_stable() {
        let p = Prepared {
            edits: Vec::new(),
            message: "tagflow: prod app → b2c3d4e\n\nbody\n".into(),
            changes: vec![plan::EnvChange {
                env: "prod".into(),
                change: crate::rewrite::Change {
                    file: "envs/prod/patch.yaml".into(),
                    image: "app".into(),
                    field: crate::rewrite::Field::Tag,
                    line: 3,
                    old: "a1b2c3d".into(),
                    new: "b2c3d4e".into(),
                },
            }],
        };
        let (title, body) = pr_text("prod", "main", &p, true);
        assert_eq!(title, "tagflow: prod app → b2c3d4e");
        assert!(body.contains("- prod app tag: a1b2c3d → b2c3d4e (envs/prod/patch.yaml:3)\n"));
        assert!(body.contains("Merging this pull request is the approval"));
        assert_eq!(pr_text("prod", "main", &p, true), (title, body));
    }
}
