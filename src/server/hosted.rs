//! Webhooks of hosted registries (Harbor, Docker Hub, GitHub Packages, GitLab, Quay), each
//! read from the vendor's documented payload and reduced to "scan these repositories now".
//!
//! Every function here is pure: the caller reads the configured secret and passes it in. A
//! missing secret refuses the delivery, as a wrong one does, so an endpoint nobody configured is
//! closed. Shared secrets are compared through [`crate::secret::same`] (digests, constant time).

use axum::http::HeaderMap;
use serde::Deserialize;

use super::{PushedRepo, WebhookError, check_name, check_tag, distribution_pushes};
use crate::reference::RepoRef;

/// GitHub's event-name header.
pub const GITHUB_EVENT_HEADER: &str = "x-github-event";
/// GitHub's `sha256=<hex HMAC of the raw body>` header.
pub const GITHUB_SIGNATURE_HEADER: &str = "x-hub-signature-256";
/// GitLab's shared-secret header.
pub const GITLAB_TOKEN_HEADER: &str = "x-gitlab-token";

fn json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, WebhookError> {
    serde_json::from_slice(body).map_err(|e| WebhookError::BadBody(e.to_string()))
}

fn require<'a>(secret: Option<&'a str>, what: &'static str) -> Result<&'a str, WebhookError> {
    secret.ok_or(WebhookError::Unauthorized(what))
}

/// Compare a presented shared secret with the configured one (digests, constant time).
fn check_shared(
    want: &str,
    given: Option<&str>,
    missing: &'static str,
    wrong: &'static str,
) -> Result<(), WebhookError> {
    let given = given.ok_or(WebhookError::Unauthorized(missing))?;
    if crate::secret::same(given.as_bytes(), want.as_bytes()) {
        Ok(())
    } else {
        Err(WebhookError::Unauthorized(wrong))
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Check the name and map it with docker's rules (`nginx` on Docker Hub is `library/nginx`).
fn repo(full: &str) -> Result<PushedRepo, WebhookError> {
    check_name(full)?;
    let r = RepoRef::parse(full);
    Ok((Some(r.host), r.path))
}

fn tags<'a>(tags: impl IntoIterator<Item = &'a str>) -> Result<(), WebhookError> {
    tags.into_iter()
        .filter(|t| !t.is_empty())
        .try_for_each(check_tag)
}

#[derive(Deserialize)]
struct HarborEvent {
    #[serde(rename = "type")]
    kind: String,
    event_data: Option<HarborData>,
}

#[derive(Deserialize)]
struct HarborData {
    repository: HarborRepository,
    #[serde(default)]
    resources: Vec<HarborResource>,
}

#[derive(Deserialize)]
struct HarborRepository {
    repo_full_name: String,
}

#[derive(Deserialize)]
struct HarborResource {
    tag: Option<String>,
    resource_url: Option<String>,
}

/// Harbor's default-format `PUSH_ARTIFACT`: `Authorization` must equal the configured header.
/// The registry host comes from `resources[].resource_url` (`host/project/repo:tag`); without
/// one the repository path alone is matched.
pub fn harbor(
    headers: &HeaderMap,
    body: &[u8],
    secret: Option<&str>,
) -> Result<Vec<PushedRepo>, WebhookError> {
    let want = require(secret, "no webhook.harbor secret configured")?;
    check_shared(
        want,
        header(headers, "authorization"),
        "missing Authorization header",
        "wrong Authorization header",
    )?;
    let ev: HarborEvent = json(body)?;
    if ev.kind != "PUSH_ARTIFACT" {
        return Err(WebhookError::NoPush);
    }
    let data = ev
        .event_data
        .ok_or_else(|| WebhookError::BadBody("PUSH_ARTIFACT without event_data".into()))?;
    let path = data.repository.repo_full_name;
    check_name(&path)?;
    tags(data.resources.iter().filter_map(|r| r.tag.as_deref()))?;
    // `resource_url` is `host/path:tag` or `host/path@digest`; only its host is used, and only
    // when the rest agrees with `repo_full_name`.
    let host = data
        .resources
        .iter()
        .filter_map(|r| r.resource_url.as_deref())
        .filter_map(|u| u.split_once('/'))
        .find(|(h, rest)| {
            (h.contains('.') || h.contains(':') || *h == "localhost")
                && rest
                    .strip_prefix(path.as_str())
                    .is_some_and(|t| t.is_empty() || t.starts_with(':') || t.starts_with('@'))
        })
        .map(|(h, _)| crate::reference::canonical_host(h).to_owned());
    Ok(vec![(host, path)])
}

#[derive(Deserialize)]
struct HubEvent {
    push_data: HubPush,
    repository: HubRepository,
}

#[derive(Deserialize)]
struct HubPush {
    tag: Option<String>,
}

#[derive(Deserialize)]
struct HubRepository {
    repo_name: String,
}

/// Docker Hub: no signature exists, so the endpoint's last path segment is the secret.
pub fn docker_hub(
    path_secret: &str,
    body: &[u8],
    secret: Option<&str>,
) -> Result<Vec<PushedRepo>, WebhookError> {
    let want = require(secret, "no webhook.dockerHub secret configured")?;
    check_shared(want, Some(path_secret), "", "wrong secret in the URL")?;
    let ev: HubEvent = json(body)?;
    tags(ev.push_data.tag.as_deref())?;
    Ok(vec![repo(&format!(
        "docker.io/{}",
        ev.repository.repo_name
    ))?])
}

#[derive(Deserialize)]
struct GithubEvent {
    action: String,
    package: Option<GithubPackage>,
    registry_package: Option<GithubPackage>,
}

#[derive(Deserialize)]
struct GithubPackage {
    name: String,
    namespace: String,
    package_type: String,
    package_version: Option<GithubVersion>,
}

#[derive(Deserialize)]
struct GithubVersion {
    container_metadata: Option<GithubContainer>,
}

#[derive(Deserialize)]
struct GithubContainer {
    tag: Option<GithubTag>,
}

#[derive(Deserialize)]
struct GithubTag {
    name: Option<String>,
}

/// GitHub Packages: `registry_package` or `package` events, `published`, of a container
/// package, signed with `X-Hub-Signature-256`. The image is `ghcr.io/<namespace>/<name>`.
pub fn github(
    headers: &HeaderMap,
    body: &[u8],
    secret: Option<&str>,
) -> Result<Vec<PushedRepo>, WebhookError> {
    let key = require(secret, "no webhook.github secret configured")?;
    let sig = header(headers, GITHUB_SIGNATURE_HEADER)
        .ok_or(WebhookError::Unauthorized("missing X-Hub-Signature-256"))?;
    super::verify_hmac(key, sig, body)?;
    let event = header(headers, GITHUB_EVENT_HEADER).unwrap_or_default();
    if !matches!(event, "registry_package" | "package") {
        // `ping` on creation, or an event the hook was subscribed to by mistake.
        return Err(WebhookError::NoPush);
    }
    let ev: GithubEvent = json(body)?;
    let pkg = ev
        .registry_package
        .or(ev.package)
        .ok_or_else(|| WebhookError::BadBody(format!("{event} event without a package object")))?;
    if ev.action != "published" || !pkg.package_type.eq_ignore_ascii_case("container") {
        return Err(WebhookError::NoPush);
    }
    let tag = pkg
        .package_version
        .and_then(|v| v.container_metadata)
        .and_then(|c| c.tag)
        .and_then(|t| t.name);
    tags(tag.as_deref())?;
    // GHCR names are lowercase; a nested package name arrives with its slash encoded.
    let name =
        format!("ghcr.io/{}/{}", pkg.namespace, pkg.name.replace("%2F", "/")).to_ascii_lowercase();
    Ok(vec![repo(&name)?])
}

/// GitLab's container registry: it is a distribution registry, so its notifications (set in
/// `registry['notifications']` with an `X-Gitlab-Token` header) are distribution's envelope.
/// They name paths only; the host is the configured registry host.
pub fn gitlab(
    headers: &HeaderMap,
    body: &[u8],
    secret: Option<&str>,
    registry_host: &str,
) -> Result<Vec<PushedRepo>, WebhookError> {
    let want = require(secret, "no webhook.gitlab secret configured")?;
    check_shared(
        want,
        header(headers, GITLAB_TOKEN_HEADER),
        "missing X-Gitlab-Token",
        "wrong X-Gitlab-Token",
    )?;
    let host = crate::reference::canonical_host(registry_host).to_owned();
    Ok(distribution_pushes(body)?
        .into_iter()
        .map(|(_, path)| (Some(host.clone()), path))
        .collect())
}

#[derive(Deserialize)]
struct QuayEvent {
    repository: String,
    docker_url: String,
    updated_tags: Option<QuayTags>,
}

/// Quay has documented `updated_tags` both as a list and as a tag → image id map.
#[derive(Deserialize)]
#[serde(untagged)]
enum QuayTags {
    List(Vec<String>),
    Map(std::collections::BTreeMap<String, serde_json::Value>),
}

/// Quay's "Repository Push" notification: no signature exists, so the endpoint's last path
/// segment is the secret. The host comes from `docker_url` (quay.io or a self-hosted Quay).
pub fn quay(
    path_secret: &str,
    body: &[u8],
    secret: Option<&str>,
) -> Result<Vec<PushedRepo>, WebhookError> {
    let want = require(secret, "no webhook.quay secret configured")?;
    check_shared(want, Some(path_secret), "", "wrong secret in the URL")?;
    let ev: QuayEvent = json(body)?;
    // Quay sends build and vulnerability notifications to the same kind of URL.
    let Some(updated) = ev.updated_tags else {
        return Err(WebhookError::NoPush);
    };
    match &updated {
        QuayTags::List(l) => tags(l.iter().map(String::as_str))?,
        QuayTags::Map(m) => tags(m.keys().map(String::as_str))?,
    }
    let (host, path) = repo(&ev.docker_url)?;
    if path != ev.repository {
        return Err(WebhookError::BadBody(
            "docker_url does not end in repository".into(),
        ));
    }
    Ok(vec![(host, path)])
}

#[cfg(test)]
#[path = "hosted_tests.rs"]
mod tests;
