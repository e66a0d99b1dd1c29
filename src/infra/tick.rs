//! One scheduled run of a workspace: plan, then report, apply or refuse, and say it in Slack.

use super::decide::{self, Step};
use super::{InfraError, TickReport, Watcher};
use crate::config::InfraMode;
use crate::gitops;

impl Watcher {
    /// One scheduled run: plan, then report, apply or refuse as [`decide::next_step`] says.
    /// `Ok(None)` when a run of the same workspace is still going (the tick is skipped).
    pub async fn tick(&self, name: &str) -> Result<Option<TickReport>, InfraError> {
        let Some(_busy) = self.try_busy(name) else {
            tracing::warn!(workspace = %name, "infra run skipped: the previous run is still going");
            self.host.metrics.infra_run(name, "skipped", None);
            return Ok(None);
        };
        let started = std::time::Instant::now();
        let result = self.tick_inner(name).await;
        let mut mem = self.memory(name);
        let elapsed = Some(started.elapsed().as_secs_f64());
        let now = chrono::Utc::now();
        let stage = crate::activity::stage::infra(name);
        match &result {
            Ok(r) => {
                let label = match r.step {
                    Step::Apply { .. } => "applied",
                    _ if r.summary.has_drift() => "drift",
                    _ => "clean",
                };
                self.host.metrics.infra_run(name, label, elapsed);
                self.host.activity.worked(&stage, now);
                self.host.activity.infra_ran(crate::activity::InfraRun {
                    workspace: name.to_owned(),
                    state: label.to_owned(),
                    plan_id: r.summary.plan_id.clone(),
                    summary: r.summary.headline(),
                    at: now,
                });
                if mem.error_alerted.take().is_some() {
                    self.post(&format!(
                        "tagflow: infra {name}: terraform runs succeed again."
                    ));
                    self.remember(name, mem);
                }
            }
            Err(e) => {
                self.host.metrics.infra_run(name, "failed", elapsed);
                self.host.metrics.infra_failure(name, &e.stage());
                let text = crate::secret::redact(&e.to_string());
                tracing::error!(workspace = %name, "infra run failed: {text}");
                self.host.activity.failed(&stage, &text, now);
                self.host.activity.infra_ran(crate::activity::InfraRun {
                    workspace: name.to_owned(),
                    state: "failed".to_owned(),
                    plan_id: String::new(),
                    summary: failure_line(&text),
                    at: now,
                });
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

    async fn tick_inner(&self, name: &str) -> Result<TickReport, InfraError> {
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
        self.host.metrics.infra_drift(name, s.has_drift());
        let step = decide::next_step(
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
        Ok(TickReport {
            workspace: name.to_owned(),
            summary: plan.summary,
            step,
            inventory_commit,
            posted,
        })
    }
}

/// One line on why a run failed: the first line, and terraform's first `Error:` when the first
/// line only says which command failed.
fn failure_line(text: &str) -> String {
    let first = text
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end_matches(':');
    match text
        .lines()
        .skip(1)
        .find(|l| l.trim_start().starts_with("Error:"))
    {
        Some(e) => format!("{first}: {}", e.trim()),
        None => first.to_owned(),
    }
}
