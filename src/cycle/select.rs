//! Selection: scan the registry and pick the desired image per configured image.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::Scope;
use crate::config::{Config, Gates, ImageConfig, Order};
use crate::gitops::{self, GitAuth, GitError, RepoOptions};
use crate::metrics::Metrics;
use crate::plan::Desired;
use crate::policy::{Compiled, Facts, NoCandidate, PolicyError};
use crate::registry::{Registries, RegistryError, RepoRef, Scan};

/// How soon to rescan after a listed tag could not be read.
pub const UNREADABLE_RETRY: Duration = Duration::from_secs(1);
/// How often one unreadable tag triggers an early rescan before tagflow waits for the interval.
const UNREADABLE_TRIES: u32 = 5;

/// Why no tag could be selected for an image.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    /// The registry failed or refused (shared by every image the failed request served).
    #[error(transparent)]
    Registry(#[from] Arc<RegistryError>),
    /// The policy refused (bad regex, no tag qualifies).
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// No listed tag qualifies (waits for a new tag or a policy change).
    #[error(transparent)]
    NoCandidate(#[from] NoCandidate),
    /// `order: git` without a `source`.
    #[error("order: git needs a source")]
    NoSource,
    /// The app's source repo (for `order: git`) could not be read.
    #[error("failed to read the source repo: {0}")]
    Source(#[source] GitError),
}

impl SelectError {
    /// Worth retrying soon: 5xx, 429, timeouts and refused connections; not 401/403, a missing
    /// platform, a bad regex or a policy that matches nothing.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Registry(e) => e.is_transient(),
            Self::Source(e) => e.is_transient(),
            Self::Policy(_) | Self::NoCandidate(_) | Self::NoSource => false,
        }
    }

    /// A stable identity for alerts (the kind, not the text).
    pub fn kind(&self) -> String {
        match self {
            Self::Registry(e) => match &**e {
                RegistryError::Setup(_) => "registry:setup".into(),
                RegistryError::Credentials { .. } => "registry:credentials".into(),
                RegistryError::Unauthorized { .. } => "registry:unauthorized".into(),
                RegistryError::RateLimited { .. } => "registry:rate-limited".into(),
                RegistryError::Status { status, .. } => format!("registry:status:{status}"),
                RegistryError::Transport { timeout: true, .. } => "registry:timeout".into(),
                RegistryError::Transport { .. } => "registry:transport".into(),
                RegistryError::BadResponse { .. } => "registry:bad-response".into(),
                RegistryError::NotFound(_) => "registry:not-found".into(),
                RegistryError::NoPlatform { .. } => "registry:no-platform".into(),
                #[allow(unreachable_patterns)] // New variants fall here until they get a name.
                _ => "registry:other".into(),
            },
            Self::Policy(_) => "policy".into(),
            Self::NoCandidate(_) => "no-candidate".into(),
            Self::NoSource => "no-source".into(),
            Self::Source(e) => format!("source:{}", e.kind()),
        }
    }
}

impl From<RegistryError> for SelectError {
    fn from(e: RegistryError) -> Self {
        Self::Registry(Arc::new(e))
    }
}

/// The scan was cancelled because tagflow is shutting down: nothing was selected, so nothing
/// of this cycle is committed.
#[derive(Debug, thiserror::Error)]
#[error("scan cancelled: shutting down before anything was committed")]
pub struct Cancelled;

/// Tags a registry listed but answered 404 for. A registry notifies before a pushed manifest is
/// readable, so a webhook scan can land in that gap; a few quick rescans close it, and the
/// count keeps a permanently broken tag from causing a rescan every second.
#[derive(Debug, Default)]
pub struct Unreadable {
    seen: BTreeMap<(String, String), u32>,
    this_cycle: bool,
}

impl Unreadable {
    /// A listed tag answered 404.
    pub fn note(&mut self, image: &str, tag: &str) {
        let n = self
            .seen
            .entry((image.to_owned(), tag.to_owned()))
            .or_insert(0);
        *n += 1;
        if *n <= UNREADABLE_TRIES {
            self.this_cycle = true;
        }
    }

    /// Whether this cycle met an unreadable tag worth a quick rescan (once per cycle).
    pub fn take_retry(&mut self) -> bool {
        std::mem::take(&mut self.this_cycle)
    }
}

/// Requests one registry serves at once when the config does not say (`concurrency`).
const DEFAULT_CONCURRENCY: usize = 4;

/// `concurrency` of the registry serving `repository`.
fn registry_concurrency(cfg: &Config, repository: &str) -> usize {
    cfg.registry_for(repository)
        .map_or(DEFAULT_CONCURRENCY, |r| r.concurrency)
        .max(1)
}

/// How many images a cycle scans at once: twice the requests all registries serve together
/// (an image waits for its listing, then its tags), so no registry's slots sit idle.
pub fn images_in_flight(cfg: &Config) -> usize {
    let configured: usize = cfg.registries.iter().map(|r| r.concurrency.max(1)).sum();
    (2 * (configured + DEFAULT_CONCURRENCY)).clamp(8, 1024)
}

/// The desired image per name, and the images that could not be scanned.
pub type Selected = (BTreeMap<String, Desired>, Vec<(String, SelectError)>);

/// What selection needs: the registries, and a work dir for the source repos of `order: git`.
#[derive(Debug)]
pub struct Selector {
    registries: Arc<Registries>,
    metrics: Arc<Metrics>,
    sources_dir: PathBuf,
    auth: GitAuth,
    /// `host[:port]` of the config repo: the one host git credentials always go to.
    repo_host: Option<String>,
    unreadable: Mutex<Unreadable>,
    /// Policies compiled in earlier cycles, by their config.
    policies: Compiled,
    /// Each image's last decision, by a fingerprint of what made it ([`fingerprint`]): an idle
    /// cycle whose listing, policy and quarantine are unchanged gives the same answer, so it
    /// skips resolving every tag again (10,000 cached lookups a cycle at 100 × 100).
    decided: Mutex<HashMap<String, (u64, Desired)>>,
    /// Whether `decided` is kept (not for a process that runs one cycle).
    keep: std::sync::atomic::AtomicBool,
    /// Decisions taken from `decided` (a test reads it).
    reused: std::sync::atomic::AtomicU64,
    /// Cancelled on shutdown: a scan in progress stops at once (a stalled registry must not
    /// hold the process), while a commit being pushed is outside the scan and finishes.
    stop: CancellationToken,
}

impl Selector {
    /// A selector for the repo `opts` describe (its work dir and git credentials).
    pub fn new(opts: &RepoOptions, registries: Arc<Registries>, metrics: Arc<Metrics>) -> Self {
        Self {
            registries,
            metrics,
            sources_dir: opts.workdir.join("sources"),
            auth: opts.auth.clone(),
            repo_host: crate::egress::authority(&opts.url),
            unreadable: Mutex::new(Unreadable::default()),
            policies: Compiled::default(),
            decided: Mutex::default(),
            keep: std::sync::atomic::AtomicBool::new(true),
            reused: std::sync::atomic::AtomicU64::new(0),
            stop: CancellationToken::new(),
        }
    }

    /// The git credentials for an app source repo: the config repo's, unless the source is on
    /// another host the operator did not allow (`--secret-hosts`): then none (a public repo
    /// still reads; a private one fails with the server's 401, and the log says why).
    fn source_auth(&self, url: &str) -> GitAuth {
        let host = crate::egress::authority(url);
        let has_password = self.auth.password.is_some() || self.auth.username.is_some();
        let allowed = host.as_ref().is_some_and(|h| {
            self.repo_host.as_deref() == Some(h.as_str()) || crate::egress::current().allows(h)
        });
        if !has_password || allowed || url.starts_with("file://") {
            return self.auth.clone();
        }
        tracing::warn!(source = %crate::secret::display_url(url), "not sending git credentials to the source repo's host: not the config repo's host and not in --secret-hosts");
        GitAuth {
            username: None,
            password: None,
            ..self.auth.clone()
        }
    }

    /// Whether this cycle met a listed tag that could not be read yet (asked once per cycle).
    pub fn take_retry(&self) -> bool {
        self.unreadable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take_retry()
    }

    /// The compiled policies kept across cycles.
    pub fn policies(&self) -> &Compiled {
        &self.policies
    }

    /// Decisions reused from an earlier cycle because nothing they depend on changed.
    pub fn reused_decisions(&self) -> u64 {
        self.reused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether each image's decision is kept for the next cycle to reuse.
    pub fn keep_decisions(&self, keep: bool) {
        self.keep.store(keep, std::sync::atomic::Ordering::Relaxed);
        if !keep {
            lock(&self.decided).clear();
        }
    }

    /// Stop the scan in progress and every later one ([`Cancelled`]).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Scan the registry and pick the desired image for each image in scope; quarantined tags
    /// are never picked. [`Cancelled`] once [`Selector::stop`] was called, even mid-request.
    pub async fn select(
        &self,
        cfg: &Config,
        gates: &Gates,
        scope: &Scope,
    ) -> Result<Selected, Cancelled> {
        tokio::select! {
            biased;
            () = self.stop.cancelled() => Err(Cancelled),
            selected = self.select_all(cfg, gates, scope) => Ok(selected),
        }
    }

    async fn select_all(&self, cfg: &Config, gates: &Gates, scope: &Scope) -> Selected {
        // Every image at once: the registry's own limiter (`concurrency`, `rateLimit`) bounds
        // what is in flight, not the number of images. Results are read back in config order,
        // so logs and commit messages do not depend on which answer came first.
        let names: Vec<&String> = cfg
            .images
            .keys()
            .filter(|name| match scope {
                Scope::All => true,
                Scope::Images(set) => set.contains(*name),
            })
            .collect();
        // One listing per repository and one resolution per tag, shared by every image (and
        // environment) naming it: 10,000 images on one repository cost one tags request.
        let scan = self.registries.scan(cfg);
        // A bounded window of images, refilled as each finishes (no head-of-line wait): enough
        // to keep every registry's `concurrency` busy, while a future is allocated at its full
        // size when made, so 10,000 made at once held ~80 MB waiting for a slot.
        // (A loop over `FuturesUnordered` rather than `buffer_unordered` over a closure: the
        // closure's async block made the cycle's future not provably `Send` to `tokio::spawn`.)
        let window = images_in_flight(cfg);
        let mut queue = names.iter().enumerate();
        let mut pending = futures::stream::FuturesUnordered::new();
        let mut results: Vec<(usize, Result<Desired, SelectError>)> =
            Vec::with_capacity(names.len());
        loop {
            while pending.len() < window {
                let Some((i, name)) = queue.next() else { break };
                pending.push(self.select_nth(i, cfg, &scan, gates, name));
            }
            match pending.next().await {
                Some(done) => results.push(done),
                None => break,
            }
        }
        results.sort_unstable_by_key(|(i, _)| *i);
        let results = results.into_iter().map(|(_, r)| r);
        // Policies a config change dropped are forgotten; the others stay compiled.
        self.policies.retain(cfg.images.values().map(|i| &i.policy));
        lock(&self.decided).retain(|name, _| cfg.images.contains_key(name));
        let mut desired = BTreeMap::new();
        let mut errors = Vec::new();
        for (name, result) in names.into_iter().zip(results) {
            match result {
                Ok(d) => {
                    // Per image at debug: at info, 10,000 images wrote 10,000 lines a cycle.
                    tracing::debug!(image = %name, tag = %d.tag, reason = %d.reason, "selected");
                    desired.insert(name.clone(), d);
                }
                Err(e) => {
                    let repository = &cfg.images[name].repository;
                    tracing::warn!(image = %name, repository = %repository, error = %e, transient = e.is_transient(), "could not select a tag");
                    self.metrics.error("registry");
                    errors.push((name.clone(), e));
                }
            }
        }
        tracing::info!(
            selected = desired.len(),
            failed = errors.len(),
            "scanned the registries"
        );
        (desired, errors)
    }

    /// [`Selector::select_one`] with its place in the config, to put the answers back in order.
    async fn select_nth(
        &self,
        i: usize,
        cfg: &Config,
        scan: &Scan<'_>,
        gates: &Gates,
        name: &str,
    ) -> (usize, Result<Desired, SelectError>) {
        (i, self.select_one(cfg, scan, gates, name).await)
    }

    async fn select_one(
        &self,
        cfg: &Config,
        scan: &Scan<'_>,
        gates: &Gates,
        name: &str,
    ) -> Result<Desired, SelectError> {
        let img = &cfg.images[name];
        let policy = self.policies.get(&img.policy)?;
        let tags = scan.list_tags(&img.repository).await?;
        // Quarantined tags are out before the policy looks: a failed rollout is never re-picked.
        let quarantined = gates.quarantined_tags(name);
        let print = policy
            .is_timeless()
            .then(|| fingerprint(img, &tags, &quarantined));
        if let Some(print) = print
            && let Some((seen, d)) = lock(&self.decided).get(name)
            && *seen == print
        {
            self.reused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(d.clone());
        }
        let mut complete = true;
        let mut screened = policy.screen(tags.iter().map(String::as_str));
        for tag in &quarantined {
            if screened.qualified.iter().any(|q| q.tag == *tag) {
                tracing::debug!(image = %name, tag = %tag, "tag skipped: quarantined");
                screened.leave_out(tag, "quarantined");
            }
        }
        let qualified = &screened.qualified;
        let mut facts: BTreeMap<String, Facts> = BTreeMap::new();
        let key = RepoRef::parse(&img.repository).canonical();
        // Build times serve `order: built` and `minAge`, whatever the order.
        if policy.needs_build_time() {
            // Tags resolved before are answered from memory under one lock, with no future or
            // allocation each (an idle cycle at 100 × 100 looks up 10,000); only the others
            // wait for the registry.
            let mut misses = Vec::new();
            self.registries.with_known(|known| {
                for q in qualified {
                    match known.created(&key, &q.tag, &img.platform) {
                        Some(created) => facts.entry(q.tag.clone()).or_default().created = created,
                        None => misses.push(q),
                    }
                }
            });
            // In order, as many at once as the registry serves: more would only wait for a slot.
            let window = registry_concurrency(cfg, &img.repository);
            let mut queue = misses.iter();
            let mut pending = futures::stream::FuturesOrdered::new();
            let mut metas = Vec::with_capacity(misses.len());
            loop {
                while pending.len() < window {
                    let Some(q) = queue.next() else { break };
                    pending.push_back(scan.resolve(&img.repository, &q.tag, &img.platform));
                }
                match pending.next().await {
                    Some(meta) => metas.push(meta),
                    None => break,
                }
            }
            for (q, meta) in misses.into_iter().zip(metas) {
                match meta {
                    Ok(m) => facts.entry(q.tag.clone()).or_default().created = m.created,
                    // Listed but not readable: deleted since the listing, or — right after
                    // a push notification — not stored yet. Not a candidate now; look again.
                    Err(e) if matches!(*e, RegistryError::NotFound(_)) => {
                        complete = false;
                        self.unreadable
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .note(name, &q.tag);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if policy.order == Order::Git {
            let source = img.source.clone().ok_or(SelectError::NoSource)?;
            let keys: Vec<String> = qualified.iter().map(|q| q.key.clone()).collect();
            let dir = self
                .sources_dir
                .join(&hex::encode(Sha256::digest(source.url.as_bytes()))[..16]);
            let auth = self.source_auth(&source.url);
            let ranks = tokio::task::spawn_blocking(move || {
                gitops::source::commit_ranks(&source.url, &source.branch, &dir, auth, &keys)
            })
            .await
            .map_err(|e| SelectError::Source(GitError::Task(e.to_string())))?
            .map_err(SelectError::Source)?;
            for q in qualified {
                facts.entry(q.tag.clone()).or_default().commit_rank = ranks.get(&q.key).cloned();
            }
        }
        let decision = policy.select(&screened, &facts, chrono::Utc::now())?;
        let cached = self
            .registries
            .with_known(|known| known.lookup(&key, &decision.tag, &img.platform));
        let meta = match cached {
            Some(m) => m,
            None => {
                scan.resolve(&img.repository, &decision.tag, &img.platform)
                    .await?
            }
        };
        for (tag, why) in &decision.skipped {
            tracing::debug!(image = %name, tag = %tag, reason = %why, "tag skipped");
        }
        let desired = Desired {
            image: name.to_owned(),
            repository: img.repository.clone(),
            tag: decision.tag.clone(),
            digest: meta.digest,
            // The "selected" log line carries this: say what minAge held back, if anything.
            reason: match &decision.held_back {
                Some(held) => format!("{}; {held}: keeping {}", decision.reason, decision.tag),
                None => decision.reason.to_string(),
            },
        };
        // A tag that could not be read yet is looked at again next cycle, not remembered away.
        if let Some(print) = print
            && complete
            && self.keep.load(std::sync::atomic::Ordering::Relaxed)
        {
            lock(&self.decided).insert(name.to_owned(), (print, desired.clone()));
        }
        Ok(desired)
    }
}

/// What a timeless policy's decision for `img` depends on: the listing, the policy, the
/// repository and platform, and the quarantined tags. Build times and digests come from the
/// registry cache, which never changes a tag's answer once learnt.
fn fingerprint(img: &ImageConfig, tags: &[String], quarantined: &BTreeSet<String>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        &img.repository,
        &img.platform,
        &img.policy,
        tags,
        quarantined,
    )
        .hash(&mut h);
    h.finish()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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

    #[test]
    fn the_image_window_keeps_every_registry_busy_and_stays_bounded() {
        let parse = |regs: &str| {
            let text = format!(
                "registries:\n{regs}images:\n  app: {{repository: r0.example.com/app, policy: {{tags: '.*', order: alphabetical}}}}\nenvironments:\n  dev: {{file: envs/dev/values.yaml}}\n"
            );
            crate::config::parse("c.yaml", &text).expect("config")
        };
        let none = parse("  []\n");
        assert_eq!(images_in_flight(&none), 8, "defaults: 4 slots, twice over");
        let two = parse(
            "  - {host: r0.example.com, concurrency: 16}\n  - {host: r1.example.com, concurrency: 8}\n",
        );
        assert_eq!(images_in_flight(&two), 2 * (16 + 8 + 4));
        assert_eq!(registry_concurrency(&two, "r1.example.com/app"), 8);
        assert_eq!(
            registry_concurrency(&two, "elsewhere.example.com/app"),
            DEFAULT_CONCURRENCY
        );
        let huge = parse("  - {host: r0.example.com, concurrency: 5000}\n");
        assert_eq!(
            images_in_flight(&huge),
            1024,
            "bounded whatever the config says"
        );
    }

    #[test]
    fn git_credentials_go_only_to_the_config_repo_host_unless_allowed() {
        let auth = GitAuth {
            username: Some("tagflow".into()),
            password: Some(Arc::new(crate::secret::Watched::new(
                crate::secret::SecretRef::file("/nonexistent/git-password"),
            ))),
            ..GitAuth::default()
        };
        let opts = RepoOptions::new(
            "https://git.example.com/org/config.git".into(),
            "main".into(),
            "config/tagflow.yaml".into(),
            Some(std::env::temp_dir().join("tagflow-select-test")),
            auth,
        );
        let s = Selector::new(
            &opts,
            Arc::new(Registries::new(Metrics::new())),
            Metrics::new(),
        );
        let pw = |url: &str| s.source_auth(url).password.map(|_| "pw");
        assert_eq!(pw("https://git.example.com/org/app.git"), Some("pw"));
        assert_eq!(
            pw("https://evil.example/org/app.git"),
            None,
            "not offered elsewhere"
        );
        assert_eq!(
            pw("https://git.example.com:8443/org/app.git"),
            None,
            "another port"
        );
        assert_eq!(pw("file:///srv/app.git"), Some("pw"));
    }
}
