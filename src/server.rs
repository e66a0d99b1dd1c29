//! HTTP server for `run`: `/healthz`, `/readyz`, `/metrics` and the webhooks (`/webhook/registry` and
//! the hosted registries' in [`hosted`]).
//!
//! The webhook only names repositories to scan now; it never carries a tag to deploy, so a
//! forged delivery can at worst cause an early scan — and it is authenticated anyway.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::metrics::Metrics;

pub mod board;
pub mod hosted;
pub mod status;

/// Media type of the distribution registry's notifications.
pub const EVENTS_MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";
/// Header carrying `sha256=<hex>` HMAC of a generic webhook body.
pub const SIGNATURE_HEADER: &str = "x-tagflow-signature";

/// What the server reads of the running agent.
#[derive(Debug)]
pub struct ServerState {
    /// Metrics to serve.
    pub metrics: Arc<Metrics>,
    /// Set once a cycle has run with a good config (see `cycle::run_loop`).
    pub ready: Arc<AtomicBool>,
    /// The config in force (the last good one).
    pub current: Arc<crate::config::Current>,
    /// Image names to scan now.
    pub trigger: mpsc::Sender<BTreeSet<String>>,
    /// The status page's sources; `None`: no page.
    pub board: Option<Arc<board::Board>>,
}

impl ServerState {
    fn config(&self) -> Option<Arc<Config>> {
        self.current.config()
    }
}

/// The router.
pub fn router(shared: Arc<ServerState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/", get(status_page))
        .route("/api/status", get(status_json))
        .route("/webhook/registry", post(webhook))
        .route("/webhook/harbor", post(harbor))
        .route("/webhook/dockerhub/{secret}", post(docker_hub))
        .route("/webhook/github", post(github))
        .route("/webhook/gitlab", post(gitlab))
        .route("/webhook/quay/{secret}", post(quay))
        .with_state(shared)
}

async fn readyz(State(s): State<Arc<ServerState>>) -> Response {
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no successful cycle yet\n").into_response()
    }
}

async fn metrics(State(s): State<Arc<ServerState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

/// The status data, or the answer refusing it (no page, token missing or wrong).
async fn status_data(s: &ServerState, headers: &HeaderMap) -> Result<status::StatusData, Response> {
    let Some(board) = &s.board else {
        return Err((StatusCode::NOT_FOUND, "no status page\n").into_response());
    };
    if let Some(token) = &board.token {
        let Ok(expected) = token.read() else {
            tracing::warn!("status token unreadable: the page is refused");
            return Err(
                (StatusCode::SERVICE_UNAVAILABLE, "status token unreadable\n").into_response(),
            );
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !crate::secret::same(given.as_bytes(), expected.as_bytes()) {
            return Err((
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer realm=\"tagflow\"")],
                "status page needs Authorization: Bearer <token>\n",
            )
                .into_response());
        }
    }
    Ok(board.gather(chrono::Utc::now()).await)
}

async fn status_page(State(s): State<Arc<ServerState>>, headers: HeaderMap) -> Response {
    match status_data(&s, &headers).await {
        Ok(d) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                // Read-only and script-free: forbid scripts, frames and forms outright.
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; style-src 'unsafe-inline'; form-action 'none'; frame-ancestors 'none'",
                ),
                (header::CACHE_CONTROL, "no-store"),
            ],
            status::render_html(&d),
        )
            .into_response(),
        Err(r) => r,
    }
}

async fn status_json(State(s): State<Arc<ServerState>>, headers: HeaderMap) -> Response {
    match status_data(&s, &headers).await {
        Ok(d) => ([(header::CACHE_CONTROL, "no-store")], axum::Json(d)).into_response(),
        Err(r) => r,
    }
}

/// Why a webhook delivery was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// Too big.
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    /// Missing or wrong token/signature, or no secret configured for this kind of delivery.
    #[error("not authenticated: {0}")]
    Unauthorized(&'static str),
    /// Not JSON of a known shape.
    #[error("bad body: {0}")]
    BadBody(String),
    /// No configured image has the repository (answered 200: ignored, not refused).
    #[error("no configured image for repository {0}")]
    UnknownRepository(String),
    /// Nothing to do (e.g. only pull events).
    #[error("no push events")]
    NoPush,
    /// tagflow has no good config yet.
    #[error("not ready")]
    NotReady,
}

impl WebhookError {
    fn status(&self) -> StatusCode {
        match self {
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::BadBody(_) => StatusCode::BAD_REQUEST,
            // Not an error of the sender: a non-2xx would make distribution retry it forever.
            Self::UnknownRepository(_) => StatusCode::OK,
            Self::NoPush => StatusCode::OK,
            Self::NotReady => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Self::TooLarge(_) => "too_large",
            Self::Unauthorized(_) => "unauthorized",
            Self::BadBody(_) => "bad_body",
            Self::UnknownRepository(_) => "unknown_repository",
            Self::NoPush => "ignored",
            Self::NotReady => "not_ready",
        }
    }
}

/// Read one delivery (size-capped), let `parse` authenticate it and name repositories, and
/// trigger a scan of the images they match. Every outcome is counted by its result label.
async fn deliver(
    s: &ServerState,
    req: Request,
    parse: impl FnOnce(&Config, &HeaderMap, &[u8]) -> Result<Vec<PushedRepo>, WebhookError>,
) -> Response {
    let result = async {
        let config = s.config().ok_or(WebhookError::NotReady)?;
        let (parts, body) = req.into_parts();
        let limit = config.webhook.max_body_bytes;
        let bytes = axum::body::to_bytes(Body::new(body), limit)
            .await
            .map_err(|_| WebhookError::TooLarge(limit))?;
        let repos = parse(&config, &parts.headers, &bytes)?;
        images_for(&config, &repos)
    }
    .await;
    match result {
        Ok(images) => {
            s.metrics.webhook("accepted");
            tracing::info!(images = ?images, "webhook: scanning now");
            // A full queue means a scan is already pending; that scan covers this one.
            let _ = s.trigger.try_send(images.clone());
            (
                StatusCode::ACCEPTED,
                format!(
                    "scanning {}\n",
                    images.into_iter().collect::<Vec<_>>().join(", ")
                ),
            )
                .into_response()
        }
        Err(e) => {
            s.metrics.webhook(e.label());
            match &e {
                WebhookError::NoPush => {}
                WebhookError::UnknownRepository(_) => {
                    tracing::info!(reason = %e, "webhook ignored")
                }
                _ => tracing::warn!(reason = %e, "webhook refused"),
            }
            (e.status(), format!("{e}\n")).into_response()
        }
    }
}

/// A secret read for one delivery; unreadable counts as not configured (the delivery is refused).
fn read_secret(r: Option<&crate::secret::SecretRef>) -> Option<String> {
    r.and_then(|r| {
        r.read()
            .map_err(|e| tracing::warn!(error = %e, "webhook secret unreadable"))
            .ok()
    })
}

async fn webhook(State(s): State<Arc<ServerState>>, req: Request) -> Response {
    deliver(&s, req, |config, headers, body| {
        let secrets = Secrets {
            bearer: read_secret(config.webhook.bearer_token.as_ref()),
            hmac: read_secret(config.webhook.hmac_secret.as_ref()),
        };
        authenticate_and_parse(headers, body, &secrets)
    })
    .await
}

async fn harbor(State(s): State<Arc<ServerState>>, req: Request) -> Response {
    deliver(&s, req, |config, headers, body| {
        let secret = read_secret(config.webhook.harbor.as_ref().map(|h| &h.secret));
        hosted::harbor(headers, body, secret.as_deref())
    })
    .await
}

async fn docker_hub(
    State(s): State<Arc<ServerState>>,
    Path(given): Path<String>,
    req: Request,
) -> Response {
    deliver(&s, req, |config, _, body| {
        let secret = read_secret(config.webhook.docker_hub.as_ref().map(|h| &h.secret));
        hosted::docker_hub(&given, body, secret.as_deref())
    })
    .await
}

async fn github(State(s): State<Arc<ServerState>>, req: Request) -> Response {
    deliver(&s, req, |config, headers, body| {
        let secret = read_secret(config.webhook.github.as_ref().map(|h| &h.secret));
        hosted::github(headers, body, secret.as_deref())
    })
    .await
}

async fn gitlab(State(s): State<Arc<ServerState>>, req: Request) -> Response {
    deliver(&s, req, |config, headers, body| {
        let g = config.webhook.gitlab.as_ref();
        let secret = read_secret(g.map(|h| &h.secret));
        let host = g.map_or("", |h| h.registry_host.as_str());
        hosted::gitlab(headers, body, secret.as_deref(), host)
    })
    .await
}

async fn quay(
    State(s): State<Arc<ServerState>>,
    Path(given): Path<String>,
    req: Request,
) -> Response {
    deliver(&s, req, |config, _, body| {
        let secret = read_secret(config.webhook.quay.as_ref().map(|h| &h.secret));
        hosted::quay(&given, body, secret.as_deref())
    })
    .await
}

/// Webhook secrets as read for one delivery.
#[derive(Debug, Default)]
pub struct Secrets {
    /// Expected bearer token for registry notifications.
    pub bearer: Option<String>,
    /// HMAC key for generic deliveries.
    pub hmac: Option<String>,
}

#[derive(Deserialize)]
struct Envelope {
    events: Vec<Event>,
}

#[derive(Deserialize)]
struct Event {
    action: String,
    target: Option<Target>,
    request: Option<EventRequest>,
}

#[derive(Deserialize)]
struct Target {
    repository: String,
    tag: Option<String>,
}

#[derive(Deserialize)]
struct EventRequest {
    host: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Generic {
    repository: String,
    tag: Option<String>,
}

/// A pushed repository named by a delivery: `(host if known, path)`.
pub type PushedRepo = (Option<String>, String);

/// Check a delivery's credentials and list the repositories it reports pushes to (pure).
pub fn authenticate_and_parse(
    headers: &HeaderMap,
    body: &[u8],
    secrets: &Secrets,
) -> Result<Vec<PushedRepo>, WebhookError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if let Some(sig) = headers.get(SIGNATURE_HEADER) {
        let key = secrets
            .hmac
            .as_deref()
            .ok_or(WebhookError::Unauthorized("no hmacSecret configured"))?;
        verify_hmac(key, sig.to_str().unwrap_or_default(), body)?;
        let g: Generic =
            serde_json::from_slice(body).map_err(|e| WebhookError::BadBody(e.to_string()))?;
        check_name(&g.repository)?;
        if let Some(t) = &g.tag {
            check_tag(t)?;
        }
        let (host, path) = match g.repository.split_once('/') {
            Some((h, p)) if h.contains('.') || h.contains(':') => {
                (Some(h.to_owned()), p.to_owned())
            }
            _ => (None, g.repository.clone()),
        };
        return Ok(vec![(host, path)]);
    }
    // Registry notifications: bearer token.
    let token = secrets
        .bearer
        .as_deref()
        .ok_or(WebhookError::Unauthorized("no bearerToken configured"))?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(WebhookError::Unauthorized("missing bearer token"))?;
    if !crate::secret::same(given.as_bytes(), token.as_bytes()) {
        return Err(WebhookError::Unauthorized("wrong bearer token"));
    }
    if !content_type.starts_with(EVENTS_MEDIA_TYPE) && !content_type.starts_with("application/json")
    {
        return Err(WebhookError::BadBody(format!(
            "content type {content_type:?} is not {EVENTS_MEDIA_TYPE}"
        )));
    }
    distribution_pushes(body)
}

/// Check `sig` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under `key` (constant time).
fn verify_hmac(key: &str, sig: &str, body: &[u8]) -> Result<(), WebhookError> {
    let hex_sig = sig
        .strip_prefix("sha256=")
        .ok_or(WebhookError::Unauthorized("signature must be sha256=<hex>"))?;
    let raw =
        hex::decode(hex_sig).map_err(|_| WebhookError::Unauthorized("signature is not hex"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes())
        .map_err(|_| WebhookError::Unauthorized("bad key"))?;
    mac.update(body);
    mac.verify_slice(&raw)
        .map_err(|_| WebhookError::Unauthorized("bad signature"))
}

/// The pushes in a distribution notification envelope (also what GitLab's registry sends).
fn distribution_pushes(body: &[u8]) -> Result<Vec<PushedRepo>, WebhookError> {
    let env: Envelope =
        serde_json::from_slice(body).map_err(|e| WebhookError::BadBody(e.to_string()))?;
    let mut out = Vec::new();
    for ev in env.events.into_iter().filter(|e| e.action == "push") {
        let Some(t) = ev.target else { continue };
        check_name(&t.repository)?;
        if let Some(tag) = &t.tag {
            check_tag(tag)?;
        }
        out.push((ev.request.and_then(|r| r.host), t.repository));
    }
    if out.is_empty() {
        return Err(WebhookError::NoPush);
    }
    Ok(out)
}

fn check_name(repo: &str) -> Result<(), WebhookError> {
    // No empty path component: `host/` once came out as a push to the empty path.
    let ok = !repo.split('/').any(str::is_empty)
        && repo.len() <= 255
        && repo
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(WebhookError::BadBody(
            "repository name has invalid characters".into(),
        ))
    }
}

fn check_tag(tag: &str) -> Result<(), WebhookError> {
    if crate::rewrite::valid_tag(tag) {
        Ok(())
    } else {
        Err(WebhookError::BadBody("tag is not a valid tag".into()))
    }
}

/// Image names whose repository a delivery names (pure).
///
/// Only when none of them is configured is the delivery refused; a registry or organisation
/// hook reports every repository, and most are none of tagflow's business.
pub fn images_for(config: &Config, repos: &[PushedRepo]) -> Result<BTreeSet<String>, WebhookError> {
    let mut out = BTreeSet::new();
    let mut unknown = Vec::new();
    for (host, path) in repos {
        let found: Vec<&String> = config
            .images
            .iter()
            .filter(|(_, img)| {
                let (ihost, ipath) = crate::registry::split_repository(&img.repository);
                ipath == *path
                    && host
                        .as_deref()
                        .is_none_or(|h| crate::reference::canonical_host(h) == ihost)
            })
            .map(|(name, _)| name)
            .collect();
        if found.is_empty() {
            let shown = host
                .as_ref()
                .map_or_else(|| path.clone(), |h| format!("{h}/{path}"));
            unknown.push(shown);
        }
        out.extend(found.into_iter().cloned());
    }
    match unknown.into_iter().next() {
        Some(first) if out.is_empty() => Err(WebhookError::UnknownRepository(first)),
        _ => Ok(out),
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
