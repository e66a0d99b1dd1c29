//! Leader election on a `coordination.k8s.io/v1` Lease, which also carries tagflow's rollout
//! state (annotation [`STATE_ANNOTATION`]).
//!
//! Every write is a `replace` with the resourceVersion last read, so two replicas racing for the
//! Lease cannot both win: the loser gets 409 Conflict and follows. A follower times the Lease by
//! its own clock from the moment it saw the record last change (like client-go), so clock skew
//! between nodes does not matter; it takes over once the record stood still for the lease
//! duration. It looks every third of the duration, so failover happens within
//! 4/3 × the duration after the leader's last renewal — under the 2× budget. A leader that could
//! not renew for a whole duration stops writing at once ([`Elector::is_leader`] turns false),
//! before any follower can take over. Storing the state on the Lease means only the holder of the
//! current record can save it: a deposed leader's save fails with 409.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Annotation on the Lease holding the rollout state (JSON).
pub const STATE_ANNOTATION: &str = "tagflow.dev/rollouts";

/// What a replica should do with the Lease (pure decision).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it.
    Acquire,
    /// Someone else holds it for this much longer (by our clock).
    Follow {
        /// The holder.
        holder: String,
        /// Time left before we may take it.
        left: Duration,
    },
}

/// Decide from the record's holder and how long ago we saw the record last change.
pub fn choose(
    holder: Option<&str>,
    me: &str,
    unchanged_for: Duration,
    duration: Duration,
) -> Decision {
    match holder {
        Some(h) if h == me => Decision::Renew,
        None | Some("") => Decision::Acquire,
        Some(_) if unchanged_for >= duration => Decision::Acquire,
        Some(h) => Decision::Follow {
            holder: h.to_owned(),
            left: duration - unchanged_for,
        },
    }
}

/// Lease failures.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The API call failed (transient).
    #[error("failed to {action} Lease {name}: {source}")]
    Api {
        /// What we were doing.
        action: &'static str,
        /// Lease name.
        name: String,
        /// kube's error.
        #[source]
        source: kube::Error,
    },
    /// Someone else holds the Lease now.
    #[error("not the leader")]
    NotLeader,
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

#[derive(Debug, Default)]
struct Inner {
    /// The record last read or written.
    lease: Option<Lease>,
    /// (resourceVersion, when we first saw it).
    observed: Option<(String, Instant)>,
    /// When our last write succeeded.
    renewed: Option<Instant>,
    /// The last failure to reach the Lease, cleared by the next success.
    error: Option<String>,
}

/// One replica's side of the election.
#[derive(Debug)]
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    inner: Mutex<Inner>,
    leader: AtomicBool,
    /// Notified when this replica gains or loses the Lease.
    pub changed: Arc<Notify>,
}

fn now_micro() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl Elector {
    /// An elector for Lease `namespace/name` as `identity`.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
            inner: Mutex::new(Inner::default()),
            leader: AtomicBool::new(false),
            changed: Arc::new(Notify::new()),
        }
    }

    /// This replica's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn set_leader(&self, leader: bool) {
        if self.leader.swap(leader, Ordering::SeqCst) != leader {
            if leader {
                tracing::info!(identity = %self.identity, lease = %self.name, "became the leader");
            } else {
                tracing::warn!(identity = %self.identity, lease = %self.name, "not the leader any more");
            }
            self.changed.notify_one();
        }
    }

    /// Whether this replica may write now: it holds the Lease and renewed it within the duration.
    pub async fn is_leader(&self) -> bool {
        let inner = self.inner.lock().await;
        self.leader.load(Ordering::SeqCst)
            && inner.renewed.is_some_and(|at| at.elapsed() < self.duration)
    }

    /// Why the Lease could not be reached at the last try, if it could not.
    pub async fn last_error(&self) -> Option<String> {
        self.inner.lock().await.error.clone()
    }

    /// Read the Lease and renew, acquire or follow. Returns whether we lead afterwards.
    pub async fn tick(&self) -> Result<bool, LeaseError> {
        let mut inner = self.inner.lock().await;
        let result = self.tick_locked(&mut inner).await;
        inner.error = result.as_ref().err().map(ToString::to_string);
        result
    }

    async fn tick_locked(&self, inner: &mut Inner) -> Result<bool, LeaseError> {
        let api_err = |action, source| LeaseError::Api {
            action,
            name: self.name.clone(),
            source,
        };
        let current = match self.api.get_opt(&self.name).await {
            Ok(c) => c,
            Err(e) => {
                if inner.renewed.is_none_or(|at| at.elapsed() >= self.duration) {
                    self.set_leader(false);
                }
                return Err(api_err("read", e));
            }
        };
        let Some(lease) = current else {
            let fresh = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(0)),
            };
            return match self.api.create(&PostParams::default(), &fresh).await {
                Ok(l) => Ok(self.won(inner, l)),
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(api_err("create", e)),
            };
        };
        let rv = lease.metadata.resource_version.clone().unwrap_or_default();
        if inner.observed.as_ref().is_none_or(|(seen, _)| *seen != rv) {
            inner.observed = Some((rv, Instant::now()));
        }
        let unchanged_for = inner
            .observed
            .as_ref()
            .map_or(Duration::ZERO, |(_, at)| at.elapsed());
        let spec = lease.spec.clone().unwrap_or_default();
        let their_duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.duration, Duration::from_secs);
        let decision = choose(
            spec.holder_identity.as_deref(),
            &self.identity,
            unchanged_for,
            their_duration,
        );
        inner.lease = Some(lease.clone());
        let mut next = lease;
        match decision {
            Decision::Follow { .. } => {
                self.set_leader(false);
                return Ok(false);
            }
            Decision::Renew => {
                let mut s = spec;
                s.renew_time = Some(now_micro());
                s.lease_duration_seconds = Some(self.duration_secs());
                next.spec = Some(s);
            }
            Decision::Acquire => {
                tracing::info!(identity = %self.identity, previous = ?spec.holder_identity, "taking the Lease");
                next.spec = Some(self.spec(spec.lease_transitions.unwrap_or(0) + 1));
            }
        }
        match self
            .api
            .replace(&self.name, &PostParams::default(), &next)
            .await
        {
            Ok(l) => Ok(self.won(inner, l)),
            Err(e) if is_conflict(&e) => {
                self.set_leader(false);
                Ok(false)
            }
            Err(e) => {
                if inner.renewed.is_none_or(|at| at.elapsed() >= self.duration) {
                    self.set_leader(false);
                }
                Err(api_err("renew", e))
            }
        }
    }

    fn duration_secs(&self) -> i32 {
        i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    fn spec(&self, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration_secs()),
            acquire_time: Some(now_micro()),
            renew_time: Some(now_micro()),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    fn won(&self, inner: &mut Inner, lease: Lease) -> bool {
        let rv = lease.metadata.resource_version.clone().unwrap_or_default();
        inner.observed = Some((rv, Instant::now()));
        inner.renewed = Some(Instant::now());
        inner.lease = Some(lease);
        self.set_leader(true);
        true
    }

    /// The rollout state stored on the Lease record last read (as the previous leader left it).
    pub async fn state(&self) -> Option<String> {
        let inner = self.inner.lock().await;
        inner
            .lease
            .as_ref()?
            .metadata
            .annotations
            .as_ref()?
            .get(STATE_ANNOTATION)
            .cloned()
    }

    /// Save the rollout state on the Lease (renewing it). Fails with [`LeaseError::NotLeader`]
    /// when another replica holds the Lease: only the leader's writes land.
    pub async fn save_state(&self, state: &str) -> Result<(), LeaseError> {
        let mut inner = self.inner.lock().await;
        if !self.leader.load(Ordering::SeqCst) {
            return Err(LeaseError::NotLeader);
        }
        let Some(mut next) = inner.lease.clone() else {
            return Err(LeaseError::NotLeader);
        };
        next.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(STATE_ANNOTATION.to_owned(), state.to_owned());
        if let Some(s) = next.spec.as_mut() {
            s.renew_time = Some(now_micro());
        }
        match self
            .api
            .replace(&self.name, &PostParams::default(), &next)
            .await
        {
            Ok(l) => {
                self.won(&mut inner, l);
                Ok(())
            }
            Err(e) if is_conflict(&e) => {
                self.set_leader(false);
                Err(LeaseError::NotLeader)
            }
            Err(e) => Err(LeaseError::Api {
                action: "save state on",
                name: self.name.clone(),
                source: e,
            }),
        }
    }

    /// Tick every third of the lease duration until `stop`. Errors are logged once per change.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let every = self.duration / 3;
        let mut last_error: Option<String> = None;
        loop {
            match self.tick().await {
                Ok(_) => {
                    if last_error.take().is_some() {
                        tracing::info!(lease = %self.name, "Lease reachable again");
                    }
                }
                Err(e) => {
                    let text = e.to_string();
                    if last_error.as_deref() != Some(&text) {
                        tracing::warn!(error = %text, "leader election: cannot reach the Lease; retrying");
                        last_error = Some(text);
                    }
                }
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(every) => {}
            }
        }
        // Hand over at once on shutdown: a released Lease is free for the next replica.
        if self.leader.load(Ordering::SeqCst) {
            self.release().await;
        }
    }

    async fn release(&self) {
        let mut inner = self.inner.lock().await;
        let Some(mut next) = inner.lease.clone() else {
            return;
        };
        if let Some(s) = next.spec.as_mut() {
            s.holder_identity = None;
        }
        match self
            .api
            .replace(&self.name, &PostParams::default(), &next)
            .await
        {
            Ok(l) => {
                inner.lease = Some(l);
                tracing::info!(lease = %self.name, "released the Lease");
            }
            Err(e) => tracing::warn!(error = %e, "could not release the Lease"),
        }
        self.set_leader(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        let d = Duration::from_secs(15);
        let s = Duration::from_secs;
        assert_eq!(choose(Some("a"), "a", s(100), d), Decision::Renew);
        assert_eq!(choose(None, "a", s(0), d), Decision::Acquire);
        assert_eq!(choose(Some(""), "a", s(0), d), Decision::Acquire);
        assert_eq!(
            choose(Some("b"), "a", s(5), d),
            Decision::Follow {
                holder: "b".into(),
                left: s(10)
            }
        );
        assert_eq!(choose(Some("b"), "a", s(15), d), Decision::Acquire);
    }
}
