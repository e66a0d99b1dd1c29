//! The config file's shape: `config/tagflow.yaml`, every field camelCase, unknown keys rejected.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::duration as humantime_serde_compat;
use crate::secret::SecretRef;

/// Whole config file. Top-level sections are deserialized one entry at a time so that every
/// broken entry is reported, not only the first.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// How often `run` scans when nothing triggers it earlier.
    pub interval: Duration,
    /// Commit author and message template.
    pub git: GitConfig,
    /// Registries with credentials and limits, matched by host.
    pub registries: Vec<RegistryConfig>,
    /// Images by name.
    pub images: BTreeMap<String, ImageConfig>,
    /// Environments by name.
    pub environments: BTreeMap<String, EnvironmentConfig>,
    /// Slack settings.
    pub notify: NotifyConfig,
    /// Registry webhook authentication.
    pub webhook: WebhookConfig,
    /// Terraform workspaces the infra watcher plans on a schedule.
    pub infra: Vec<super::InfraConfig>,
}

/// `git:` section: how tagflow signs and words its commits.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GitConfig {
    /// Commit author (and committer).
    #[serde(default)]
    pub author: Author,
    /// Subject line template; `{summary}` is replaced by a short list of changes.
    #[serde(default = "default_subject")]
    pub commit_subject: String,
    /// Sign every commit tagflow makes (values, lists, inventories, the state ref).
    #[serde(default)]
    pub signing: Option<SigningConfig>,
}

/// `git.signing`: the key every commit is signed with.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SigningConfig {
    /// Signature kind, as git's `gpg.format` names it.
    pub format: SigningFormat,
    /// Path of the mounted private key (ssh: an OpenSSH private key; openpgp: an armored
    /// secret key), read on the agent's machine, never from the repo. No passphrase.
    pub key_file: String,
}

/// How commits are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SigningFormat {
    /// `ssh-keygen -Y sign -n git` (git's `gpg.format=ssh`).
    Ssh,
    /// `gpg --detach-sign --armor` (git's default `gpg.format=openpgp`).
    Openpgp,
}

impl Default for GitConfig {
    fn default() -> Self {
        Self {
            author: Author::default(),
            commit_subject: default_subject(),
            signing: None,
        }
    }
}

fn default_subject() -> String {
    "tagflow: {summary}".to_owned()
}

/// A git identity.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Author {
    /// Display name.
    pub name: String,
    /// Email address.
    pub email: String,
}

impl Default for Author {
    fn default() -> Self {
        Self {
            name: "tagflow".to_owned(),
            email: "tagflow@localhost".to_owned(),
        }
    }
}

/// One registry host and how to talk to it.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegistryConfig {
    /// `host` or `host:port`, as it appears at the start of image repositories.
    pub host: String,
    /// Speak plain HTTP. Only for registries explicitly marked so.
    #[serde(default)]
    pub insecure: bool,
    /// Extra CA certificate (PEM) trusted for this registry.
    pub ca_file: Option<String>,
    /// Credentials; anonymous when absent.
    pub credentials: Option<RegistryCredentials>,
    /// Maximum requests per second to this registry.
    #[serde(default = "default_rate")]
    pub rate_limit: f64,
    /// Maximum requests in flight to this registry.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Timeout of each request.
    #[serde(default = "default_timeout", with = "humantime_serde_compat")]
    #[schemars(with = "String")]
    pub timeout: Duration,
}

fn default_rate() -> f64 {
    20.0
}
fn default_concurrency() -> usize {
    4
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

/// Registry credentials: a docker `config.json`, or a username with a password secret.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegistryCredentials {
    /// Path of a docker `config.json` (`auths.<host>.auth` or `username`/`password`).
    pub docker_config_file: Option<String>,
    /// Username, when not using a docker config.
    pub username: Option<String>,
    /// Password or token, by file or env var.
    pub password: Option<SecretRef>,
}

/// One image: where it lives and how to pick its newest tag.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImageConfig {
    /// Full repository, registry host first: `registry.example.com/team/app`.
    pub repository: String,
    /// Tag selection policy.
    pub policy: PolicyConfig,
    /// App source repo, for `order: git`.
    pub source: Option<SourceConfig>,
    /// Platform to read from an image index (`os/arch[/variant]`).
    #[serde(default = "default_platform")]
    pub platform: String,
    /// Setter marker policy name; default `flux-system:<image>`.
    pub setter: Option<String>,
}

fn default_platform() -> String {
    "linux/amd64".to_owned()
}

/// How tags are filtered and ordered.
// `Eq + Hash`: compiled policies are kept by it (policy::cache). A `//` comment, so it stays out
// of the JSON Schema's description.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyConfig {
    /// Regex a tag must match (whole tag; anchor it yourself).
    pub tags: String,
    /// Replacement built from the regex's groups (`$version`); the ordering sees this value.
    pub extract: Option<String>,
    /// Tags matching any of these regexes are skipped.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Ordering.
    pub order: Order,
    /// `asc` (default) picks the greatest value, `desc` the smallest (numerical, alphabetical).
    #[serde(default)]
    pub direction: Direction,
    /// Semver range the version must satisfy (`order: semver`).
    pub range: Option<String>,
    /// Accept bare numbers like `1234567` as semver (off: a 7-digit hash is not a version).
    #[serde(default)]
    pub allow_numeric_semver: bool,
    /// Pick a tag only once its image was built at least this long ago (image config
    /// `created`), so a release can be pulled before it is deployed.
    #[serde(default, with = "humantime_serde_compat::option")]
    #[schemars(with = "Option<String>")]
    pub min_age: Option<Duration>,
}

/// Tag orderings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Image config `created` time.
    Built,
    /// Commit order on a branch of the app's source repo.
    Git,
    /// Semantic version.
    Semver,
    /// Number.
    Numerical,
    /// Byte order of the tag.
    Alphabetical,
}

/// Sort direction for numerical and alphabetical orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The greatest value wins.
    #[default]
    Asc,
    /// The smallest value wins.
    Desc,
}

/// The app's source repository, for `order: git`.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SourceConfig {
    /// Clone URL (file://, https://, ssh://). Credentials are the CLI's git credentials.
    pub url: String,
    /// Branch whose history orders the tags.
    #[serde(default = "default_branch")]
    pub branch: String,
}

fn default_branch() -> String {
    "main".to_owned()
}

/// One environment: its values file and which images it carries.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvironmentConfig {
    /// Values file, relative to the repo root; empty when `dir` is given instead.
    #[serde(default)]
    pub file: String,
    /// A directory (like Flux's `spec.update.path`) whose `.yaml`/`.yml` files carrying this
    /// environment's setter markers are all edited; exclusive with `file`.
    pub dir: Option<String>,
    /// Images written into this file; default every image, found by its setter markers.
    pub images: Option<BTreeMap<String, TargetConfig>>,
    /// The HelmRelease, Kustomization or Argo CD Application deploying this environment;
    /// tagflow watches its status.
    pub release: Option<super::environment::ReleaseRef>,
    /// HTTP check run once the release is Ready.
    pub smoke: Option<super::environment::SmokeConfig>,
    /// Receive only tags that passed this other environment's gates (instead of the policy's pick).
    pub promote_from: Option<String>,
    /// Gates the `promoteFrom` environment's rollout must pass first.
    pub gate: Option<super::environment::GateConfig>,
    /// Push tagflow's change to a branch of its own instead of the target branch.
    pub push: Option<super::PushConfig>,
    /// Open one PR/MR per pushed branch on this forge.
    pub pull_request: Option<super::PullRequestConfig>,
    /// Longest wait from tagflow's commit to the release being Ready.
    #[serde(
        default = "super::environment::default_timeout",
        with = "humantime_serde_compat"
    )]
    #[schemars(with = "String")]
    pub timeout: Duration,
}

/// How an image is found inside an environment's values file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TargetConfig {
    /// Setter marker policy name; default the image's.
    pub setter: Option<String>,
    /// YAML paths (dotted) instead of, or besides, markers.
    #[serde(default)]
    pub paths: PathsConfig,
}

/// YAML-path targets.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PathsConfig {
    /// Path of the repository field (`image.repository`).
    pub repository: Option<String>,
    /// Path of the tag field (`image.tag`).
    pub tag: Option<String>,
    /// Path of the digest field (`image.digest`).
    pub digest: Option<String>,
    /// Path of a full `repo:tag` field (`image.ref`).
    pub full: Option<String>,
}

impl PathsConfig {
    /// Whether any path is set.
    pub fn any(&self) -> bool {
        self.repository.is_some()
            || self.tag.is_some()
            || self.digest.is_some()
            || self.full.is_some()
    }
}

/// `notify:` section.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NotifyConfig {
    /// Slack; no messages when absent.
    pub slack: Option<SlackConfig>,
}

/// Slack: an incoming webhook (flat messages) and/or a bot token (one thread per rollout).
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SlackConfig {
    /// Incoming-webhook URL, by file or env var (it is a secret).
    pub webhook_url: Option<SecretRef>,
    /// Bot token (`xoxb-…`) for the Web API, by file or env var.
    pub bot_token: Option<SecretRef>,
    /// Channel the bot posts to (`#deploys` or an id).
    pub channel: Option<String>,
    /// Web API base URL.
    #[serde(default = "default_slack_api")]
    pub api_url: String,
}

fn default_slack_api() -> String {
    "https://slack.com/api/".to_owned()
}

/// `webhook:` section: who may trigger scans.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WebhookConfig {
    /// Bearer token the registry's notifications must carry.
    pub bearer_token: Option<SecretRef>,
    /// Key of the `X-Tagflow-Signature: sha256=<hex>` HMAC over generic JSON bodies.
    pub hmac_secret: Option<SecretRef>,
    /// Larger bodies are refused.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Harbor: the `Authorization` header value set as the webhook's "Auth Header".
    pub harbor: Option<HookSecret>,
    /// Docker Hub: the secret last path segment of `/webhook/dockerhub/<secret>`.
    pub docker_hub: Option<HookSecret>,
    /// GitHub Packages: the webhook secret behind `X-Hub-Signature-256`.
    pub github: Option<HookSecret>,
    /// GitLab's container registry: the `X-Gitlab-Token` its notifications carry.
    pub gitlab: Option<GitlabHook>,
    /// Quay: the secret last path segment of `/webhook/quay/<secret>`.
    pub quay: Option<HookSecret>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            bearer_token: None,
            hmac_secret: None,
            max_body_bytes: default_max_body(),
            harbor: None,
            docker_hub: None,
            github: None,
            gitlab: None,
            quay: None,
        }
    }
}

/// A hosted registry's webhook: the shared secret it proves itself with.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HookSecret {
    /// The secret, by file or env var.
    pub secret: SecretRef,
}

/// GitLab's registry notifications: the token and the registry host its paths belong to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GitlabHook {
    /// Value of the `X-Gitlab-Token` header, by file or env var.
    pub secret: SecretRef,
    /// Host (and port) images are pulled from, e.g. `registry.gitlab.example.com`: the
    /// notifications name only the repository path.
    pub registry_host: String,
}

fn default_max_body() -> usize {
    64 * 1024
}
