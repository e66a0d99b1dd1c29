//! Commit announcements that survive a crash and a Slack outage. What to announce is derived
//! from git: tagflow's own commits after the last one announced, which is recorded in the work
//! dir (`announced`). A `kill -9` between the push and the post, or Slack down for longer than
//! the worker's retries, leaves the commit after the record, and a later cycle (of this process
//! or the next) posts it: at least once, in commit order, and once per process.

use std::collections::{BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use git2::Oid;

use super::Reconciler;
use crate::gitops;
use crate::notify::Delivery;

/// The record's file name in the work dir.
const RECORD: &str = "announced";

/// The announcement bookkeeping of one process.
#[derive(Debug, Clone)]
pub(super) struct Announcer {
    path: PathBuf,
    mem: Arc<Mutex<Mem>>,
}

#[derive(Debug, Default)]
struct Mem {
    /// Read from the file yet.
    loaded: bool,
    /// The last commit announced (every tagflow commit up to it was).
    record: Option<Oid>,
    /// Commits after the record, oldest first, as last found in git.
    pending: VecDeque<Oid>,
    /// Queued or delivered by this process: never queued again by it.
    posted: BTreeSet<Oid>,
    /// Delivered (or refused by Slack for good) but not yet recorded.
    done: BTreeSet<Oid>,
}

impl Announcer {
    pub(super) fn new(workdir: &std::path::Path) -> Self {
        Self {
            path: workdir.join(RECORD),
            mem: Arc::default(),
        }
    }

    fn mem(&self) -> MutexGuard<'_, Mem> {
        let mut m = self.mem.lock().unwrap_or_else(PoisonError::into_inner);
        if !m.loaded {
            m.loaded = true;
            m.record = std::fs::read_to_string(&self.path)
                .ok()
                .and_then(|t| Oid::from_str(t.trim()).ok());
        }
        m
    }

    fn save(&self, m: &mut Mem, at: Oid) {
        m.record = Some(at);
        if let Err(e) = crate::rewrite::write_atomic(&self.path, format!("{at}\n").as_bytes()) {
            tracing::warn!(error = %e, path = %self.path.display(), "cannot record the last announced commit");
        }
    }

    /// `id` was delivered (or refused for good): record every done commit from the oldest on.
    fn finished(&self, id: Oid, delivery: Delivery) {
        let mut m = self.mem();
        if delivery == Delivery::GaveUp {
            // Tried again by a later cycle.
            m.posted.remove(&id);
            return;
        }
        m.done.insert(id);
        while let Some(front) = m.pending.front().copied() {
            if !m.done.remove(&front) {
                break;
            }
            m.pending.pop_front();
            self.save(&mut m, front);
        }
    }
}

impl Reconciler {
    /// Announce tagflow's commits after the last announced one, up to `head`. The first cycle
    /// of a work dir only records `head` (history is not announced); call it before this cycle
    /// commits, and again after.
    pub(super) async fn announce(&self, head: Oid) {
        let record = self.announcer.mem().record;
        let Some(record) = record else {
            self.announcer.save(&mut self.announcer.mem(), head);
            return;
        };
        if record == head {
            return;
        }
        let found = match self.repo.tagflow_commits_since(head, record).await {
            Ok(Some(found)) => found,
            Ok(None) => {
                tracing::warn!(record = %gitops::short(record), "the last announced commit is not in the recent history (rewritten?); announcing from the head on");
                self.announcer.save(&mut self.announcer.mem(), head);
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the history to announce commits; trying next cycle");
                return;
            }
        };
        let mut queue = Vec::new();
        {
            let mut m = self.announcer.mem();
            if found.is_empty() && m.pending.is_empty() {
                // Only others' commits since: nothing owed.
                self.announcer.save(&mut m, head);
                return;
            }
            m.pending = found.iter().map(|(id, _)| *id).collect();
            for (id, message) in found {
                if m.posted.insert(id) {
                    queue.push((id, message));
                }
            }
        }
        for (id, message) in queue {
            let link = crate::notify::commit_link(&self.repo.opts.url, &id.to_string());
            let text = crate::notify::commit_text_of(
                &gitops::short(id),
                &self.repo.opts.branch,
                &message,
                link.as_deref(),
            );
            let a = self.announcer.clone();
            if !self
                .poster
                .post_acked(&text, Box::new(move |d| a.finished(id, d)))
            {
                // No Slack configured: nothing is owed.
                self.announcer.finished(id, Delivery::Delivered);
            }
        }
    }
}
