//! Infra watcher: terraform drift on a cron schedule, approval-gated apply of the saved plan,
//! outputs → kubespray inventory committed to git.
//!
//! Pure cores: [`schedule`] (is the cron due), [`summary`] (drift from `show -json`),
//! [`decide`] (report / resolve / apply / refuse), [`inventory`] (output → YAML).
//! IO shell: [`terraform`] (the subprocess) and the [`Watcher`] here, which runs one workspace
//! at a time per name, posts to Slack through the [`Agent`] and commits through its checkout.

pub mod decide;
pub mod inventory;
pub mod schedule;
mod scheduler;
pub mod summary;
pub mod terraform;
mod workdir;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use git2::Oid;

use crate::config::{Config, InfraConfig, InfraMode};
use crate::cycle::{Agent, CycleError};
use crate::gitops::{self, CommitError, Edit, GitError, Prepared, Pushed};
use decide::{Memory, Step};
use summary::Summary;
use terraform::{Terraform, TerraformError};

/// Approvals live next to the config file: `<config dir>/approvals.yaml`.
const APPROVALS_FILE: &str = "approvals.yaml";
/// The scheduler re-reads the config at least this often.
const RESCAN: Duration = Duration::from_secs(5);

/// A watcher run that could not finish.
#[derive(Debug, thiserror::Error)]
pub enum InfraError {
    /// The workspace is not in the config.
    #[error("no infra workspace named {0:?} in the config")]
    Unknown(String),
    /// Fetching the repo or loading the config failed.
    #[error(transparent)]
    Cycle(Box<CycleError>),
    /// Reading the workspace from git or committing the inventory failed.
    #[error(transparent)]
    Git(#[from] GitError),
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

impl From<CycleError> for InfraError {
    fn from(e: CycleError) -> Self {
        Self::Cycle(Box::new(e))
    }
}

impl InfraError {
    /// The stage label for the failures metric.
    pub fn stage(&self) -> String {
        match self {
            Self::Terraform(t) => t.stage().to_owned(),
            Self::Cycle(_) | Self::Git(_) => "git".into(),
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
pub struct RunReport {
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
    agent: Arc<Agent>,
    memory: Mutex<BTreeMap<String, Memory>>,
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
    /// A watcher posting through `agent` (whose notifier decides whether Slack is used).
    pub fn new(agent: Arc<Agent>) -> Arc<Self> {
        Arc::new(Self {
            agent,
            memory: Mutex::new(BTreeMap::new()),
            busy: Mutex::new(BTreeSet::new()),
        })
    }

    fn base(&self, name: &str) -> PathBuf {
        self.agent.opts.workdir.join("infra").join(name)
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

    fn memory(&self, name: &str) -> Memory {
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

    fn remember(&self, name: &str, m: Memory) {
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

    async fn workspace(&self, name: &str) -> Result<(Oid, Arc<Config>, InfraConfig), InfraError> {
        let (head, cfg) = self.agent.refresh().await?;
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

    /// One scheduled run: plan, then report, apply or refuse as [`decide::decide`] says.
    /// `Ok(None)` when a run of the same workspace is still going (the tick is skipped).
    pub async fn tick(&self, name: &str) -> Result<Option<RunReport>, InfraError> {
        let Some(_busy) = self.try_busy(name) else {
            tracing::warn!(workspace = %name, "infra run skipped: the previous run is still going");
            self.agent.metrics.infra_run(name, "skipped", None);
            return Ok(None);
        };
        let started = std::time::Instant::now();
        let result = self.tick_inner(name).await;
        let mut mem = self.memory(name);
        let elapsed = Some(started.elapsed().as_secs_f64());
        match &result {
            Ok(r) => {
                let label = match r.step {
                    Step::Apply { .. } => "applied",
                    _ if r.summary.has_drift() => "drift",
                    _ => "clean",
                };
                self.agent.metrics.infra_run(name, label, elapsed);
                if mem.error_alerted.take().is_some() {
                    self.post(&format!(
                        "tagflow: infra {name}: terraform runs succeed again."
                    ));
                    self.remember(name, mem);
                }
            }
            Err(e) => {
                self.agent.metrics.infra_run(name, "failed", elapsed);
                self.agent.metrics.infra_failure(name, &e.stage());
                let text = crate::secret::redact(&e.to_string());
                tracing::error!(workspace = %name, "infra run failed: {text}");
                if mem.error_alerted.as_deref() != Some(text.as_str()) {
                    self.post(&format!(
                        "tagflow: infra {name}: run failed (reported once until it changes):\n```\n{text}\n```"
                    ));
                    mem.error_alerted = Some(text);
                    self.remember(name, mem);
                }
            }
        }
        result.map(Some)
    }

    async fn tick_inner(&self, name: &str) -> Result<RunReport, InfraError> {
        let (head, cfg, ws) = self.workspace(name).await?;
        let plan = self.plan(&ws, head).await?;
        let mut mem = self.memory(name);
        let approval = match &plan.approval {
            Ok(a) => a.clone(),
            Err(why) => {
                tracing::warn!(workspace = %name, "ignoring the approvals file: {why}");
                None
            }
        };
        let s = &plan.summary;
        let id = s.plan_id.as_str();
        self.agent.metrics.infra_drift(name, s.has_drift());
        let step = decide::decide(
            ws.mode,
            decide::Planned {
                drift: s.has_drift(),
                plan_id: id,
            },
            approval.as_deref(),
            &mem,
        );
        tracing::info!(workspace = %name, plan = %id, step = ?step, "{}", s.headline());
        let head_s = gitops::short(head);
        let approve_hint = |id: &str| match ws.mode {
            InfraMode::Approve => format!(
                "To apply exactly this plan, commit `terraform: {{{name}: \"{id}\"}}` to {}.",
                self.approvals_path()
            ),
            InfraMode::Detect => "Mode `detect`: report only.".to_owned(),
            InfraMode::Auto => String::new(),
        };
        let mut posted = Vec::new();
        let mut inventory_commit = None;
        match &step {
            Step::Quiet => {}
            Step::ReportDrift => {
                posted.push(format!(
                    "tagflow: infra {name} drifted (code at {head_s}), plan `{id}`: {}\n```\n{}\n```\n{}",
                    s.headline(),
                    s.render(),
                    approve_hint(id)
                ));
                mem.reported = Some(id.to_owned());
            }
            Step::ReportResolved => {
                posted.push(format!(
                    "tagflow: infra {name}: drift resolved (plan `{}` is no longer needed; no changes at {head_s}).",
                    mem.reported.as_deref().unwrap_or_default()
                ));
                mem.reported = None;
            }
            Step::IgnoreApproval { approved } => {
                posted.push(format!(
                    "tagflow: infra {name} is in `detect` mode; approval of plan `{approved}` ignored (set mode: approve to apply approved plans)."
                ));
                mem.approval_seen = Some(approved.clone());
            }
            Step::RefuseStale { approved } => {
                let now = if s.has_drift() {
                    format!(
                        "The current plan is `{id}`: {}\n```\n{}\n```\n{}",
                        s.headline(),
                        s.render(),
                        approve_hint(id)
                    )
                } else {
                    "The current plan has no changes: nothing to apply.".to_owned()
                };
                posted.push(format!(
                    "tagflow: infra {name}: approval of plan `{approved}` refused: it is stale (state or code changed since). Re-planned at {head_s}. {now}"
                ));
                mem.approval_seen = Some(approved.clone());
                mem.reported = s.has_drift().then(|| id.to_owned());
            }
            Step::Apply { automatic } => {
                if !automatic {
                    mem.approval_seen = Some(id.to_owned());
                }
                // Remember the approval before applying, so a failed apply is not retried
                // every tick with the same plan.
                self.remember(name, mem.clone());
                let how = if *automatic {
                    "automatically (mode auto)"
                } else {
                    "as approved"
                };
                tracing::info!(workspace = %name, plan = %id, "applying the saved plan {how}");
                let lock_timeout = format!("-lock-timeout={}s", ws.lock_timeout.as_secs());
                let file = plan.file.display().to_string();
                let applied = plan
                    .tf
                    .run(
                        &["apply", "-input=false", "-no-color", &lock_timeout, &file],
                        &[0],
                    )
                    .await;
                if let Err(e) = applied {
                    self.post(&format!(
                        "tagflow: infra {name}: applying plan `{id}` failed:\n```\n{}\n```",
                        crate::secret::redact(&e.to_string())
                    ));
                    return Err(e.into());
                }
                mem.reported = None;
                let _ = std::fs::remove_file(&plan.file);
                let mut text = format!(
                    "tagflow: infra {name}: applied plan `{id}` {how}: {}",
                    s.headline()
                );
                if ws.inventory.is_some() {
                    inventory_commit = self.inventory(&cfg, &ws, &plan.tf, Some(id)).await?;
                    if let Some(c) = inventory_commit {
                        let file = ws
                            .inventory
                            .as_ref()
                            .map(|i| i.file.as_str())
                            .unwrap_or_default();
                        text.push_str(&format!(
                            "\nInventory {file} updated in {}.",
                            gitops::short(c)
                        ));
                    }
                }
                posted.push(text);
            }
        }
        for p in &posted {
            self.post(p);
        }
        self.prune_plans(name, &mem, id);
        self.remember(name, mem);
        Ok(RunReport {
            workspace: name.to_owned(),
            summary: plan.summary,
            step,
            inventory_commit,
            posted,
        })
    }

    fn post(&self, text: &str) {
        self.agent.post(text);
    }

    fn approvals_path(&self) -> String {
        match self.agent.opts.config_path.rsplit_once('/') {
            Some((dir, _)) => format!("{dir}/{APPROVALS_FILE}"),
            None => APPROVALS_FILE.to_owned(),
        }
    }

    /// Keep only the saved plans still worth approving: the current one and the one reported.
    fn prune_plans(&self, name: &str, mem: &Memory, current: &str) {
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
            Some(bytes) => decide::approval_for(&String::from_utf8_lossy(&bytes), &ws.name)
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
        let summary = match plan_id {
            Some(id) => format!("infra {} inventory after plan {id}", ws.name),
            None => format!("infra {} inventory", ws.name),
        };
        let message = format!(
            "{}\n\nRendered from terraform output \"{}\" of workspace {} into {}.\n",
            cfg.git.commit_subject.replace("{summary}", &summary),
            inv.output,
            ws.name,
            inv.file
        );
        let author = cfg.git.author.clone();
        let pushed = self
            .agent
            .with_git(move |c| {
                c.commit_and_push(&author, |snap| -> Result<_, GitError> {
                    if snap.read(&inv.file)?.as_deref() == Some(yaml.as_bytes()) {
                        return Ok(None);
                    }
                    Ok(Some(Prepared {
                        edits: vec![Edit {
                            path: inv.file.clone(),
                            content: yaml.clone().into_bytes(),
                        }],
                        message: message.clone(),
                        detail: (),
                    }))
                })
            })
            .await?;
        match pushed {
            Ok(Pushed::Unchanged { .. }) => {
                tracing::info!(workspace = %ws.name, "inventory unchanged; nothing to commit");
                Ok(None)
            }
            Ok(Pushed::Committed { commit, .. }) => {
                self.agent.metrics.commit();
                tracing::info!(workspace = %ws.name, commit = %gitops::short(commit), "inventory committed");
                Ok(Some(commit))
            }
            Err(CommitError::Git(e) | CommitError::Plan(e)) => Err(e.into()),
        }
    }
}
