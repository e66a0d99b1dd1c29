//! Docker credential helpers (IO): `docker-credential-<name> get`, the server URL on stdin,
//! a JSON answer on stdout. Run with an argument vector and a timeout, never through a shell;
//! what they print is redacted before it reaches an error message.

use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a helper may take (ECR's helper calls AWS; a hung one must not hang the cycle).
pub const HELPER_TIMEOUT: Duration = Duration::from_secs(20);
/// Most bytes read from a helper's stdout or stderr.
const MAX_OUTPUT: u64 = 64 * 1024;

/// A credential helper failure.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    /// The helper binary is not on PATH.
    #[error("credential helper docker-credential-{name} is not on PATH ({origin})")]
    Missing {
        /// Helper name.
        name: String,
        /// Where the config names it (`credHelpers.<host>` in FILE).
        origin: String,
    },
    /// The helper could not be started or talked to.
    #[error("failed to run credential helper docker-credential-{name}: {source}")]
    Io {
        /// Helper name.
        name: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Ran past [`HELPER_TIMEOUT`] and was killed.
    #[error("credential helper docker-credential-{name} did not answer within {secs}s")]
    Timeout {
        /// Helper name.
        name: String,
        /// Timeout in seconds.
        secs: u64,
    },
    /// Exited non-zero (its message is redacted).
    #[error("credential helper docker-credential-{name} failed for {server}: {message}")]
    Failed {
        /// Helper name.
        name: String,
        /// Server URL asked for.
        server: String,
        /// What it printed.
        message: String,
    },
    /// Printed something that is not the helper protocol's JSON.
    #[error("credential helper docker-credential-{name} sent a bad answer: {source}")]
    BadAnswer {
        /// Helper name.
        name: String,
        /// Parse error.
        #[source]
        source: serde_json::Error,
    },
}

impl HelperError {
    /// A helper that timed out or could not be started may work next time.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::Io { .. })
    }
}

/// A helper's answer to `get`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HelperAnswer {
    /// `<token>` means `secret` is an identity (refresh) token.
    #[serde(rename = "Username")]
    pub username: String,
    /// Password, token or refresh token.
    #[serde(rename = "Secret")]
    pub secret: String,
}

/// Ask `docker-credential-<name>` for `server`'s credentials. `Ok(None)`: it has none.
pub async fn get(
    name: &str,
    origin: &str,
    server: &str,
    timeout: Duration,
) -> Result<Option<HelperAnswer>, HelperError> {
    let program = format!("docker-credential-{name}");
    let io = |source| HelperError::Io {
        name: name.to_owned(),
        source,
    };
    let mut child = match tokio::process::Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(HelperError::Missing {
                name: name.to_owned(),
                origin: origin.to_owned(),
            });
        }
        Err(e) => return Err(io(e)),
    };
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| io(std::io::Error::other("no stdin")))?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| io(std::io::Error::other("no stdout")))?;
    let mut stderr = child
        .stderr
        .take()
        .ok_or_else(|| io(std::io::Error::other("no stderr")))?;
    let talk = async {
        stdin.write_all(server.as_bytes()).await?;
        drop(stdin);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut o = (&mut stdout).take(MAX_OUTPUT);
        let mut e = (&mut stderr).take(MAX_OUTPUT);
        tokio::try_join!(o.read_to_end(&mut out), e.read_to_end(&mut err))?;
        let status = child.wait().await?;
        Ok::<_, std::io::Error>((status, out, err))
    };
    let (status, out, err) = match tokio::time::timeout(timeout, talk).await {
        Ok(r) => r.map_err(io)?,
        // Dropping the future drops the child: kill_on_drop ends it.
        Err(_) => {
            return Err(HelperError::Timeout {
                name: name.to_owned(),
                secs: timeout.as_secs(),
            });
        }
    };
    if !status.success() {
        let text = String::from_utf8_lossy(if out.is_empty() { &err } else { &out });
        let text = text.trim();
        // docker's helpers print this exact message when they hold nothing for the server.
        if text.contains("credentials not found") {
            return Ok(None);
        }
        return Err(HelperError::Failed {
            name: name.to_owned(),
            server: server.to_owned(),
            message: crate::secret::redact(&text.chars().take(300).collect::<String>()),
        });
    }
    let answer: HelperAnswer =
        serde_json::from_slice(&out).map_err(|source| HelperError::BadAnswer {
            name: name.to_owned(),
            source,
        })?;
    crate::secret::register(&answer.secret);
    Ok(Some(answer))
}
