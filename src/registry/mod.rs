//! Registry stage (IO): list tags, resolve a tag to its digest, build time and revision.
//!
//! Speaks the distribution API directly over reqwest: oci-client has no `Link` pagination,
//! `Retry-After`, per-request metrics or rate limits, which tagflow needs. Metadata is cached
//! by digest, and a cycle lists each repository once however many images name it ([`Scan`]),
//! so an unchanged repository costs one tags request per cycle.

mod auth;
mod cache_file;
mod client;
pub mod creds;
pub mod dockercfg;
pub mod helper;
mod known;
mod scan;
pub mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use sha2::{Digest, Sha256};

pub use crate::reference::RepoRef;
pub use cache_file::CacheFile;
pub use client::Client;
pub use creds::CredentialError;
pub use known::{Known, Meta, PackedDigest};
pub use scan::{Scan, ScanResult};

use crate::config::Config;
use crate::metrics::Metrics;

/// Most pages tagflow follows in one tags listing (a loop guard).
const MAX_PAGES: usize = 10_000;

/// Registry failures. `is_transient` drives retry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Bad local setup (CA file, credentials).
    #[error("failed to set up registry client: {0}")]
    Setup(String),
    /// Credentials could not be read (file, docker config, credential helper).
    #[error("failed to get credentials for registry {registry}: {source}")]
    Credentials {
        /// Host.
        registry: String,
        /// Why.
        #[source]
        source: CredentialError,
    },
    /// Credentials refused or missing.
    #[error("registry {registry} refused our credentials for {url}")]
    Unauthorized {
        /// Host.
        registry: String,
        /// Request URL.
        url: String,
    },
    /// 429 after every retry.
    #[error("registry {registry} kept answering 429 Too Many Requests")]
    RateLimited {
        /// Host.
        registry: String,
    },
    /// An unexpected status.
    #[error("registry {registry} answered {status} for {url}")]
    Status {
        /// Host.
        registry: String,
        /// Request URL.
        url: String,
        /// HTTP status.
        status: u16,
    },
    /// Connection, TLS or timeout.
    #[error("failed to reach registry {registry} ({url}): {reason}")]
    Transport {
        /// Host.
        registry: String,
        /// Request URL.
        url: String,
        /// Cause chain.
        reason: String,
        /// Whether it timed out.
        timeout: bool,
    },
    /// A body that is not what the API promises.
    #[error("registry {registry} sent a bad answer for {url}: {reason}")]
    BadResponse {
        /// Host.
        registry: String,
        /// Request URL.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// Tag or repository does not exist.
    #[error("{0} not found in the registry")]
    NotFound(String),
    /// An index without the wanted platform.
    #[error("{reference} has no manifest for platform {platform}")]
    NoPlatform {
        /// Image reference.
        reference: String,
        /// Wanted platform.
        platform: String,
    },
}

impl RegistryError {
    /// Worth retrying on a later cycle without a config change.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. } | Self::RateLimited { .. } => true,
            Self::Status { status, .. } => *status >= 500,
            Self::Credentials { source, .. } => source.is_transient(),
            _ => false,
        }
    }
}

/// What tagflow knows about an image tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageMeta {
    /// The digest the tag points at (an index digest for multi-arch images).
    pub digest: String,
    /// Build time of the chosen platform's image.
    pub created: Option<DateTime<Utc>>,
    /// `org.opencontainers.image.revision` label.
    pub revision: Option<String>,
}

/// One remembered resolution, as saved in the work dir between runs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CacheEntry {
    /// Repository.
    pub repository: String,
    /// Tag.
    pub tag: String,
    /// Platform the metadata was read for.
    pub platform: String,
    /// Digest the tag pointed at.
    pub digest: String,
    /// Build time.
    pub created: Option<DateTime<Utc>>,
    /// Revision label.
    pub revision: Option<String>,
}

/// Clients per registry host, plus the metadata cache.
#[derive(Debug)]
pub struct Registries {
    metrics: Arc<Metrics>,
    clients: Mutex<HashMap<String, Arc<Client>>>,
    /// Tags and image metadata remembered from earlier resolutions.
    known: Mutex<Known>,
    /// Bumped whenever `known` learns something new, so an idle cycle saves nothing without
    /// even encoding the cache to find out.
    generation: AtomicU64,
}

/// Canonical `host` and `path` of a repository as docker reads it: `registry.example.com/team/app`
/// → (`registry.example.com`, `team/app`); `nginx` → (`docker.io`, `library/nginx`).
pub fn split_repository(repository: &str) -> (String, String) {
    let r = RepoRef::parse(repository);
    (r.host, r.path)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Registries {
    /// An empty set; clients are made on first use.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            clients: Mutex::new(HashMap::new()),
            known: Mutex::new(Known::default()),
            generation: AtomicU64::new(0),
        }
    }

    /// Changes whenever the remembered metadata does (not when it is only read).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Remember that canonical `repository:tag` points at `digest` (invalid digests are not
    /// remembered: they were refused before reaching here).
    fn remember_tag(&self, repository: &str, tag: &str, digest: &str) {
        let Some(d) = PackedDigest::parse(digest) else {
            return;
        };
        if lock(&self.known).set_tag(repository, tag, d) {
            self.generation.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn remember_meta(&self, platform: &str, m: &ImageMeta) {
        let Some(d) = PackedDigest::parse(&m.digest) else {
            return;
        };
        let meta = Meta {
            created: m.created,
            revision: m.revision.as_deref().map(Into::into),
        };
        if lock(&self.known).set_meta(d, platform, meta) {
            self.generation.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Read what is remembered, under one lock: for looking up many tags at once without a
    /// request or an allocation each (an idle cycle's 10,000 cached tags).
    pub fn with_known<R>(&self, f: impl FnOnce(&Known) -> R) -> R {
        f(&lock(&self.known))
    }

    /// Change what is remembered, under one lock (loading the cache file); counts as news.
    pub fn with_known_mut<R>(&self, f: impl FnOnce(&mut Known) -> R) -> R {
        self.generation.fetch_add(1, Ordering::Relaxed);
        f(&mut lock(&self.known))
    }

    /// Everything remembered, as owned entries (sorted, as [`Known::entries`]).
    pub fn export(&self) -> Vec<CacheEntry> {
        lock(&self.known)
            .entries()
            .into_iter()
            .map(|e| CacheEntry {
                repository: e.repository.to_owned(),
                tag: e.tag.to_owned(),
                platform: e.platform.to_owned(),
                digest: e.digest.to_string(),
                created: e.meta.created,
                revision: e.meta.revision.as_deref().map(str::to_owned),
            })
            .collect()
    }

    /// Remember saved entries (entries with an invalid digest are skipped).
    pub fn import(&self, entries: Vec<CacheEntry>) {
        self.with_known_mut(|known| {
            for e in entries {
                let Some(d) = PackedDigest::parse(&e.digest) else {
                    continue;
                };
                known.set_tag(
                    &RepoRef::parse(&e.repository).canonical(),
                    &e.tag,
                    d.clone(),
                );
                let meta = Meta {
                    created: e.created,
                    revision: e.revision.map(Into::into),
                };
                known.set_meta(d, &e.platform, meta);
            }
        });
    }

    /// A per-cycle view that lists each repository and resolves each tag once ([`Scan`]).
    pub fn scan<'a>(&'a self, config: &'a Config) -> Scan<'a> {
        Scan::new(self, config)
    }

    /// Forget clients (their credentials and limits) so the next use reads the config again.
    pub fn reset_clients(&self) {
        lock(&self.clients).clear();
    }

    fn client(&self, config: &Config, repository: &str) -> Result<Arc<Client>, RegistryError> {
        let host = RepoRef::parse(repository).host;
        if let Some(c) = lock(&self.clients).get(&host) {
            return Ok(c.clone());
        }
        let c = Arc::new(Client::new(
            &host,
            config.registry_for(repository),
            self.metrics.clone(),
        )?);
        lock(&self.clients).insert(host, c.clone());
        Ok(c)
    }

    /// Every tag of a repository, following `Link` pagination.
    pub async fn list_tags(
        &self,
        config: &Config,
        repository: &str,
    ) -> Result<Vec<String>, RegistryError> {
        let client = self.client(config, repository)?;
        let path = RepoRef::parse(repository).path;
        let scope = format!("repository:{path}:pull");
        let first = format!("{}/v2/{path}/tags/list?n=1000", client.base);
        let mut next = url::Url::parse(&first).ok();
        let mut seen = std::collections::HashSet::new();
        let mut tags = Vec::new();
        while let Some(page) = next.take() {
            let url = page.to_string();
            if !seen.insert(url.clone()) || seen.len() > MAX_PAGES {
                return Err(bad(&client, &url, "tag list pagination loops".into()));
            }
            let a = client.call(Method::GET, &url, &scope).await?;
            if a.status == StatusCode::NOT_FOUND {
                return Err(RegistryError::NotFound(repository.to_owned()));
            }
            if !a.status.is_success() {
                return Err(RegistryError::Status {
                    registry: client.host.clone(),
                    url,
                    status: a.status.as_u16(),
                });
            }
            let list: wire::TagList = serde_json::from_slice(&a.body)
                .map_err(|e| bad(&client, &url, format!("tag list is not valid JSON: {e}")))?;
            tags.extend(list.tags.unwrap_or_default());
            next = match a.next_link() {
                None => None,
                Some(link) => Some(
                    wire::next_page(client.origin(), &page, &link)
                        .map_err(|reason| bad(&client, &url, reason))?,
                ),
            };
        }
        Ok(tags)
    }

    /// Digest and metadata of `repository:tag`, reading the platform's image from an index.
    /// Cached: a tag resolved before costs no request.
    pub async fn resolve(
        &self,
        config: &Config,
        repository: &str,
        tag: &str,
        platform: &str,
    ) -> Result<ImageMeta, RegistryError> {
        let r = RepoRef::parse(repository);
        let key = r.canonical();
        if let Some(m) = lock(&self.known).lookup(&key, tag, platform) {
            return Ok(m);
        }
        let client = self.client(config, repository)?;
        let path = r.path.as_str();
        let scope = format!("repository:{path}:pull");
        let reference = format!("{repository}:{tag}");
        let (digest, top) = self
            .manifest(&client, path, tag, &scope, &reference)
            .await?;
        let cached = PackedDigest::parse(&digest).and_then(|d| {
            lock(&self.known).meta(&d, platform).map(|m| ImageMeta {
                digest: digest.clone(),
                created: m.created,
                revision: m.revision.as_deref().map(str::to_owned),
            })
        });
        let meta = match cached {
            Some(m) => m,
            None => {
                let config_digest = match (&top.config, &top.manifests) {
                    (Some(c), _) => c.digest.clone(),
                    (None, Some(list)) => {
                        let entry = list
                            .iter()
                            .find(|d| d.platform.as_ref().is_some_and(|p| p.matches(platform)))
                            .ok_or_else(|| RegistryError::NoPlatform {
                                reference: reference.clone(),
                                platform: platform.to_owned(),
                            })?;
                        let (_, image) = self
                            .manifest(&client, path, &entry.digest, &scope, &reference)
                            .await?;
                        image.config.map(|c| c.digest).ok_or_else(|| {
                            bad(
                                &client,
                                &reference,
                                "platform manifest has no config".into(),
                            )
                        })?
                    }
                    (None, None) => {
                        return Err(bad(
                            &client,
                            &reference,
                            "manifest is neither an image nor an index".into(),
                        ));
                    }
                };
                let url = format!("/v2/{path}/blobs/{config_digest}");
                let a = client.call(Method::GET, &url, &scope).await?;
                if !a.status.is_success() {
                    return Err(RegistryError::Status {
                        registry: client.host.clone(),
                        url,
                        status: a.status.as_u16(),
                    });
                }
                verify(&client, &url, &config_digest, &a.body)?;
                let blob: wire::ImageConfigBlob = serde_json::from_slice(&a.body).map_err(|e| {
                    bad(
                        &client,
                        &url,
                        format!("image config is not valid JSON: {e}"),
                    )
                })?;
                let m = ImageMeta {
                    digest: digest.clone(),
                    created: blob.created_at(),
                    revision: blob.revision(),
                };
                self.remember_meta(platform, &m);
                m
            }
        };
        self.remember_tag(&key, tag, &digest);
        Ok(meta)
    }

    /// The digest a tag points at right now (one HEAD request), to confirm before writing it.
    pub async fn current_digest(
        &self,
        config: &Config,
        repository: &str,
        tag: &str,
    ) -> Result<String, RegistryError> {
        let client = self.client(config, repository)?;
        let r = RepoRef::parse(repository);
        let path = &r.path;
        let url = format!("/v2/{path}/manifests/{tag}");
        let a = client
            .call(Method::HEAD, &url, &format!("repository:{path}:pull"))
            .await?;
        if a.status == StatusCode::NOT_FOUND {
            return Err(RegistryError::NotFound(format!("{repository}:{tag}")));
        }
        if !a.status.is_success() {
            return Err(RegistryError::Status {
                registry: client.host.clone(),
                url,
                status: a.status.as_u16(),
            });
        }
        let digest = header_digest(&a.headers)
            .ok_or_else(|| bad(&client, &url, "no Docker-Content-Digest header".into()))?;
        self.remember_tag(&r.canonical(), tag, &digest);
        Ok(digest)
    }

    async fn manifest(
        &self,
        client: &Client,
        path: &str,
        reference: &str,
        scope: &str,
        shown: &str,
    ) -> Result<(String, wire::AnyManifest), RegistryError> {
        let url = format!("/v2/{path}/manifests/{reference}");
        let a = client.call(Method::GET, &url, scope).await?;
        if a.status == StatusCode::NOT_FOUND {
            return Err(RegistryError::NotFound(shown.to_owned()));
        }
        if !a.status.is_success() {
            return Err(RegistryError::Status {
                registry: client.host.clone(),
                url,
                status: a.status.as_u16(),
            });
        }
        let computed = format!("sha256:{}", hex::encode(Sha256::digest(&a.body)));
        let digest = header_digest(&a.headers).unwrap_or_else(|| computed.clone());
        if reference.starts_with("sha256:") {
            verify(client, &url, reference, &a.body)?;
        } else if digest.starts_with("sha256:") && digest != computed {
            return Err(bad(
                client,
                &url,
                format!("manifest body does not match its digest {digest}"),
            ));
        }
        if !crate::rewrite::valid_digest(&digest) {
            return Err(bad(client, &url, "registry sent an invalid digest".into()));
        }
        let m: wire::AnyManifest = serde_json::from_slice(&a.body)
            .map_err(|e| bad(client, &url, format!("manifest is not valid JSON: {e}")))?;
        Ok((digest, m))
    }
}

fn header_digest(h: &reqwest::header::HeaderMap) -> Option<String> {
    h.get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_owned())
}

fn verify(client: &Client, url: &str, digest: &str, body: &[u8]) -> Result<(), RegistryError> {
    let Some(hex_want) = digest.strip_prefix("sha256:") else {
        return Ok(());
    };
    if hex::encode(Sha256::digest(body)) != hex_want {
        return Err(bad(
            client,
            url,
            format!("content does not match digest {digest}"),
        ));
    }
    Ok(())
}

fn bad(client: &Client, url: &str, reason: String) -> RegistryError {
    RegistryError::BadResponse {
        registry: client.host.clone(),
        url: url.to_owned(),
        reason,
    }
}
