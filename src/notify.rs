//! Notify stage (IO): Slack incoming-webhook messages, posted by a background worker so a slow
//! or failing Slack never blocks or fails a cycle. Text is scrubbed of secrets before it leaves.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::plan::EnvChange;

/// Messages waiting beyond this are dropped (with a log line) rather than blocking a cycle.
const QUEUE: usize = 256;
/// Attempts per message on 5xx, 429 and connection errors.
const ATTEMPTS: u32 = 5;
/// Longest `Retry-After` honoured.
const MAX_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Outgoing {
    webhook_url: String,
    text: String,
}

/// Handle to the Slack worker.
#[derive(Debug, Clone)]
pub struct Notifier {
    tx: mpsc::Sender<Outgoing>,
}

/// The worker's task; await it after dropping every [`Notifier`] to flush the queue.
#[derive(Debug)]
pub struct Worker(JoinHandle<()>);

impl Worker {
    /// Wait (at most `limit`) for queued messages to be delivered.
    pub async fn flush(self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.0).await;
    }
}

/// Start the worker.
pub fn spawn() -> (Notifier, Worker) {
    let (tx, mut rx) = mpsc::channel::<Outgoing>(QUEUE);
    let handle = tokio::spawn(async move {
        let http = match reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "failed to build the Slack HTTP client; Slack messages are off");
                return;
            }
        };
        while let Some(msg) = rx.recv().await {
            deliver(&http, &msg).await;
        }
    });
    (Notifier { tx }, Worker(handle))
}

async fn deliver(http: &reqwest::Client, msg: &Outgoing) {
    let body = serde_json::json!({ "text": crate::secret::redact(&msg.text) });
    for attempt in 1..=ATTEMPTS {
        let wait = match http.post(&msg.webhook_url).json(&body).send().await {
            Ok(r) if r.status().is_success() => return,
            Ok(r) if r.status().as_u16() == 429 || r.status().is_server_error() => {
                let after = r
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|h| crate::registry::wire::retry_after(h, chrono::Utc::now()));
                tracing::info!(
                    status = r.status().as_u16(),
                    attempt,
                    "Slack is busy; retrying"
                );
                after
                    .unwrap_or(Duration::from_millis(500 * u64::from(attempt)))
                    .min(MAX_WAIT)
            }
            Ok(r) => {
                tracing::warn!(
                    status = r.status().as_u16(),
                    "Slack refused the message; not retrying"
                );
                return;
            }
            Err(e) => {
                // reqwest errors carry the URL, which holds the webhook secret.
                tracing::info!(error = %crate::secret::redact(&e.without_url().to_string()), attempt, "failed to reach Slack; retrying");
                Duration::from_millis(500 * u64::from(attempt))
            }
        };
        tokio::time::sleep(wait).await;
    }
    tracing::warn!("gave up on a Slack message after {ATTEMPTS} attempts");
}

impl Notifier {
    /// Queue a message for the webhook URL; never waits.
    pub fn send(&self, webhook_url: &str, text: String) {
        let out = Outgoing {
            webhook_url: webhook_url.to_owned(),
            text,
        };
        if let Err(e) = self.tx.try_send(out) {
            tracing::warn!(reason = %e, "Slack queue full or closed; message dropped");
        }
    }
}

/// Slack text for a pushed commit (pure).
pub fn commit_text(
    commit: &str,
    branch: &str,
    changes: &[EnvChange],
    link: Option<&str>,
) -> String {
    let head = match link {
        Some(url) => format!("tagflow pushed <{url}|{commit}> to {branch}"),
        None => format!("tagflow pushed {commit} to {branch}"),
    };
    let mut lines = vec![head];
    for c in changes {
        lines.push(format!("• {}", crate::plan::describe(c)));
    }
    lines.join("\n")
}

/// Slack text for a config commit that fails validation (pure).
pub fn bad_config_text(commit: &str, problems: &str, running: Option<&str>) -> String {
    let keeping = match running {
        Some(c) => format!("still running the last good config (from {c})"),
        None => "no good config yet: tagflow is idle".to_owned(),
    };
    format!(
        "tagflow: the config at {commit} is invalid; {keeping}. Fix it with a new commit.\n```\n{problems}\n```"
    )
}
