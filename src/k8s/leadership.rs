//! What rollouts need from the cluster when `run` is given a Lease — the client, the elector
//! and the wake-up of watches and leadership changes — and reading it back for `tagflow status`.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::lease::{Elector, STATE_ANNOTATION};
use super::{Cluster, ClusterError};
use crate::rollout::State;

/// Rollouts on a cluster: the client, this replica's side of the election and what wakes the
/// loop (HelmRelease watches, leadership changes).
#[derive(Debug)]
pub struct Leadership {
    /// Kubernetes client.
    pub cluster: Cluster,
    /// Leader election and state storage.
    pub elector: Arc<Elector>,
    /// Notified by HelmRelease watches and leadership changes.
    pub wake: Arc<Notify>,
    /// Stops the watches.
    pub stop: CancellationToken,
}

/// `NAMESPACE/NAME` of a Lease.
pub fn parse_lease(s: &str) -> Result<(String, String), ClusterError> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_owned(), name.to_owned()))
        }
        _ => Err(ClusterError::Config(format!(
            "--lease {s:?}: expected NAMESPACE/NAME"
        ))),
    }
}

/// This replica's name in the Lease: `$POD_NAME`, else `<hostname>-<pid>`.
pub fn default_identity() -> String {
    std::env::var("POD_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "tagflow".into());
            format!("{host}-{}", std::process::id())
        })
}

/// Connect to Kubernetes, start leader election on the Lease (ticking until `stop`) and return
/// what the cycle needs for rollouts, with the election task to await on shutdown.
pub async fn start(
    lease: &str,
    identity: &str,
    duration: Duration,
    stop: CancellationToken,
) -> Result<(Arc<Leadership>, tokio::task::JoinHandle<()>), ClusterError> {
    let (ns, name) = parse_lease(lease)?;
    let cluster = Cluster::connect().await?;
    let elector = Arc::new(Elector::new(
        cluster.client.clone(),
        &ns,
        &name,
        identity,
        duration,
    ));
    tracing::info!(lease = %lease, identity = %identity, duration = ?duration, "leader election on");
    let task = tokio::spawn(elector.clone().run(stop.clone()));
    let wake = elector.changed.clone();
    Ok((
        Arc::new(Leadership {
            cluster,
            elector,
            wake,
            stop,
        }),
        task,
    ))
}

/// The rollout state stored on the Lease, and its holder.
pub async fn read_state(lease: &str) -> Result<(State, Option<String>), ClusterError> {
    let (ns, name) = parse_lease(lease)?;
    let cluster = Cluster::connect().await?;
    let api: Api<Lease> = Api::namespaced(cluster.client.clone(), &ns);
    let l = api
        .get_opt(&name)
        .await
        .map_err(|source| ClusterError::Unreachable {
            action: format!("read Lease {lease}"),
            source,
        })?
        .ok_or_else(|| {
            ClusterError::Config(format!(
                "Lease {lease} does not exist: no tagflow has run with it yet"
            ))
        })?;
    let holder = l.spec.and_then(|s| s.holder_identity);
    let state = match l
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(STATE_ANNOTATION))
    {
        Some(text) => serde_json::from_str(text).map_err(|e| {
            ClusterError::Config(format!("the state on {lease} is unreadable: {e}"))
        })?,
        None => State::default(),
    };
    Ok((state, holder))
}

#[cfg(test)]
mod tests {
    #[test]
    fn lease_names() {
        assert_eq!(
            super::parse_lease("tagflow/tagflow").ok(),
            Some(("tagflow".into(), "tagflow".into()))
        );
        assert!(super::parse_lease("tagflow").is_err());
        assert!(super::parse_lease("/x").is_err());
    }
}
