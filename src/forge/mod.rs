//! Forge stage (IO): open, update and close the one PR/MR per branch that pull-request mode
//! pushes, on GitHub, GitLab or Gitea. The requests themselves are in [`api`] (pure).
//!
//! The token goes only to the configured API host, which the operator must allow
//! (`--secret-hosts`; checked at config load and again here), never along a redirect: a 3xx is
//! an error. The token is registered with the redactor when read, so it never reaches a log.

pub mod api;

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

pub use api::Found;

use crate::config::{ForgeProvider, PullRequestConfig};
use crate::secret::SecretRef;

/// Timeout of each forge request.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A forge request that failed. Never contains the token.
#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    /// The settings cannot work (no project, host not allowed, bad token file).
    #[error("pull request setup: {0}")]
    Setup(String),
    /// No answer.
    #[error("failed to reach {url}: {reason}")]
    Transport {
        /// Request URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// An answer that is not a success.
    #[error("{method} {url}: HTTP {status}: {body}")]
    Status {
        /// Method.
        method: &'static str,
        /// Request URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// Start of the answer's body.
        body: String,
    },
    /// A success whose body is not what the API documents.
    #[error("{url}: unexpected answer: {source}")]
    Decode {
        /// Request URL.
        url: String,
        /// What was wrong.
        #[source]
        source: DecodeError,
    },
}

/// Why a request got no answer, with what to do about a certificate from a private CA.
fn transport_reason(e: reqwest::Error) -> String {
    let mut reason = crate::secret::redacted_chain(&e.without_url());
    if reason.contains("certificate") {
        reason.push_str(
            " (a forge behind a private CA: pass that CA's PEM with --git-ca-file or \
             TAGFLOW_GIT_CA_FILE, which the forge API trusts as the git remotes do)",
        );
    }
    reason
}

/// What was wrong with an answer.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(String);

impl ForgeError {
    /// Worth retrying next cycle without a config change.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. } => true,
            Self::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

/// One forge project, with the token and labels of one environment's `pullRequest`.
#[derive(Debug, Clone)]
pub struct Forge {
    provider: ForgeProvider,
    base: String,
    project: String,
    token: SecretRef,
    labels: Vec<String>,
    http: reqwest::Client,
}

impl Forge {
    /// The forge of `cfg` for the config repo cloned from `repo_url`.
    pub fn new(cfg: &PullRequestConfig, repo_url: &str) -> Result<Self, ForgeError> {
        let base = cfg
            .api_base()
            .ok_or_else(|| ForgeError::Setup("pullRequest.apiUrl is needed".into()))?;
        let host = crate::egress::authority(&base)
            .ok_or_else(|| ForgeError::Setup(format!("{base} is not a URL")))?;
        let egress = crate::egress::current();
        if !egress.allows(&host) {
            return Err(ForgeError::Setup(format!(
                "sending the forge token to {host} is not allowed (allowed: {})",
                egress.describe()
            )));
        }
        let project = match &cfg.project {
            Some(p) => p.clone(),
            None => api::project_of(repo_url).ok_or_else(|| {
                ForgeError::Setup(format!(
                    "cannot tell owner/repo from {}: set pullRequest.project",
                    crate::secret::display_url(repo_url)
                ))
            })?,
        };
        let mut builder = reqwest::Client::builder();
        for root in crate::gitops::extra_roots() {
            builder = builder.add_root_certificate(root);
        }
        let http = builder
            .timeout(TIMEOUT)
            // The token must not follow a redirect anywhere, not even on the same host.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tagflow/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ForgeError::Setup(format!("http client: {e}")))?;
        Ok(Self {
            provider: cfg.provider,
            base,
            project,
            token: SecretRef::file(cfg.token_file.clone()),
            labels: cfg.labels.clone(),
            http,
        })
    }

    fn headers(&self) -> Result<HeaderMap, ForgeError> {
        let token = self
            .token
            .read()
            .map_err(|e| ForgeError::Setup(e.to_string()))?;
        let (name, value) = match self.provider {
            ForgeProvider::Github => ("authorization", format!("Bearer {token}")),
            ForgeProvider::Gitlab => ("private-token", token),
            ForgeProvider::Gitea => ("authorization", format!("token {token}")),
        };
        let mut v = HeaderValue::from_str(&value)
            .map_err(|_| ForgeError::Setup("the forge token is not a valid header value".into()))?;
        v.set_sensitive(true);
        let mut h = HeaderMap::new();
        h.insert(HeaderName::from_static(name), v);
        if self.provider == ForgeProvider::Github {
            h.insert(
                "accept",
                HeaderValue::from_static("application/vnd.github+json"),
            );
            h.insert(
                "x-github-api-version",
                HeaderValue::from_static("2022-11-28"),
            );
        }
        Ok(h)
    }

    async fn call(&self, c: api::Call) -> Result<Value, ForgeError> {
        use api::Method;
        let url = format!("{}{}", self.base, c.path);
        let (name, method) = match c.method {
            Method::Get => ("GET", reqwest::Method::GET),
            Method::Post => ("POST", reqwest::Method::POST),
            Method::Patch => ("PATCH", reqwest::Method::PATCH),
            Method::Put => ("PUT", reqwest::Method::PUT),
        };
        let mut req = self.http.request(method, &url).headers(self.headers()?);
        if let Some(b) = &c.body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| ForgeError::Transport {
            url: url.clone(),
            reason: transport_reason(e),
        })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            let body: String = crate::secret::redact(&text).chars().take(300).collect();
            return Err(ForgeError::Status {
                method: name,
                url,
                status: status.as_u16(),
                body,
            });
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| ForgeError::Decode {
            url,
            source: DecodeError(format!("not JSON: {e}")),
        })
    }

    /// The open PR from `branch` into `base`, if any.
    pub async fn find_open(&self, branch: &str, base: &str) -> Result<Option<Found>, ForgeError> {
        self.find(branch, base, api::Listed::Open, |_| true).await
    }

    /// A PR from `branch` into `base` that someone closed without merging while it proposed
    /// exactly `title` and `body` (tagflow's own closes prefix the body with why), if any.
    pub async fn find_declined(
        &self,
        (branch, base): (&str, &str),
        title: &str,
        body: &str,
    ) -> Result<Option<Found>, ForgeError> {
        self.find(branch, base, api::Listed::Closed, |f| {
            f.title == title && f.body == body
        })
        .await
    }

    async fn find(
        &self,
        branch: &str,
        base: &str,
        state: api::Listed,
        keep: impl Fn(&Found) -> bool,
    ) -> Result<Option<Found>, ForgeError> {
        let pages = if self.provider == ForgeProvider::Gitea {
            api::MAX_PAGES
        } else {
            1
        };
        for page in 1..=pages {
            let call = api::list(self.provider, &self.project, (branch, base), state, page);
            let answer = self.call(call).await?;
            let (found, n) = api::parse_list(self.provider, &answer, branch, base);
            if let Some(f) = found.into_iter().find(&keep) {
                return Ok(Some(f));
            }
            if n < api::PAGE {
                break;
            }
        }
        Ok(None)
    }

    /// Open a PR from `branch` into `base`, with the configured labels.
    pub async fn open(
        &self,
        branch: &str,
        base: &str,
        title: &str,
        body: &str,
    ) -> Result<Found, ForgeError> {
        let mut ids = Vec::new();
        if let Some(c) = api::list_labels(self.provider, &self.project)
            && !self.labels.is_empty()
        {
            let (found, missing) = api::label_ids(&self.call(c).await?, &self.labels);
            if !missing.is_empty() {
                tracing::warn!(labels = ?missing, "the forge has no such labels; opening the pull request without them");
            }
            ids = found;
        }
        let c = api::create(
            self.provider,
            &self.project,
            (branch, base),
            (title, body),
            &self.labels,
            &ids,
        );
        let url = c.path.clone();
        let answer = self.call(c).await?;
        let pr = api::created(self.provider, &answer).ok_or_else(|| ForgeError::Decode {
            url,
            source: DecodeError("no number in the created pull request".into()),
        })?;
        if let Some(c) = api::add_labels(self.provider, &self.project, pr.number, &self.labels) {
            self.call(c).await?;
        }
        Ok(pr)
    }

    /// Set PR `number`'s title and body.
    pub async fn update(&self, number: u64, title: &str, body: &str) -> Result<(), ForgeError> {
        self.call(api::update(
            self.provider,
            &self.project,
            number,
            title,
            body,
        ))
        .await
        .map(drop)
    }

    /// Close PR `number`, its body saying why.
    pub async fn close(&self, number: u64, title: &str, body: &str) -> Result<(), ForgeError> {
        self.call(api::close(
            self.provider,
            &self.project,
            number,
            title,
            body,
        ))
        .await
        .map(drop)
    }
}
