//! One cycle, run in order: fetch → config → registry → policy → plan → commit → rollouts →
//! notify. This root holds only the types; the children do the work, each for one concern:
//!
//! - [`load`]: fetch the head and load its config, keeping the last good one;
//! - [`select`]: scan the registries and pick the desired image per configured image;
//! - [`pipeline`]: the cycle itself, the dry run and the approve command;
//! - [`rollouts`]: observe and step rollouts, promote, revert (with a cluster);
//! - [`alerts`]: what a failing cycle says in Slack, once, and when it recovers;
//! - [`run_loop`]: the `run` loop, which asks [`error_policy`] when to run again.
//!
//! A cycle returns a [`Report`] and never sleeps; only the loop waits.

mod adopt;
pub mod alerts;
mod announce;
mod idle;
pub mod load;
pub mod pipeline;
pub mod propose;
pub mod rollouts;
pub mod run_loop;
pub mod select;
pub mod store;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use git2::Oid;

use crate::config::{self, ConfigError};
use crate::gitops::{CommitError, ConfigRepo, GitError, RepoOptions};
use crate::k8s::ClusterError;
use crate::k8s::leadership::Leadership;
use crate::metrics::Metrics;
use crate::notify::{Notifier, Poster};
use crate::plan::EnvChange;
use crate::registry::{CacheFile, Registries, RegistryError};

pub use rollouts::StateStore;
pub use select::SelectError;

/// Which images a cycle scans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every configured image.
    All,
    /// Only these (a webhook named their repositories); none: rollouts only (a watch event).
    Images(BTreeSet<String>),
}

/// A rollout step that could not be taken this cycle (the others were).
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// The environment's release could not be read.
    #[error("cannot read the release of {env}: {source}")]
    Release {
        /// Environment.
        env: String,
        /// Why.
        #[source]
        source: ClusterError,
    },
    /// A failed rollout could not be reverted.
    #[error("revert of {image} {tag} in {env}: {source}")]
    Revert {
        /// Environment.
        env: String,
        /// Image.
        image: String,
        /// The failed tag.
        tag: String,
        /// Why.
        #[source]
        source: RevertError,
    },
    /// A pull-request branch or its PR could not be brought up to date.
    #[error("pull-request branch {branch}: {source}")]
    Propose {
        /// The branch.
        branch: String,
        /// Why.
        #[source]
        source: propose::ProposeError,
    },
}

/// Why a revert commit was not pushed.
#[derive(Debug, thiserror::Error)]
pub enum RevertError {
    /// The previous tag's digest could not be resolved.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The commit failed.
    #[error(transparent)]
    Commit(#[from] CommitError),
}

impl RolloutError {
    /// Worth retrying soon.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Release { source, .. } => source.is_transient(),
            Self::Revert { source, .. } => match source {
                RevertError::Registry(e) => e.is_transient(),
                RevertError::Commit(e) => e.is_transient(),
            },
            Self::Propose { source, .. } => source.is_transient(),
        }
    }
}

/// One push the next cycle would make ([`Reconciler::plan`]).
#[derive(Debug)]
pub struct Planned {
    /// Where it goes: `commit to main`, `push to branch tagflow/dev-app (…)`.
    pub destination: String,
    /// Unified diff against the target branch's head.
    pub diff: String,
    /// The commit message.
    pub message: String,
}

/// What a cycle did.
#[derive(Debug)]
pub struct Report {
    /// The config repo head the cycle looked at (its own commit when it pushed).
    pub head: Oid,
    /// The pushed commit, if any.
    pub commit: Option<Oid>,
    /// What changed.
    pub changes: Vec<EnvChange>,
    /// Images that could not be scanned, with why (the others were handled).
    pub image_errors: Vec<(String, SelectError)>,
    /// Rollout steps that could not be taken (the others were).
    pub rollout_errors: Vec<RolloutError>,
    /// Run again this soon (a rollout in flight wants to look again).
    pub requeue: Option<Duration>,
    /// Another replica leads: this cycle only read the config.
    pub follower: bool,
}

/// How a cycle ended, as logs and `tagflow_cycles_total{result}` say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Pushed a commit, and everything was handled.
    Committed,
    /// Nothing to change, and everything was handled.
    Unchanged,
    /// Some images or rollouts failed; the rest was handled (and may have committed).
    Partial,
    /// Another replica leads.
    Following,
    /// The cycle could not run (no config, git down, …).
    Failed,
}

impl Outcome {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Committed => "committed",
            Self::Unchanged => "unchanged",
            Self::Partial => "partial",
            Self::Following => "following",
            Self::Failed => "failed",
        }
    }
}

impl Report {
    /// How the cycle ended.
    pub fn outcome(&self) -> Outcome {
        if self.follower {
            Outcome::Following
        } else if !self.image_errors.is_empty() || !self.rollout_errors.is_empty() {
            Outcome::Partial
        } else if self.commit.is_some() {
            Outcome::Committed
        } else {
            Outcome::Unchanged
        }
    }

    /// Whether any failure in it is worth retrying before the interval.
    pub fn retry_soon(&self) -> bool {
        self.image_errors.iter().any(|(_, e)| e.is_transient())
            || self.rollout_errors.iter().any(RolloutError::is_transient)
    }

    /// The failures, one per line, as alerts and logs say them.
    pub fn failures(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .image_errors
            .iter()
            .map(|(image, e)| format!("image {image}: {e}"))
            .collect();
        out.extend(self.rollout_errors.iter().map(|e| format!("rollout: {e}")));
        out
    }

    /// A stable identity of the failures (stage + kind + what does not vary), so an alert is
    /// repeated only when the problem changes, not when a temp file name in its text does.
    pub fn failure_key(&self) -> String {
        let mut keys: Vec<String> = self
            .image_errors
            .iter()
            .map(|(image, e)| format!("image:{image}:{}", e.kind()))
            .collect();
        keys.extend(self.rollout_errors.iter().map(|e| match e {
            RolloutError::Release { env, .. } => format!("rollout:{env}:release"),
            RolloutError::Revert { env, image, .. } => format!("rollout:{env}:{image}:revert"),
            RolloutError::Propose { branch, .. } => format!("propose:{branch}"),
        }));
        keys.join(",")
    }
}

/// A cycle that could not finish.
#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    /// No good config has ever been loaded.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The config file is missing at the head.
    #[error("config file {0} does not exist at the repo head")]
    NoConfig(String),
    /// Fetching or reading the config repo.
    #[error(transparent)]
    Git(#[from] GitError),
    /// The commit of this cycle's changes.
    #[error(transparent)]
    Commit(#[from] CommitError),
    /// Some images could not be scanned (`plan`, which shows nothing partial).
    #[error("{} image(s) could not be scanned: {}", .0.len(), .0.iter().map(|(i, e)| format!("{i}: {e}")).collect::<Vec<_>>().join("; "))]
    Images(Vec<(String, SelectError)>),
    /// Shutdown came during the scan: the cycle stopped before committing anything.
    #[error(transparent)]
    Cancelled(#[from] select::Cancelled),
    /// The Kubernetes API or the Lease cannot be reached: nothing is written until it can.
    #[error("cannot reach the Kubernetes API: {0}; writing nothing until the Lease can be renewed")]
    Cluster(#[source] ClusterError),
    /// An environment names a release to follow but tagflow has no Kubernetes connection.
    #[error(
        "environments.{0}.release needs Kubernetes to read the release: start `run` with --lease NAMESPACE/NAME (smoke checks, promotions and gates work without it)"
    )]
    NoCluster(String),
}

impl CycleError {
    /// Worth retrying soon (network, races) rather than at the next interval or commit.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Git(e) => e.is_transient(),
            Self::Commit(e) => e.is_transient(),
            Self::Images(v) => v.iter().any(|(_, e)| e.is_transient()),
            Self::Cluster(e) => e.is_transient(),
            Self::Config(_) | Self::NoConfig(_) | Self::NoCluster(_) | Self::Cancelled(_) => false,
        }
    }

    /// A stable identity: stage and kind, without the parts of the text that vary between
    /// attempts (temp file names, addresses, counts).
    pub fn key(&self) -> String {
        match self {
            Self::Config(_) => "config".into(),
            Self::NoConfig(p) => format!("no-config:{p}"),
            Self::Git(e) => format!("git:{}", e.kind()),
            Self::Commit(CommitError::Git(e)) => format!("commit:git:{}", e.kind()),
            Self::Commit(CommitError::Plan(_)) => "commit:plan".into(),
            Self::Images(v) => v
                .iter()
                .map(|(i, e)| format!("image:{i}:{}", e.kind()))
                .collect::<Vec<_>>()
                .join(","),
            // Leader and follower cut off from the API say the same, so Slack hears it once.
            Self::Cluster(_) => "cluster".into(),
            Self::NoCluster(env) => format!("no-cluster:{env}"),
            Self::Cancelled(_) => "cancelled".into(),
        }
    }
}

/// How long to wait after a cycle (kube-runtime's error_policy): the interval after a clean
/// cycle or a terminal failure (nothing changes until a commit or a credential change), an
/// exponential backoff from 5 s up to the interval after a transient one.
pub fn error_policy(
    result: &Result<Report, CycleError>,
    interval: Duration,
    failures: u32,
) -> Duration {
    let transient = match result {
        Ok(r) => r.retry_soon(),
        Err(e) => e.is_transient(),
    };
    if transient {
        let backoff = Duration::from_secs(5).saturating_mul(2u32.saturating_pow(failures.min(6)));
        backoff.min(interval)
    } else {
        interval
    }
}

/// Everything that outlives a cycle: the config repo, the registries and their caches, the
/// config in force, Slack, and the cluster side when rollouts run on one.
#[derive(Debug)]
pub struct Reconciler {
    /// The config repo.
    pub repo: Arc<ConfigRepo>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Registry clients and caches.
    pub registries: Arc<Registries>,
    /// The config in force.
    pub current: Arc<config::Current>,
    /// Slack, with the settings in force.
    pub poster: Poster,
    /// The last error of each stage, for the status page.
    pub activity: Arc<crate::activity::Activity>,
    /// Which of tagflow's commits were announced.
    announcer: announce::Announcer,
    cache: Arc<CacheFile>,
    loader: load::Loader,
    alerts: alerts::Alerts,
    selector: select::Selector,
    rollouts: rollouts::Rollouts,
    /// The PR seen per pull-request branch.
    proposals: propose::Memory,
    /// The last plan that changed nothing, so the same head and picks are not planned again.
    idle: idle::Idle,
    /// `--lease` was given: every cycle goes through the rollout path (followers write nothing).
    clustered: bool,
}

impl Reconciler {
    /// A reconciler; nothing is fetched until the first cycle. Registry metadata saved by an
    /// earlier run in the work dir is reused. `notifier` none: nothing is posted (`plan`);
    /// `leadership` some: rollouts run on the cluster, only the leader writes, and the rollout
    /// state lives where the [`StateStore`] says.
    pub fn new(
        opts: RepoOptions,
        metrics: Arc<Metrics>,
        notifier: Option<Notifier>,
        leadership: Option<(Arc<Leadership>, StateStore)>,
    ) -> Arc<Self> {
        let registries = Arc::new(Registries::new(metrics.clone()));
        let cache = Arc::new(CacheFile::new(&opts.workdir));
        let opts_workdir = opts.workdir.clone();
        // Read while the first cycle fetches; `refresh` waits for it before any scan.
        cache.load_in_background(registries.clone());
        let current = config::Current::new();
        let poster = Poster::new(notifier, current.clone());
        let selector = select::Selector::new(&opts, registries.clone(), metrics.clone());
        let repo = Arc::new(ConfigRepo::new(opts, metrics.clone()));
        let clustered = leadership.is_some();
        Arc::new(Self {
            clustered,
            cache,
            announcer: announce::Announcer::new(&opts_workdir),
            loader: load::Loader::default(),
            alerts: alerts::Alerts::new(poster.clone()),
            rollouts: match leadership {
                Some((l, store)) => rollouts::Rollouts::on_cluster(&l, store),
                None => rollouts::Rollouts::without_cluster(),
            },
            selector,
            proposals: propose::Memory::default(),
            idle: idle::Idle::in_workdir(&opts_workdir),
            repo,
            metrics,
            registries,
            current,
            poster,
            activity: crate::activity::Activity::new(),
        })
    }

    /// For a process that runs one cycle (`once`): nothing is kept for a next cycle that will
    /// not come (each image's decision, 10,000 of them a ~3 MB copy of what the cycle holds).
    pub fn one_cycle(&self) {
        self.selector.keep_decisions(false);
    }

    /// The config in force (last good), if any.
    pub fn config(&self) -> Option<Arc<config::Config>> {
        self.current.config()
    }

    /// Shutdown: cancel the registry scan in progress (and any later one). A commit being
    /// pushed is not part of the scan and finishes.
    pub fn stop_scans(&self) {
        self.selector.stop();
    }

    /// How many policies were compiled so far: once per distinct policy while the config
    /// holds it, not once per image per cycle.
    pub fn policy_compiles(&self) -> u64 {
        self.selector.policies().compiles()
    }

    /// How many image decisions were reused from an earlier cycle (same listing, policy and
    /// quarantine) instead of resolving the tags again.
    pub fn reused_decisions(&self) -> u64 {
        self.selector.reused_decisions()
    }

    /// How many plans were skipped because the head and picks were planned on before (in this
    /// process or, through the work dir, an earlier one) and changed nothing.
    pub fn plans_skipped(&self) -> u64 {
        self.idle.skipped()
    }

    /// What wakes the loop besides the interval and webhooks (watch events, leadership moves).
    pub fn wake(&self) -> Arc<tokio::sync::Notify> {
        self.rollouts.wake()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_lives_on_the_lease_only_with_one() {
        use StateStore::{Git, Lease};
        assert_eq!(StateStore::choose(None, false), Ok(Git));
        assert_eq!(StateStore::choose(None, true), Ok(Lease));
        assert_eq!(StateStore::choose(Some(Git), true), Ok(Git));
        assert_eq!(StateStore::choose(Some(Lease), true), Ok(Lease));
        let e = StateStore::choose(Some(Lease), false).expect_err("no lease");
        assert!(e.contains("--state lease needs --lease"), "{e}");
    }

    fn report(errors: Vec<(String, SelectError)>) -> Report {
        Report {
            head: Oid::ZERO_SHA1,
            commit: None,
            changes: Vec::new(),
            image_errors: errors,
            rollout_errors: Vec::new(),
            requeue: None,
            follower: false,
        }
    }

    fn refused() -> SelectError {
        refused_because("connection refused")
    }

    fn refused_because(reason: &str) -> SelectError {
        RegistryError::Transport {
            registry: "r".into(),
            url: "http://r/v2/".into(),
            reason: reason.into(),
            timeout: false,
        }
        .into()
    }

    fn unauthorized() -> SelectError {
        RegistryError::Unauthorized {
            registry: "r".into(),
            url: "http://r/v2/".into(),
        }
        .into()
    }

    #[test]
    fn transient_failures_back_off_up_to_the_interval_and_terminal_ones_wait_for_it() {
        let interval = Duration::from_secs(60);
        let down: Result<Report, CycleError> = Ok(report(vec![("app".into(), refused())]));
        assert_eq!(error_policy(&down, interval, 0), Duration::from_secs(5));
        assert_eq!(error_policy(&down, interval, 2), Duration::from_secs(20));
        assert_eq!(error_policy(&down, interval, 9), interval);
        // A 401 waits for the interval however often it repeats: no retry storm.
        let denied: Result<Report, CycleError> = Ok(report(vec![("app".into(), unauthorized())]));
        assert_eq!(error_policy(&denied, interval, 0), interval);
        assert_eq!(error_policy(&denied, interval, 5), interval);
        let clean: Result<Report, CycleError> = Ok(report(Vec::new()));
        assert_eq!(error_policy(&clean, interval, 0), interval);
        let terminal: Result<Report, CycleError> = Err(CycleError::NoConfig("c".into()));
        assert_eq!(error_policy(&terminal, interval, 3), interval);
        let bad_regex: Result<Report, CycleError> = Ok(report(vec![(
            "app".into(),
            SelectError::Policy(crate::policy::PolicyError::Regex(
                regex::Regex::new(&String::from("(")).expect_err("bad regex"),
            )),
        )]));
        assert_eq!(error_policy(&bad_regex, interval, 0), interval);
    }

    #[test]
    fn a_cycle_with_a_failed_image_is_partial_not_unchanged() {
        let r = report(vec![("app".into(), refused())]);
        assert_eq!(r.outcome(), Outcome::Partial);
        assert_eq!(r.outcome().label(), "partial");
        assert_eq!(report(Vec::new()).outcome(), Outcome::Unchanged);
    }

    #[test]
    fn failure_keys_ignore_what_varies_in_the_text() {
        let a = report(vec![("app".into(), refused())]);
        let other = refused_because("connection refused (os error 111) at 127.0.0.1:40213");
        let b = report(vec![("app".into(), other)]);
        assert_eq!(a.failure_key(), b.failure_key());
        assert_ne!(
            a.failure_key(),
            report(vec![("app".into(), unauthorized())]).failure_key()
        );
    }
}
