//! Notify stage (IO): Slack incoming-webhook messages, posted by a background worker so a slow
//! or failing Slack never blocks or fails a cycle. Text is scrubbed of secrets before it leaves.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Messages waiting beyond this are dropped (with a log line) rather than blocking a cycle.
const QUEUE: usize = 256;
/// Attempts per message on 5xx, 429 and connection errors.
const ATTEMPTS: u32 = 5;
/// Longest `Retry-After` honoured.
const MAX_WAIT: Duration = Duration::from_secs(30);

enum Outgoing {
    /// A flat message to an incoming webhook; `ack` hears whether it was delivered.
    Webhook {
        webhook_url: String,
        text: String,
        ack: Option<Ack>,
    },
    /// A flat message through the Web API.
    Flat {
        bot: Bot,
        text: String,
        ack: Option<Ack>,
    },
    /// A reply in the thread of `key` (started with `status` if new), then the parent's status
    /// line updated to `status`.
    Thread {
        bot: Bot,
        key: String,
        status: String,
        text: String,
    },
}

/// What became of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Slack took it.
    Delivered,
    /// Slack refused it (4xx, `ok: false`): sending it again would not help.
    Refused,
    /// Slack could not be reached or stayed busy through every attempt: worth another try.
    GaveUp,
}

/// Told what became of a message, by the worker, before it takes the next one (so a flush
/// of the worker also waits for what the callback records).
pub type Ack = Box<dyn FnOnce(Delivery) + Send>;

fn acknowledge(ack: Option<Ack>, sent: &Sent) {
    if let Some(a) = ack {
        a(match sent {
            Ok(_) => Delivery::Delivered,
            Err(d) => *d,
        });
    }
}

/// The Web API's answer (`Null` for webhooks), or why there is none.
type Sent = Result<serde_json::Value, Delivery>;

/// Where and as whom the Web API is called.
#[derive(Debug, Clone)]
pub struct Bot {
    /// Web API base, ending in `/`.
    pub api_url: String,
    /// Bot token.
    pub token: String,
    /// Channel name or id.
    pub channel: String,
}

/// Thread parents by key: `channel-id ts`.
type Threads = std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, String>>>;

/// Handle to the Slack worker.
#[derive(Debug, Clone)]
pub struct Notifier {
    tx: mpsc::Sender<Outgoing>,
    threads: Threads,
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
    let threads = Threads::default();
    let worker_threads = threads.clone();
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
            match msg {
                Outgoing::Webhook {
                    webhook_url,
                    text,
                    ack,
                } => {
                    let body = serde_json::json!({ "text": crate::secret::redact(&text) });
                    let sent = deliver(&http, &webhook_url, None, &body).await;
                    acknowledge(ack, &sent);
                }
                Outgoing::Flat { bot, text, ack } => {
                    let body = serde_json::json!({"channel": bot.channel, "text": crate::secret::redact(&text)});
                    let sent = deliver(
                        &http,
                        &format!("{}chat.postMessage", bot.api_url),
                        Some(&bot.token),
                        &body,
                    )
                    .await;
                    acknowledge(ack, &sent);
                }
                Outgoing::Thread {
                    bot,
                    key,
                    status,
                    text,
                } => thread_reply(&http, &worker_threads, &bot, &key, &status, &text).await,
            }
        }
    });
    (Notifier { tx, threads }, Worker(handle))
}

fn lock_threads(
    t: &Threads,
) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, String>> {
    t.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn thread_reply(
    http: &reqwest::Client,
    threads: &Threads,
    bot: &Bot,
    key: &str,
    status: &str,
    text: &str,
) {
    let post = format!("{}chat.postMessage", bot.api_url);
    let known = lock_threads(threads).get(key).cloned();
    let parent = match known.as_deref().and_then(|v| v.split_once(' ')) {
        Some((channel, ts)) => Some((channel.to_owned(), ts.to_owned())),
        None => {
            let body =
                serde_json::json!({"channel": bot.channel, "text": crate::secret::redact(status)});
            let answer = deliver(http, &post, Some(&bot.token), &body).await.ok();
            let parent = answer.and_then(|a| {
                Some((
                    a.get("channel")?.as_str()?.to_owned(),
                    a.get("ts")?.as_str()?.to_owned(),
                ))
            });
            if let Some((c, ts)) = &parent {
                lock_threads(threads).insert(key.to_owned(), format!("{c} {ts}"));
            }
            parent
        }
    };
    let Some((channel, ts)) = parent else {
        // No thread could be started: the step still gets said, flat.
        let body = serde_json::json!({"channel": bot.channel, "text": crate::secret::redact(&format!("{status}\n{text}"))});
        let _ = deliver(http, &post, Some(&bot.token), &body).await;
        return;
    };
    let reply = serde_json::json!({"channel": channel, "thread_ts": ts, "text": crate::secret::redact(text)});
    let _ = deliver(http, &post, Some(&bot.token), &reply).await;
    let update =
        serde_json::json!({"channel": channel, "ts": ts, "text": crate::secret::redact(status)});
    let _ = deliver(
        http,
        &format!("{}chat.update", bot.api_url),
        Some(&bot.token),
        &update,
    )
    .await;
}

/// POST `body`; retries 5xx, 429 (`Retry-After`) and Web API `ratelimited`; returns the Web API
/// answer when it says `ok: true` (webhooks answer plain text: `Null`).
async fn deliver(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: &serde_json::Value,
) -> Sent {
    for attempt in 1..=ATTEMPTS {
        let mut req = http.post(url).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let wait = match req.send().await {
            Ok(r) if r.status().is_success() => {
                if token.is_none() {
                    return Ok(serde_json::Value::Null);
                }
                let retry_after = retry_after(&r);
                let answer: serde_json::Value = r.json().await.unwrap_or_default();
                if answer.get("ok").and_then(serde_json::Value::as_bool) == Some(true) {
                    return Ok(answer);
                }
                let error = answer
                    .get("error")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("no ok in the answer");
                if error != "ratelimited" {
                    tracing::warn!(error, "Slack refused the message (ok: false); not retrying");
                    return Err(Delivery::Refused);
                }
                retry_after.unwrap_or(Duration::from_millis(500 * u64::from(attempt)))
            }
            Ok(r) if r.status().as_u16() == 429 || r.status().is_server_error() => {
                tracing::info!(
                    status = r.status().as_u16(),
                    attempt,
                    "Slack is busy; retrying"
                );
                retry_after(&r).unwrap_or(Duration::from_millis(500 * u64::from(attempt)))
            }
            Ok(r) => {
                tracing::warn!(
                    status = r.status().as_u16(),
                    "Slack refused the message; not retrying"
                );
                return Err(Delivery::Refused);
            }
            Err(e) => {
                // reqwest errors carry the URL, which holds the webhook secret.
                tracing::info!(error = %crate::secret::redacted_chain(&e.without_url()), attempt, "failed to reach Slack; retrying");
                Duration::from_millis(500 * u64::from(attempt))
            }
        };
        tokio::time::sleep(wait.min(MAX_WAIT)).await;
    }
    tracing::warn!("gave up on a Slack message after {ATTEMPTS} attempts");
    Err(Delivery::GaveUp)
}

fn retry_after(r: &reqwest::Response) -> Option<Duration> {
    r.headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| crate::registry::wire::retry_after(h, chrono::Utc::now()))
}

impl Notifier {
    /// Queue a message for the webhook URL; never waits.
    pub fn send(&self, webhook_url: &str, text: String, ack: Option<Ack>) {
        self.queue(Outgoing::Webhook {
            webhook_url: webhook_url.to_owned(),
            text,
            ack,
        });
    }

    /// Queue a flat message through the Web API; never waits.
    pub fn flat(&self, bot: Bot, text: String, ack: Option<Ack>) {
        self.queue(Outgoing::Flat { bot, text, ack });
    }

    /// Queue a reply in the thread of `key` and a status-line update of its parent; never waits.
    pub fn thread(&self, bot: Bot, key: &str, status: String, text: String) {
        self.queue(Outgoing::Thread {
            bot,
            key: key.to_owned(),
            status,
            text,
        });
    }

    fn queue(&self, out: Outgoing) {
        if let Err(e) = self.tx.try_send(out) {
            tracing::warn!(reason = %e, "Slack queue full or closed; message dropped");
            if let Outgoing::Webhook { ack, .. } | Outgoing::Flat { ack, .. } = e.into_inner() {
                acknowledge(ack, &Err(Delivery::GaveUp));
            }
        }
    }

    /// Known thread parents (`key` → `channel ts`), to store with the rollout state.
    pub fn threads(&self) -> std::collections::BTreeMap<String, String> {
        lock_threads(&self.threads).clone()
    }

    /// Seed thread parents from stored state (a new leader continues the same threads).
    pub fn seed_threads(&self, known: &std::collections::BTreeMap<String, String>) {
        let mut t = lock_threads(&self.threads);
        for (k, v) in known {
            t.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
}

/// The Slack bot, when a token and a channel are configured and the token can be read.
pub fn bot_of(slack: &crate::config::SlackConfig) -> Option<Bot> {
    let (Some(token), Some(channel)) = (&slack.bot_token, &slack.channel) else {
        return None;
    };
    match token.read() {
        Ok(token) => Some(Bot {
            api_url: slack.api_url.clone(),
            token,
            channel: channel.clone(),
        }),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the Slack bot token");
            None
        }
    }
}

/// Posts with the Slack settings of the config in force (or nowhere: `plan`, `drift`).
#[derive(Debug, Clone)]
pub struct Poster {
    notifier: Option<Notifier>,
    current: std::sync::Arc<crate::config::Current>,
}

impl Poster {
    /// Posting through `notifier` (none: say nothing) with the Slack settings in `current`.
    pub fn new(
        notifier: Option<Notifier>,
        current: std::sync::Arc<crate::config::Current>,
    ) -> Self {
        Self { notifier, current }
    }

    /// A flat message: the incoming webhook when configured, else the bot in its channel.
    pub fn post(&self, text: &str) {
        let _ = self.post_acked(text, Box::new(|_| {}));
    }

    /// [`Self::post`], and hear what became of it: `false` when there is nowhere to post (no
    /// Slack configured: nothing is owed, `done` is not called), else `done` is called once,
    /// by the worker (with [`Delivery::GaveUp`] when the message never left).
    pub fn post_acked(&self, text: &str, done: Ack) -> bool {
        let (Some(n), Some(cfg)) = (&self.notifier, self.current.config()) else {
            return false;
        };
        let Some(slack) = &cfg.notify.slack else {
            return false;
        };
        let Some(webhook) = &slack.webhook_url else {
            match bot_of(slack) {
                Some(bot) => n.flat(bot, text.to_owned(), Some(done)),
                None => done(Delivery::GaveUp),
            }
            return true;
        };
        match webhook.read() {
            Ok(url) => n.send(&url, text.to_owned(), Some(done)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot post to Slack");
                done(Delivery::GaveUp);
            }
        }
        true
    }

    /// A reply in the thread of `key` with the parent's status line set to `status` when a bot
    /// is configured; else `flat` as a flat message.
    pub fn thread(&self, key: &str, status: String, text: &str, flat: &str) {
        let (Some(n), Some(cfg)) = (&self.notifier, self.current.config()) else {
            return;
        };
        let Some(slack) = &cfg.notify.slack else {
            return;
        };
        match bot_of(slack) {
            Some(bot) => n.thread(bot, key, status, text.to_owned()),
            None => self.post(flat),
        }
    }

    /// Known thread parents, to store with the rollout state.
    pub fn threads(&self) -> std::collections::BTreeMap<String, String> {
        self.notifier
            .as_ref()
            .map(Notifier::threads)
            .unwrap_or_default()
    }

    /// Continue the threads a previous leader started.
    pub fn seed_threads(&self, known: &std::collections::BTreeMap<String, String>) {
        if let Some(n) = &self.notifier {
            n.seed_threads(known);
        }
    }
}

/// Changes listed in a Slack message; the rest are counted.
pub const SLACK_LISTED: usize = 30;

/// Slack text for a pushed commit, from its message: the change lines between the subject and
/// the trailers, without their file:line (pure).
pub fn commit_text_of(commit: &str, branch: &str, message: &str, link: Option<&str>) -> String {
    let head = match link {
        Some(url) => format!("tagflow pushed <{url}|{commit}> to {branch}"),
        None => format!("tagflow pushed {commit} to {branch}"),
    };
    let mut lines = vec![head];
    let body = message.split("\n\n").nth(1).unwrap_or_default();
    for (n, line) in body.lines().enumerate() {
        if n == SLACK_LISTED {
            lines.push(format!("• … and {} more lines", body.lines().count() - n));
            break;
        }
        let shown = match line.rsplit_once(" (") {
            Some((change, place)) if !line.starts_with("… and ") && place.ends_with(')') => {
                change
            }
            _ => line,
        };
        lines.push(format!("• {shown}"));
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

/// A browser link to a commit on well-known forges (GitHub, GitLab, Bitbucket); pure.
pub fn commit_link(repo_url: &str, commit: &str) -> Option<String> {
    let u = url::Url::parse(repo_url).ok()?;
    let host = u.host_str()?;
    let path = u
        .path()
        .trim_start_matches('/')
        .trim_end_matches('/')
        .trim_end_matches(".git");
    match host {
        "github.com" | "gitlab.com" => Some(format!("https://{host}/{path}/commit/{commit}")),
        "bitbucket.org" => Some(format!("https://{host}/{path}/commits/{commit}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_announcement_is_read_from_the_commit_message() {
        let message = "tagflow: dev app → 0f1e2d3\n\ndev app tag: a1b2c3d → 0f1e2d3 (envs/dev/patch.yaml:3)\n… and 2 more changes (prod: 2)\n\nTagflow-Set: dev app r/app:0f1e2d3 sha256:ab\n";
        assert_eq!(
            commit_text_of("abc1234", "main", message, Some("https://x/c")),
            "tagflow pushed <https://x/c|abc1234> to main\n• dev app tag: a1b2c3d → 0f1e2d3\n• … and 2 more changes (prod: 2)"
        );
        // A huge commit still fits in one Slack message (Slack refuses over 40,000 characters).
        let body: String = (0..200)
            .map(|i| format!("dev image-{i:05} tag: a1b2c3d → 0f1e2d3 (envs/dev/patch.yaml:{i})\n"))
            .collect();
        let text = commit_text_of(
            "abc1234",
            "main",
            &format!("s\n\n{body}\nTagflow-Set: x\n"),
            None,
        );
        assert!(text.chars().count() < 40_000);
        assert!(text.ends_with("• … and 170 more lines"), "{text}");
    }

    #[test]
    fn links_only_for_known_forges() {
        assert_eq!(
            commit_link("ssh://git@github.com/org/config.git", "abc").as_deref(),
            Some("https://github.com/org/config/commit/abc")
        );
        assert_eq!(
            commit_link("http://127.0.0.1:8080/git/config.git", "abc"),
            None
        );
    }
}
