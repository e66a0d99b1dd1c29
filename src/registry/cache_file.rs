//! The registry metadata cache on disk (work dir): loaded once at start, saved after a cycle
//! only when its content changed. Losing it costs requests, never correctness.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::{CacheEntry, Known, Meta, PackedDigest, Registries, RepoRef};

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
            Ok(bytes) => match decode(&bytes, registries) {
                // The layout of an earlier version is saved again in this one's.
                Ok(Layout::Earlier) => {}
                Ok(Layout::Current) => {
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
        let Some(bytes) = registries.with_known(encode) else {
            return;
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

/// First line of the file: what it is and which layout follows.
const HEADER: &str = r#"{"tagflow-registry-cache":2}"#;

/// One line of the file: the tags of one repository for one platform, each as
/// `[tag, digest, created, revision]`. Grouped so a repository's name and platform are written
/// once, and decoded borrowing from the file's bytes, so loading 10,000 tags allocates only
/// what is kept.
#[derive(serde::Serialize, serde::Deserialize)]
struct Group<'a> {
    #[serde(borrow, rename = "r")]
    repository: Cow<'a, str>,
    #[serde(borrow, rename = "p")]
    platform: Cow<'a, str>,
    #[serde(borrow, rename = "t")]
    tags: Vec<Tagged<'a>>,
}

type Tagged<'a> = (Text<'a>, Text<'a>, Option<DateTime<Utc>>, Option<Text<'a>>);

/// A string borrowed from the file's bytes unless it has escapes. (Serde's own `Cow` impl
/// borrows only as a struct's direct field; inside the tag tuples it would always allocate.)
#[derive(serde::Serialize)]
#[serde(transparent)]
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(Visit)
    }
}

/// The file's bytes for everything `known` holds; `None` when it holds nothing.
fn encode(known: &Known) -> Option<Vec<u8>> {
    let entries = known.entries();
    if entries.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(64 + entries.len() * 110);
    out.extend_from_slice(HEADER.as_bytes());
    out.push(b'\n');
    // Entries come sorted by repository, platform and tag: one line per run of the first two.
    for run in entries.chunk_by(|a, b| (a.repository, a.platform) == (b.repository, b.platform)) {
        let group = Group {
            repository: Cow::Borrowed(run[0].repository),
            platform: Cow::Borrowed(run[0].platform),
            tags: run
                .iter()
                .map(|e| {
                    (
                        Text(Cow::Borrowed(e.tag)),
                        Text(Cow::Owned(e.digest.to_string())),
                        e.meta.created,
                        e.meta.revision.as_deref().map(|r| Text(Cow::Borrowed(r))),
                    )
                })
                .collect(),
        };
        // Only strings, times and options: encoding cannot fail.
        serde_json::to_writer(&mut out, &group).ok()?;
        out.push(b'\n');
    }
    Some(out)
}

/// Which layout a loaded file had.
#[derive(Debug, PartialEq, Eq)]
enum Layout {
    /// [`HEADER`] and its groups.
    Current,
    /// One JSON array of [`CacheEntry`] (before the grouped layout).
    Earlier,
}

/// Load `bytes` into `registries`, all or nothing. Reads the layout of earlier versions too,
/// so an upgrade does not cost a cold scan.
fn decode(bytes: &[u8], registries: &Registries) -> Result<Layout, String> {
    let Some(body) = bytes
        .strip_prefix(HEADER.as_bytes())
        .and_then(|b| b.strip_prefix(b"\n"))
    else {
        let entries: Vec<CacheEntry> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        registries.import(entries);
        return Ok(Layout::Earlier);
    };
    let mut groups = Vec::new();
    for (n, line) in body.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let group: Group<'_> =
            serde_json::from_slice(line).map_err(|e| format!("line {}: {e}", n + 2))?;
        groups.push(group);
    }
    registries.with_known_mut(|known| {
        for g in groups {
            let repository = RepoRef::parse(&g.repository).canonical();
            for (tag, digest, created, revision) in g.tags {
                // An entry with a bad digest is skipped, as a hand-edited file may have one.
                let Some(d) = PackedDigest::parse(&digest.0) else {
                    continue;
                };
                known.set_tag(&repository, &tag.0, d.clone());
                let meta = Meta {
                    created,
                    revision: revision.map(|r| r.0.into()),
                };
                known.set_meta(d, &g.platform, meta);
            }
        }
    });
    Ok(Layout::Current)
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

    #[test]
    fn the_grouped_layout_round_trips_escapes_platforms_and_both_digest_kinds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let registries = Registries::new(crate::metrics::Metrics::new());
        let created = chrono::DateTime::parse_from_rfc3339("2024-01-02T03:04:05.123456789Z")
            .expect("time")
            .with_timezone(&Utc);
        let mut entries = vec![
            entry("a1b2c3d"),
            super::super::CacheEntry {
                repository: "docker.io/library/nginx".into(),
                tag: "1.27".into(),
                platform: "linux/arm64/v8".into(),
                digest: format!("sha512:{}", "9a".repeat(64)),
                created: Some(created),
                revision: Some("line\n\"quoted\" \\ ünïcode".into()),
            },
        ];
        entries[0].created = Some(created);
        registries.import(entries.clone());
        CacheFile::new(dir.path()).save(&registries);
        let text = std::fs::read_to_string(dir.path().join(CACHE_FILE)).expect("saved");
        assert!(text.starts_with(HEADER), "{text}");
        assert_eq!(
            text.lines().count(),
            3,
            "a header and one line per group: {text}"
        );
        let loaded = Registries::new(crate::metrics::Metrics::new());
        CacheFile::new(dir.path()).load(&loaded);
        let mut want = entries;
        want.sort_by(|a, b| a.repository.cmp(&b.repository));
        assert_eq!(loaded.export(), want);
        // A short name is keyed as docker reads it, so the image finds its cached tag.
        let nginx =
            loaded.with_known(|k| k.lookup("docker.io/library/nginx", "1.27", "linux/arm64/v8"));
        assert_eq!(nginx.expect("cached").created, Some(created));
    }

    #[test]
    fn an_earlier_layout_is_read_and_saved_again_in_the_grouped_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(CACHE_FILE);
        let earlier = serde_json::to_vec(&vec![entry("a1b2c3d"), entry("e4f5a6b")]).expect("json");
        std::fs::write(&path, &earlier).expect("write");
        let registries = Registries::new(crate::metrics::Metrics::new());
        let cache = CacheFile::new(dir.path());
        cache.load(&registries);
        assert_eq!(registries.export().len(), 2, "nothing lost in the upgrade");
        cache.save(&registries);
        let text = std::fs::read_to_string(&path).expect("saved");
        assert!(
            text.starts_with(HEADER),
            "rewritten in the grouped layout: {text}"
        );
        // Once in the current layout, an idle save writes nothing.
        std::fs::remove_file(&path).expect("remove");
        let again = CacheFile::new(dir.path());
        std::fs::write(&path, text.as_bytes()).expect("write");
        again.load(&registries);
        std::fs::remove_file(&path).expect("remove");
        again.save(&registries);
        assert!(!path.exists());
    }

    #[test]
    fn a_damaged_file_is_ignored_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(CACHE_FILE);
        let good = serde_json::json!({"r": "r.example.com/app", "p": "linux/amd64",
            "t": [["a1b2c3d", format!("sha256:{}", "cd".repeat(32)), null, null]]});
        for damaged in [
            format!("{HEADER}\n{good}\n{{\"r\": 1}}\n"),
            format!("{HEADER}\n{good}\n[\"cut"),
            format!("{HEADER}\n{good}\n\u{0}\n"),
        ] {
            std::fs::write(&path, &damaged).expect("write");
            let registries = Registries::new(crate::metrics::Metrics::new());
            CacheFile::new(dir.path()).load(&registries);
            assert!(
                registries.export().is_empty(),
                "all or nothing: {damaged:?}"
            );
        }
        // A bad digest is one skipped entry, not a lost cache.
        let bad = serde_json::json!({"r": "r.example.com/app", "p": "linux/amd64",
            "t": [["0000000", "sha256:nothex", null, null]]});
        std::fs::write(&path, format!("{HEADER}\n{good}\n{bad}\n")).expect("write");
        let registries = Registries::new(crate::metrics::Metrics::new());
        CacheFile::new(dir.path()).load(&registries);
        assert_eq!(registries.export().len(), 1);
    }
}
