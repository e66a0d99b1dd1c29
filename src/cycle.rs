//! One cycle, run in order: fetch → config → registry → policy → plan → commit → notify.
//!
//! The [`Agent`] holds what outlives a cycle (the bare clone, registry caches, the last good
//! config); [`Agent::cycle`] returns a [`Report`] and never sleeps — the loop decides when to run
//! again from [`error_policy`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use git2::Oid;
use sha2::{Digest, Sha256};

use crate::config::{self, Config, ConfigError};
use crate::gitops::{self, Checkout, GitAuth, GitError};
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::plan::{self, Desired, EnvChange, PlanError};
use crate::registry::Registries;

mod commits;
mod rollouts;
mod select;
mod slack;

pub use rollouts::Deploy;
use select::{UNREADABLE_RETRY, Unreadable};
pub use slack::{Repeats, SUMMARY_EVERY};
use slack::{bot_of, first_line};

/// File in the work dir holding registry metadata (digest → build time, revision).
const CACHE_FILE: &str = "registry-cache.json";

/// Where the config repo is and how to reach it (the bootstrap flags).
#[derive(Debug, Clone)]
pub struct RepoOptions {
    /// Clone URL.
    pub url: String,
    /// Branch tagflow reads and writes.
    pub branch: String,
    /// Path of the config file inside the repo.
    pub config_path: String,
    /// Directory for tagflow's bare clones.
    pub workdir: PathBuf,
    /// Git credentials.
    pub auth: GitAuth,
}

/// Which images a cycle scans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every configured image.
    All,
    /// Only these (a webhook named their repositories); none: rollouts only (a watch event).
    Images(BTreeSet<String>),
}

/// What a cycle did.
#[derive(Debug)]
pub struct Report {
    /// The config repo head the cycle looked at.
    pub head: Oid,
    /// The pushed commit, if any.
    pub commit: Option<Oid>,
    /// What changed.
    pub changes: Vec<EnvChange>,
    /// Desired image per name.
    pub desired: BTreeMap<String, Desired>,
    /// Images that could not be scanned, with why.
    pub image_errors: Vec<(String, String)>,
    /// Run again this soon (a rollout in flight wants to look again).
    pub requeue: Option<Duration>,
    /// Another replica leads: this cycle only read the config.
    pub follower: bool,
}

/// A cycle that could not finish.
#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    /// No good config has ever been loaded.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The config file is missing at the head.
    #[error("config file {0} does not exist at the repo head")]
    NoConfig(String),
    /// Git.
    #[error(transparent)]
    Git(#[from] GitError),
    /// Planning refused the values files.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// Some images could not be scanned (the others were handled).
    #[error("{} image(s) could not be scanned: {}", .0.len(), .0.iter().map(|(i, e)| format!("{i}: {e}")).collect::<Vec<_>>().join("; "))]
    Images(Vec<(String, String)>),
    /// A background task died.
    #[error("internal error: {0}")]
    Internal(String),
    /// The Lease cannot be reached: nothing is written until it can.
    #[error("{0}; writing nothing until the Lease can be renewed")]
    Cluster(String),
    /// The config asks for rollouts but tagflow was started without a Lease.
    #[error(
        "the config has release/smoke/promoteFrom settings, which need Kubernetes: start `run` with --lease NAMESPACE/NAME"
    )]
    NoCluster,
}

impl CycleError {
    /// Worth retrying soon (network, races) rather than at the next interval.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Git(e) => e.is_transient(),
            Self::Plan(PlanError::Git(e)) => e.is_transient(),
            Self::Images(_) | Self::Internal(_) | Self::Cluster(_) => true,
            _ => false,
        }
    }
}

/// How long to wait after a cycle (kube-runtime's error_policy).
pub fn error_policy(
    result: &Result<Report, CycleError>,
    interval: Duration,
    failures: u32,
) -> Duration {
    match result {
        Ok(_) => interval,
        Err(e) if e.is_transient() => {
            let backoff =
                Duration::from_secs(5).saturating_mul(2u32.saturating_pow(failures.min(6)));
            backoff.min(interval)
        }
        // Bad config or values: nothing changes until the next commit, which the next tick reads.
        Err(_) => interval,
    }
}

#[derive(Debug, Default)]
struct Memory {
    good: Option<(Arc<Config>, Oid)>,
    /// Hash of the config text we last alerted about, so a broken config is reported once.
    bad_alerted: Option<String>,
    /// The last cycle error reported to Slack, so a persisting failure is reported once.
    error_alerted: Option<String>,
    /// How often it repeated since, for the hourly summary.
    repeats: Repeats,
    /// Approvals and quarantine read with the last good config.
    gates: Arc<config::Gates>,
    /// Rollout state as last loaded from or saved to the Lease (`None`: load it again).
    state: Option<crate::rollout::State>,
    /// HelmReleases being watched (`namespace/name`).
    watched: BTreeSet<String>,
}

/// Everything that outlives a cycle.
#[derive(Debug)]
pub struct Agent {
    /// Bootstrap options.
    pub opts: RepoOptions,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Registry clients and caches.
    pub registries: Arc<Registries>,
    /// Slack; `None` in `plan` (which must not post).
    pub notifier: Option<Notifier>,
    checkout: Arc<Mutex<Option<Checkout>>>,
    memory: Mutex<Memory>,
    /// Tags listed but not readable yet, with how often that was seen (see `note_unreadable`).
    unreadable: Mutex<Unreadable>,
    deploy: std::sync::OnceLock<Arc<Deploy>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Agent {
    /// A new agent; nothing is fetched until the first cycle. Registry metadata saved by an
    /// earlier run in the work dir is reused.
    pub fn new(opts: RepoOptions, metrics: Arc<Metrics>, notifier: Option<Notifier>) -> Arc<Self> {
        let registries = Arc::new(Registries::new(metrics.clone()));
        let cache = opts.workdir.join(CACHE_FILE);
        match std::fs::read(&cache) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(entries) => registries.import(entries),
                Err(e) => {
                    tracing::warn!(file = %cache.display(), error = %e, "ignoring an unreadable registry cache")
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(file = %cache.display(), error = %e, "ignoring an unreadable registry cache")
            }
        }
        Arc::new(Self {
            registries,
            opts,
            metrics,
            notifier,
            checkout: Arc::new(Mutex::new(None)),
            memory: Mutex::new(Memory::default()),
            unreadable: Mutex::new(Unreadable::default()),
            deploy: std::sync::OnceLock::new(),
        })
    }

    /// The config in force (last good), if any.
    pub fn config(&self) -> Option<Arc<Config>> {
        lock(&self.memory).good.as_ref().map(|(c, _)| c.clone())
    }

    /// Approvals and quarantine read with the config in force.
    pub fn gates(&self) -> Arc<config::Gates> {
        lock(&self.memory).gates.clone()
    }

    /// Run `f` on the bare clone in a blocking thread (libgit2 is synchronous).
    pub(crate) async fn with_git<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Checkout) -> T + Send + 'static,
    ) -> Result<T, CycleError> {
        let slot = self.checkout.clone();
        let opts = self.opts.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = lock(&slot);
            if guard.is_none() {
                let dir = opts.workdir.join("config.git");
                *guard = Some(Checkout::open(
                    &opts.url,
                    &opts.branch,
                    &dir,
                    opts.auth.clone(),
                )?);
            }
            let checkout = guard
                .as_ref()
                .ok_or_else(|| CycleError::Internal("no checkout".into()))?;
            Ok(f(checkout))
        })
        .await
        .map_err(|e| CycleError::Internal(format!("git task failed: {e}")))?
    }

    /// Fetch and load the config at the new head, keeping the last good one if it is broken.
    pub async fn refresh(&self) -> Result<(Oid, Arc<Config>), CycleError> {
        let path = self.opts.config_path.clone();
        let lists = [
            config::sibling(&path, config::APPROVALS),
            config::sibling(&path, config::QUARANTINE),
        ];
        let read_lists = lists.clone();
        let (head, text, list_texts) = self
            .with_git(move |c| -> Result<_, GitError> {
                let head = c.fetch()?;
                let snap = c.snapshot(head)?;
                let text = snap.read(&path)?;
                let lists = [snap.read(&read_lists[0])?, snap.read(&read_lists[1])?];
                Ok((head, text, lists))
            })
            .await??;
        let text = text.ok_or_else(|| CycleError::NoConfig(self.opts.config_path.clone()))?;
        let utf8 = |file: &str, bytes: &[u8]| {
            std::str::from_utf8(bytes)
                .map(str::to_owned)
                .map_err(|_| ConfigError {
                    problems: vec![config::Problem {
                        file: file.to_owned(),
                        line: None,
                        message: "not UTF-8".into(),
                    }],
                })
        };
        let parsed = utf8(&self.opts.config_path, &text)
            .and_then(|t| config::parse(&self.opts.config_path, &t))
            .and_then(|cfg| {
                let a = list_texts[0]
                    .as_deref()
                    .map(|b| utf8(&lists[0], b))
                    .transpose()?;
                let q = list_texts[1]
                    .as_deref()
                    .map(|b| utf8(&lists[1], b))
                    .transpose()?;
                let gates = config::parse_gates(
                    &cfg,
                    (&lists[0], a.as_deref()),
                    (&lists[1], q.as_deref()),
                )?;
                Ok((cfg, gates))
            });
        let mut text = text;
        for t in list_texts.iter().flatten() {
            text.extend_from_slice(t);
        }
        let hash = hex::encode(Sha256::digest(&text));
        match parsed {
            Ok((cfg, gates)) => {
                let mut mem = lock(&self.memory);
                mem.gates = Arc::new(gates);
                let changed = mem.good.as_ref().is_none_or(|(old, _)| **old != cfg);
                if changed {
                    if mem.good.is_some() {
                        tracing::info!(commit = %gitops::short(head), "config changed; using it from this cycle on");
                    }
                    self.registries.reset_clients();
                    mem.good = Some((Arc::new(cfg), head));
                }
                let recovered = mem.bad_alerted.take().is_some();
                let cfg = mem.good.as_ref().map(|(c, _)| c.clone());
                drop(mem);
                if recovered {
                    tracing::info!(commit = %gitops::short(head), "config is valid again");
                    self.post(&format!(
                        "tagflow: the config at {} is valid again; using it.",
                        gitops::short(head)
                    ));
                }
                let cfg = cfg.ok_or_else(|| CycleError::Internal("config vanished".into()))?;
                Ok((head, cfg))
            }
            Err(err) => {
                let mut mem = lock(&self.memory);
                let running = mem.good.as_ref().map(|(_, at)| gitops::short(*at));
                let first_time = mem.bad_alerted.as_deref() != Some(hash.as_str());
                mem.bad_alerted = Some(hash);
                let good = mem.good.as_ref().map(|(c, _)| c.clone());
                drop(mem);
                if first_time {
                    tracing::error!(commit = %gitops::short(head), "{err}");
                    let problems = err
                        .problems
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n");
                    self.post(&crate::notify::bad_config_text(
                        &gitops::short(head),
                        &problems,
                        running.as_deref(),
                    ));
                } else {
                    tracing::warn!(commit = %gitops::short(head), "config still invalid; keeping the last good one");
                }
                self.metrics.error("config");
                match good {
                    Some(cfg) => Ok((head, cfg)),
                    None => Err(err.into()),
                }
            }
        }
    }

    /// Post to Slack with the config in force, if Slack is configured.
    pub(crate) fn post(&self, text: &str) {
        let (Some(n), Some(cfg)) = (&self.notifier, self.config()) else {
            return;
        };
        let Some(slack) = &cfg.notify.slack else {
            return;
        };
        let Some(webhook) = &slack.webhook_url else {
            // Bot only: a flat message in the channel.
            if let Some(bot) = bot_of(slack) {
                n.flat(bot, text.to_owned());
            }
            return;
        };
        match webhook.read() {
            Ok(url) => n.send(&url, text.to_owned()),
            Err(e) => tracing::warn!(error = %e, "cannot post to Slack"),
        }
    }

    /// One full cycle: fetch, select, commit and push, notify.
    pub async fn cycle(&self, scope: &Scope) -> Result<Report, CycleError> {
        let mut result = self.cycle_inner(scope).await;
        if let Ok(r) = &mut result
            && lock(&self.unreadable).take_retry()
        {
            tracing::info!(
                "a listed tag is not readable yet (a push still landing?); looking again in 1s"
            );
            r.requeue = Some(
                r.requeue
                    .map_or(UNREADABLE_RETRY, |d| d.min(UNREADABLE_RETRY)),
            );
        }
        self.save_cache();
        match &result {
            Ok(r) if r.commit.is_some() => self.metrics.cycle("committed"),
            Ok(_) => self.metrics.cycle("unchanged"),
            Err(_) => self.metrics.cycle("failed"),
        }
        match &result {
            Ok(r) if r.image_errors.is_empty() => {
                self.metrics
                    .success_at(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
                let mut mem = lock(&self.memory);
                if mem.error_alerted.take().is_some() {
                    let n = mem.repeats.count;
                    drop(mem);
                    self.post(&format!(
                        "tagflow: cycles succeed again (after {n} failed cycle{}).",
                        if n == 1 { "" } else { "s" }
                    ));
                }
            }
            Ok(r) => self.alert_once(&CycleError::Images(r.image_errors.clone()).to_string()),
            Err(e) => self.alert_once(&e.to_string()),
        }
        result
    }

    /// Save the registry metadata cache so the next run (or `once`) need not read it again.
    fn save_cache(&self) {
        let path = self.opts.workdir.join(CACHE_FILE);
        let entries = self.registries.export();
        if entries.is_empty() {
            return;
        }
        let result = serde_json::to_vec(&entries)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                if std::fs::read(&path).ok().as_deref() == Some(bytes.as_slice()) {
                    return Ok(());
                }
                std::fs::create_dir_all(&self.opts.workdir)?;
                crate::rewrite::write_atomic(&path, &bytes)
            });
        if let Err(e) = result {
            tracing::warn!(file = %path.display(), error = %e, "could not save the registry cache");
        }
    }

    fn alert_once(&self, text: &str) {
        let mut mem = lock(&self.memory);
        let now = std::time::Instant::now();
        if mem.error_alerted.as_deref() == Some(text) {
            mem.repeats.failed_again();
            let summary = mem.repeats.summary(now, SUMMARY_EVERY);
            drop(mem);
            if let Some(s) = summary {
                self.post(&format!("tagflow: {s}: {}", first_line(text)));
            }
            return;
        }
        mem.error_alerted = Some(text.to_owned());
        mem.repeats = Repeats::new(now);
        drop(mem);
        self.post(&format!(
            "tagflow: a cycle failed (reported once until it changes):\n```\n{text}\n```"
        ));
    }

    async fn cycle_inner(&self, scope: &Scope) -> Result<Report, CycleError> {
        let (head, cfg) = self.refresh().await?;
        if let Some(d) = self.deploy().cloned() {
            let leads = d.elector.is_leader().await;
            self.metrics.leader(leads);
            if !leads {
                // Followers write nothing; the leader's state is read again on taking over.
                lock(&self.memory).state = None;
                if let Some(e) = d.elector.last_error().await {
                    tracing::warn!(error = %e, "cannot reach the Lease");
                    return Err(CycleError::Cluster(rollouts::KUBE_UNREACHABLE.to_owned()));
                }
                return Ok(Report {
                    head,
                    commit: None,
                    changes: Vec::new(),
                    desired: BTreeMap::new(),
                    image_errors: Vec::new(),
                    requeue: None,
                    follower: true,
                });
            }
            return self.rollout_cycle(&d, head, cfg, scope).await;
        }
        if crate::rollout::wants_rollouts(&cfg) {
            return Err(CycleError::NoCluster);
        }
        let (desired, image_errors) = self.select(&cfg, scope).await;
        if desired.is_empty() {
            return Ok(Report {
                head,
                commit: None,
                changes: Vec::new(),
                desired,
                image_errors,
                requeue: None,
                follower: false,
            });
        }
        let targets = plan::policy_targets(&cfg, &desired);
        let (commit, changes, _) = self.commit_plan(&cfg, &targets).await?;
        if let Some(c) = commit {
            let link = crate::notify::commit_link(&self.opts.url, &c.to_string());
            self.post(&crate::notify::commit_text(
                &gitops::short(c),
                &self.opts.branch,
                &changes,
                link.as_deref(),
            ));
        }
        Ok(Report {
            head,
            commit,
            changes,
            desired,
            image_errors,
            requeue: None,
            follower: false,
        })
    }

    /// Dry run: what the next cycle would commit, as (unified diff, commit message). No push,
    /// no Slack. Uses whatever work dir the agent was given (`plan` gives it a throwaway one).
    pub async fn plan(&self) -> Result<Option<(String, String)>, CycleError> {
        let (head, cfg) = self.refresh().await?;
        let (desired, errors) = self.select(&cfg, &Scope::All).await;
        if !errors.is_empty() {
            return Err(CycleError::Images(errors));
        }
        let out = self
            .with_git(move |c| -> Result<Option<(String, String)>, CycleError> {
                let snap = c.snapshot(head)?;
                let Some(p) = plan::plan_edits(&cfg, &desired, |path| snap.read(path))? else {
                    return Ok(None);
                };
                let d = plan::diff(&p.edits, |path| snap.read(path).ok().flatten());
                Ok(Some((d, p.message)))
            })
            .await??;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors_back_off_up_to_the_interval() {
        let interval = Duration::from_secs(60);
        let transient: Result<Report, CycleError> = Err(CycleError::Images(vec![]));
        assert_eq!(
            error_policy(&transient, interval, 0),
            Duration::from_secs(5)
        );
        assert_eq!(
            error_policy(&transient, interval, 2),
            Duration::from_secs(20)
        );
        assert_eq!(error_policy(&transient, interval, 9), interval);
        let terminal: Result<Report, CycleError> = Err(CycleError::NoConfig("c".into()));
        assert_eq!(error_policy(&terminal, interval, 3), interval);
    }
}
