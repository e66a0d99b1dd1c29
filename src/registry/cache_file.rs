//! The registry metadata cache on disk (work dir): loaded once at start, saved after a cycle
//! only when its content changed. Losing it costs requests, never correctness.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::Registries;

/// File in the work dir holding registry metadata (digest → build time, revision).
pub const CACHE_FILE: &str = "registry-cache.json";

/// Where the cache lives and what was last written there.
#[derive(Debug)]
pub struct CacheFile {
    path: PathBuf,
    /// Hash of the bytes last read or written, and the registries' generation they hold, so an
    /// unchanged cache is neither encoded nor rewritten.
    last: Mutex<Saved>,
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
}
