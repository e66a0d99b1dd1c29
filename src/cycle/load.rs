//! Fetch the head and load its config with the approvals and quarantine lists. A broken config
//! is reported once (per content) and the last good one stays in force.

use std::sync::{Arc, Mutex};

use git2::Oid;
use sha2::{Digest, Sha256};

use super::{CycleError, Reconciler};
use crate::config::{self, Config, ConfigError, Loaded};
use crate::gitops;

/// What loading remembers between cycles: which broken content was already reported, and
/// which content the config in force was parsed from.
#[derive(Debug, Default)]
pub struct Loader {
    /// Hash of the config text last reported as broken.
    bad_alerted: Mutex<Option<String>>,
    /// Hash of the texts the config in force was parsed from: the same bytes at a new head are
    /// not parsed and validated again (10,000 images: a YAML parse and 10,000 regexes a cycle).
    good: Mutex<Option<String>>,
}

/// The hash of the config and its two lists; length-prefixed, with absence distinct from an
/// empty file, so two different sets of texts never share one.
pub fn texts_hash(texts: [Option<&[u8]>; 3]) -> String {
    let mut hasher = Sha256::new();
    for t in texts {
        match t {
            Some(t) => {
                hasher.update([1]);
                hasher.update((t.len() as u64).to_le_bytes());
                hasher.update(t);
            }
            None => hasher.update([0]),
        }
    }
    hex::encode(hasher.finalize())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn utf8(file: &str, bytes: &[u8]) -> Result<String, ConfigError> {
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| ConfigError {
            problems: vec![config::Problem {
                file: file.to_owned(),
                line: None,
                message: "not UTF-8".into(),
            }],
        })
}

/// Parse the config and its lists (pure).
pub fn parse_all(
    config_path: &str,
    text: &[u8],
    lists: [(&str, Option<&[u8]>); 2],
) -> Result<(Config, config::Gates), ConfigError> {
    let cfg = config::parse(config_path, &utf8(config_path, text)?)?;
    let [a, q] = lists;
    let a_text = a.1.map(|b| utf8(a.0, b)).transpose()?;
    let q_text = q.1.map(|b| utf8(q.0, b)).transpose()?;
    let gates = config::parse_gates(&cfg, (a.0, a_text.as_deref()), (q.0, q_text.as_deref()))?;
    Ok((cfg, gates))
}

impl Reconciler {
    /// Fetch and load the config at the new head, keeping the last good one if it is broken.
    pub async fn refresh(&self) -> Result<(Oid, Arc<Config>), CycleError> {
        let path = self.repo.opts.config_path.clone();
        let lists = [
            config::sibling(&path, config::APPROVALS),
            config::sibling(&path, config::QUARANTINE),
        ];
        let fetched = self
            .repo
            .fetch_files(vec![path.clone(), lists[0].clone(), lists[1].clone()])
            .await;
        // The registry cache was read beside the fetch; every scan comes after this.
        self.cache.loaded().await;
        let (head, files) = fetched?;
        let [text, approvals, quarantine]: [Option<Vec<u8>>; 3] =
            files.try_into().unwrap_or([None, None, None]);
        let text = text.ok_or_else(|| CycleError::NoConfig(path.clone()))?;
        let hash = texts_hash([Some(&text), approvals.as_deref(), quarantine.as_deref()]);
        if let Some(old) = self.current.loaded()
            && lock(&self.loader.good).as_deref() == Some(hash.as_str())
        {
            // The bytes the config in force came from: nothing to parse or compare.
            let (config, gates) = (old.config, old.gates);
            return Ok((head, self.put_in_force(head, config, gates)));
        }
        let parsed = parse_all(
            &path,
            &text,
            [
                (&lists[0], approvals.as_deref()),
                (&lists[1], quarantine.as_deref()),
            ],
        );
        match parsed {
            Ok((cfg, gates)) => {
                let config = self.accept(head, cfg, gates);
                *lock(&self.loader.good) = Some(hash);
                Ok((head, config))
            }
            Err(err) => self.reject(head, &hash, err),
        }
    }

    /// A good config: put it in force (new registry clients if it changed).
    fn accept(&self, head: Oid, cfg: Config, gates: config::Gates) -> Arc<Config> {
        let old = self.current.loaded();
        let changed = old.as_ref().is_none_or(|l| *l.config != cfg);
        let config = if changed {
            if old.is_some() {
                tracing::info!(commit = %gitops::short(head), "config changed; using it from this cycle on");
            }
            self.registries.reset_clients();
            Arc::new(cfg)
        } else {
            old.as_ref()
                .map_or_else(|| Arc::new(cfg), |l| l.config.clone())
        };
        self.put_in_force(head, config, Arc::new(gates))
    }

    /// `config` is the good config read at `head`: record it, and say so if it was broken.
    fn put_in_force(
        &self,
        head: Oid,
        config: Arc<Config>,
        gates: Arc<config::Gates>,
    ) -> Arc<Config> {
        self.current.set(Loaded {
            config: config.clone(),
            gates,
            commit: head.to_string(),
        });
        self.activity
            .worked(crate::activity::stage::CONFIG, chrono::Utc::now());
        let recovered = lock(&self.loader.bad_alerted).take().is_some();
        if recovered {
            tracing::info!(commit = %gitops::short(head), "config is valid again");
            self.poster.post(&format!(
                "tagflow: the config at {} is valid again; using it.",
                gitops::short(head)
            ));
        }
        config
    }

    /// A broken config: say so once per content, keep the last good one.
    fn reject(
        &self,
        head: Oid,
        hash: &str,
        err: ConfigError,
    ) -> Result<(Oid, Arc<Config>), CycleError> {
        let good = self.current.loaded();
        let first_time = {
            let mut seen = self
                .loader
                .bad_alerted
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let first = seen.as_deref() != Some(hash);
            *seen = Some(hash.to_owned());
            first
        };
        if first_time {
            tracing::error!(commit = %gitops::short(head), "{err}");
            let problems = err
                .problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n");
            let running = good
                .as_ref()
                .map(|l| l.commit.chars().take(7).collect::<String>());
            self.poster.post(&crate::notify::bad_config_text(
                &gitops::short(head),
                &problems,
                running.as_deref(),
            ));
        } else {
            tracing::warn!(commit = %gitops::short(head), "config still invalid; keeping the last good one");
        }
        self.metrics.error("config");
        let kept = good.as_ref().map_or_else(
            || "no good config to run instead".to_owned(),
            |l| {
                format!(
                    "running the last good config, from {}",
                    l.commit.chars().take(7).collect::<String>()
                )
            },
        );
        self.activity.failed(
            crate::activity::stage::CONFIG,
            &format!(
                "config at {} is broken ({kept}):\n{err}",
                gitops::short(head)
            ),
            chrono::Utc::now(),
        );
        match good {
            Some(l) => Ok((head, l.config)),
            None => Err(err.into()),
        }
    }
}
