//! Kubernetes Events on each environment's release object for every rollout step, so
//! `kubectl events --for helmrelease/app` (or `describe`) shows what tagflow did next to what
//! the reconciler did. Best effort: Events are sent in order by one background task and never
//! hold up a cycle; a failure is logged and forgotten (Slack and the state carry the truth).

use std::sync::{Arc, OnceLock};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;

use super::Cluster;
use super::observed::api_resource;
use crate::config::{Config, ReleaseRef};
use crate::rollout;

/// Longest `note` the Events API takes (1 kB).
const NOTE_MAX: usize = 1024;

/// A rollout step worth an Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// tagflow pushed the commit setting the environment's values.
    Committed,
    /// The release reconciled the commit and is ready.
    Reconciled,
    /// The smoke check passed.
    SmokeOk,
    /// The smoke check failed past its retries or deadline.
    SmokeFailed,
    /// The release failed (or timed out) for the commit.
    Failed,
    /// Every gate passed.
    Healthy,
    /// The tag was promoted to the next environment.
    Promoted,
    /// The failed tag was reverted and quarantined.
    Reverted,
}

impl Step {
    /// The step a state-machine event stands for, if it is one Events are recorded for.
    pub fn of(e: &rollout::Event) -> Option<Self> {
        match e {
            rollout::Event::Ready(_) => Some(Self::Reconciled),
            rollout::Event::SmokeOk => Some(Self::SmokeOk),
            rollout::Event::Healthy => Some(Self::Healthy),
            rollout::Event::Failed(why) if why.starts_with("smoke check") => {
                Some(Self::SmokeFailed)
            }
            rollout::Event::Failed(_) => Some(Self::Failed),
            _ => None,
        }
    }

    /// `reason` of the Event (PascalCase, as Kubernetes controllers say it).
    pub fn reason(self) -> &'static str {
        match self {
            Self::Committed => "Committed",
            Self::Reconciled => "Reconciled",
            Self::SmokeOk => "SmokeCheckPassed",
            Self::SmokeFailed => "SmokeCheckFailed",
            Self::Failed => "RolloutFailed",
            Self::Healthy => "Healthy",
            Self::Promoted => "Promoted",
            Self::Reverted => "Reverted",
        }
    }

    fn warning(self) -> bool {
        matches!(self, Self::SmokeFailed | Self::Failed | Self::Reverted)
    }
}

/// The Event for `step` (pure); `note` is cut to what the API accepts.
pub fn event(step: Step, note: &str) -> Event {
    let mut end = note.len().min(NOTE_MAX);
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    Event {
        type_: if step.warning() {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: step.reason().to_owned(),
        note: Some(note[..end].to_owned()),
        action: "Rollout".to_owned(),
        secondary: None,
    }
}

/// A reference to the release object (pure; `uid` when known, so `describe` finds it).
pub fn reference(r: &ReleaseRef, uid: Option<String>) -> ObjectReference {
    let api = api_resource(r.kind);
    ObjectReference {
        api_version: Some(api.api_version),
        kind: Some(api.kind),
        name: Some(r.name.clone()),
        namespace: Some(r.namespace.clone()),
        uid,
        ..ObjectReference::default()
    }
}

type Record = (ReleaseRef, Step, String);

/// Sends Events in order from one background task, started on first use.
#[derive(Debug, Clone, Default)]
pub struct EventSink {
    cluster: Option<Cluster>,
    tx: Arc<OnceLock<mpsc::UnboundedSender<Record>>>,
}

impl EventSink {
    /// Events on `cluster`; `None`: record nothing (no cluster).
    pub fn new(cluster: Option<Cluster>) -> Self {
        Self {
            cluster,
            tx: Arc::default(),
        }
    }

    /// Record `step` on the release of `env`, if it has one. Must be called within a tokio
    /// runtime (the sending task is spawned on first use).
    pub fn record(&self, cfg: &Config, env: &str, step: Step, note: &str) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let Some(r) = cfg.environments.get(env).and_then(|e| e.release.clone()) else {
            return;
        };
        let tx = self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(send_all(cluster.clone(), rx));
            tx
        });
        let _ = tx.send((r, step, note.to_owned()));
    }
}

async fn send_all(cluster: Cluster, mut rx: mpsc::UnboundedReceiver<Record>) {
    let reporter = Reporter {
        controller: "tagflow".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let recorder = Recorder::new(cluster.client.clone(), reporter);
    while let Some((r, step, note)) = rx.recv().await {
        // The uid ties the Event to this incarnation of the object; without it the Event is
        // still listed by kind and name.
        let uid = cluster.release_uid(&r).await;
        if let Err(e) = recorder
            .publish(&event(step, &note), &reference(&r, uid))
            .await
        {
            tracing::warn!(error = %e, release = %format!("{} {}/{}", r.kind, r.namespace, r.name), reason = step.reason(), "cannot record a Kubernetes Event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ReleaseKind;

    #[test]
    fn steps_map_to_reasons_and_types() {
        let e = |x: &rollout::Event| Step::of(x);
        assert_eq!(
            e(&rollout::Event::Ready("Kustomization Ready".into())),
            Some(Step::Reconciled)
        );
        assert_eq!(
            e(&rollout::Event::Failed(
                "smoke check failed 3 time(s)".into()
            )),
            Some(Step::SmokeFailed)
        );
        assert_eq!(
            e(&rollout::Event::Failed("Stalled=True x".into())),
            Some(Step::Failed)
        );
        assert_eq!(e(&rollout::Event::SoakDone), None);
        let ev = event(Step::Reverted, "dev: reverted");
        assert_eq!(
            (ev.type_, ev.reason.as_str(), ev.note.as_deref()),
            (EventType::Warning, "Reverted", Some("dev: reverted"))
        );
        assert_eq!(event(Step::Committed, "x").type_, EventType::Normal);
        let long = "é".repeat(600);
        assert_eq!(event(Step::Failed, &long).note.map(|n| n.len()), Some(1024));
    }

    #[test]
    fn the_reference_names_the_release_by_its_kind() {
        let r = ReleaseRef {
            kind: ReleaseKind::Application,
            namespace: "argocd".into(),
            name: "app-dev".into(),
        };
        let o = reference(&r, None);
        assert_eq!(
            (
                o.api_version.as_deref(),
                o.kind.as_deref(),
                o.namespace.as_deref()
            ),
            (
                Some("argoproj.io/v1alpha1"),
                Some("Application"),
                Some("argocd")
            )
        );
    }
}
