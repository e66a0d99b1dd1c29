//! Rollout settings of an environment: the release that deploys it, its smoke check and the
//! gate in front of it (types only; [`super::rollout`] checks them).

use std::time::Duration;

use serde::Deserialize;

use super::duration as humantime_serde_compat;

/// `environments.<env>.release`: the Flux HelmRelease deploying the environment.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReleaseRef {
    /// Namespace of the HelmRelease.
    pub namespace: String,
    /// Name of the HelmRelease.
    pub name: String,
}

/// `environments.<env>.smoke`: the "curl check" run once the release is Ready.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
    pub interval: Duration,
    /// The rollout fails if no check passed this long after Ready.
    #[serde(default = "default_deadline", with = "humantime_serde_compat")]
    pub deadline: Duration,
    /// Timeout of each request.
    #[serde(default = "default_request_timeout", with = "humantime_serde_compat")]
    pub timeout: Duration,
}

/// Expected answer of a smoke check.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GateConfig {
    /// How long the source environment must stay healthy after its smoke check passed.
    #[serde(default, with = "humantime_serde_compat")]
    pub soak: Duration,
    /// Whether an approval (in `approvals.yaml`) for this environment and tag is needed.
    #[serde(default)]
    pub approval: bool,
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
