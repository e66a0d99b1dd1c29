//! A capture server standing in for Slack's incoming webhook and Web API.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::http::{Request, Response, Scripted, parse_form};

/// One request Slack would have received.
#[derive(Debug, Clone)]
pub struct CapturedRequest {
    /// Method, e.g. "POST".
    pub method: String,
    /// Path, e.g. "/hook" or "/api/chat.postMessage".
    pub path: String,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Body: parsed JSON, a form body as an object of strings, or the raw text as a string.
    pub body: Value,
    /// Raw body text.
    pub raw: String,
    /// Status the capture server answered with.
    pub status: u16,
}

impl CapturedRequest {
    /// First header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the capture server answered 2xx (the message counts as delivered).
    pub fn delivered(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[derive(Default)]
struct State {
    failures: Mutex<VecDeque<(u16, Option<u64>)>>,
    captured: Mutex<Vec<CapturedRequest>>,
    ts: AtomicU64,
}

/// In-process Slack stand-in: webhook at `/hook`, Web API under `/api/` (chat.postMessage, chat.update).
pub struct SlackCapture {
    /// Incoming-webhook URL: "http://127.0.0.1:PORT/hook".
    pub url: String,
    /// Web API base: "http://127.0.0.1:PORT/api/" (append "chat.postMessage").
    pub api_url: String,
    state: Arc<State>,
    _server: Scripted,
}

impl SlackCapture {
    /// Start on a free port.
    pub fn start() -> SlackCapture {
        let state = Arc::new(State::default());
        let handler_state = state.clone();
        let server = Scripted::start(move |req| answer(&handler_state, req));
        SlackCapture {
            url: server.url("/hook"),
            api_url: server.url("/api/"),
            state,
            _server: server,
        }
    }

    /// Answer the next requests with these statuses (and `Retry-After` seconds), in order.
    pub fn fail_next(&self, statuses: &[(u16, Option<u64>)]) {
        self.state
            .failures
            .lock()
            .unwrap()
            .extend(statuses.iter().copied());
    }

    /// Every request received so far (failed ones included; see [`CapturedRequest::delivered`]).
    pub fn messages(&self) -> Vec<CapturedRequest> {
        self.state.captured.lock().unwrap().clone()
    }

    /// The `text` of every request received so far, in order.
    pub fn texts(&self) -> Vec<String> {
        self.messages()
            .iter()
            .map(|m| m.body["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Requests answered 2xx so far.
    pub fn delivered(&self) -> Vec<CapturedRequest> {
        self.messages()
            .into_iter()
            .filter(|m| m.delivered())
            .collect()
    }

    /// Wait until at least `n` requests (any status) arrived or `timeout`; returns all so far.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<CapturedRequest> {
        let deadline = Instant::now() + timeout;
        loop {
            let msgs = self.messages();
            if msgs.len() >= n || Instant::now() >= deadline {
                return msgs;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn answer(state: &State, req: &Request) -> Response {
    let failure = state.failures.lock().unwrap().pop_front();
    let is_api = req.path.starts_with("/api/");
    let (status, resp) = match failure {
        Some((status, retry_after)) => {
            let mut resp = if is_api {
                let error = if status == 429 {
                    "ratelimited"
                } else {
                    "internal_error"
                };
                Response::json(status, &json!({"ok": false, "error": error}))
            } else {
                Response::text(
                    status,
                    if status == 429 {
                        "rate_limited"
                    } else {
                        "error"
                    },
                )
            };
            if let Some(secs) = retry_after {
                resp = resp.header("Retry-After", &secs.to_string());
            }
            (status, resp)
        }
        None => (200, success(state, req, is_api)),
    };
    let raw = req.body_text();
    let content_type = req
        .header("Content-Type")
        .unwrap_or("")
        .to_ascii_lowercase();
    let body = if content_type.contains("application/x-www-form-urlencoded") {
        Value::Object(
            parse_form(&raw)
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        )
    } else {
        serde_json::from_str(&raw).unwrap_or_else(|_| Value::String(raw.clone()))
    };
    state.captured.lock().unwrap().push(CapturedRequest {
        method: req.method.clone(),
        path: req.path.clone(),
        headers: req
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect(),
        body,
        raw,
        status,
    });
    resp
}

fn success(state: &State, req: &Request, is_api: bool) -> Response {
    if !is_api {
        return Response::text(200, "ok");
    }
    let n = state.ts.fetch_add(1, Ordering::SeqCst) + 1;
    let mut ts = format!("1700000000.{n:06}");
    if req.path.ends_with("/chat.update") {
        // chat.update keeps the message's ts.
        let raw = req.body_text();
        let sent_ts = serde_json::from_str::<Value>(&raw)
            .ok()
            .and_then(|v| v.get("ts").and_then(|t| t.as_str()).map(str::to_string))
            .or_else(|| {
                parse_form(&raw)
                    .into_iter()
                    .find(|(k, _)| k == "ts")
                    .map(|(_, v)| v)
            });
        if let Some(sent) = sent_ts {
            ts = sent;
        }
    }
    Response::json(200, &json!({"ok": true, "ts": ts, "channel": "C1"}))
}
