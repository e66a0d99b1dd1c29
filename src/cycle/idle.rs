//! Observe, then skip: an idle cycle whose head and picks are the ones a cycle already planned
//! on without finding anything to change does no git work at all (no plan over the values
//! files, no fetch). The fingerprint is of everything the plan reads besides the head's tree:
//! the config in force is a function of the head and the config path, and the plan of
//! tagflow's version.
//!
//! The last unchanged plan's fingerprint is kept in the work dir (`idle`), so a `once` (or a
//! restarted `run`) with nothing to do does not plan either: at 10,000 images that plan was the
//! process's peak memory (the values file's YAML tree and the updates, ~25 MB) and ~0.3 s.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use git2::Oid;
use sha2::{Digest, Sha256};

use crate::plan::PerEnv;

/// What the plan of an update depends on besides the head, hashed: the config file's path,
/// tagflow's version and every pick of every environment. A commit of these picks moves the
/// head, and the plan at the new head is known to change nothing ([`at`]).
pub fn picks(config_path: &str, targets: &PerEnv) -> [u8; 32] {
    let mut h = Sha256::new();
    // Length-prefixed fields, so no two different target sets hash the same bytes.
    let mut field = |s: &str| {
        h.update((s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    };
    field(config_path);
    field(crate::build_info::LONG_VERSION);
    for (env, picks) in targets {
        field(env);
        for (name, d) in picks {
            for s in [name, &d.image, &d.repository, &d.tag, &d.digest, &d.reason] {
                field(s);
            }
        }
    }
    h.finalize().into()
}

/// The fingerprint of planning `picks` on `head`: what [`Idle`] remembers.
pub fn at(head: Oid, picks: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(head.as_bytes());
    h.update(picks);
    h.finalize().into()
}

/// The record's file name in the work dir.
const RECORD: &str = "idle";

/// The fingerprint of the last plan that found nothing to change, in memory and (when made
/// with [`Idle::in_workdir`]) in the work dir.
#[derive(Debug, Default)]
pub struct Idle {
    last: Mutex<Option<[u8; 32]>>,
    file: Option<PathBuf>,
    /// Plans skipped because their fingerprint was seen (a test reads it).
    skipped: std::sync::atomic::AtomicU64,
}

impl Idle {
    /// Kept in `workdir` too, and read from there (a missing or unreadable file: nothing seen).
    pub fn in_workdir(workdir: &Path) -> Self {
        let file = workdir.join(RECORD);
        let last = std::fs::read_to_string(&file).ok().and_then(|t| {
            let mut key = [0u8; 32];
            hex::decode_to_slice(t.trim(), &mut key).ok().map(|()| key)
        });
        Self {
            last: Mutex::new(last),
            file: Some(file),
            skipped: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Whether `key` was planned on already and changed nothing (counted when it was).
    pub fn seen(&self, key: &[u8; 32]) -> bool {
        let seen = self.lock().as_ref() == Some(key);
        if seen {
            self.skipped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        seen
    }

    /// How many plans [`Idle::seen`] spared.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Remember (`Some`) or forget (`None`) an unchanged plan.
    pub fn set(&self, key: Option<[u8; 32]>) {
        let mut last = self.lock();
        if *last == key {
            return;
        }
        *last = key;
        let Some(file) = &self.file else { return };
        // Losing the record costs one plan, never correctness: a failure is only logged.
        let saved = match key {
            Some(k) => {
                crate::rewrite::write_atomic(file, format!("{}\n", hex::encode(k)).as_bytes())
            }
            None => match std::fs::remove_file(file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
        };
        if let Err(e) = saved {
            tracing::warn!(error = %e, path = %file.display(), "cannot record the last unchanged plan");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<[u8; 32]>> {
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Desired;

    fn targets(tag: &str, digest: &str) -> PerEnv {
        let d = Desired {
            image: "app".into(),
            repository: "r.example.com/team/app".into(),
            tag: tag.into(),
            digest: digest.into(),
            reason: "newest".into(),
        };
        [("dev".to_owned(), [("app".to_owned(), d)].into())].into()
    }

    const C: &str = "config/tagflow.yaml";

    fn fingerprint(head: Oid, config_path: &str, targets: &PerEnv) -> [u8; 32] {
        at(head, &picks(config_path, targets))
    }

    #[test]
    fn the_same_head_and_picks_are_skipped_and_any_difference_is_planned() {
        let head = Oid::from_str("0123456789abcdef0123456789abcdef01234567").expect("oid");
        let other = Oid::from_str("1123456789abcdef0123456789abcdef01234567").expect("oid");
        let idle = Idle::default();
        let a = fingerprint(head, C, &targets("a1b2c3d", "sha256:aa"));
        assert!(!idle.seen(&a), "nothing planned yet");
        idle.set(Some(a));
        assert!(idle.seen(&fingerprint(head, C, &targets("a1b2c3d", "sha256:aa"))));
        for changed in [
            fingerprint(other, C, &targets("a1b2c3d", "sha256:aa")),
            fingerprint(head, C, &targets("b2c3d4e", "sha256:aa")),
            fingerprint(head, C, &targets("a1b2c3d", "sha256:bb")),
            fingerprint(head, "other/tagflow.yaml", &targets("a1b2c3d", "sha256:aa")),
        ] {
            assert!(
                !idle.seen(&changed),
                "a moved head, a new tag or digest is planned"
            );
        }
        idle.set(None);
        assert!(!idle.seen(&a));
    }

    #[test]
    fn field_boundaries_count() {
        let head = Oid::ZERO_SHA1;
        assert_ne!(
            fingerprint(head, C, &targets("ab", "cd")),
            fingerprint(head, C, &targets("a", "bcd"))
        );
    }

    #[test]
    fn an_unchanged_plan_is_remembered_across_processes_in_the_work_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let head = Oid::ZERO_SHA1;
        let key = fingerprint(head, C, &targets("a1b2c3d", "sha256:aa"));
        let first = Idle::in_workdir(dir.path());
        assert!(!first.seen(&key));
        first.set(Some(key));
        let next = Idle::in_workdir(dir.path());
        assert!(next.seen(&key), "a new process skips the same plan");
        next.set(None);
        assert!(!dir.path().join(RECORD).exists(), "forgotten on disk too");
        assert!(!Idle::in_workdir(dir.path()).seen(&key));
        std::fs::write(dir.path().join(RECORD), "not hex\n").expect("write");
        assert!(
            !Idle::in_workdir(dir.path()).seen(&key),
            "a damaged record is nothing seen"
        );
    }
}
