//! The registry metadata cache on disk (work dir): loaded once at start, saved after a cycle
//! only when its content changed. Losing it costs requests, never correctness.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::Registries;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// File in the work dir holding registry metadata (digest → build time, revision).
pub const CACHE_FILE: &str = "registry-cache.json";

/// Where the cache lives and what was last written there.
#[derive(Debug)]
pub struct CacheFile {
    path: PathBuf,
    /// Hash of the bytes last read or written, and the registries' generation they hold, so an
    /// unchanged cache is neither encoded nor rewritten.
    last: Mutex<Saved>,
    /// A load running beside the cycle's first fetch ([`CacheFile::load_in_background`]).
    loading: Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Debug, Default)]
struct Saved {
    hash: Option<[u8; 32]>,
    generation: Option<u64>,
}

impl CacheFile {
    /// The cache in `workdir`.
    pub fn new(workdir: &Path) -> Self {
        Self {
            path: workdir.join(CACHE_FILE),
            last: Mutex::new(Saved::default()),
            loading: Mutex::new(None),
        }
    }

    /// [`CacheFile::load`] on a thread of its own, so reading and decoding a large cache
    /// (10,000 tags: ~2 MB of JSON) overlaps the first fetch and config parse instead of
    /// preceding them. [`CacheFile::wait`] before the first registry request.
    pub fn load_in_background(self: &Arc<Self>, registries: Arc<Registries>) {
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("registry-cache".into())
            .spawn(move || me.load(&registries));
        match spawned {
            Ok(h) => *lock(&self.loading) = Some(h),
            // No thread to be had: the cache is an optimisation; go without it.
            Err(e) => tracing::warn!(error = %e, "could not start loading the registry cache"),
        }
    }

    /// [`CacheFile::wait`] without blocking the async runtime's thread.
    pub async fn loaded(&self) {
        let handle = lock(&self.loading).take();
        if let Some(h) = handle {
            let joined = tokio::task::spawn_blocking(move || h.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::warn!("loading the registry cache failed; going on without it");
            }
        }
    }

    /// Wait for a background load to finish (at once when none runs).
    pub fn wait(&self) {
        let handle = lock(&self.loading).take();
        if let Some(h) = handle
            && h.join().is_err()
        {
            tracing::warn!("loading the registry cache panicked; going on without it");
        }
    }

    /// Load saved entries into `registries`; an unreadable file is ignored (with a warning).
    pub fn load(&self, registries: &Registries) {
        match std::fs::read(&self.path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(entries) => {
                    registries.import(entries);
                    *self.lock() = Saved {
                        hash: Some(Sha256::digest(&bytes).into()),
                        generation: Some(registries.generation()),
                    };
                }
                Err(e) => {
                    tracing::warn!(file = %self.path.display(), error = %e, "ignoring an unreadable registry cache");
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(file = %self.path.display(), error = %e, "ignoring an unreadable registry cache");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Saved> {
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Save what `registries` knows, unless it is what the file already holds.
    pub fn save(&self, registries: &Registries) {
        // Never save half a load.
        self.wait();
        // Read before the export: a change landing during it bumps past this, so it is saved
        // next time rather than marked as saved.
        let generation = registries.generation();
        if self.lock().generation == Some(generation) {
            return;
        }
        let entries = registries.export();
        if entries.is_empty() {
            return;
        }
        let bytes = match serde_json::to_vec(&entries) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "could not encode the registry cache");
                return;
            }
        };
        let hash: [u8; 32] = Sha256::digest(&bytes).into();
        if self.lock().hash == Some(hash) {
            self.lock().generation = Some(generation);
            return;
        }
        let written = self
            .path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| crate::rewrite::write_atomic(&self.path, &bytes));
        match written {
            Ok(()) => {
                *self.lock() = Saved {
                    hash: Some(hash),
                    generation: Some(generation),
                };
            }
            Err(e) => {
                tracing::warn!(file = %self.path.display(), error = %e, "could not save the registry cache");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unchanged_cache_is_not_rewritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let registries = Registries::new(crate::metrics::Metrics::new());
        registries.import(vec![super::super::CacheEntry {
            repository: "r.example.com/app".into(),
            tag: "a1b2c3d".into(),
            platform: "linux/amd64".into(),
            digest: format!("sha256:{}", "ab".repeat(32)),
            created: None,
            revision: None,
        }]);
        let cache = CacheFile::new(dir.path());
        cache.save(&registries);
        let path = dir.path().join(CACHE_FILE);
        let first = std::fs::metadata(&path)
            .expect("saved")
            .modified()
            .expect("mtime");
        std::fs::write(&path, b"[]").expect("overwrite");
        // The same content again: the file is left as it is (here: as the test left it).
        cache.save(&registries);
        assert_eq!(std::fs::read(&path).expect("read"), b"[]");
        let _ = first;
        let loaded = Registries::new(crate::metrics::Metrics::new());
        CacheFile::new(dir.path()).load(&loaded);
        assert!(loaded.export().is_empty(), "loads what the file says");
    }

    fn entry(tag: &str) -> super::super::CacheEntry {
        super::super::CacheEntry {
            repository: "r.example.com/app".into(),
            tag: tag.into(),
            platform: "linux/amd64".into(),
            digest: format!("sha256:{}", "cd".repeat(32)),
            created: None,
            revision: None,
        }
    }

    #[test]
    fn nothing_learnt_means_nothing_written_and_something_learnt_is_saved() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(CACHE_FILE);
        let registries = Registries::new(crate::metrics::Metrics::new());
        registries.import(vec![entry("a1b2c3d")]);
        let cache = CacheFile::new(dir.path());
        cache.save(&registries);
        assert!(path.exists());
        // Idle cycles: the registries learnt nothing, so the file is not even looked at.
        std::fs::remove_file(&path).expect("remove");
        cache.save(&registries);
        cache.save(&registries);
        assert!(!path.exists(), "an unchanged cache is not written again");
        registries.import(vec![entry("e4f5a6b")]);
        cache.save(&registries);
        let loaded = Registries::new(crate::metrics::Metrics::new());
        CacheFile::new(dir.path()).load(&loaded);
        assert_eq!(loaded.export().len(), 2, "a new tag is saved");
    }

    #[test]
    fn a_loaded_cache_is_not_written_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(CACHE_FILE);
        let first = Registries::new(crate::metrics::Metrics::new());
        first.import(vec![entry("a1b2c3d")]);
        CacheFile::new(dir.path()).save(&first);
        let registries = Registries::new(crate::metrics::Metrics::new());
        let cache = CacheFile::new(dir.path());
        cache.load(&registries);
        std::fs::remove_file(&path).expect("remove");
        cache.save(&registries);
        assert!(!path.exists(), "what was just read is not saved again");
    }

    #[test]
    fn a_background_load_is_complete_once_waited_for_and_never_saved_half_done() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Registries::new(crate::metrics::Metrics::new());
        first.import((0..500).map(|i| entry(&format!("{i:07x}"))).collect());
        CacheFile::new(dir.path()).save(&first);
        let registries = Arc::new(Registries::new(crate::metrics::Metrics::new()));
        let cache = Arc::new(CacheFile::new(dir.path()));
        cache.load_in_background(registries.clone());
        cache.wait();
        assert_eq!(registries.export().len(), 500);
        // Saving right after starting a load waits for it, so nothing half-loaded is written.
        let again = Arc::new(Registries::new(crate::metrics::Metrics::new()));
        let cache = Arc::new(CacheFile::new(dir.path()));
        cache.load_in_background(again.clone());
        cache.save(&again);
        let reread = Registries::new(crate::metrics::Metrics::new());
        CacheFile::new(dir.path()).load(&reread);
        assert_eq!(reread.export().len(), 500);
    }
}
