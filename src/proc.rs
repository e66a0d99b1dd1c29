//! Finite subprocesses from blocking code: an argument vector (never a shell line), stdin fed
//! from a thread, stdout and stderr captured, and a timeout that kills the whole process group.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// A finished command.
#[derive(Debug)]
pub struct Finished {
    /// Exit status.
    pub status: ExitStatus,
    /// Raw standard output.
    pub stdout: Vec<u8>,
    /// Raw standard error.
    pub stderr: Vec<u8>,
}

impl Finished {
    /// Standard error for a message: redacted, first 300 characters.
    pub fn stderr_text(&self) -> String {
        let text = String::from_utf8_lossy(&self.stderr);
        crate::secret::redact(text.trim())
            .chars()
            .take(300)
            .collect()
    }
}

/// Why a command produced no [`Finished`].
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// It could not be started (not installed, not executable).
    #[error("failed to start {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// It outlived its timeout and was killed.
    #[error("{program} did not finish within {timeout:?}")]
    Timeout {
        /// The program.
        program: String,
        /// The limit.
        timeout: Duration,
    },
    /// Waiting for it failed.
    #[error("failed to wait for {program}: {source}")]
    Wait {
        /// The program.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Run `cmd` with `input` on stdin; kill its process group if it outlives `timeout`.
pub fn run(cmd: &mut Command, input: &[u8], timeout: Duration) -> Result<Finished, ProcError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so a timeout also ends what it started (gpg's agent helpers).
        .process_group(0)
        .spawn()
        .map_err(|source| ProcError::Spawn {
            program: program.clone(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let input = input.to_vec();
        // A thread, so a child that never reads its stdin cannot block the timeout.
        thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let out = reader(child.stdout.take());
    let err = reader(child.stderr.take());
    match wait_timeout(&mut child, timeout) {
        Ok(Some(status)) => Ok(Finished {
            status,
            stdout: out.join().unwrap_or_default(),
            stderr: err.join().unwrap_or_default(),
        }),
        Ok(None) => {
            let pid = rustix::process::Pid::from_child(&child);
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            let _ = child.kill();
            let _ = child.wait();
            Err(ProcError::Timeout { program, timeout })
        }
        Err(source) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(ProcError::Wait { program, source })
        }
    }
}

fn reader<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

/// Poll `child` until it exits (`Some`) or `timeout` passes (`None`).
fn wait_timeout(child: &mut Child, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_reaches_stdin_and_output_comes_back() {
        let done = run(
            Command::new("cat").arg("-"),
            b"hello",
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(done.status.success());
        assert_eq!(done.stdout, b"hello");
    }

    #[test]
    fn a_command_past_its_timeout_is_killed() {
        let started = Instant::now();
        let e = run(
            Command::new("sleep").arg("30"),
            b"",
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(matches!(e, ProcError::Timeout { .. }), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_missing_program_is_a_spawn_error() {
        let e = run(
            &mut Command::new("tagflow-no-such-program"),
            b"",
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(e, ProcError::Spawn { .. }), "{e}");
    }
}
