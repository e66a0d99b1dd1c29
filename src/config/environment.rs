//! Rollout settings of an environment: the release that deploys it, its smoke check and the
//! gate in front of it (types only; [`super::rollout`] checks them).

use std::time::Duration;

use serde::Deserialize;

use super::duration as humantime_serde_compat;

/// `environments.<env>.release`: the object whose status says whether the environment's
/// commit is deployed (a Flux HelmRelease unless `kind` says otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReleaseRef {
    /// Which reconciler's object it is.
    #[serde(default)]
    pub kind: ReleaseKind,
    /// Namespace of the object (for an Argo CD Application: where the Application lives,
    /// usually `argocd`, not the namespace it deploys to).
    pub namespace: String,
    /// Name of the object.
    pub name: String,
}

/// `environments.<env>.release.kind`: the reconciler deploying the environment.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize, schemars::JsonSchema,
)]
pub enum ReleaseKind {
    /// Flux `helm.toolkit.fluxcd.io/v2` HelmRelease (the default, as before `kind` existed).
    #[default]
    HelmRelease,
    /// Flux `kustomize.toolkit.fluxcd.io/v1` Kustomization.
    Kustomization,
    /// Argo CD `argoproj.io/v1alpha1` Application.
    Application,
}

impl ReleaseKind {
    /// The Kubernetes kind, as said in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HelmRelease => "HelmRelease",
            Self::Kustomization => "Kustomization",
            Self::Application => "Application",
        }
    }
}

impl std::fmt::Display for ReleaseKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `environments.<env>.smoke`: the "curl check" run once the release is Ready.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SmokeConfig {
    /// URL to GET; `{tag}` is replaced by the tag being rolled out.
    pub url: String,
    /// What counts as passing.
    #[serde(default)]
    pub expect: Expect,
    /// Failed checks tolerated before the rollout fails.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Wait between checks.
    #[serde(default = "default_smoke_interval", with = "humantime_serde_compat")]
    #[schemars(with = "String")]
    pub interval: Duration,
    /// The rollout fails if no check passed this long after Ready.
    #[serde(default = "default_deadline", with = "humantime_serde_compat")]
    #[schemars(with = "String")]
    pub deadline: Duration,
    /// Timeout of each request.
    #[serde(default = "default_request_timeout", with = "humantime_serde_compat")]
    #[schemars(with = "String")]
    pub timeout: Duration,
}

/// Expected answer of a smoke check.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Expect {
    /// HTTP status.
    #[serde(default = "default_status")]
    pub status: u16,
    /// Substring the body must contain; `{tag}` is replaced by the tag being rolled out.
    pub body_contains: Option<String>,
}

impl Default for Expect {
    fn default() -> Self {
        Self {
            status: default_status(),
            body_contains: None,
        }
    }
}

/// `environments.<env>.gate`: what the `promoteFrom` environment must pass first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GateConfig {
    /// How long the source environment must stay healthy after its smoke check passed.
    #[serde(default, with = "humantime_serde_compat")]
    #[schemars(with = "String")]
    pub soak: Duration,
    /// Whether a person approves: `true` by an entry in `approvals.yaml`, `pullRequest` by
    /// merging the promotion PR, `false` (default) not at all.
    #[serde(default)]
    pub approval: super::ApprovalMode,
}

fn default_retries() -> u32 {
    3
}
fn default_smoke_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_deadline() -> Duration {
    Duration::from_secs(300)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_status() -> u16 {
    200
}
/// Default of `environments.<env>.timeout`.
pub(super) fn default_timeout() -> Duration {
    Duration::from_secs(600)
}
