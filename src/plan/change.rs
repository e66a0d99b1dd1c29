//! The typed change sets behind every tagflow commit, and how each becomes edits and a message
//! on the files of a head (pure: planned again on the new head when a push loses a race).

use std::fmt::Write as _;

use super::{Desired, Edit, PerEnv, PlanError, Prepared, Read, describe, plan_env_edits};
use crate::config::Config;
use crate::rewrite::append_entry;

/// Header of a quarantine list tagflow creates.
const QUARANTINE_HEADER: &str = "# Tags the policy never selects and tagflow never promotes.\n";
/// Header of an approvals list tagflow creates.
const APPROVALS_HEADER: &str =
    "# Approvals for gated promotions (`tagflow approve ENV TAG` appends one).\n";

/// The quarantine entry a revert adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineNote {
    /// The list file (`config/quarantine.yaml`).
    pub file: String,
    /// Image.
    pub image: String,
    /// The tag that failed.
    pub tag: String,
    /// Why, as the rollout said it (`prod: smoke check failed: …`).
    pub reason: String,
    /// When (RFC 3339).
    pub at: String,
}

/// What one commit is for. Built by the cycle, the approve command and the infra watcher;
/// turned into edits by [`prepare`] on whatever head the push is attempted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeSet {
    /// The policy's picks and the promotions that passed their gates, per environment.
    Update(PerEnv),
    /// Put a failed rollout's environment back on its previous values and quarantine the tag.
    Revert {
        /// Environment.
        env: String,
        /// Image.
        image: String,
        /// The values to go back to; `None` when nothing earlier is known (quarantine only).
        previous: Option<Desired>,
        /// The quarantine entry.
        quarantine: QuarantineNote,
    },
    /// Approve promoting `tag` into `env`, as a person would by hand.
    Approve {
        /// The approvals list file.
        file: String,
        /// Environment receiving the tag.
        env: String,
        /// The tag.
        tag: String,
        /// Image, when the environment carries several.
        image: Option<String>,
    },
    /// Write an infra workspace's rendered inventory.
    Inventory {
        /// Workspace.
        workspace: String,
        /// The terraform output it was rendered from.
        output: String,
        /// File in the repo.
        file: String,
        /// The rendered YAML.
        content: String,
        /// The plan whose apply produced it, if any.
        plan_id: Option<String>,
    },
}

impl ChangeSet {
    /// A short label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Update(_) => "update",
            Self::Revert { .. } => "revert",
            Self::Approve { .. } => "approval",
            Self::Inventory { .. } => "inventory",
        }
    }
}

/// Plan `change` on the files `read` gives; `None` when the head already has it.
pub fn prepare(
    change: &ChangeSet,
    config: &Config,
    read: &Read<'_>,
) -> Result<Option<Prepared>, PlanError> {
    match change {
        ChangeSet::Update(per_env) => plan_env_edits(config, per_env, read),
        ChangeSet::Revert {
            env,
            image,
            previous,
            quarantine,
        } => revert(config, env, image, previous.as_ref(), quarantine, read),
        ChangeSet::Approve {
            file,
            env,
            tag,
            image,
        } => {
            let mut fields = vec![("env", env.as_str()), ("tag", tag.as_str())];
            if let Some(i) = image {
                fields.push(("image", i.as_str()));
            }
            let old = text_of(read, file)?;
            let Some(text) =
                append_entry(file, old.as_deref(), "approvals", APPROVALS_HEADER, &fields)?
            else {
                return Ok(None);
            };
            Ok(Some(Prepared {
                edits: vec![Edit {
                    path: file.clone(),
                    content: text.into_bytes(),
                }],
                message: format!("tagflow: approve {tag} for {env}\n"),
                changes: Vec::new(),
            }))
        }
        ChangeSet::Inventory {
            workspace,
            output,
            file,
            content,
            plan_id,
        } => {
            if read.read(file)?.as_deref() == Some(content.as_bytes()) {
                return Ok(None);
            }
            let summary = match plan_id {
                Some(id) => format!("infra {workspace} inventory after plan {id}"),
                None => format!("infra {workspace} inventory"),
            };
            Ok(Some(Prepared {
                edits: vec![Edit {
                    path: file.clone(),
                    content: content.clone().into_bytes(),
                }],
                message: format!(
                    "{}\n\nRendered from terraform output \"{output}\" of workspace {workspace} into {file}.\n",
                    config.git.commit_subject.replace("{summary}", &summary)
                ),
                changes: Vec::new(),
            }))
        }
    }
}

fn text_of(read: &Read<'_>, file: &str) -> Result<Option<String>, PlanError> {
    Ok(read
        .read(file)?
        .map(|b| String::from_utf8_lossy(&b).into_owned()))
}

fn revert(
    config: &Config,
    env: &str,
    image: &str,
    previous: Option<&Desired>,
    q: &QuarantineNote,
    read: &Read<'_>,
) -> Result<Option<Prepared>, PlanError> {
    let per_env: PerEnv = previous
        .map(|p| {
            (
                env.to_owned(),
                std::collections::BTreeMap::from([(image.to_owned(), p.clone())]),
            )
        })
        .into_iter()
        .collect();
    let values = plan_env_edits(config, &per_env, read)?;
    let old = text_of(read, &q.file)?;
    let reason = format!("{env}: {}", q.reason);
    let list = append_entry(
        &q.file,
        old.as_deref(),
        "quarantine",
        QUARANTINE_HEADER,
        &[
            ("image", &q.image),
            ("tag", &q.tag),
            ("reason", &reason),
            ("at", &q.at),
        ],
    )?;
    let (mut edits, changes) = match values {
        Some(p) => (p.edits, p.changes),
        None => (Vec::new(), Vec::new()),
    };
    if let Some(text) = list {
        edits.push(Edit {
            path: q.file.clone(),
            content: text.into_bytes(),
        });
    }
    if edits.is_empty() {
        return Ok(None);
    }
    let back = previous.map_or("(nothing to revert to)", |p| p.tag.as_str());
    let mut message = format!(
        "tagflow: revert {env} {image} {} → {back}, quarantine {}\n\n{}\n\n",
        q.tag, q.tag, q.reason
    );
    for c in &changes {
        let _ = writeln!(
            message,
            "{} ({}:{})",
            describe(c),
            c.change.file,
            c.change.line
        );
    }
    let _ = write!(message, "\nTagflow-Quarantine: {image} {}\n", q.tag);
    Ok(Some(Prepared {
        edits,
        message,
        changes,
    }))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const CONFIG: &str = "images:\n  app: {repository: r.example.com/team/app, policy: {tags: '.*', order: built}}\nenvironments:\n  dev: {file: envs/dev/patch.yaml}\n";
    const DEV: &str = "image:\n  tag: b2c3d4e # {\"$imagepolicy\": \"flux-system:app:tag\"}\n";

    fn note() -> QuarantineNote {
        QuarantineNote {
            file: "config/quarantine.yaml".into(),
            image: "app".into(),
            tag: "b2c3d4e".into(),
            reason: "smoke check failed: status 503".into(),
            at: "2024-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn a_revert_restores_the_previous_tag_and_quarantines_in_one_commit() {
        let config = crate::config::parse("c", CONFIG).expect("config");
        let files = BTreeMap::from([("envs/dev/patch.yaml", DEV.to_owned())]);
        let read = files.clone();
        let prev = Desired {
            image: "app".into(),
            repository: "r.example.com/team/app".into(),
            tag: "a1b2c3d".into(),
            digest: format!("sha256:{}", "ab".repeat(32)),
            reason: "revert".into(),
        };
        let change = ChangeSet::Revert {
            env: "dev".into(),
            image: "app".into(),
            previous: Some(prev),
            quarantine: note(),
        };
        let p = prepare(&change, &config, &read)
            .expect("plans")
            .expect("changes");
        assert_eq!(
            p.edits.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
            ["envs/dev/patch.yaml", "config/quarantine.yaml"]
        );
        assert!(
            p.message
                .starts_with("tagflow: revert dev app b2c3d4e → a1b2c3d, quarantine b2c3d4e\n"),
            "{}",
            p.message
        );
        assert!(p.message.ends_with("Tagflow-Quarantine: app b2c3d4e\n"));
        assert_eq!(p.changes.len(), 1);
        // Planned again on a head that already has both: nothing to commit.
        let done: BTreeMap<&str, Vec<u8>> = p
            .edits
            .iter()
            .map(|e| (e.path.as_str(), e.content.clone()))
            .collect();
        assert_eq!(prepare(&change, &config, &done).expect("ok"), None);
    }

    #[test]
    fn approvals_and_inventories_are_idempotent() {
        let config = crate::config::parse("c", CONFIG).expect("config");
        let none = BTreeMap::<String, String>::new();
        let approve = ChangeSet::Approve {
            file: "config/approvals.yaml".into(),
            env: "prod".into(),
            tag: "0f1e2d3".into(),
            image: None,
        };
        let p = prepare(&approve, &config, &none).expect("ok").expect("new");
        assert_eq!(p.message, "tagflow: approve 0f1e2d3 for prod\n");
        let content = p.edits[0].content.clone();
        let again = BTreeMap::from([("config/approvals.yaml", content)]);
        assert_eq!(prepare(&approve, &config, &again).expect("ok"), None);

        let inv = ChangeSet::Inventory {
            workspace: "aws".into(),
            output: "inventory".into(),
            file: "inventory/hosts.yaml".into(),
            content: "all: {}\n".into(),
            plan_id: Some("1a2b".into()),
        };
        let p = prepare(&inv, &config, &none).expect("ok").expect("new");
        assert!(
            p.message
                .starts_with("tagflow: infra aws inventory after plan 1a2b\n"),
            "{}",
            p.message
        );
        let same = BTreeMap::from([("inventory/hosts.yaml", "all: {}\n")]);
        assert_eq!(prepare(&inv, &config, &same).expect("ok"), None);
    }

    #[test]
    fn a_broken_list_is_refused_and_nothing_is_planned() {
        let config = crate::config::parse("c", CONFIG).expect("config");
        let broken = BTreeMap::from([("config/approvals.yaml", "approvals: {not: a list}\n")]);
        let approve = ChangeSet::Approve {
            file: "config/approvals.yaml".into(),
            env: "prod".into(),
            tag: "0f1e2d3".into(),
            image: None,
        };
        assert!(matches!(
            prepare(&approve, &config, &broken),
            Err(PlanError::Append(_))
        ));
    }
}
