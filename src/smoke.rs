//! The HTTP smoke check (the "curl check") an environment passes after its release is Ready:
//! one GET, its status and a bounded read of its body judged by a pure verdict.

use std::time::Duration;

use crate::config::SmokeConfig;

/// At most this much of an answer's body is read: enough for a version page, never a download.
pub const BODY_LIMIT: usize = 64 * 1024;
/// Redirects followed at most (a smoke URL may sit behind a login or a trailing-slash redirect).
pub const MAX_REDIRECTS: usize = 3;

/// A smoke check that did not pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmokeError {
    /// No answer: refused, reset, timed out, too many redirects.
    #[error("GET {url}: {reason}")]
    Request {
        /// The URL checked (no credentials: smoke URLs carry none).
        url: String,
        /// Why.
        reason: String,
    },
    /// Another status than expected.
    #[error("GET {url}: status {got}, expected {want}")]
    Status {
        /// The URL checked.
        url: String,
        /// The status answered.
        got: u16,
        /// The status expected.
        want: u16,
    },
    /// The body lacks the expected text.
    #[error("GET {url}: body does not contain {want:?} (got {shown:?})")]
    Body {
        /// The URL checked.
        url: String,
        /// The text expected.
        want: String,
        /// The start of what came.
        shown: String,
    },
}

/// Runs smoke checks with one client (keep-alive, a redirect limit).
#[derive(Debug, Clone)]
pub struct SmokeChecker {
    http: reqwest::Client,
}

impl Default for SmokeChecker {
    fn default() -> Self {
        Self::new()
    }
}

impl SmokeChecker {
    /// A checker following at most [`MAX_REDIRECTS`] redirects.
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self { http }
    }

    /// One check of `tag`: GET the URL (`{tag}` filled in) within the check's timeout.
    pub async fn check(&self, s: &SmokeConfig, tag: &str) -> Result<(), SmokeError> {
        let url = s.url.replace("{tag}", tag);
        let failed = |e: reqwest::Error| SmokeError::Request {
            url: url.clone(),
            reason: crate::secret::redacted_chain(&e.without_url()),
        };
        let answer = async {
            let mut resp = self.http.get(&url).send().await.map_err(failed)?;
            let status = resp.status().as_u16();
            let mut body = Vec::new();
            while body.len() < BODY_LIMIT {
                match resp.chunk().await.map_err(failed)? {
                    Some(c) => body.extend_from_slice(&c),
                    None => break,
                }
            }
            body.truncate(BODY_LIMIT);
            Ok::<_, SmokeError>((status, body))
        };
        let (status, body) = tokio::time::timeout(s.timeout, answer)
            .await
            .map_err(|_| SmokeError::Request {
                url: url.clone(),
                reason: format!("no answer within {}", humantime::format_duration(s.timeout)),
            })??;
        verdict(s, tag, &url, status, &String::from_utf8_lossy(&body))
    }
}

/// Whether a smoke answer passes (pure).
pub fn verdict(
    s: &SmokeConfig,
    tag: &str,
    url: &str,
    status: u16,
    body: &str,
) -> Result<(), SmokeError> {
    if status != s.expect.status {
        return Err(SmokeError::Status {
            url: url.to_owned(),
            got: status,
            want: s.expect.status,
        });
    }
    if let Some(want) = &s.expect.body_contains {
        let want = want.replace("{tag}", tag);
        if !body.contains(&want) {
            return Err(SmokeError::Body {
                url: url.to_owned(),
                want,
                shown: body.chars().take(120).collect(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SmokeConfig {
        serde_yaml::from_str(
            "{url: 'http://x/v', expect: {status: 200, bodyContains: 'version={tag}'}}",
        )
        .expect("smoke")
    }

    #[test]
    fn verdicts() {
        let s = config();
        assert_eq!(
            verdict(&s, "0f1e2d3", "u", 200, "app version=0f1e2d3\n"),
            Ok(())
        );
        assert_eq!(
            verdict(&s, "0f1e2d3", "u", 503, "").map_err(|e| e.to_string()),
            Err("GET u: status 503, expected 200".into())
        );
        assert!(matches!(
            verdict(&s, "0f1e2d3", "u", 200, "version=a1b2c3d"),
            Err(SmokeError::Body { .. })
        ));
    }

    #[tokio::test]
    async fn a_huge_body_is_read_only_up_to_the_limit_and_redirects_are_bounded() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = sock.read(&mut buf).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if req.starts_with("GET /loop") {
                        let _ = sock
                            .write_all(b"HTTP/1.1 302 Found\r\nLocation: /loop\r\nContent-Length: 0\r\n\r\n")
                            .await;
                        return;
                    }
                    // 64 MiB announced; the version string comes first.
                    let head =
                        "HTTP/1.1 200 OK\r\nContent-Length: 67108864\r\n\r\nversion=0f1e2d3 ";
                    if sock.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let chunk = vec![b'x'; 65536];
                    for _ in 0..1024 {
                        if sock.write_all(&chunk).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let checker = SmokeChecker::new();
        let mut s = config();
        s.url = format!("http://{addr}/big");
        assert_eq!(checker.check(&s, "0f1e2d3").await, Ok(()));
        s.url = format!("http://{addr}/loop");
        let e = checker
            .check(&s, "0f1e2d3")
            .await
            .expect_err("redirect loop");
        assert!(matches!(e, SmokeError::Request { .. }), "{e}");
    }
}
