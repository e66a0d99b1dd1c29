//! The config in force: the last good config with its approvals and quarantine lists, shared
//! by the cycle (which replaces it), the HTTP server, Slack and the infra watcher (which read).

use std::sync::{Arc, RwLock};

use super::{Config, Gates};

/// A good config and the lists read with it, at one commit of the config repo.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The config.
    pub config: Arc<Config>,
    /// Approvals and quarantine read with it.
    pub gates: Arc<Gates>,
    /// The commit it was read at (hex).
    pub commit: String,
}

/// The config in force, if any good one was loaded yet.
#[derive(Debug, Default)]
pub struct Current(RwLock<Option<Loaded>>);

impl Current {
    /// Nothing loaded yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The config in force.
    pub fn config(&self) -> Option<Arc<Config>> {
        self.loaded().map(|l| l.config)
    }

    /// Approvals and quarantine in force (empty before the first good load).
    pub fn gates(&self) -> Arc<Gates> {
        self.loaded().map(|l| l.gates).unwrap_or_default()
    }

    /// Everything in force.
    pub fn loaded(&self) -> Option<Loaded> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Put a good config in force.
    pub fn set(&self, loaded: Loaded) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(loaded);
    }

    /// Keep the config, take new lists (the lists changed, the config did not).
    pub fn set_gates(&self, gates: Arc<Gates>) {
        if let Some(l) = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_mut()
        {
            l.gates = gates;
        }
    }
}
