//! Infra watcher: terraform drift on a cron schedule, approval-gated apply of the saved plan,
//! outputs → kubespray inventory committed to git.
//!
//! Pure cores: [`schedule`] (is the cron due), [`summary`] (drift from `show -json`),
//! [`decide`] (report / resolve / apply / refuse), [`inventory`] (output → YAML).
//! IO shell: [`terraform`] (the subprocess) and the [`Watcher`] here, which runs one workspace
//! at a time per name, posts to Slack and commits through a narrow [`Host`]: the config repo,
//! the config in force, Slack and metrics — not the whole cycle.

pub mod cron;
pub mod decide;
pub mod inventory;
mod scheduler;
pub mod summary;
pub mod terraform;
mod tick;
mod workdir;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use git2::Oid;

use crate::config::{self, Config, Current, InfraConfig};
use crate::gitops::{self, CommitError, ConfigRepo, GitError};
use crate::metrics::Metrics;
use crate::notify::Poster;
use crate::plan::ChangeSet;
use decide::{Seen, Step};
use summary::Summary;
use terraform::{Terraform, TerraformError};

/// What the watcher needs of the running agent.
#[derive(Debug, Clone)]
pub struct Host {
    /// The config repo: workspace code is read from it, inventories committed to it.
    pub repo: Arc<ConfigRepo>,
    /// The config in force (workspaces are read from it).
    pub current: Arc<Current>,
    /// Slack.
    pub poster: Poster,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Each workspace's last run and error, for the status page.
    pub activity: Arc<crate::activity::Activity>,
}

/// The scheduler re-reads the config at least this often.
const RESCAN: Duration = Duration::from_secs(5);

/// A watcher run that could not finish.
#[derive(Debug, thiserror::Error)]
pub enum InfraError {
    /// The workspace is not in the config.
    #[error("no infra workspace named {0:?} in the config")]
    Unknown(String),
    /// No good config has been loaded yet.
    #[error("no good config loaded yet")]
    NoConfig,
    /// Reading the workspace from git failed.
    #[error(transparent)]
    Git(#[from] GitError),
    /// Committing the inventory failed.
    #[error(transparent)]
    Commit(#[from] CommitError),
    /// Terraform failed or timed out.
    #[error(transparent)]
    Terraform(#[from] TerraformError),
    /// `show -json` was not a plan.
    #[error(transparent)]
    Summary(#[from] summary::SummaryError),
    /// The inventory output could not be rendered.
    #[error(transparent)]
    Inventory(#[from] inventory::InventoryError),
    /// Local files of the workspace.
    #[error("failed to prepare {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A secret for terraform's environment.
    #[error("infra env {var}: {source}")]
    Secret {
        /// The variable.
        var: String,
        /// Why.
        #[source]
        source: crate::secret::SecretError,
    },
    /// Anything else, said plainly.
    #[error("{0}")]
    Other(String),
}

impl InfraError {
    /// The stage label for the failures metric.
    pub fn stage(&self) -> String {
        match self {
            Self::Terraform(t) => t.stage().to_owned(),
            Self::NoConfig | Self::Git(_) | Self::Commit(_) => "git".into(),
            Self::Summary(_) => "show".into(),
            Self::Inventory(_) => "inventory".into(),
            _ => "setup".into(),
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> InfraError + '_ {
    move |source| InfraError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A plan made and saved.
#[derive(Debug)]
pub struct Plan {
    /// The config repo head the code was read from.
    pub head: Oid,
    /// What the plan changes.
    pub summary: Summary,
    /// The saved plan file for `summary.plan_id`.
    pub file: PathBuf,
    /// The approved plan id in git, if any (or why the approvals file is unreadable).
    pub approval: Result<Option<String>, String>,
    tf: Terraform,
}

/// What one scheduled run did.
#[derive(Debug)]
pub struct TickReport {
    /// Workspace.
    pub workspace: String,
    /// The plan it made.
    pub summary: Summary,
    /// The decision.
    pub step: Step,
    /// The inventory commit after an apply, when the file changed.
    pub inventory_commit: Option<Oid>,
    /// Slack texts posted, in order.
    pub posted: Vec<String>,
}

/// Runs workspaces; one run per workspace at a time.
#[derive(Debug)]
pub struct Watcher {
    host: Host,
    memory: Mutex<BTreeMap<String, Seen>>,
    busy: Mutex<BTreeSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Marks a workspace busy until dropped.
struct Busy<'a> {
    set: &'a Mutex<BTreeSet<String>>,
    name: String,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        lock(self.set).remove(&self.name);
    }
}

impl Watcher {
    /// A watcher working through `host` (whose poster decides whether Slack is used).
    pub fn new(host: Host) -> Arc<Self> {
        Arc::new(Self {
            host,
            memory: Mutex::new(BTreeMap::new()),
            busy: Mutex::new(BTreeSet::new()),
        })
    }

    /// The config in force.
    pub fn config(&self) -> Option<Arc<Config>> {
        self.host.current.config()
    }

    fn base(&self, name: &str) -> PathBuf {
        self.host.repo.opts.workdir.join("infra").join(name)
    }

    fn try_busy(&self, name: &str) -> Option<Busy<'_>> {
        lock(&self.busy).insert(name.to_owned()).then(|| Busy {
            set: &self.busy,
            name: name.to_owned(),
        })
    }

    /// Whether a run of `name` is in progress.
    pub fn is_busy(&self, name: &str) -> bool {
        lock(&self.busy).contains(name)
    }

    fn memory(&self, name: &str) -> Seen {
        let mut mem = lock(&self.memory);
        mem.entry(name.to_owned())
            .or_insert_with(|| {
                std::fs::read(self.base(name).join("state.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or_default()
            })
            .clone()
    }

    fn remember(&self, name: &str, m: Seen) {
        let path = self.base(name).join("state.json");
        let saved = serde_json::to_vec(&m)
            .map_err(std::io::Error::other)
            .and_then(|b| {
                std::fs::create_dir_all(self.base(name))?;
                crate::rewrite::write_atomic(&path, &b)
            });
        if let Err(e) = saved {
            tracing::warn!(file = %path.display(), error = %e, "could not save the infra watcher's state");
        }
        lock(&self.memory).insert(name.to_owned(), m);
    }

    /// The head (fetched now, so the code planned is the newest) and the workspace's settings
    /// from the config at that head — or, when that config is broken, from the config in force
    /// (the cycle reports a broken config; the watcher goes on with the last good one).
    async fn workspace(&self, name: &str) -> Result<(Oid, Arc<Config>, InfraConfig), InfraError> {
        let path = self.host.repo.opts.config_path.clone();
        let (head, files) = self.host.repo.fetch_files(vec![path.clone()]).await?;
        let at_head = files
            .into_iter()
            .next()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|t| config::parse(&path, &t).ok());
        let cfg = match at_head {
            Some(c) => {
                let c = Arc::new(c);
                // Run alone (`drift`, tests) the watcher has no cycle to load a config for Slack.
                if self.host.current.config().is_none() {
                    self.host.current.set(config::Loaded {
                        config: c.clone(),
                        gates: Arc::default(),
                        commit: head.to_string(),
                    });
                }
                c
            }
            None => self.host.current.config().ok_or(InfraError::NoConfig)?,
        };
        let ws = cfg
            .infra
            .iter()
            .find(|w| w.name == name)
            .cloned()
            .ok_or_else(|| InfraError::Unknown(name.to_owned()))?;
        Ok((head, cfg, ws))
    }

    /// `tagflow drift`: plan now and summarise; no Slack, no apply, no remembered state.
    pub async fn drift(&self, name: &str) -> Result<Plan, InfraError> {
        let _busy = self
            .try_busy(name)
            .ok_or_else(|| InfraError::Other(format!("infra {name}: a run is in progress")))?;
        let (head, _cfg, ws) = self.workspace(name).await?;
        self.plan(&ws, head).await
    }

    fn post(&self, text: &str) {
        self.host.poster.post(text);
    }

    fn approvals_path(&self) -> String {
        config::sibling(&self.host.repo.opts.config_path, config::APPROVALS)
    }

    /// Keep only the saved plans still worth approving: the current one and the one reported.
    fn prune_plans(&self, name: &str, mem: &Seen, current: &str) {
        let Ok(entries) = std::fs::read_dir(self.base(name).join("plans")) else {
            return;
        };
        for e in entries.flatten() {
            let f = e.file_name().to_string_lossy().into_owned();
            let id = f.trim_end_matches(".tfplan");
            if id != current && mem.reported.as_deref() != Some(id) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Check out the workspace's code at `head`, init, plan to a file, read it back as JSON.
    pub async fn plan(&self, ws: &InfraConfig, head: Oid) -> Result<Plan, InfraError> {
        let plans = self.base(&ws.name).join("plans");
        let (tf, tree, approvals) = self.prepare(ws, head).await?;
        std::fs::create_dir_all(&plans).map_err(io_err(&plans))?;
        let approval = match approvals {
            None => Ok(None),
            Some(bytes) => config::plan_approval(&String::from_utf8_lossy(&bytes), &ws.name)
                .map_err(|why| format!("{}: {why}", self.approvals_path())),
        };
        tf.run(&["init", "-input=false", "-no-color"], &[0]).await?;
        let candidate = plans.join("candidate.tfplan");
        let out = format!("-out={}", candidate.display());
        let lock_timeout = format!("-lock-timeout={}s", ws.lock_timeout.as_secs());
        let var_files: Vec<String> = ws
            .var_files
            .iter()
            .map(|f| format!("-var-file={f}"))
            .collect();
        let mut args = vec![
            "plan",
            "-input=false",
            "-no-color",
            &lock_timeout,
            "-detailed-exitcode",
            &out,
        ];
        args.extend(var_files.iter().map(String::as_str));
        // Exit 2 means "changes" but a data source alone can cause it: the JSON decides.
        tf.run(&args, &[0, 2]).await?;
        let cand = candidate.display().to_string();
        let shown = tf.run(&["show", "-json", "-no-color", &cand], &[0]).await?;
        for v in summary::sensitive_values(&shown.raw_stdout) {
            crate::secret::register(&v);
        }
        let summary = summary::summarize(&shown.raw_stdout, &tree.to_string())?;
        let file = plans.join(format!("{}.tfplan", summary.plan_id));
        if file.exists() {
            // Same changes from the same code: keep the plan file that was reported, so an
            // approval applies exactly it.
            let _ = std::fs::remove_file(&candidate);
        } else {
            std::fs::rename(&candidate, &file).map_err(io_err(&file))?;
        }
        Ok(Plan {
            head,
            summary,
            file,
            approval,
            tf,
        })
    }

    /// `tagflow inventory`: render the inventory from the workspace's current outputs and commit
    /// it if it changed. Plans nothing and applies nothing.
    pub async fn render_inventory(&self, name: &str) -> Result<Option<Oid>, InfraError> {
        let _busy = self
            .try_busy(name)
            .ok_or_else(|| InfraError::Other(format!("infra {name}: a run is in progress")))?;
        let (head, cfg, ws) = self.workspace(name).await?;
        if ws.inventory.is_none() {
            return Err(InfraError::Other(format!(
                "infra {name}: no inventory configured"
            )));
        }
        // init against the current code so `output` reads the configured backend.
        let (tf, _, _) = self.prepare(&ws, head).await?;
        tf.run(&["init", "-input=false", "-no-color"], &[0]).await?;
        self.inventory(&cfg, &ws, &tf, None).await
    }

    /// Read the declared output, render it, commit the file if it changed.
    async fn inventory(
        &self,
        cfg: &Config,
        ws: &InfraConfig,
        tf: &Terraform,
        plan_id: Option<&str>,
    ) -> Result<Option<Oid>, InfraError> {
        let Some(inv) = ws.inventory.clone() else {
            return Ok(None);
        };
        let out = tf.run(&["output", "-json", "-no-color"], &[0]).await?;
        let outputs: serde_json::Value = serde_json::from_slice(&out.raw_stdout)
            .map_err(|e| InfraError::Other(format!("terraform output -json: not JSON: {e}")))?;
        for v in summary::sensitive_outputs(&outputs) {
            crate::secret::register(&v);
        }
        let o = outputs.get(&inv.output).ok_or_else(|| {
            InfraError::Other(format!(
                "infra {}: no terraform output named {:?}",
                ws.name, inv.output
            ))
        })?;
        if o.get("sensitive").and_then(serde_json::Value::as_bool) == Some(true) {
            return Err(InfraError::Other(format!(
                "infra {}: output {:?} is marked sensitive; refusing to write it into git",
                ws.name, inv.output
            )));
        }
        let value = o.get("value").cloned().unwrap_or_default();
        let yaml = inventory::render(&ws.name, &inv.output, &value)?;
        // A second guard: nothing registered as secret may reach git.
        if crate::secret::redact(&yaml) != yaml {
            return Err(InfraError::Other(format!(
                "infra {}: the inventory would contain a secret value; not committing it",
                ws.name
            )));
        }
        let change = ChangeSet::Inventory {
            workspace: ws.name.clone(),
            output: inv.output.clone(),
            file: inv.file.clone(),
            content: yaml,
            plan_id: plan_id.map(str::to_owned),
        };
        let done = self.host.repo.commit(Arc::new(cfg.clone()), change).await?;
        match done.commit {
            None => tracing::info!(workspace = %ws.name, "inventory unchanged; nothing to commit"),
            Some(c) => {
                tracing::info!(workspace = %ws.name, commit = %gitops::short(c), "inventory committed");
            }
        }
        Ok(done.commit)
    }
}
