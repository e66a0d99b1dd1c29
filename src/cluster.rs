//! Cluster stage (IO shell + pure readers): the Flux HelmRelease of each environment, watched
//! through the Kubernetes API, and the HTTP smoke check.
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

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{ReleaseRef, SmokeConfig};
use crate::rollout::Release;

/// Kubernetes failures; all are transient (the API server may come back).
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No kubeconfig or in-cluster config.
    #[error("failed to configure the Kubernetes client: {0}")]
    Config(String),
    /// An API call failed.
    #[error("failed to {action}: {source}")]
    Api {
        /// What we were doing.
        action: String,
        /// kube's error.
        #[source]
        source: kube::Error,
    },
}

/// The Kubernetes client tagflow uses for HelmReleases and its Lease.
#[derive(Clone)]
pub struct Cluster {
    /// The client.
    pub client: kube::Client,
    http: reqwest::Client,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cluster")
    }
}

fn helm_release_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("helm.toolkit.fluxcd.io", "v2", "HelmRelease"),
        "helmreleases",
    )
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
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| ClusterError::Config(e.to_string()))?;
        Ok(Self { client, http })
    }

    fn releases(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, &helm_release_resource())
    }

    /// The HelmRelease as JSON; `None` when it does not exist.
    pub async fn helm_release(&self, r: &ReleaseRef) -> Result<Option<Value>, ClusterError> {
        let obj = self
            .releases(&r.namespace)
            .get_opt(&r.name)
            .await
            .map_err(|source| ClusterError::Api {
                action: format!("read HelmRelease {}/{}", r.namespace, r.name),
                source,
            })?;
        Ok(obj.and_then(|o| serde_json::to_value(o).ok()))
    }

    /// Watch these HelmReleases and wake `wake` on every change; the watch re-lists and
    /// reconnects with backoff by itself, and the loop's resync covers events lost meanwhile.
    pub fn watch(&self, releases: &[ReleaseRef], wake: Arc<Notify>, stop: CancellationToken) {
        for r in releases {
            let api = self.releases(&r.namespace);
            let cfg = watcher::Config::default().fields(&format!("metadata.name={}", r.name));
            let wake = wake.clone();
            let stop = stop.clone();
            let what = format!("{}/{}", r.namespace, r.name);
            tokio::spawn(async move {
                let mut stream = watcher(api, cfg).default_backoff().boxed();
                loop {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        item = stream.next() => match item {
                            Some(Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone)) => wake.notify_one(),
                            Some(Ok(_)) => {}
                            Some(Err(e)) => tracing::debug!(release = %what, error = %e, "HelmRelease watch interrupted; retrying"),
                            None => break,
                        }
                    }
                }
            });
        }
    }

    /// One smoke check: GET the URL, compare status and body. `{tag}` is filled in.
    pub async fn smoke(&self, s: &SmokeConfig, tag: &str) -> Result<(), String> {
        let url = s.url.replace("{tag}", tag);
        let resp = self
            .http
            .get(&url)
            .timeout(s.timeout)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {}", e.without_url()))?;
        let status = resp.status().as_u16();
        let body = resp
            .text()
            .await
            .map_err(|e| format!("GET {url}: reading the body: {}", e.without_url()))?;
        smoke_verdict(s, tag, &url, status, &body)
    }
}

/// Whether a smoke answer passes (pure).
pub fn smoke_verdict(
    s: &SmokeConfig,
    tag: &str,
    url: &str,
    status: u16,
    body: &str,
) -> Result<(), String> {
    if status != s.expect.status {
        return Err(format!(
            "GET {url}: status {status}, expected {}",
            s.expect.status
        ));
    }
    if let Some(want) = &s.expect.body_contains {
        let want = want.replace("{tag}", tag);
        if !body.contains(&want) {
            let shown: String = body.chars().take(120).collect();
            return Err(format!(
                "GET {url}: body does not contain {want:?} (got {shown:?})"
            ));
        }
    }
    Ok(())
}

/// The commit named by a HelmRelease's last attempted revision: the trailing hex run of
/// `main@sha1:<sha>`, `<sha>` or `0.1.0+<sha12>` (at least 7 digits), lower-cased.
pub fn attempted_commit(obj: &Value) -> Option<String> {
    let status = obj.get("status")?;
    let rev = ["lastAttemptedRevision", "lastAppliedRevision"]
        .iter()
        .find_map(|k| status.get(*k).and_then(Value::as_str))?;
    let hex: String = rev
        .chars()
        .rev()
        .take_while(char::is_ascii_hexdigit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    (hex.len() >= 7).then(|| hex.to_ascii_lowercase())
}

fn condition<'a>(obj: &'a Value, kind: &str) -> Option<(&'a str, String)> {
    let c = obj
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))?;
    let status = c.get("status").and_then(Value::as_str).unwrap_or("Unknown");
    let reason = c.get("reason").and_then(Value::as_str).unwrap_or("");
    let message = c.get("message").and_then(Value::as_str).unwrap_or("");
    Some((status, format!("{kind}={status} {reason}: {message}")))
}

/// The release's outcome for tagflow's commit (pure). `reconciled`: the attempted revision is
/// the commit or a descendant of it (the caller asks git).
pub fn release_state(obj: Option<&Value>, reconciled: bool) -> Release {
    let Some(obj) = obj else {
        return Release::Pending("HelmRelease not found".into());
    };
    if !reconciled {
        let at = attempted_commit(obj).unwrap_or_else(|| "no revision yet".into());
        return Release::Pending(format!(
            "HelmRelease has not reconciled the commit (at {at})"
        ));
    }
    let generation = obj.pointer("/metadata/generation").and_then(Value::as_i64);
    let observed = obj
        .pointer("/status/observedGeneration")
        .and_then(Value::as_i64);
    if let (Some(g), Some(o)) = (generation, observed)
        && o < g
    {
        return Release::Pending(format!("status is for generation {o}, spec is at {g}"));
    }
    for (kind, bad) in [
        ("Stalled", "True"),
        ("Remediated", "True"),
        ("TestSuccess", "False"),
    ] {
        if let Some((status, text)) = condition(obj, kind)
            && status == bad
        {
            return Release::Failed(text.trim_end_matches(": ").to_owned());
        }
    }
    match condition(obj, "Ready") {
        Some(("True", _)) => Release::Ready,
        Some((_, text)) => Release::Pending(text),
        None => Release::Pending("no Ready condition yet".into()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn hr(rev: &str, conditions: Value) -> Value {
        json!({
            "metadata": {"name": "app", "namespace": "dev", "generation": 2},
            "status": {"observedGeneration": 2, "lastAttemptedRevision": rev, "conditions": conditions}
        })
    }

    fn cond(kind: &str, status: &str, reason: &str) -> Value {
        json!({"type": kind, "status": status, "reason": reason, "message": "m"})
    }

    #[test]
    fn revisions_in_every_form_name_the_commit() {
        let sha = "3f2a9c1d0e4b5a6c7d8e9f00112233445566778f";
        for rev in [
            format!("main@sha1:{sha}"),
            sha.to_owned(),
            "0.1.0+3F2A9C1D0E4B".to_owned(),
        ] {
            let got = attempted_commit(&hr(&rev, json!([]))).expect("commit");
            assert!(sha.starts_with(&got), "{rev} → {got}");
        }
        assert_eq!(attempted_commit(&hr("0.1.0", json!([]))), None);
        assert_eq!(attempted_commit(&json!({"status": {}})), None);
    }

    #[test]
    fn release_outcomes_table() {
        let ready = cond("Ready", "True", "UpgradeSucceeded");
        let cases: Vec<(Value, bool, Release)> = vec![
            (hr("x", json!([ready.clone()])), true, Release::Ready),
            (
                hr(
                    "x",
                    json!([ready.clone(), cond("TestSuccess", "True", "TestSucceeded")]),
                ),
                true,
                Release::Ready,
            ),
            (
                hr("x", json!([ready.clone()])),
                false,
                Release::Pending(
                    "HelmRelease has not reconciled the commit (at no revision yet)".into(),
                ),
            ),
            (
                hr("x", json!([cond("Ready", "False", "UpgradeFailed")])),
                true,
                Release::Pending("Ready=False UpgradeFailed: m".into()),
            ),
            (
                hr(
                    "x",
                    json!([
                        cond("Ready", "False", "TestFailed"),
                        cond("TestSuccess", "False", "TestFailed")
                    ]),
                ),
                true,
                Release::Failed("TestSuccess=False TestFailed: m".into()),
            ),
            (
                hr(
                    "x",
                    json!([
                        cond("Ready", "False", "RollbackSucceeded"),
                        cond("Remediated", "True", "RollbackSucceeded")
                    ]),
                ),
                true,
                Release::Failed("Remediated=True RollbackSucceeded: m".into()),
            ),
            (
                hr(
                    "x",
                    json!([
                        cond("Ready", "False", "RetriesExceeded"),
                        cond("Stalled", "True", "RetriesExceeded")
                    ]),
                ),
                true,
                Release::Failed("Stalled=True RetriesExceeded: m".into()),
            ),
            (
                hr("x", json!([])),
                true,
                Release::Pending("no Ready condition yet".into()),
            ),
        ];
        for (obj, reconciled, want) in cases {
            assert_eq!(release_state(Some(&obj), reconciled), want, "{obj}");
        }
        let mut stale = hr("x", json!([ready]));
        stale["metadata"]["generation"] = json!(3);
        assert!(matches!(
            release_state(Some(&stale), true),
            Release::Pending(_)
        ));
        assert!(matches!(release_state(None, true), Release::Pending(_)));
    }

    #[test]
    fn smoke_verdicts() {
        let s: SmokeConfig = serde_yaml::from_str(
            "{url: 'http://x/v', expect: {status: 200, bodyContains: 'version={tag}'}}",
        )
        .expect("smoke");
        assert_eq!(
            smoke_verdict(&s, "0f1e2d3", "u", 200, "app version=0f1e2d3\n"),
            Ok(())
        );
        assert_eq!(
            smoke_verdict(&s, "0f1e2d3", "u", 503, ""),
            Err("GET u: status 503, expected 200".into())
        );
        assert!(smoke_verdict(&s, "0f1e2d3", "u", 200, "version=a1b2c3d").is_err());
    }
}
