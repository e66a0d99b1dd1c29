//! Compiled policies kept across cycles, keyed by their config: a cycle over 10,000 images
//! sharing one policy compiles its regexes once, not 10,000 times, and an unchanged config
//! compiles nothing at all after the first cycle.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{Policy, PolicyError};
use crate::config::PolicyConfig;

/// Policies compiled so far, by the config they were compiled from.
#[derive(Debug, Default)]
pub struct Compiled {
    map: Mutex<HashMap<PolicyConfig, Arc<Policy>>>,
    compiles: AtomicU64,
}

impl Compiled {
    /// The policy for `config`, compiled on first ask. A config that does not compile is not
    /// kept (validation refuses it before a cycle runs, so this is the rare path).
    pub fn get(&self, config: &PolicyConfig) -> Result<Arc<Policy>, PolicyError> {
        if let Some(p) = self.lock().get(config) {
            return Ok(p.clone());
        }
        let p = Arc::new(Policy::compile(config)?);
        self.compiles.fetch_add(1, Ordering::Relaxed);
        Ok(self.lock().entry(config.clone()).or_insert(p).clone())
    }

    /// Forget every policy not in `in_use` (a config change dropped it), so the cache holds
    /// no more than the config in force does.
    pub fn retain<'a>(&self, in_use: impl IntoIterator<Item = &'a PolicyConfig>) {
        let mut map = self.lock();
        if map.is_empty() {
            return;
        }
        let keep: std::collections::HashSet<&PolicyConfig> = in_use.into_iter().collect();
        map.retain(|k, _| keep.contains(k));
    }

    /// How many compilations were done (for tests: a warm cache compiles nothing).
    pub fn compiles(&self) -> u64 {
        self.compiles.load(Ordering::Relaxed)
    }

    /// How many policies are kept.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PolicyConfig, Arc<Policy>>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Direction, Order};

    fn config(tags: &str) -> PolicyConfig {
        PolicyConfig {
            tags: tags.into(),
            extract: None,
            exclude: vec!["^dev-".into()],
            order: Order::Alphabetical,
            direction: Direction::Asc,
            range: None,
            allow_numeric_semver: false,
            min_age: None,
        }
    }

    #[test]
    fn one_policy_is_compiled_once_however_many_images_and_cycles_use_it() {
        let c = Compiled::default();
        let a = config("^[0-9a-f]{7}$");
        for _ in 0..3 {
            for _ in 0..100 {
                c.get(&a).expect("compiles");
            }
            c.retain([&a]);
        }
        assert_eq!(c.compiles(), 1);
        assert_eq!(c.len(), 1);
        let picked = c
            .get(&a)
            .expect("compiles")
            .filter(["abc1234", "dev-123", "main"]);
        assert_eq!(picked.len(), 1, "the kept policy filters like a fresh one");
    }

    #[test]
    fn a_changed_policy_is_compiled_again_and_the_old_one_dropped() {
        let c = Compiled::default();
        let a = config("^v1$");
        let b = PolicyConfig {
            direction: Direction::Desc,
            ..a.clone()
        };
        c.get(&a).expect("compiles");
        c.get(&b).expect("compiles");
        assert_eq!(c.compiles(), 2, "any field is part of the key");
        c.retain([&b]);
        assert_eq!(c.len(), 1);
        c.get(&b).expect("compiles");
        assert_eq!(c.compiles(), 2);
        c.get(&a).expect("compiles");
        assert_eq!(c.compiles(), 3, "dropped, so compiled again");
    }

    #[test]
    fn a_bad_regex_is_an_error_every_time_and_not_kept() {
        let c = Compiled::default();
        let bad = config("(");
        assert!(c.get(&bad).is_err());
        assert!(c.get(&bad).is_err());
        assert!(c.is_empty());
    }
}
