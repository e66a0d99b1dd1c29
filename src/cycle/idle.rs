//! Observe, then skip: an idle cycle whose head and picks are the ones a cycle already planned
//! on without finding anything to change does no git work at all (no plan over the values
//! files, no fetch). The fingerprint is of everything the plan reads besides the head's tree:
//! within one process the config in force is a function of the head.

use std::sync::Mutex;

use git2::Oid;
use sha2::{Digest, Sha256};

use crate::plan::PerEnv;

/// What the plan of an update depends on, hashed: the head and every pick of every environment.
pub fn fingerprint(head: Oid, targets: &PerEnv) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(head.as_bytes());
    // Length-prefixed fields, so no two different target sets hash the same bytes.
    let mut field = |s: &str| {
        h.update((s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    };
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

/// The fingerprint of the last plan that found nothing to change.
#[derive(Debug, Default)]
pub struct Idle(Mutex<Option<[u8; 32]>>);

impl Idle {
    /// Whether `key` was planned on already and changed nothing.
    pub fn seen(&self, key: &[u8; 32]) -> bool {
        self.lock().as_ref() == Some(key)
    }

    /// Remember (`Some`) or forget (`None`) an unchanged plan.
    pub fn set(&self, key: Option<[u8; 32]>) {
        *self.lock() = key;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<[u8; 32]>> {
        self.0
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

    #[test]
    fn the_same_head_and_picks_are_skipped_and_any_difference_is_planned() {
        let head = Oid::from_str("0123456789abcdef0123456789abcdef01234567").expect("oid");
        let other = Oid::from_str("1123456789abcdef0123456789abcdef01234567").expect("oid");
        let idle = Idle::default();
        let a = fingerprint(head, &targets("a1b2c3d", "sha256:aa"));
        assert!(!idle.seen(&a), "nothing planned yet");
        idle.set(Some(a));
        assert!(idle.seen(&fingerprint(head, &targets("a1b2c3d", "sha256:aa"))));
        for changed in [
            fingerprint(other, &targets("a1b2c3d", "sha256:aa")),
            fingerprint(head, &targets("b2c3d4e", "sha256:aa")),
            fingerprint(head, &targets("a1b2c3d", "sha256:bb")),
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
            fingerprint(head, &targets("ab", "cd")),
            fingerprint(head, &targets("a", "bcd"))
        );
    }
}
