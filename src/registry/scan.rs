//! One cycle's view of the registries: each repository is listed once and each tag resolved
//! once however many images (or environments) name it, and callers asking at the same time
//! share the request in flight. Results live as long as the [`Scan`]: the next cycle lists
//! again, so a new tag is never missed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};

use super::{ImageMeta, Registries, RegistryError, RepoRef, lock};
use crate::config::Config;

/// A shared answer: errors are not `Clone`, so every sharer gets the same `Arc`.
pub type ScanResult<T> = Result<T, Arc<RegistryError>>;

type Flight<'a, T> = Shared<BoxFuture<'a, ScanResult<T>>>;

/// Resolutions in flight, and failed ones (so every image naming a failed tag gets the same
/// answer without asking again). A resolved tag leaves: the registry cache has its answer.
type Metas<'a> = Arc<Mutex<HashMap<(String, String, String), Flight<'a, ImageMeta>>>>;

/// Requests made during one cycle, shared by every image of it.
pub struct Scan<'a> {
    registries: &'a Registries,
    config: &'a Config,
    tags: Mutex<HashMap<String, Flight<'a, Arc<Vec<String>>>>>,
    metas: Metas<'a>,
}

impl std::fmt::Debug for Scan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Scan({} repositories, {} tags)",
            lock(&self.tags).len(),
            lock(&self.metas).len()
        )
    }
}

impl<'a> Scan<'a> {
    /// A scan with `config`'s registry settings; nothing is requested until asked.
    pub fn new(registries: &'a Registries, config: &'a Config) -> Self {
        Self {
            registries,
            config,
            tags: Mutex::new(HashMap::new()),
            metas: Arc::default(),
        }
    }

    /// Every tag of `repository` ([`Registries::list_tags`]), listed once per scan.
    pub fn list_tags(&self, repository: &str) -> Flight<'a, Arc<Vec<String>>> {
        let key = RepoRef::parse(repository).canonical();
        let (registries, config) = (self.registries, self.config);
        let repository = repository.to_owned();
        lock(&self.tags)
            .entry(key)
            .or_insert_with(move || {
                async move {
                    registries
                        .list_tags(config, &repository)
                        .await
                        .map(Arc::new)
                        .map_err(Arc::new)
                }
                .boxed()
                .shared()
            })
            .clone()
    }

    /// [`Registries::resolve`], asked once per scan for each (repository, tag, platform) while
    /// it is in flight or if it failed; once resolved, the registry cache answers.
    pub fn resolve(&self, repository: &str, tag: &str, platform: &str) -> Flight<'a, ImageMeta> {
        let key = (
            RepoRef::parse(repository).canonical(),
            tag.to_owned(),
            platform.to_owned(),
        );
        let (registries, config) = (self.registries, self.config);
        let (repository, tag, platform) =
            (repository.to_owned(), tag.to_owned(), platform.to_owned());
        let metas = Arc::clone(&self.metas);
        lock(&self.metas)
            .entry(key.clone())
            .or_insert_with(move || {
                async move {
                    let resolved = registries
                        .resolve(config, &repository, &tag, &platform)
                        .await
                        .map_err(Arc::new);
                    // Held for the scan, 10,000 answers cost ~3.5 MB at a cold 1,000 x 10;
                    // those waiting on this flight already hold it.
                    if resolved.is_ok() {
                        lock(&metas).remove(&key);
                    }
                    resolved
                }
                .boxed()
                .shared()
            })
            .clone()
    }
}
