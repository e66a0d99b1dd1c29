//! The config repo as the rest of tagflow sees it: where it is, one bare clone shared by the
//! cycle and the infra watcher, and the one path every commit takes.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use git2::Oid;

use super::{Checkout, GitAuth, GitError, PushError, Pushed, Snapshot, short};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::plan::{self, ChangeSet, EnvChange, PlanError};

/// The ref outside the branches that holds tagflow's rollout state (with `state: git`).
pub const STATE_REF: &str = "refs/tagflow/state";
/// The file in a state commit.
pub const STATE_FILE: &str = "state.json";

/// Where the config repo is and how to reach it (the bootstrap flags).
#[derive(Debug, Clone)]
pub struct RepoOptions {
    /// Clone URL.
    pub url: String,
    /// Branch tagflow reads and writes.
    pub branch: String,
    /// Path of the config file inside the repo.
    pub config_path: String,
    /// Directory for tagflow's bare clones and caches.
    pub workdir: PathBuf,
    /// Git credentials.
    pub auth: GitAuth,
}

impl RepoOptions {
    /// Options for `url` and `branch`; the work dir defaults to
    /// `<tmp>/tagflow/<hash of url and branch>`, so two repos never share one.
    pub fn new(
        url: String,
        branch: String,
        config_path: String,
        workdir: Option<PathBuf>,
        auth: GitAuth,
    ) -> Self {
        use sha2::Digest as _;
        let workdir = workdir.unwrap_or_else(|| {
            let id = hex::encode(sha2::Sha256::digest(format!("{url}#{branch}")));
            std::env::temp_dir().join("tagflow").join(&id[..16])
        });
        Self {
            url,
            branch,
            config_path,
            workdir,
            auth,
        }
    }
}

/// What [`ConfigRepo::commit`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The pushed commit; `None` when the head already had the change.
    pub commit: Option<Oid>,
    /// The head after: the new commit, or the head that needed nothing.
    pub head: Oid,
    /// The values changes made (empty for list and inventory commits).
    pub changes: Vec<EnvChange>,
    /// Whether the commit sits right on the head it was planned on (its first push was taken):
    /// then the head's config is the one planned with. `false` without a commit.
    pub first_push: bool,
}

/// A commit that did not happen. Nothing was pushed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Fetching, pushing or the racing writers.
    #[error(transparent)]
    Git(#[from] GitError),
    /// The change does not apply to the files at the head (bad values file, broken list).
    #[error(transparent)]
    Plan(#[from] PlanError),
}

impl CommitError {
    /// Worth retrying soon: the network or a race, not the repo's content.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Git(e) => e.is_transient(),
            Self::Plan(_) => false,
        }
    }
}

/// The config repo: one bare clone behind a lock, opened on first use.
#[derive(Debug)]
pub struct ConfigRepo {
    /// Where it is.
    pub opts: RepoOptions,
    checkout: Arc<Mutex<Option<Checkout>>>,
    metrics: Arc<Metrics>,
}

impl ConfigRepo {
    /// A repo handle; nothing is fetched until first use.
    pub fn new(opts: RepoOptions, metrics: Arc<Metrics>) -> Self {
        Self {
            opts,
            checkout: Arc::new(Mutex::new(None)),
            metrics,
        }
    }

    /// Run `f` on the bare clone in a blocking thread (libgit2 is synchronous).
    pub async fn with_git<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Checkout) -> T + Send + 'static,
    ) -> Result<T, GitError> {
        let slot = self.checkout.clone();
        let opts = self.opts.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let checkout = match guard.take() {
                Some(c) => c,
                None => Checkout::open(
                    &opts.url,
                    &opts.branch,
                    &opts.workdir.join("config.git"),
                    opts.auth.clone(),
                )?,
            };
            let out = f(&checkout);
            *guard = Some(checkout);
            Ok(out)
        })
        .await
        .map_err(|e| GitError::Task(e.to_string()))?
    }

    /// Fetch, then read `paths` at the new head (each `None` when absent).
    pub async fn fetch_files(
        &self,
        paths: Vec<String>,
    ) -> Result<(Oid, Vec<Option<Vec<u8>>>), GitError> {
        self.with_git(move |c| {
            let head = c.fetch()?;
            let snap = c.snapshot(head)?;
            let files = paths
                .iter()
                .map(|p| snap.read(p))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((head, files))
        })
        .await?
    }

    /// Read at `commit` without fetching.
    pub async fn read_at<T: Send + 'static>(
        &self,
        commit: Oid,
        f: impl FnOnce(&Snapshot<'_>) -> Result<T, GitError> + Send + 'static,
    ) -> Result<T, GitError> {
        self.with_git(move |c| f(&c.snapshot(commit)?)).await?
    }

    /// The rollout state document on [`STATE_REF`]: (its commit, its text); `None` when no
    /// state was ever saved.
    pub async fn read_state(&self) -> Result<Option<(Oid, Vec<u8>)>, GitError> {
        self.with_git(|c| {
            let Some(commit) = c.fetch_ref(STATE_REF)? else {
                return Ok(None);
            };
            Ok(c.read_file_at(commit, STATE_FILE)?.map(|t| (commit, t)))
        })
        .await?
    }

    /// Save the state document on top of `base` (the state commit it was read from) with a
    /// compare-and-swap push: `Ok(None)` when another writer moved the ref first (re-read and
    /// decide again), else the new state commit.
    pub async fn save_state(
        &self,
        base: Option<Oid>,
        text: Vec<u8>,
        git: crate::config::GitConfig,
    ) -> Result<Option<Oid>, GitError> {
        self.with_git(move |c| {
            let commit = c.record(base, STATE_FILE, &text, "tagflow: rollout state\n", &git)?;
            Ok(c.push_ref(STATE_REF, commit, base)?.then_some(commit))
        })
        .await?
    }

    /// Tagflow's last commit setting each (env, image) of `wanted`, read from the fetched
    /// history (see [`Checkout::last_sets`]).
    pub async fn last_sets(
        &self,
        from: Oid,
        wanted: Vec<(String, String)>,
    ) -> Result<super::history::LastSets, GitError> {
        self.with_git(move |c| c.last_sets(from, &wanted)).await?
    }

    /// Tagflow's commits after `until` up to `from` (see [`Checkout::tagflow_commits_since`]).
    pub async fn tagflow_commits_since(
        &self,
        from: Oid,
        until: Oid,
    ) -> Result<Option<super::history::Since>, GitError> {
        self.with_git(move |c| c.tagflow_commits_since(from, until))
            .await?
    }

    /// tagflow's last `n` commits on the fetched branch (see [`Checkout::recent_commits`]).
    pub async fn recent_commits(
        &self,
        email: String,
        n: usize,
    ) -> Result<super::history::Recent, GitError> {
        self.with_git(move |c| c.recent_commits(&email, n)).await?
    }

    /// Whether revision `rev` (as a reconciler reports it) is `commit` or a descendant of it.
    pub async fn contains(&self, rev: &str, commit: &str) -> bool {
        let (rev, commit) = (rev.to_owned(), commit.to_owned());
        self.with_git(move |c| c.contains(&rev, &commit))
            .await
            .unwrap_or(false)
    }

    /// The one way tagflow commits: plan `change` on the fetched head, push (never forced),
    /// and on a lost race fetch and plan again on the new head.
    pub async fn commit(
        &self,
        config: Arc<Config>,
        change: ChangeSet,
    ) -> Result<Committed, CommitError> {
        self.commit_from(config, change, None).await
    }

    /// [`ConfigRepo::commit`], planned first on `head`, fetched by this cycle a moment ago:
    /// nothing to change costs no second fetch.
    pub async fn commit_on(
        &self,
        config: Arc<Config>,
        change: ChangeSet,
        head: Oid,
    ) -> Result<Committed, CommitError> {
        self.commit_from(config, change, Some(head)).await
    }

    async fn commit_from(
        &self,
        config: Arc<Config>,
        change: ChangeSet,
        known: Option<Oid>,
    ) -> Result<Committed, CommitError> {
        let kind = change.kind();
        let git = config.git.clone();
        let pushed = self
            .with_git(move |c| {
                c.commit_and_push(&git, known, |snap| plan::prepare(&change, &config, snap))
            })
            .await?;
        match pushed {
            Ok(Pushed::Unchanged { head }) => Ok(Committed {
                commit: None,
                head,
                changes: Vec::new(),
                first_push: false,
            }),
            Ok(Pushed::Committed {
                commit,
                attempts,
                prepared,
            }) => {
                self.metrics.commit();
                tracing::info!(commit = %short(commit), kind, attempts, changes = prepared.changes.len(), "pushed");
                for c in &prepared.changes {
                    tracing::info!(commit = %short(commit), "{}", plan::describe(c));
                }
                Ok(Committed {
                    commit: Some(commit),
                    head: commit,
                    changes: prepared.changes,
                    first_push: attempts == 1 && known.is_some(),
                })
            }
            Err(PushError::Git(e)) => Err(e.into()),
            Err(PushError::Plan(e)) => {
                self.metrics.error("plan");
                Err(e.into())
            }
        }
    }
}
