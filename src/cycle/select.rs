//! Selection: scan the registry and pick the desired image per configured image.

use std::collections::BTreeMap;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{Agent, Scope, lock};
use crate::config::{Config, Order};
use crate::gitops;
use crate::plan::Desired;
use crate::policy::{Facts, Policy};
use crate::registry::RegistryError;

/// How soon to rescan after a listed tag could not be read.
pub(super) const UNREADABLE_RETRY: Duration = Duration::from_secs(1);
/// How often one unreadable tag triggers an early rescan before tagflow waits for the interval.
const UNREADABLE_TRIES: u32 = 5;

/// Tags a registry listed but answered 404 for. A registry notifies before a pushed manifest is
/// readable, so a webhook scan can land in that gap; a few quick rescans close it, and the
/// count keeps a permanently broken tag from causing a rescan every second.
#[derive(Debug, Default)]
pub(super) struct Unreadable {
    seen: BTreeMap<(String, String), u32>,
    this_cycle: bool,
}

impl Unreadable {
    pub(super) fn note(&mut self, image: &str, tag: &str) {
        let n = self
            .seen
            .entry((image.to_owned(), tag.to_owned()))
            .or_insert(0);
        *n += 1;
        if *n <= UNREADABLE_TRIES {
            self.this_cycle = true;
        }
    }

    pub(super) fn take_retry(&mut self) -> bool {
        std::mem::take(&mut self.this_cycle)
    }
}

impl Agent {
    /// Scan the registry and pick the desired image for each image in scope.
    pub async fn select(
        &self,
        cfg: &Config,
        scope: &Scope,
    ) -> (BTreeMap<String, Desired>, Vec<(String, String)>) {
        let mut desired = BTreeMap::new();
        let mut errors = Vec::new();
        for (name, img) in &cfg.images {
            if let Scope::Images(set) = scope
                && !set.contains(name)
            {
                continue;
            }
            match self.select_one(cfg, name).await {
                Ok(d) => {
                    tracing::info!(image = %name, tag = %d.tag, reason = %d.reason, "selected");
                    desired.insert(name.clone(), d);
                }
                Err(e) => {
                    tracing::warn!(image = %name, repository = %img.repository, error = %e, "could not select a tag");
                    self.metrics.error("registry");
                    errors.push((name.clone(), e));
                }
            }
        }
        (desired, errors)
    }

    async fn select_one(&self, cfg: &Config, name: &str) -> Result<Desired, String> {
        let img = &cfg.images[name];
        let policy = Policy::compile(&img.policy).map_err(|e| e.to_string())?;
        let tags = self
            .registries
            .list_tags(cfg, &img.repository)
            .await
            .map_err(|e| e.to_string())?;
        // Quarantined tags are out before the policy looks: a failed rollout is never re-picked.
        let quarantined = self.gates().quarantined_tags(name);
        let qualified: Vec<_> = policy
            .filter(tags.iter().map(String::as_str))
            .into_iter()
            .filter(|q| {
                let out = quarantined.contains(&q.tag);
                if out {
                    tracing::debug!(image = %name, tag = %q.tag, "tag skipped: quarantined");
                }
                !out
            })
            .collect();
        let mut facts: BTreeMap<String, Facts> = BTreeMap::new();
        match policy.order {
            Order::Built => {
                let metas = futures::future::join_all(qualified.iter().map(|q| {
                    self.registries
                        .resolve(cfg, &img.repository, &q.tag, &img.platform)
                }))
                .await;
                for (q, meta) in qualified.iter().zip(metas) {
                    match meta {
                        Ok(m) => {
                            facts.insert(
                                q.tag.clone(),
                                Facts {
                                    created: m.created,
                                    commit_rank: None,
                                },
                            );
                        }
                        // Listed but not readable: deleted since the listing, or — right after
                        // a push notification — not stored yet. Not a candidate now; look again.
                        Err(RegistryError::NotFound(_)) => {
                            lock(&self.unreadable).note(name, &q.tag)
                        }
                        Err(e) => return Err(e.to_string()),
                    }
                }
            }
            Order::Git => {
                let source = img.source.clone().ok_or("order: git needs a source")?;
                let keys: Vec<String> = qualified.iter().map(|q| q.key.clone()).collect();
                let dir = self
                    .opts
                    .workdir
                    .join("sources")
                    .join(&hex::encode(Sha256::digest(source.url.as_bytes()))[..16]);
                let auth = self.opts.auth.clone();
                let ranks = tokio::task::spawn_blocking(move || {
                    gitops::source::commit_ranks(&source.url, &source.branch, &dir, auth, &keys)
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("source repo: {e}"))?;
                for q in &qualified {
                    facts.insert(
                        q.tag.clone(),
                        Facts {
                            created: None,
                            commit_rank: ranks.get(&q.key).cloned(),
                        },
                    );
                }
            }
            _ => {}
        }
        let decision = policy
            .select(&qualified, &facts)
            .map_err(|e| e.to_string())?;
        let meta = self
            .registries
            .resolve(cfg, &img.repository, &decision.tag, &img.platform)
            .await
            .map_err(|e| e.to_string())?;
        for (tag, why) in &decision.skipped {
            tracing::debug!(image = %name, tag = %tag, reason = %why, "tag skipped");
        }
        Ok(Desired {
            image: name.to_owned(),
            repository: img.repository.clone(),
            tag: decision.tag.clone(),
            digest: meta.digest,
            reason: decision.reason.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_tag_asks_for_a_few_quick_rescans_then_stops() {
        let mut u = Unreadable::default();
        assert!(!u.take_retry());
        for _ in 0..UNREADABLE_TRIES {
            u.note("app", "abc1234");
            assert!(u.take_retry());
            assert!(!u.take_retry(), "taken once per cycle");
        }
        u.note("app", "abc1234");
        assert!(!u.take_retry(), "gave up on this tag");
        u.note("app", "def5678");
        assert!(u.take_retry(), "another tag still counts");
    }
}
