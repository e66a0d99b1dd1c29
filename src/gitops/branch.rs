//! Pull-request mode's git side: tagflow's change for an environment goes to a branch of its
//! own, rebuilt on the target branch's head each cycle. Force is used only there, and only
//! over a tip tagflow wrote itself: the target branch and any branch a person wrote are never
//! overwritten. A branch that already has exactly this change on the current head is left
//! alone (no push), so an unchanged world costs one ref listing.

use std::collections::BTreeMap;

use git2::Oid;

use super::{Checkout, CommitError, ConfigRepo, GitError, PushResult, git_err};
use crate::config::{Config, GitConfig};
use crate::plan::{self, ChangeSet, Prepared};

/// Where tagflow keeps its copies of its branches' remote tips.
const LOCAL_NS: &str = "refs/tagflow-branches/";

/// One branch's change: what should be on `branch`, on top of the target's head.
#[derive(Debug, Clone)]
pub struct BranchPlan {
    /// Branch name (rendered from `push.branch`).
    pub branch: String,
    /// The values the branch should carry.
    pub change: ChangeSet,
}

/// What a branch needs this cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The target's head already has the change and no branch exists: nothing to do.
    Nothing,
    /// The target's head already has the change (the PR was merged, or someone committed it)
    /// but the branch exists: close its PR and delete it.
    Retire {
        /// The branch's tip.
        tip: Oid,
    },
    /// The branch already has exactly this change on the target's head.
    Current {
        /// The branch's tip.
        tip: Oid,
        /// The change.
        prepared: Prepared,
    },
    /// `commit` (built on the target's head, not pushed yet) should replace the branch.
    Rebuild {
        /// The new tip.
        commit: Oid,
        /// The branch's tip now (`None`: the branch is new).
        old: Option<Oid>,
        /// The old tip set the same values (only the target moved), so its PR stays open.
        same_change: bool,
        /// The change.
        prepared: Prepared,
    },
}

/// The `Tagflow-Set:` lines of a message: what a commit sets, whatever it is based on.
fn sets(message: &str) -> Vec<&str> {
    let mut v: Vec<&str> = message
        .lines()
        .filter(|l| l.starts_with("Tagflow-Set: "))
        .collect();
    v.sort_unstable();
    v
}

impl Checkout {
    /// The remote tips of those of `names` that exist, fetched into [`LOCAL_NS`].
    pub fn fetch_branches(&self, names: &[String]) -> Result<BTreeMap<String, Oid>, GitError> {
        let mut remote = self
            .repo
            .find_remote("origin")
            .map_err(git_err("find origin"))?;
        remote
            .connect_auth(
                git2::Direction::Fetch,
                Some(self.auth.callbacks(&self.remote)),
                None,
            )
            .map_err(git_err(format!(
                "connect to {}",
                crate::secret::display_url(&self.url)
            )))?;
        let mut tips = BTreeMap::new();
        for h in remote.list().map_err(git_err("list remote refs"))? {
            if let Some(b) = h.name().strip_prefix("refs/heads/")
                && names.iter().any(|n| n == b)
            {
                tips.insert(b.to_owned(), h.oid());
            }
        }
        remote.disconnect().map_err(git_err("disconnect"))?;
        if tips.is_empty() {
            return Ok(tips);
        }
        let specs: Vec<String> = tips
            .keys()
            .map(|b| format!("+refs/heads/{b}:{LOCAL_NS}{b}"))
            .collect();
        let mut opts = self.fetch_options();
        remote
            .fetch(&specs, Some(&mut opts), None)
            .map_err(git_err("fetch tagflow's branches"))?;
        Ok(tips)
    }

    /// Decide what `plan` needs on top of `head`, building (not pushing) the new tip.
    fn decide(
        &self,
        config: &Config,
        head: Oid,
        plan: &BranchPlan,
        tip: Option<Oid>,
    ) -> Result<Decision, CommitError> {
        if plan.branch == self.branch {
            return Err(GitError::Setup(format!(
                "push.branch names {:?}, the branch tagflow commits to; refusing to force-push it",
                plan.branch
            ))
            .into());
        }
        if let Some(tip) = tip {
            self.check_own(&config.git, &plan.branch, tip)?;
        }
        let snap = self.snapshot(head)?;
        let Some(prepared) = plan::prepare(&plan.change, config, &snap)? else {
            return Ok(match tip {
                Some(tip) => Decision::Retire { tip },
                None => Decision::Nothing,
            });
        };
        let mut builder = git2::build::TreeUpdateBuilder::new();
        for e in &prepared.edits {
            let blob = self
                .repo
                .blob(&e.content)
                .map_err(git_err(format!("store {}", e.path)))?;
            builder.upsert(e.path.as_str(), blob, snap.mode_of(&e.path));
        }
        let tree_id = builder
            .create_updated(&self.repo, &snap.tree)
            .map_err(git_err("build the branch's tree"))?;
        let old = match tip {
            Some(t) => Some(
                self.repo
                    .find_commit(t)
                    .map_err(git_err("read the branch tip"))?,
            ),
            None => None,
        };
        if let Some(c) = &old
            && c.tree_id() == tree_id
            && c.parent_id(0).ok() == Some(head)
        {
            return Ok(Decision::Current {
                tip: c.id(),
                prepared,
            });
        }
        let same_change = old.as_ref().is_some_and(|c| {
            sets(&String::from_utf8_lossy(c.message_bytes())) == sets(&prepared.message)
        });
        let tree = self
            .repo
            .find_tree(tree_id)
            .map_err(git_err("find the branch's tree"))?;
        let parent = self
            .repo
            .find_commit(head)
            .map_err(git_err("find the target's head"))?;
        let commit = self.create_commit(&config.git, &prepared.message, &tree, &[&parent])?;
        Ok(Decision::Rebuild {
            commit,
            old: tip,
            same_change,
            prepared,
        })
    }

    /// Refuse a branch whose tip tagflow did not write: it is someone's, never overwritten.
    fn check_own(&self, git: &GitConfig, branch: &str, tip: Oid) -> Result<(), GitError> {
        let c = self
            .repo
            .find_commit(tip)
            .map_err(git_err("read the branch tip"))?;
        if c.author().email().ok() == Some(git.author.email.as_str()) {
            return Ok(());
        }
        Err(GitError::Setup(format!(
            "branch {branch} exists and its tip {} was not written by tagflow ({}); refusing to overwrite it (delete the branch to hand it back to tagflow)",
            super::short(tip),
            c.author().email().unwrap_or("?").to_owned()
        )))
    }

    /// Put `commit` on tagflow's `branch`, forced over `old` (the tip seen when deciding; the
    /// local transport moves it only if it is still there).
    pub fn push_branch(&self, branch: &str, commit: Oid, old: Option<Oid>) -> Result<(), GitError> {
        if branch == self.branch {
            return Err(GitError::Setup(format!(
                "refusing to force-push {branch}, the branch tagflow commits to"
            )));
        }
        match self.push_with(&format!("refs/heads/{branch}"), commit, old, true)? {
            PushResult::Accepted => Ok(()),
            PushResult::Rejected(why) => {
                Err(GitError::Setup(format!("push to {branch} rejected: {why}")))
            }
        }
    }

    /// Delete tagflow's `branch` (its change is in the target, or no longer wanted).
    pub fn delete_branch(&self, branch: &str) -> Result<(), GitError> {
        if branch == self.branch {
            return Err(GitError::Setup(format!(
                "refusing to delete {branch}, the branch tagflow commits to"
            )));
        }
        let name = format!("refs/heads/{branch}");
        if self.remote.scheme == "file" {
            let path = url::Url::parse(&self.url)
                .ok()
                .and_then(|u| u.to_file_path().ok())
                .ok_or_else(|| GitError::Setup(format!("{} is not a local path", self.url)))?;
            let remote = git2::Repository::open(&path)
                .map_err(git_err(format!("open {}", path.display())))?;
            if let Ok(mut r) = remote.find_reference(&name) {
                r.delete().map_err(git_err(format!("delete {branch}")))?;
            }
        } else {
            let mut remote = self
                .repo
                .find_remote("origin")
                .map_err(git_err("find origin"))?;
            let mut opts = git2::PushOptions::new();
            opts.remote_callbacks(self.auth.callbacks(&self.remote));
            remote
                .push(&[format!(":{name}")], Some(&mut opts))
                .map_err(git_err(format!("delete {branch}")))?;
        }
        let _ = self
            .repo
            .find_reference(&format!("{LOCAL_NS}{branch}"))
            .and_then(|mut r| r.delete());
        Ok(())
    }
}

impl ConfigRepo {
    /// Fetch tagflow's branches among `plans` and decide each on `head` (commits are built,
    /// nothing is pushed). One plan's problem is its own; the others are still decided.
    pub async fn decide_branches(
        &self,
        config: std::sync::Arc<Config>,
        head: Oid,
        plans: Vec<BranchPlan>,
    ) -> Result<Vec<(BranchPlan, Result<Decision, CommitError>)>, GitError> {
        self.with_git(move |c| {
            let names: Vec<String> = plans.iter().map(|p| p.branch.clone()).collect();
            let tips = c.fetch_branches(&names)?;
            Ok(plans
                .into_iter()
                .map(|p| {
                    let d = c.decide(&config, head, &p, tips.get(&p.branch).copied());
                    (p, d)
                })
                .collect())
        })
        .await?
    }

    /// Force-push `commit` to tagflow's `branch` (see [`Checkout::push_branch`]).
    pub async fn push_branch(
        &self,
        branch: String,
        commit: Oid,
        old: Option<Oid>,
    ) -> Result<(), GitError> {
        self.with_git(move |c| c.push_branch(&branch, commit, old))
            .await?
    }

    /// Delete tagflow's `branch` (see [`Checkout::delete_branch`]).
    pub async fn delete_branch(&self, branch: String) -> Result<(), GitError> {
        self.with_git(move |c| c.delete_branch(&branch)).await?
    }
}
