//! The cycle itself, in order, and the two commands built from its stages: the dry run
//! (`plan`) and `approve`.

use std::collections::BTreeSet;

use git2::Oid;

use super::select::UNREADABLE_RETRY;
use super::{CycleError, Outcome, Planned, Reconciler, Report, Scope};
use crate::config;
use crate::gitops::{self, CommitError};
use crate::plan::{self, ChangeSet};

/// Why an approval was not committed.
#[derive(Debug, thiserror::Error)]
pub enum ApproveError {
    /// The config could not be loaded.
    #[error(transparent)]
    Cycle(#[from] CycleError),
    /// No such environment.
    #[error("no environment {env} (known: {known})")]
    UnknownEnv {
        /// Asked for.
        env: String,
        /// Configured.
        known: String,
    },
    /// No such image.
    #[error("no image {0}")]
    UnknownImage(String),
    /// Not a tag.
    #[error("{0:?} is not a valid tag")]
    BadTag(String),
    /// The commit failed (a broken approvals list, git).
    #[error(transparent)]
    Commit(#[from] CommitError),
}

/// Log how a cycle ended, the same way for `run` and `once`.
pub fn log_outcome(result: &Result<Report, CycleError>) {
    match result {
        Ok(r) => match r.outcome() {
            Outcome::Following => {
                tracing::debug!("cycle done: following (another replica holds the Lease)");
            }
            Outcome::Committed => {
                tracing::info!(commit = ?r.commit.map(gitops::short), changes = r.changes.len(), "cycle done: committed");
            }
            Outcome::Unchanged => {
                tracing::info!(head = %gitops::short(r.head), "cycle done: no change");
            }
            Outcome::Partial | Outcome::Failed => {
                tracing::error!(
                    commit = ?r.commit.map(gitops::short),
                    changes = r.changes.len(),
                    transient = r.retry_soon(),
                    "cycle partial: {}",
                    r.failures().join("; ")
                );
            }
        },
        Err(CycleError::Cancelled(e)) => tracing::info!("cycle stopped: {e}"),
        Err(e) => tracing::error!(error = %e, transient = e.is_transient(), "cycle failed"),
    }
}

impl Reconciler {
    /// One full cycle: fetch, select, commit and push, rollouts, notify. Counted in
    /// `tagflow_cycles_total{result}` by its [`Outcome`], timed in
    /// `tagflow_cycle_duration_seconds`.
    pub async fn cycle(&self, scope: &Scope) -> Result<Report, CycleError> {
        let started = std::time::Instant::now();
        let mut result = self.cycle_inner(scope).await;
        if let Err(CycleError::Cancelled(_)) = &result {
            // Shutting down mid-scan is neither a failure to alert on nor a cycle to count.
            return result;
        }
        if let Ok(r) = &mut result
            && self.selector.take_retry()
        {
            tracing::info!(
                "a listed tag is not readable yet (a push still landing?); looking again in 1s"
            );
            r.requeue = Some(
                r.requeue
                    .map_or(UNREADABLE_RETRY, |d| d.min(UNREADABLE_RETRY)),
            );
        }
        self.cache.save(&self.registries);
        let outcome = result.as_ref().map_or(Outcome::Failed, Report::outcome);
        // Set before the count, so whoever sees the count go up reads this cycle's time.
        self.metrics.cycle_took(started.elapsed());
        self.metrics.cycle(outcome.label());
        self.metrics.cycle_duration(started.elapsed().as_secs_f64());
        self.record_activity(&result);
        match &result {
            Ok(r) if matches!(outcome, Outcome::Partial) => {
                let text = r.failures().join("\n");
                self.alerts.failed(&r.failure_key(), &text);
            }
            Ok(_) => {
                self.metrics
                    .success_at(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
                self.alerts.succeeded();
            }
            Err(e) => self.alerts.failed(&e.key(), &e.to_string()),
        }
        result
    }

    /// The status page's "last error per stage": what failed, and what this cycle proved works.
    fn record_activity(&self, result: &Result<Report, CycleError>) {
        use crate::activity::stage;
        let now = chrono::Utc::now();
        let a = &self.activity;
        match result {
            Ok(r) if r.follower => a.worked(stage::GIT, now),
            Ok(r) => {
                let scans: Vec<String> = r
                    .image_errors
                    .iter()
                    .map(|(image, e)| format!("image {image}: {e}"))
                    .collect();
                let rollouts: Vec<String> =
                    r.rollout_errors.iter().map(ToString::to_string).collect();
                for (stage, lines) in [(stage::SCAN, &scans), (stage::ROLLOUT, &rollouts)] {
                    if lines.is_empty() {
                        a.worked(stage, now);
                    } else {
                        a.failed(stage, &lines.join("\n"), now);
                    }
                }
                for s in [stage::GIT, stage::COMMIT, stage::CLUSTER] {
                    a.worked(s, now);
                }
            }
            Err(e) => {
                let s = match e {
                    CycleError::Config(_) | CycleError::NoConfig(_) => stage::CONFIG,
                    CycleError::Git(_) => stage::GIT,
                    CycleError::Commit(_) => stage::COMMIT,
                    // A cancelled cycle returns before this; were it recorded, the scan stopped.
                    CycleError::Images(_) | CycleError::Cancelled(_) => stage::SCAN,
                    CycleError::Cluster(_) | CycleError::NoCluster(_) => stage::CLUSTER,
                };
                a.failed(s, &e.to_string(), now);
            }
        }
    }

    async fn cycle_inner(&self, scope: &Scope) -> Result<Report, CycleError> {
        let (head, cfg) = self.refresh().await?;
        // Rollouts (smoke checks, promotions, gates) run with a Lease, or without a cluster with
        // their state in git; a config that asks for none takes the plain path, which writes no
        // state at all.
        if self.clustered || crate::rollout::wants_rollouts(&cfg) {
            return self.cluster_cycle(&self.rollouts, head, cfg, scope).await;
        }
        // Commits of earlier cycles (or processes) not announced yet.
        self.announce(head).await;
        let gates = self.current.gates();
        let (desired, image_errors) = self.selector.select(&cfg, &gates, scope).await?;
        let mut report = Report {
            head,
            commit: None,
            changes: Vec::new(),
            image_errors,
            rollout_errors: Vec::new(),
            requeue: None,
            follower: false,
        };
        if desired.is_empty() {
            return Ok(report);
        }
        // The picks move into the plan: at 10,000 images a copy is ~4.5 MB at the rewrite's peak.
        let targets = plan::policy_targets_from(&cfg, desired);
        let (targets, branched) = super::propose::split(&cfg, targets);
        let picks = super::idle::picks(&self.repo.opts.config_path, &targets);
        let key = super::idle::at(head, &picks);
        let done = if targets.is_empty() || self.idle.seen(&key) {
            gitops::Committed {
                commit: None,
                head,
                changes: Vec::new(),
                first_push: false,
            }
        } else {
            // Planned on the head `refresh` just fetched: an idle cycle fetches once, not twice.
            let done = self
                .repo
                .commit_on(cfg.clone(), ChangeSet::Update(targets), head)
                .await?;
            // Nothing to change here, or a commit of exactly these picks straight on this
            // cycle's head (so under its config): either way the next plan of these picks on
            // the head now would change nothing. After a lost race, another writer's commit
            // sits in between and may have changed the config: that head is planned again.
            let settled = if done.commit.is_none() && done.head == head {
                Some(key)
            } else if done.first_push && done.commit == Some(done.head) {
                Some(super::idle::at(done.head, &picks))
            } else {
                None
            };
            self.idle.set(settled);
            done
        };
        if done.commit.is_some() {
            // Said from git, so a crash before the post or a Slack outage only delays it.
            self.announce(done.head).await;
        }
        let proposed = self
            .propose(&cfg, done.head, branched, (&BTreeSet::new(), &[]))
            .await;
        report.rollout_errors.extend(proposed.errors);
        report.head = done.head;
        report.commit = done.commit;
        report.changes = done.changes;
        Ok(report)
    }

    /// Dry run: what the next cycle would push, to the target branch and to each of
    /// pull-request mode's branches (rebuilt on the target's head, so their diff is against
    /// it too). No push, no forge call, no Slack. Uses whatever work dir it was given (`plan`
    /// gives it a throwaway one).
    pub async fn plan(&self) -> Result<Vec<Planned>, CycleError> {
        let (head, cfg) = self.refresh().await?;
        let gates = self.current.gates();
        let (desired, errors) = self.selector.select(&cfg, &gates, &Scope::All).await?;
        if !errors.is_empty() {
            return Err(CycleError::Images(errors));
        }
        let target = self.repo.opts.branch.clone();
        let (direct, branched) = super::propose::split(&cfg, plan::policy_targets(&cfg, &desired));
        let mut wanted = vec![(None, direct)];
        for (bp, env, _) in super::propose::branch_plans(&cfg, &branched) {
            if let ChangeSet::Update(per_env) = bp.change {
                let pr = cfg.environments[&env].pull_request.is_some();
                wanted.push((Some((bp.branch, pr)), per_env));
            }
        }
        let out = self
            .repo
            .read_at(head, move |snap| {
                let read = snap.reader();
                let mut out = Vec::new();
                for (branch, per_env) in wanted {
                    let p = match plan::plan_env_edits(&cfg, &per_env, snap) {
                        Ok(Some(p)) => p,
                        Ok(None) => continue,
                        Err(e) => return Ok(Err(e)),
                    };
                    let destination = match branch {
                        None => format!("commit to {target}"),
                        Some((b, true)) => {
                            format!("push to branch {b} (rebuilt on {target}) and its pull request into {target}")
                        }
                        Some((b, false)) => format!("push to branch {b} (rebuilt on {target})"),
                    };
                    let diff = plan::diff(&p.edits, |path| read(path).ok().flatten());
                    out.push(Planned {
                        destination,
                        diff,
                        message: p.message,
                    });
                }
                Ok(Ok(out))
            })
            .await?;
        out.map_err(|e| CycleError::Commit(CommitError::Plan(e)))
    }

    /// Commit an approval for (`env`, `tag`) to the approvals list and push it, as a person would
    /// by hand. `None` when the same approval is already there.
    pub async fn approve(
        &self,
        env: &str,
        tag: &str,
        image: Option<&str>,
    ) -> Result<Option<Oid>, ApproveError> {
        let (_, cfg) = self.refresh().await?;
        if !cfg.environments.contains_key(env) {
            return Err(ApproveError::UnknownEnv {
                env: env.to_owned(),
                known: cfg
                    .environments
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        if let Some(i) = image.filter(|i| !cfg.images.contains_key(*i)) {
            return Err(ApproveError::UnknownImage(i.to_owned()));
        }
        if !crate::rewrite::valid_tag(tag) {
            return Err(ApproveError::BadTag(tag.to_owned()));
        }
        let change = ChangeSet::Approve {
            file: config::sibling(&self.repo.opts.config_path, config::APPROVALS),
            env: env.to_owned(),
            tag: tag.to_owned(),
            image: image.map(str::to_owned),
        };
        Ok(self.repo.commit(cfg, change).await?.commit)
    }
}
