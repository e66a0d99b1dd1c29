//! Terraform as a subprocess (IO): an argument vector (never a shell), a deadline after which the
//! whole process group is killed, stdout/stderr captured and redacted before anyone sees them.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::time::Instant;

/// Grace between SIGTERM (terraform releases its state lock) and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// Most bytes kept of one stream (a plan's JSON can be large; logs are cut to a tail anyway).
const MAX_OUTPUT: u64 = 256 * 1024 * 1024;
/// Lines of stderr quoted in an error.
const TAIL_LINES: usize = 15;

/// A terraform command that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum TerraformError {
    /// The binary could not be started.
    #[error("failed to start {bin}: {source}")]
    Spawn {
        /// The binary.
        bin: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The run's deadline passed; the process group was killed.
    #[error("terraform {command} timed out (run timeout {timeout:?}); killed its process group")]
    Timeout {
        /// The subcommand (`init`, `plan`, …).
        command: String,
        /// The workspace's timeout.
        timeout: Duration,
    },
    /// Exited with an unexpected status.
    #[error("terraform {command} failed ({status}):\n{stderr}")]
    Failed {
        /// The subcommand.
        command: String,
        /// `exit 1` or `signal 9`.
        status: String,
        /// Last lines of stderr (or stdout), redacted.
        stderr: String,
    },
    /// Waiting for or reading from the process failed.
    #[error("failed to run terraform {command}: {source}")]
    Io {
        /// The subcommand.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl TerraformError {
    /// Which step failed, for metrics (`init`, `plan`, `timeout`, …).
    pub fn stage(&self) -> &str {
        match self {
            Self::Spawn { .. } => "spawn",
            Self::Timeout { .. } => "timeout",
            Self::Failed { command, .. } | Self::Io { command, .. } => command,
        }
    }
}

/// A finished command.
#[derive(Debug)]
pub struct Output {
    /// Exit code.
    pub code: i32,
    /// Standard output, redacted.
    pub stdout: String,
    /// Raw standard output (e.g. `show -json`); never log it.
    pub raw_stdout: Vec<u8>,
    /// Standard error, redacted.
    pub stderr: String,
}

/// How to run terraform for one workspace.
#[derive(Debug, Clone)]
pub struct Terraform {
    /// Binary path or name on PATH.
    pub bin: String,
    /// Working directory (the workspace's code).
    pub dir: PathBuf,
    /// Extra environment (secrets already read and registered for redaction).
    pub env: Vec<(String, String)>,
    /// The run's deadline.
    pub deadline: Instant,
    /// The workspace's timeout, for messages.
    pub timeout: Duration,
}

impl Terraform {
    /// Run `terraform ARGS`; `ok` lists the exit codes that count as success.
    pub async fn run(&self, args: &[&str], ok: &[i32]) -> Result<Output, TerraformError> {
        let command = args.first().copied().unwrap_or("").to_owned();
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.args(args)
            .current_dir(&self.dir)
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env("CHECKPOINT_DISABLE", "1")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout kills terraform's providers and children too.
            .process_group(0)
            .kill_on_drop(true);
        let started = std::time::Instant::now();
        let mut child = cmd.spawn().map_err(|source| TerraformError::Spawn {
            bin: self.bin.clone(),
            source,
        })?;
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .and_then(rustix::process::Pid::from_raw);
        let out = read_all(child.stdout.take());
        let err = read_all(child.stderr.take());
        let status = match tokio::time::timeout_at(self.deadline, child.wait()).await {
            Ok(s) => s.map_err(|source| TerraformError::Io {
                command: command.clone(),
                source,
            })?,
            Err(_) => {
                if let Some(pid) = pid {
                    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::TERM);
                    if tokio::time::timeout(KILL_GRACE, child.wait())
                        .await
                        .is_err()
                    {
                        tracing::warn!(command = %command, "terraform ignored SIGTERM; sending SIGKILL");
                    }
                    // Whatever is left of the group (the leader may have exited first).
                    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                }
                let _ = child.kill().await;
                let _ = child.wait().await;
                // Pipes close once the group is dead; don't wait for a grandchild that escaped.
                let _ = tokio::time::timeout(KILL_GRACE, out).await;
                let _ = tokio::time::timeout(KILL_GRACE, err).await;
                return Err(TerraformError::Timeout {
                    command,
                    timeout: self.timeout,
                });
            }
        };
        let raw_stdout = tokio::time::timeout(KILL_GRACE, out)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let raw_stderr = tokio::time::timeout(KILL_GRACE, err)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let stdout = crate::secret::redact(&String::from_utf8_lossy(&raw_stdout));
        let stderr = crate::secret::redact(&String::from_utf8_lossy(&raw_stderr));
        let code = status.code();
        tracing::debug!(command = %command, code = ?code, elapsed_ms = started.elapsed().as_millis() as u64, "terraform finished");
        match code {
            Some(c) if ok.contains(&c) => Ok(Output {
                code: c,
                stdout,
                raw_stdout,
                stderr,
            }),
            _ => {
                let status = match (code, status.signal()) {
                    (Some(c), _) => format!("exit {c}"),
                    (None, Some(s)) => format!("signal {s}"),
                    _ => "unknown status".to_owned(),
                };
                let text = if stderr.trim().is_empty() {
                    &stdout
                } else {
                    &stderr
                };
                Err(TerraformError::Failed {
                    command,
                    status,
                    stderr: tail(text, TAIL_LINES),
                })
            }
        }
    }
}

fn read_all<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    pipe: Option<R>,
) -> tokio::task::JoinHandle<Vec<u8>> {
    tokio::spawn(async move {
        let mut buf = Vec::new();
        if let Some(p) = pipe {
            let _ = p.take(MAX_OUTPUT).read_to_end(&mut buf).await;
        }
        buf
    })
}

/// The last `n` non-empty lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tf(script: &str, timeout: Duration) -> (Terraform, tempfile::TempDir) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("terraform");
        std::fs::write(&bin, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        (
            Terraform {
                bin: bin.display().to_string(),
                dir: dir.path().to_owned(),
                env: vec![("SECRET_FOR_TEST".into(), "hunter2-hunter2".into())],
                deadline: Instant::now() + timeout,
                timeout,
            },
            dir,
        )
    }

    #[tokio::test]
    async fn captures_and_redacts_output() {
        crate::secret::register("hunter2-hunter2");
        let (t, _d) = tf(
            "echo \"out $1 $SECRET_FOR_TEST $TF_IN_AUTOMATION\"; echo \"err $SECRET_FOR_TEST\" >&2; exit 2",
            Duration::from_secs(30),
        );
        let o = t.run(&["plan", "-x"], &[0, 2]).await.unwrap();
        assert_eq!(o.code, 2);
        assert_eq!(o.stdout.trim(), "out plan *** 1");
        assert_eq!(o.stderr.trim(), "err ***");
        let e = t.run(&["init"], &[0]).await.unwrap_err().to_string();
        assert!(
            e.contains("terraform init failed (exit 2)") && e.contains("err ***"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[tokio::test]
    async fn a_hanging_process_group_is_killed_at_the_deadline() {
        let (t, d) = tf(
            "sleep 600 & echo $! > sleeper.pid; wait",
            Duration::from_millis(500),
        );
        let e = t.run(&["plan"], &[0]).await.unwrap_err();
        assert!(matches!(e, TerraformError::Timeout { .. }), "{e}");
        let pid = std::fs::read_to_string(d.path().join("sleeper.pid")).unwrap();
        // SIGKILL lands asynchronously: give the kernel a moment to take the process down.
        // Gone, or a zombie waiting for init to reap it: either way, not running. A grandchild
        // that was never signalled sleeps for 600 s and fails this.
        let dead = |s: &std::io::Result<String>| {
            s.as_deref()
                .map_or(true, |s| s.contains(") Z ") || s.contains(") X "))
        };
        let mut stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()));
        for _ in 0..250 {
            if dead(&stat) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()));
        }
        assert!(dead(&stat), "the grandchild survived: {stat:?}");
    }

    #[tokio::test]
    async fn a_missing_binary_is_a_clear_error() {
        let (mut t, _d) = tf("", Duration::from_secs(5));
        t.bin = "/nonexistent/terraform".into();
        let e = t.run(&["init"], &[0]).await.unwrap_err().to_string();
        assert!(
            e.starts_with("failed to start /nonexistent/terraform"),
            "{e}"
        );
    }
}
