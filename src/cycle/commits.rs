//! The cycle's extra commits: the revert + quarantine of a failed rollout, and an approval.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use git2::Oid;

use super::{Agent, CycleError};
use crate::config::{self, Config};
use crate::gitops::{self, CommitError, Edit, Prepared, Pushed};
use crate::plan::{self, Desired, EnvChange, PerEnv};
use crate::rollout::Rollout;

impl Agent {
    /// Commit the previous values of the failed rollout's environment and quarantine its tag.
    pub(super) async fn revert(
        &self,
        cfg: &Arc<Config>,
        r: &Rollout,
    ) -> Result<Option<Oid>, CycleError> {
        let mut per_env = PerEnv::new();
        if let Some(prev) = &r.previous {
            let img = cfg
                .images
                .get(&r.image)
                .ok_or_else(|| CycleError::Internal(format!("no image {}", r.image)))?;
            let digest = if prev.digest.is_empty() {
                self.registries
                    .resolve(cfg, &img.repository, &prev.tag, &img.platform)
                    .await
                    .map_err(|e| CycleError::Images(vec![(r.image.clone(), e.to_string())]))?
                    .digest
            } else {
                prev.digest.clone()
            };
            per_env.insert(
                r.env.clone(),
                BTreeMap::from([(
                    r.image.clone(),
                    Desired {
                        image: r.image.clone(),
                        repository: img.repository.clone(),
                        tag: prev.tag.clone(),
                        digest,
                        reason: "revert".into(),
                    },
                )]),
            );
        }
        let quarantine_path = config::sibling(&self.opts.config_path, config::QUARANTINE);
        let author = cfg.git.author.clone();
        let plan_cfg = cfg.clone();
        let r2 = r.clone();
        let pushed = self
            .with_git(move |c| {
                c.commit_and_push(
                    &author,
                    |snap| -> Result<Option<Prepared<Vec<EnvChange>>>, CycleError> {
                        let values = plan::plan_env_edits(&plan_cfg, &per_env, |p| snap.read(p))?;
                        let old = snap.read(&quarantine_path)?;
                        let old = old.map(|b| String::from_utf8_lossy(&b).into_owned());
                        let at = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                        let reason = format!("{}: {}", r2.env, r2.reason);
                        let list = config::append_entry(
                            &quarantine_path,
                            old.as_deref(),
                            "quarantine",
                            "# Tags the policy never selects and tagflow never promotes.\n",
                            &[
                                ("image", &r2.image),
                                ("tag", &r2.pinned.tag),
                                ("reason", &reason),
                                ("at", &at),
                            ],
                        )
                        .map_err(|e| CycleError::Internal(e.to_string()))?;
                        let (mut edits, detail) = match values {
                            Some(p) => (p.edits, p.detail),
                            None => (Vec::new(), Vec::new()),
                        };
                        if let Some(text) = list {
                            edits.push(Edit {
                                path: quarantine_path.clone(),
                                content: text.into_bytes(),
                            });
                        }
                        if edits.is_empty() {
                            return Ok(None);
                        }
                        let back = r2
                            .previous
                            .as_ref()
                            .map_or("(nothing to revert to)".to_owned(), |p| p.tag.clone());
                        let mut message = format!(
                            "tagflow: revert {} {} {} → {back}, quarantine {}\n\n{}\n\n",
                            r2.env, r2.image, r2.pinned.tag, r2.pinned.tag, r2.reason
                        );
                        for c in &detail {
                            message.push_str(&format!(
                                "{} ({}:{})\n",
                                plan::describe(c),
                                c.change.file,
                                c.change.line
                            ));
                        }
                        message.push_str(&format!(
                            "\nTagflow-Quarantine: {} {}\n",
                            r2.image, r2.pinned.tag
                        ));
                        Ok(Some(Prepared {
                            edits,
                            message,
                            detail,
                        }))
                    },
                )
            })
            .await?;
        match pushed {
            Ok(Pushed::Committed { commit, .. }) => {
                self.metrics.commit();
                tracing::info!(commit = %gitops::short(commit), env = %r.env, tag = %r.pinned.tag, "reverted and quarantined");
                Ok(Some(commit))
            }
            Ok(Pushed::Unchanged { .. }) => Ok(None),
            Err(CommitError::Git(e)) => Err(e.into()),
            Err(CommitError::Plan(e)) => Err(e),
        }
    }
}

impl Agent {
    /// Commit an approval for (`env`, `tag`) to the approvals list and push it, as a person would
    /// by hand. `None` when the same approval is already there.
    pub async fn approve(
        &self,
        env: &str,
        tag: &str,
        image: Option<&str>,
    ) -> Result<Option<Oid>, CycleError> {
        let (_, cfg) = self.refresh().await?;
        let bad = |m: String| {
            CycleError::Config(config::ConfigError {
                problems: vec![config::Problem {
                    file: "tagflow approve".into(),
                    line: None,
                    message: m,
                }],
            })
        };
        if !cfg.environments.contains_key(env) {
            return Err(bad(format!(
                "no environment {env} (known: {})",
                cfg.environments
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if let Some(i) = image.filter(|i| !cfg.images.contains_key(*i)) {
            return Err(bad(format!("no image {i}")));
        }
        if !crate::rewrite::valid_tag(tag) {
            return Err(bad(format!("{tag:?} is not a valid tag")));
        }
        let path = config::sibling(&self.opts.config_path, config::APPROVALS);
        let mut fields = vec![
            ("env".to_owned(), env.to_owned()),
            ("tag".to_owned(), tag.to_owned()),
        ];
        if let Some(i) = image {
            fields.push(("image".to_owned(), i.to_owned()));
        }
        let author = cfg.git.author.clone();
        let subject = format!("tagflow: approve {tag} for {env}");
        let pushed = self
            .with_git(move |c| {
                c.commit_and_push(&author, |snap| -> Result<Option<Prepared<()>>, CycleError> {
                    let old = snap.read(&path)?.map(|b| String::from_utf8_lossy(&b).into_owned());
                    let f: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    let Some(text) = config::append_entry(
                        &path,
                        old.as_deref(),
                        "approvals",
                        "# Approvals for gated promotions (`tagflow approve ENV TAG` appends one).\n",
                        &f,
                    )
                    .map_err(|e| CycleError::Internal(e.to_string()))?
                    else {
                        return Ok(None);
                    };
                    Ok(Some(Prepared {
                        edits: vec![Edit {
                            path: path.clone(),
                            content: text.into_bytes(),
                        }],
                        message: format!("{subject}\n"),
                        detail: (),
                    }))
                })
            })
            .await?;
        match pushed {
            Ok(Pushed::Committed { commit, .. }) => Ok(Some(commit)),
            Ok(Pushed::Unchanged { .. }) => Ok(None),
            Err(CommitError::Git(e)) => Err(e.into()),
            Err(CommitError::Plan(e)) => Err(e),
        }
    }
}
