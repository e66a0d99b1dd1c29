//! One registry host over HTTP: auth challenges, rate limit, concurrency cap, 429/5xx retries.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::header::{ACCEPT, HeaderMap, LINK, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;

use super::RegistryError;
use super::auth::{self, Tokens};
use super::creds::{Credential, CredentialError, CredentialSource};
use super::wire::{self, Challenge};
use crate::config::RegistryConfig;
use crate::metrics::Metrics;
use crate::reference;

/// Largest body tagflow reads from a registry (manifests and tag lists are small).
const MAX_BODY: usize = 8 * 1024 * 1024;
/// Attempts per request (429, 5xx and connection errors are retried).
const ATTEMPTS: u32 = 4;
/// Longest single wait tagflow accepts from `Retry-After`.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// A response that was read whole.
#[derive(Debug)]
pub struct Answer {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Answer {
    /// `rel="next"` target, if any.
    pub fn next_link(&self) -> Option<String> {
        self.headers
            .get(LINK)
            .and_then(|v| v.to_str().ok())
            .and_then(wire::next_link)
    }
}

/// Spaces requests out to at most `rate` per second.
#[derive(Debug)]
struct Limiter {
    gap: Duration,
    next: Mutex<Instant>,
}

impl Limiter {
    fn new(rate: f64) -> Self {
        Self {
            gap: Duration::from_secs_f64(1.0 / rate.max(0.001)),
            next: Mutex::new(Instant::now()),
        }
    }

    async fn wait(&self) {
        let at = {
            let mut next = self.next.lock().await;
            let at = (*next).max(Instant::now());
            *next = at + self.gap;
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

/// A client for one registry host.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    /// `https://host` or `http://host` (Docker Hub: `https://registry-1.docker.io`).
    pub base: String,
    base_url: url::Url,
    /// Canonical `host[:port]`, the label used in config, metrics and messages.
    pub host: String,
    creds: CredentialSource,
    basic: AtomicBool,
    tokens: Tokens,
    limiter: Limiter,
    slots: Semaphore,
    metrics: Arc<Metrics>,
}

/// Follow at most five redirects and never from https to http (reqwest already drops the
/// `Authorization` header when a redirect changes host or port).
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let downgrade = attempt.previous().iter().any(|u| u.scheme() == "https")
            && attempt.url().scheme() != "https";
        if downgrade {
            attempt.error("refusing a redirect from https to http")
        } else if attempt.previous().len() > 5 {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    })
}

impl Client {
    /// Build a client for canonical `host` from its config (or defaults for an unlisted host).
    /// Credentials are read on first use, and again whenever their files change.
    pub fn new(
        host: &str,
        cfg: Option<&RegistryConfig>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, RegistryError> {
        let default;
        let cfg = match cfg {
            Some(c) => c,
            None => {
                default = default_config(host);
                &default
            }
        };
        let mut builder = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("tagflow/", env!("CARGO_PKG_VERSION")))
            .redirect(redirect_policy());
        if let Some(ca) = &cfg.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| RegistryError::Setup(format!("failed to read caFile {ca}: {e}")))?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                RegistryError::Setup(format!("caFile {ca} is not a PEM certificate: {e}"))
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .build()
            .map_err(|e| RegistryError::Setup(format!("failed to build HTTP client: {e}")))?;
        let scheme = if cfg.insecure { "http" } else { "https" };
        let base = format!("{scheme}://{}", reference::api_host(host));
        let base_url = url::Url::parse(&base).map_err(|e| {
            RegistryError::Setup(format!("registry host {host} is not a host: {e}"))
        })?;
        Ok(Self {
            http,
            base,
            base_url,
            host: host.to_owned(),
            creds: CredentialSource::new(host, cfg.credentials.as_ref()),
            basic: AtomicBool::new(false),
            tokens: Tokens::default(),
            limiter: Limiter::new(cfg.rate_limit),
            slots: Semaphore::new(cfg.concurrency.max(1)),
            metrics,
        })
    }

    /// The registry's origin (scheme, host, port), the only place credentials are sent.
    pub fn origin(&self) -> &url::Url {
        &self.base_url
    }

    /// GET or HEAD `path_or_url` (relative to the registry, or an absolute URL on its origin),
    /// authenticating for `scope`.
    pub async fn call(
        &self,
        method: Method,
        path_or_url: &str,
        scope: &str,
    ) -> Result<Answer, RegistryError> {
        let url = if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_owned()
        } else {
            format!("{}{}", self.base, path_or_url)
        };
        let mut auth_tried = false;
        // Credentials are read again once before a refusal is reported (they may have rotated).
        let mut reloaded = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let answer = match self.send_once(method.clone(), &url, scope).await {
                Ok(a) => a,
                Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let refused = match answer.status {
                StatusCode::UNAUTHORIZED if !auth_tried => {
                    auth_tried = true;
                    match self.authenticate(&answer, scope, &url).await {
                        Ok(()) => continue,
                        Err(e @ RegistryError::Unauthorized { .. }) => e,
                        Err(e) => return Err(e),
                    }
                }
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => self.unauthorized(&url),
                StatusCode::TOO_MANY_REQUESTS if attempt < ATTEMPTS => {
                    let wait = answer
                        .headers
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|h| wire::retry_after(h, chrono::Utc::now()))
                        .unwrap_or_else(|| backoff(attempt))
                        .min(MAX_RETRY_AFTER);
                    tracing::info!(registry = %self.host, wait_ms = wait.as_millis() as u64, "registry asked us to slow down (429)");
                    tokio::time::sleep(wait).await;
                    continue;
                }
                s if s.is_server_error() && attempt < ATTEMPTS => {
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
                StatusCode::TOO_MANY_REQUESTS => {
                    return Err(RegistryError::RateLimited {
                        registry: self.host.clone(),
                    });
                }
                s if s.is_server_error() => {
                    return Err(RegistryError::Status {
                        registry: self.host.clone(),
                        url: redact_url(&url),
                        status: s.as_u16(),
                    });
                }
                _ => return Ok(answer),
            };
            if !reloaded && self.creds.configured() {
                reloaded = true;
                if self.creds.reload().await.map_err(|e| self.cred_error(e))? {
                    tracing::info!(registry = %self.host, "registry credentials changed on disk; trying them");
                    self.tokens.clear().await;
                    auth_tried = false;
                    continue;
                }
            }
            return Err(refused);
        }
    }

    fn unauthorized(&self, url: &str) -> RegistryError {
        RegistryError::Unauthorized {
            registry: self.host.clone(),
            url: redact_url(url),
        }
    }

    fn cred_error(&self, source: CredentialError) -> RegistryError {
        RegistryError::Credentials {
            registry: self.host.clone(),
            source,
        }
    }

    /// Answer a 401 challenge: switch to basic auth, or get a bearer token for `scope`.
    async fn authenticate(
        &self,
        answer: &Answer,
        scope: &str,
        url: &str,
    ) -> Result<(), RegistryError> {
        let challenge = answer
            .headers
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(wire::parse_challenge);
        let cred = self.creds.get().await.map_err(|e| self.cred_error(e))?;
        match (challenge, &cred) {
            (Some(Challenge::Basic), Some(Credential::Basic { .. })) => {
                self.basic.store(true, Ordering::Relaxed);
                Ok(())
            }
            (
                Some(Challenge::Bearer {
                    realm,
                    service,
                    scope: asked,
                }),
                _,
            ) => {
                self.fetch_token(
                    &realm,
                    service.as_deref(),
                    asked.as_deref().unwrap_or(scope),
                    scope,
                    cred.as_ref(),
                )
                .await
            }
            _ => Err(self.unauthorized(url)),
        }
    }

    async fn send_once(
        &self,
        method: Method,
        url: &str,
        scope: &str,
    ) -> Result<Answer, RegistryError> {
        let mut req = self.http.request(method, url).header(ACCEPT, wire::ACCEPT);
        // Credentials only ever go to the registry's own origin.
        let own = url::Url::parse(url).is_ok_and(|u| wire::same_origin(&u, &self.base_url));
        if own {
            if let Some(token) = self.tokens.get(scope).await {
                req = req.bearer_auth(token);
            } else if self.basic.load(Ordering::Relaxed)
                && let Some(Credential::Basic { username, password }) =
                    self.creds.get().await.map_err(|e| self.cred_error(e))?
            {
                req = req.basic_auth(username, Some(password));
            }
        }
        self.exchange(req, url).await
    }

    /// Send one request within the concurrency cap and rate limit, read it whole, count it.
    async fn exchange(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<Answer, RegistryError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| RegistryError::Setup("client closed".into()))?;
        self.limiter.wait().await;
        let result = read(req).await;
        let label = match &result {
            Ok(a) => a.status.as_u16().to_string(),
            Err(_) => "error".to_owned(),
        };
        self.metrics.registry_request(&self.host, &label);
        result.map_err(|e| self.transport(url, e))
    }

    fn transport(&self, url: &str, e: ReadError) -> RegistryError {
        match e {
            ReadError::Http(e) => RegistryError::Transport {
                registry: self.host.clone(),
                url: redact_url(url),
                reason: crate::secret::redacted_chain(&e),
                timeout: e.is_timeout(),
            },
            ReadError::TooLarge => RegistryError::BadResponse {
                registry: self.host.clone(),
                url: redact_url(url),
                reason: format!("body larger than {MAX_BODY} bytes"),
            },
        }
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        asked: &str,
        scope: &str,
        cred: Option<&Credential>,
    ) -> Result<(), RegistryError> {
        let bad = |url: &str, reason: String| RegistryError::BadResponse {
            registry: self.host.clone(),
            url: redact_url(url),
            reason,
        };
        let (req, url) =
            auth::token_request(&self.http, &self.base_url, realm, service, asked, cred)
                .map_err(|reason| bad(realm, reason))?;
        let a = self.exchange(req, url.as_str()).await?;
        if !a.status.is_success() {
            return Err(self.unauthorized(url.as_str()));
        }
        let ans: wire::TokenAnswer = serde_json::from_slice(&a.body)
            .map_err(|e| bad(url.as_str(), format!("token answer is not JSON: {e}")))?;
        let token = ans
            .token
            .or(ans.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad(url.as_str(), "token answer has no token".into()))?;
        self.tokens.put(scope, token, ans.expires_in).await;
        Ok(())
    }
}

fn default_config(host: &str) -> RegistryConfig {
    RegistryConfig {
        host: host.to_owned(),
        insecure: false,
        ca_file: None,
        credentials: None,
        rate_limit: 20.0,
        concurrency: 4,
        timeout: Duration::from_secs(30),
    }
}

enum ReadError {
    Http(reqwest::Error),
    TooLarge,
}

async fn read(req: reqwest::RequestBuilder) -> Result<Answer, ReadError> {
    let mut resp = req.send().await.map_err(ReadError::Http)?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(ReadError::Http)? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer {
        status,
        headers,
        body,
    })
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200 * 2u64.pow(attempt.min(6)))
}

/// URLs never carry secrets in tagflow, but a registry could send one back in a `Link`.
fn redact_url(u: &str) -> String {
    crate::secret::redact(&crate::secret::display_url(u))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn limiter_spaces_requests_at_the_configured_rate() {
        let l = Limiter::new(2.0);
        let t0 = Instant::now();
        for _ in 0..5 {
            l.wait().await;
        }
        // The first request goes at once, the next four half a second apart (virtual time).
        assert_eq!(t0.elapsed(), Duration::from_secs(2));
    }
}
