//! One release of any kind: where its API lives and how its status is judged, so the rollout
//! loop reads a HelmRelease, a Kustomization and an Argo CD Application the same way.

use kube::api::{ApiResource, GroupVersionKind};
use serde_json::Value;

use super::argo::{Application, application_state};
use super::kustomization::kustomization_state;
use super::release::{FluxObject, attempted_commit, release_state};
use crate::config::ReleaseKind;
use crate::rollout::Release;

/// The API group, version and plural of a kind.
pub fn api_resource(kind: ReleaseKind) -> ApiResource {
    let (group, version, plural) = match kind {
        ReleaseKind::HelmRelease => ("helm.toolkit.fluxcd.io", "v2", "helmreleases"),
        ReleaseKind::Kustomization => ("kustomize.toolkit.fluxcd.io", "v1", "kustomizations"),
        ReleaseKind::Application => ("argoproj.io", "v1alpha1", "applications"),
    };
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, kind.as_str()),
        plural,
    )
}

/// A release object as read: Flux kinds share one status shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// A HelmRelease or a Kustomization.
    Flux(FluxObject),
    /// An Argo CD Application.
    Argo(Application),
}

impl Observed {
    /// Read an object of `kind` from its JSON.
    pub fn from_value(kind: ReleaseKind, v: &Value) -> Self {
        match kind {
            ReleaseKind::HelmRelease | ReleaseKind::Kustomization => {
                Self::Flux(FluxObject::from_value(v))
            }
            ReleaseKind::Application => Self::Argo(Application::from_value(v)),
        }
    }

    /// The commit the reconciler last acted on, to be checked against tagflow's in git.
    pub fn commit(&self) -> Option<String> {
        match self {
            Self::Flux(f) => attempted_commit(f),
            Self::Argo(a) => a.commit(),
        }
    }

    fn flux(&self) -> Option<&FluxObject> {
        match self {
            Self::Flux(f) => Some(f),
            Self::Argo(_) => None,
        }
    }

    fn argo(&self) -> Option<&Application> {
        match self {
            Self::Argo(a) => Some(a),
            Self::Flux(_) => None,
        }
    }
}

/// The outcome of a release of `kind` for tagflow's commit (pure). `reconciled`: the
/// object's [`Observed::commit`] is the commit or a descendant of it.
pub fn observed_state(kind: ReleaseKind, obj: Option<&Observed>, reconciled: bool) -> Release {
    match kind {
        ReleaseKind::HelmRelease => release_state(obj.and_then(Observed::flux), reconciled),
        ReleaseKind::Kustomization => kustomization_state(obj.and_then(Observed::flux), reconciled),
        ReleaseKind::Application => application_state(obj.and_then(Observed::argo), reconciled),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn each_kind_has_its_api_path() {
        let paths: Vec<String> = [
            ReleaseKind::HelmRelease,
            ReleaseKind::Kustomization,
            ReleaseKind::Application,
        ]
        .into_iter()
        .map(|k| {
            let r = api_resource(k);
            format!("{}/{} {}", r.api_version, r.plural, r.kind)
        })
        .collect();
        assert_eq!(
            paths,
            [
                "helm.toolkit.fluxcd.io/v2/helmreleases HelmRelease",
                "kustomize.toolkit.fluxcd.io/v1/kustomizations Kustomization",
                "argoproj.io/v1alpha1/applications Application",
            ]
        );
    }

    #[test]
    fn each_kind_is_judged_by_its_own_reader() {
        let sha = "3f2a9c1d0e4b5a6c7d8e9f00112233445566778f";
        let flux = json!({"status": {"lastAttemptedRevision": format!("main@sha1:{sha}"),
            "conditions": [{"type": "Ready", "status": "True", "reason": "ReconciliationSucceeded"}]}});
        let argo = json!({"status": {"sync": {"status": "Synced", "revision": sha},
            "health": {"status": "Healthy"}}});
        for (kind, v) in [
            (ReleaseKind::HelmRelease, &flux),
            (ReleaseKind::Kustomization, &flux),
            (ReleaseKind::Application, &argo),
        ] {
            let o = Observed::from_value(kind, v);
            assert_eq!(o.commit().as_deref(), Some(sha), "{kind}");
            assert_eq!(
                observed_state(kind, Some(&o), true),
                Release::Ready,
                "{kind}"
            );
            assert_eq!(
                observed_state(kind, None, true),
                Release::Pending(format!("{kind} not found"))
            );
        }
        // A kind read as the wrong shape is not found, never misjudged.
        let o = Observed::from_value(ReleaseKind::Application, &argo);
        assert!(matches!(
            observed_state(ReleaseKind::Kustomization, Some(&o), true),
            Release::Pending(_)
        ));
    }
}
