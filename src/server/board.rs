//! Reads what the status page shows: the config and lists in force, the rollout state on
//! `refs/tagflow/state`, and tagflow's last commits on the fetched branch (IO; the page itself
//! is rendered by the pure [`super::status`]).

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};

use super::status::{
    CommitRow, ErrorRow, InfraRow, PendingApproval, QuarantineRow, RolloutRow, StatusData,
    short_digest,
};
use crate::config::{Config, Current, Gates};
use crate::gitops::ConfigRepo;
use crate::rollout::{Phase, State};

/// How many of tagflow's commits the page lists.
pub const RECENT_COMMITS: usize = 15;

/// What the page reads from.
#[derive(Debug)]
pub struct Board {
    /// The config repo.
    pub repo: Arc<ConfigRepo>,
    /// The config in force.
    pub current: Arc<Current>,
    /// Bearer token the page requires (`--status-token-file`), read at each request.
    pub token: Option<crate::secret::SecretRef>,
    /// The last error per stage and each infra workspace's last run.
    pub activity: Arc<crate::activity::Activity>,
}

impl Board {
    /// Read everything now; what cannot be read becomes a listed problem, never a failure.
    pub async fn gather(&self, now: DateTime<Utc>) -> StatusData {
        let time = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
        let mut d = StatusData {
            generated: time(now),
            ..StatusData::default()
        };
        d.errors = self
            .activity
            .errors()
            .into_iter()
            .map(|e| ErrorRow {
                stage: e.stage,
                message: e.message,
                since: time(e.since),
                last: time(e.last),
                count: e.count,
                resolved: e.resolved.map(time),
            })
            .collect();
        d.infra = self
            .activity
            .infra()
            .into_iter()
            .map(|r| InfraRow {
                workspace: r.workspace,
                state: r.state,
                plan_id: r.plan_id,
                summary: r.summary,
                at: time(r.at),
            })
            .collect();
        let Some(loaded) = self.current.loaded() else {
            d.problems
                .push("no good config loaded yet: the first cycle has not finished".into());
            return d;
        };
        d.head = Some(loaded.commit.clone());
        let url = self.repo.opts.url.clone();
        let link = |c: &str| crate::notify::commit_link(&url, c);
        let state = match self.repo.read_state().await {
            Ok(Some((_, text))) => match serde_json::from_slice::<State>(&text) {
                Ok(s) => s,
                Err(e) => {
                    d.problems.push(format!(
                        "the rollout state on refs/tagflow/state is unreadable: {e}"
                    ));
                    State::default()
                }
            },
            Ok(None) => State::default(),
            Err(e) => {
                d.problems
                    .push(format!("failed to read the rollout state: {e}"));
                State::default()
            }
        };
        d.rollouts = state
            .rollouts
            .values()
            .map(|r| RolloutRow {
                env: r.env.clone(),
                image: r.image.clone(),
                tag: r.pinned.tag.clone(),
                digest: short_digest(&r.pinned.digest),
                phase: r.phase.as_str().to_owned(),
                since: r.since.to_rfc3339_opts(SecondsFormat::Secs, true),
                reason: r.reason.clone(),
                commit: r.commit.clone(),
                link: link(&r.commit),
            })
            .collect();
        d.approvals = pending(&loaded.config, &loaded.gates, &state);
        d.quarantine = loaded
            .gates
            .quarantine
            .iter()
            .map(|q| QuarantineRow {
                image: q.image.clone(),
                tag: q.tag.clone(),
                reason: q.reason.clone(),
                at: q.at.clone(),
            })
            .collect();
        match self
            .repo
            .recent_commits(loaded.config.git.author.email.clone(), RECENT_COMMITS)
            .await
        {
            Ok(commits) => {
                d.commits = commits
                    .into_iter()
                    .map(|(id, subject, secs)| CommitRow {
                        id: id.to_string(),
                        subject,
                        time: DateTime::from_timestamp(secs, 0)
                            .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
                            .unwrap_or_default(),
                        link: link(&id.to_string()),
                    })
                    .collect();
            }
            Err(e) => d.problems.push(format!("failed to list commits: {e}")),
        }
        d
    }
}

/// Soaked tags waiting for an approval into the environments promoted from theirs (pure).
pub fn pending(config: &Config, gates: &Gates, state: &State) -> Vec<PendingApproval> {
    let mut out = Vec::new();
    for r in state.rollouts.values() {
        if r.phase != Phase::AwaitingApproval {
            continue;
        }
        for (name, env) in &config.environments {
            if env.promote_from.as_deref() != Some(r.env.as_str()) {
                continue;
            }
            let images = config.targets(env);
            if !images.iter().any(|(i, _)| *i == r.image)
                || gates.approved(name, &r.image, &r.pinned.tag)
            {
                continue;
            }
            let by_merge = env
                .gate
                .as_ref()
                .is_some_and(|g| g.approval == crate::config::ApprovalMode::PullRequest);
            let command = if by_merge {
                match &r.pull_request {
                    Some(url) if r.pull_request_declined => format!(
                        "{url} was closed without merging: reopen and merge it, or tagflow approve {name} {}",
                        r.pinned.tag
                    ),
                    Some(url) => format!("merge {url}"),
                    None => format!("merge the promotion pull request tagflow opens for {name}"),
                }
            } else {
                let mut c = format!("tagflow approve {name} {}", r.pinned.tag);
                if images.len() > 1 {
                    c.push_str(&format!(" --image {}", r.image));
                }
                c
            };
            out.push(PendingApproval {
                env: name.clone(),
                image: r.image.clone(),
                tag: r.pinned.tag.clone(),
                command,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::{Pinned, Rollout};

    #[test]
    fn a_merge_gate_names_the_pull_request_to_merge() {
        let _allow = crate::egress::test_lock("api.github.com");
        let cfg = crate::config::parse(
            "c",
            "images:\n  app: {repository: r.example.com/team/app, policy: {tags: '.*', order: built}}\nenvironments:\n  dev: {file: d.yaml}\n  prod:\n    file: p.yaml\n    promoteFrom: dev\n    gate: {approval: pullRequest}\n    push: {branch: 'tagflow/{env}'}\n    pullRequest: {provider: github, tokenFile: /t}\n",
        )
        .expect("config");
        let pinned = Pinned {
            tag: "0f1e2d3".into(),
            digest: String::new(),
        };
        let mut r = Rollout::committed("dev", "app", pinned, None, "c0", Utc::now());
        r.phase = Phase::AwaitingApproval;
        let mut state = State::default();
        state.rollouts.insert(State::key("dev", "app"), r.clone());
        let p = pending(&cfg, &Gates::default(), &state);
        assert_eq!(
            p[0].command,
            "merge the promotion pull request tagflow opens for prod"
        );
        r.pull_request = Some("https://github.com/org/config/pull/7".into());
        state.rollouts.insert(State::key("dev", "app"), r.clone());
        let p = pending(&cfg, &Gates::default(), &state);
        assert_eq!(p[0].command, "merge https://github.com/org/config/pull/7");
        r.pull_request_declined = true;
        state.rollouts.insert(State::key("dev", "app"), r);
        let p = pending(&cfg, &Gates::default(), &state);
        assert_eq!(
            p[0].command,
            "https://github.com/org/config/pull/7 was closed without merging: reopen and merge it, or tagflow approve prod 0f1e2d3"
        );
    }
}
