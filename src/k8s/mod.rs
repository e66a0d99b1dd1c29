//! Kubernetes IO in one place: the client ([`Cluster`]), the release of each environment —
//! a Flux HelmRelease ([`release`]), a Flux Kustomization ([`kustomization`]) or an Argo CD
//! Application ([`argo`]), dispatched by kind in [`observed`]: watched, read into a typed
//! status, judged by a pure reader — leader election and state on a Lease ([`lease`]) and the
//! wiring `run` and `status` use ([`leadership`]).
//!
//! Which HelmRelease fields tagflow relies on (`helm.toolkit.fluxcd.io/v2`):
//! - `status.lastAttemptedRevision` (falling back to `status.lastAppliedRevision`): the source
//!   revision helm-controller last acted on. Flux writes it as `<branch>@sha1:<40 hex>` for a
//!   GitRepository source, or as a chart version whose build metadata is the commit
//!   (`0.1.0+<12 hex>`); tagflow takes the hex run at the end and counts the release as
//!   reconciled when that commit is tagflow's commit or a descendant of it in the config repo.
//! - `status.observedGeneration` ≥ `metadata.generation`: the status is about the current spec.
//! - `status.conditions`: `Stalled=True` (retries exhausted), `Remediated=True` (rolled back or
//!   uninstalled) and `TestSuccess=False` (helm test failed) fail the rollout at once;
//!   `Ready=True` is success; `Ready=False` is waited on until the environment's `timeout`.
//!
//! The Kustomization's and the Application's fields are in their modules' docs.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub mod argo;
pub mod events;
pub mod kustomization;
pub mod leadership;
pub mod lease;
pub mod observed;
pub mod release;

use crate::config::ReleaseRef;
use observed::Observed;

/// Kubernetes failures.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No kubeconfig or in-cluster config: terminal until the deployment is fixed.
    #[error("failed to configure the Kubernetes client: {0}")]
    Config(String),
    /// The Lease could not be read or renewed (transient; the elector says why).
    #[error("the Lease: {0}")]
    Lease(String),
    /// An API call failed: the API server may come back (transient).
    #[error("failed to {action}: {source}")]
    Unreachable {
        /// What we were doing.
        action: String,
        /// kube's error.
        #[source]
        source: kube::Error,
    },
}

impl ClusterError {
    /// Worth retrying soon.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::Lease(_))
    }
}

/// The Kubernetes client tagflow uses for releases and its Lease.
#[derive(Clone)]
pub struct Cluster {
    /// The client.
    pub client: kube::Client,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cluster")
    }
}

impl Cluster {
    /// A client from `KUBECONFIG`/`~/.kube/config` or the in-cluster service account.
    pub async fn connect() -> Result<Self, ClusterError> {
        let mut config = kube::Config::infer()
            .await
            .map_err(|e| ClusterError::Config(e.to_string()))?;
        // Fail fast so an unreachable API server costs a cycle seconds, not minutes.
        config.connect_timeout = Some(Duration::from_secs(5));
        config.read_timeout = Some(Duration::from_secs(30));
        let client =
            kube::Client::try_from(config).map_err(|e| ClusterError::Config(e.to_string()))?;
        Ok(Self { client })
    }

    fn releases(&self, r: &ReleaseRef) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            &r.namespace,
            &observed::api_resource(r.kind),
        )
    }

    /// The release object, read as its kind; `None` when it does not exist.
    pub async fn release(&self, r: &ReleaseRef) -> Result<Option<Observed>, ClusterError> {
        let obj = self.releases(r).get_opt(&r.name).await.map_err(|source| {
            ClusterError::Unreachable {
                action: format!("read {} {}/{}", r.kind, r.namespace, r.name),
                source,
            }
        })?;
        Ok(obj
            .and_then(|o| serde_json::to_value(o).ok())
            .map(|v| Observed::from_value(r.kind, &v)))
    }

    /// The release object's uid, when it can be read (for Events about it).
    pub async fn release_uid(&self, r: &ReleaseRef) -> Option<String> {
        let obj = self.releases(r).get_opt(&r.name).await.ok().flatten()?;
        obj.metadata.uid
    }

    /// Watch these releases and wake `wake` on every change; the watch re-lists and
    /// reconnects with backoff by itself, and the loop's resync covers events lost meanwhile.
    pub fn watch(&self, releases: &[ReleaseRef], wake: Arc<Notify>, stop: CancellationToken) {
        for r in releases {
            let api = self.releases(r);
            let cfg = watcher::Config::default().fields(&format!("metadata.name={}", r.name));
            let wake = wake.clone();
            let stop = stop.clone();
            let what = format!("{} {}/{}", r.kind, r.namespace, r.name);
            tokio::spawn(async move {
                let mut stream = watcher(api, cfg).default_backoff().boxed();
                loop {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        item = stream.next() => match item {
                            Some(Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone)) => wake.notify_one(),
                            Some(Ok(_)) => {}
                            Some(Err(e)) => tracing::debug!(release = %what, error = %e, "release watch interrupted; retrying"),
                            None => break,
                        }
                    }
                }
            });
        }
    }
}
