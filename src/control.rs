//! Starting the rollout machinery for `run` and reading it for `tagflow status`.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, ClusterError};
use crate::cycle::Deploy;
use crate::lease::{Elector, STATE_ANNOTATION};
use crate::rollout::State;

/// `NAMESPACE/NAME` of a Lease.
pub fn parse_lease(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_owned(), name.to_owned()))
        }
        _ => Err(format!("--lease {s:?}: expected NAMESPACE/NAME")),
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
/// what the agent needs for rollouts, with the election task to await on shutdown.
pub async fn start(
    lease: &str,
    identity: &str,
    duration: Duration,
    stop: CancellationToken,
) -> Result<(Arc<Deploy>, tokio::task::JoinHandle<()>), String> {
    let (ns, name) = parse_lease(lease)?;
    let cluster = Cluster::connect().await.map_err(|e| e.to_string())?;
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
        Arc::new(Deploy {
            cluster,
            elector,
            wake,
            stop,
        }),
        task,
    ))
}

/// The rollout state stored on the Lease, and its holder.
pub async fn read_state(lease: &str) -> Result<(State, Option<String>), String> {
    let (ns, name) = parse_lease(lease)?;
    let cluster = Cluster::connect().await.map_err(|e| e.to_string())?;
    let api: Api<Lease> = Api::namespaced(cluster.client.clone(), &ns);
    let l = api
        .get_opt(&name)
        .await
        .map_err(|source| {
            ClusterError::Api {
                action: format!("read Lease {lease}"),
                source,
            }
            .to_string()
        })?
        .ok_or_else(|| format!("Lease {lease} does not exist: no tagflow has run with it yet"))?;
    let holder = l.spec.and_then(|s| s.holder_identity);
    let state = match l
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(STATE_ANNOTATION))
    {
        Some(text) => serde_json::from_str(text)
            .map_err(|e| format!("the state on {lease} is unreadable: {e}"))?,
        None => State::default(),
    };
    Ok((state, holder))
}

#[cfg(test)]
mod tests {
    #[test]
    fn lease_names() {
        assert_eq!(
            super::parse_lease("tagflow/tagflow"),
            Ok(("tagflow".into(), "tagflow".into()))
        );
        assert!(super::parse_lease("tagflow").is_err());
        assert!(super::parse_lease("/x").is_err());
    }
}
