//! Rollouts followed through a Flux Kustomization or an Argo CD Application instead of a
//! HelmRelease, against a real kube-apiserver + etcd with the hand-written CRDs of tests/crds.
//! The test plays the reconciler: at every new head of the config repo it patches each
//! environment's object status to that revision, healthy unless the environment runs a tag the
//! test made broken. No smoke checks: the release status alone decides.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::{Local, Running, commits_setting, eventually, file_url, pinned_values};
use serde_json::{Value, json};
use testbed::{BareRepo, KubeApi, Registry, RegistryOpts, tag_in};

/// Generous guard for anything tagflow does in a few cycles; never a timing assertion.
const LIMIT: Duration = Duration::from_secs(90);

/// A reconciler kind as the test drives it.
#[derive(Clone, Copy)]
struct Kind {
    /// `environments.<env>.release.kind`.
    name: &'static str,
    crd: &'static str,
    group_version: &'static str,
    plural: &'static str,
    /// Where the objects live (Flux: flux-system; Argo CD: argocd).
    namespace: &'static str,
    /// The object's spec, as YAML flow.
    spec: &'static str,
    /// The status at `head`: healthy, or failed as this kind says it.
    status: fn(head: &str, healthy: bool) -> Value,
}

fn ready_condition(status: &str, reason: &str, message: &str) -> Value {
    json!({"type": "Ready", "status": status, "reason": reason, "message": message,
           "lastTransitionTime": "2024-01-01T00:00:00Z"})
}

const KUSTOMIZATION: Kind = Kind {
    name: "Kustomization",
    crd: "kustomizations.yaml",
    group_version: "kustomize.toolkit.fluxcd.io/v1",
    plural: "kustomizations",
    namespace: "flux-system",
    spec: "{interval: 5m, prune: true, path: ./flux/apps, sourceRef: {kind: GitRepository, name: config}}",
    status: |head, healthy| {
        let conditions = if healthy {
            json!([ready_condition(
                "True",
                "ReconciliationSucceeded",
                "Applied revision"
            )])
        } else {
            json!([
                ready_condition(
                    "False",
                    "HealthCheckFailed",
                    "timeout waiting for: [Deployment/dev/app status: 'InProgress']"
                ),
                {"type": "Reconciling", "status": "True", "reason": "ProgressingWithRetry",
                 "message": "retrying", "lastTransitionTime": "2024-01-01T00:00:00Z"},
            ])
        };
        json!({
            "observedGeneration": 1,
            "lastAttemptedRevision": format!("main@sha1:{head}"),
            "conditions": conditions,
        })
    },
};

const APPLICATION: Kind = Kind {
    name: "Application",
    crd: "applications.yaml",
    group_version: "argoproj.io/v1alpha1",
    plural: "applications",
    namespace: "argocd",
    spec: "{project: default, source: {repoURL: 'https://git.example.com/config.git', path: chart, targetRevision: main}, destination: {server: 'https://kubernetes.default.svc', namespace: dev}}",
    status: |head, healthy| {
        let (phase, message, sync, health) = if healthy {
            ("Succeeded", "successfully synced", "Synced", "Healthy")
        } else {
            (
                "Failed",
                "one or more objects failed to apply: Deployment.apps \"app\" is invalid",
                "OutOfSync",
                "Healthy",
            )
        };
        json!({
            "sync": {"status": sync, "revision": head},
            "health": {"status": health},
            "operationState": {
                "operation": {"sync": {"revision": head}},
                "phase": phase,
                "message": message,
                "syncResult": {"revision": head},
            },
        })
    },
};

impl Kind {
    fn object_path(self, env: &str) -> String {
        format!(
            "/apis/{}/namespaces/{}/{}/app-{env}",
            self.group_version, self.namespace, self.plural
        )
    }
}

struct World {
    kube: Arc<Mutex<KubeApi>>,
    _reg: Registry,
    repo: Arc<BareRepo>,
    local: Local,
    stop: Arc<AtomicBool>,
    player: Option<JoinHandle<()>>,
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(p) = self.player.take() {
            let _ = p.join();
        }
    }
}

/// dev → prod (soak 1 s), each followed through an object of `kind`; `broken` tags fail.
fn world(kind: Kind, broken: &[&str]) -> World {
    let kube = KubeApi::start();
    let crd = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/crds")
        .join(kind.crd);
    kube.install_crd(&crd, kind.group_version);
    for ns in [kind.namespace, "tagflow"] {
        kube.namespace(ns);
    }
    for env in ["dev", "prod"] {
        kube.create(
            &format!(
                "/apis/{}/namespaces/{}/{}",
                kind.group_version, kind.namespace, kind.plural
            ),
            &format!(
                "apiVersion: {}\nkind: {}\nmetadata: {{name: app-{env}, namespace: {}}}\nspec: {}\n",
                kind.group_version, kind.name, kind.namespace, kind.spec
            ),
        );
    }
    let reg = Registry::start(RegistryOpts::default());
    common::push_three(&reg);
    let local = Local::new();
    let release = |env: &str| {
        format!(
            "    release: {{kind: {}, namespace: {}, name: app-{env}}}\n",
            kind.name, kind.namespace
        )
    };
    let extra = format!(
        "{}    timeout: 2m\n  prod:\n    file: envs/prod/patch.yaml\n    promoteFrom: dev\n    gate: {{soak: 1s}}\n{}    timeout: 2m\n",
        release("dev"),
        release("prod")
    );
    let policy = "{tags: '^[0-9a-f]{7}$', order: built}";
    let values = pinned_values(&format!("{}/team/app", reg.host));
    let repo = Arc::new(BareRepo::new(&[
        (
            "config/tagflow.yaml",
            &common::config(&reg, &local, policy, &extra),
        ),
        ("envs/dev/patch.yaml", &values),
        ("envs/prod/patch.yaml", &values),
    ]));
    let kube = Arc::new(Mutex::new(kube));
    let stop = Arc::new(AtomicBool::new(false));
    let broken: BTreeSet<String> = broken.iter().map(|t| (*t).to_owned()).collect();
    let player = {
        let (kube, repo, stop) = (kube.clone(), repo.clone(), stop.clone());
        std::thread::spawn(move || play(kind, &kube, &repo, &broken, &stop))
    };
    World {
        kube,
        _reg: reg,
        repo,
        local,
        stop,
        player: Some(player),
    }
}

/// The reconciler's part: at every new head, report each environment at that revision.
fn play(
    kind: Kind,
    kube: &Mutex<KubeApi>,
    repo: &BareRepo,
    broken: &BTreeSet<String>,
    stop: &AtomicBool,
) {
    let mut done = String::new();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
        let Some(head) = repo.head("main").filter(|h| *h != done) else {
            continue;
        };
        let mut ok = true;
        for env in ["dev", "prod"] {
            let Some(v) = repo.read("main", &format!("envs/{env}/patch.yaml")) else {
                continue;
            };
            let status = (kind.status)(&head, !broken.contains(&tag_in(&v)));
            let body = json!({ "status": status }).to_string();
            let r = kube.lock().unwrap().try_request(
                "PATCH",
                &format!("{}/status", kind.object_path(env)),
                Some(body),
                "application/merge-patch+json",
            );
            ok &= matches!(r, Ok((200, _)));
        }
        if ok {
            done = head;
        }
    }
}

fn start(w: &World) -> Running {
    let kubeconfig = w.kube.lock().unwrap().kubeconfig.clone();
    Running::start_env(
        testbed::free_port(),
        &file_url(&w.repo),
        &w.local,
        &[
            "--lease",
            "tagflow/tagflow",
            "--lease-duration",
            "3s",
            "--identity",
            "replica-a",
        ],
        &[("KUBECONFIG", &kubeconfig)],
    )
}

fn wait_phase(w: &World, r: &Running, key: &str, tag: &str, want: &str) {
    let phase = || common::lease_phase(&w.kube.lock().unwrap(), key);
    let got = eventually(LIMIT, || phase().filter(|(t, p)| t == tag && p == want));
    assert!(
        got.is_some(),
        "{key} never reached {tag} {want} (now {:?}); logs:\n{}",
        phase(),
        r.logs()
    );
}

/// The Events tagflow recorded on `app-<env>`, oldest first: (type, reason), once `want`
/// (reasons, in this order) are among them. Each names the object by kind and uid.
fn events_on(w: &World, kind: Kind, env: &str, want: &[&str]) -> Vec<(String, String)> {
    let kube = || w.kube.lock().unwrap();
    let object = kube().get(&kind.object_path(env)).expect("release object");
    let name = format!("app-{env}");
    let got = common::wait_events(LIMIT, &kube, kind.namespace, &name, want);
    for e in &got {
        assert_eq!(e["regarding"]["kind"], kind.name, "{e}");
        assert_eq!(e["regarding"]["uid"], object["metadata"]["uid"], "{e}");
    }
    got.iter().map(common::event_type_reason).collect()
}

/// Healthy at the commit's revision in dev: promoted to prod, healthy there too.
fn promotes(kind: Kind) {
    let w = world(kind, &[]);
    let r = start(&w);
    wait_phase(&w, &r, "prod/app", "0f1e2d3", "healthy");
    let (state, _) = common::lease_state(&w.kube.lock().unwrap()).expect("state");
    assert_eq!(state["rollouts"]["dev/app"]["phase"], "promoted");
    assert_eq!(commits_setting(&w.repo, "dev", "0f1e2d3").len(), 1);
    assert_eq!(commits_setting(&w.repo, "prod", "0f1e2d3").len(), 1);
    let dev = events_on(
        &w,
        kind,
        "dev",
        &["Committed", "Reconciled", "Healthy", "Promoted"],
    );
    assert!(dev.iter().all(|(t, _)| t == "Normal"), "{dev:?}");
    events_on(&w, kind, "prod", &["Committed", "Reconciled", "Healthy"]);
}

/// The reconciler fails 0f1e2d3 in dev: reverted, quarantined, never promoted; the next tag
/// goes through.
fn reverts(kind: Kind, reason: &str) {
    let w = world(kind, &["0f1e2d3"]);
    let r = start(&w);
    wait_phase(&w, &r, "dev/app", "0f1e2d3", "quarantined");
    assert_eq!(
        common::commits_titled(&w.repo, "tagflow: revert dev app 0f1e2d3 → a1b2c3d"),
        1,
        "one revert commit"
    );
    let q = w
        .repo
        .read("main", "config/quarantine.yaml")
        .expect("quarantine list");
    assert!(q.contains("image: \"app\", tag: \"0f1e2d3\""), "{q}");
    assert!(q.contains(reason), "{q}");
    let dev = events_on(&w, kind, "dev", &["Committed", "RolloutFailed", "Reverted"]);
    for reason in ["RolloutFailed", "Reverted"] {
        assert!(
            dev.contains(&("Warning".to_owned(), reason.to_owned())),
            "{dev:?}"
        );
    }
    wait_phase(&w, &r, "prod/app", "b2c3d4e", "healthy");
    assert!(commits_setting(&w.repo, "prod", "0f1e2d3").is_empty());
    assert_eq!(commits_setting(&w.repo, "dev", "0f1e2d3").len(), 1);
}

#[test]
#[ignore = "real servers: run by scripts/test"]
fn kustomization_ready_at_the_revision_promotes() {
    promotes(KUSTOMIZATION);
}

#[test]
#[ignore = "real servers: run by scripts/test"]
fn kustomization_health_check_failed_reverts_and_quarantines() {
    reverts(
        KUSTOMIZATION,
        "Ready=False HealthCheckFailed: timeout waiting for",
    );
}

#[test]
#[ignore = "real servers: run by scripts/test"]
fn application_synced_and_healthy_at_the_revision_promotes() {
    promotes(APPLICATION);
}

#[test]
#[ignore = "real servers: run by scripts/test"]
fn application_failed_sync_operation_reverts_and_quarantines() {
    reverts(
        APPLICATION,
        "sync operation Failed: one or more objects failed to apply",
    );
}
