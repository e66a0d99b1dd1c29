//! Where the rollout state is kept: a choice apart from leader election (`run --state`).

/// Where the rollout state is kept (`run --state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StateStore {
    /// On the leader Lease (needs `--lease`).
    Lease,
    /// In the config repo, on `refs/tagflow/state`.
    Git,
}

impl StateStore {
    /// The store asked for, else the default: the Lease when there is one, else git.
    pub fn choose(asked: Option<Self>, lease: bool) -> Result<Self, String> {
        match (asked, lease) {
            (Some(Self::Lease), false) => {
                Err("--state lease needs --lease NAMESPACE/NAME (or use --state git)".into())
            }
            (Some(Self::Git), _) | (None, false) => Ok(Self::Git),
            (Some(Self::Lease) | None, true) => Ok(Self::Lease),
        }
    }
}
