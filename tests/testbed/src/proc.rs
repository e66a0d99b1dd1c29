//! Subprocess helpers: binary lookup, [`run_with_timeout`], daemons killed by process group on drop.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process_group};

/// Absolute path of binary `name` (PATH, then /usr/sbin and /sbin); panics if it is missing.
pub fn find_bin(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs =
        std::env::split_paths(&path).chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")]);
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("missing {name}: run scripts/install-test-deps");
}

/// A port that was free on 127.0.0.1 a moment ago (callers retry if a server then fails to bind).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Run `cmd` — an argument vector, never a shell line — with `input` on stdin (closed when
/// `None`) and stdout and stderr captured. If it outlives `timeout`, its process group is killed
/// and the test panics with whatever it had printed. The one way tests run a finite command.
pub fn run_with_timeout(cmd: &mut Command, input: Option<&[u8]>, timeout: Duration) -> Output {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so a timeout also kills what it started (git's ssh, a CGI, a sleep).
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {desc}: {e}"));
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        let input = input.to_vec();
        // A thread, so a child that never reads its stdin cannot block the timeout.
        thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let out_reader = reader(child.stdout.take());
    let err_reader = reader(child.stderr.take());
    let Some(status) = wait_timeout(&mut child, timeout) else {
        let _ = kill_process_group(Pid::from_child(&child), Signal::KILL);
        let _ = child.kill();
        let _ = child.wait();
        let grace = Instant::now() + Duration::from_secs(2);
        while !(out_reader.is_finished() && err_reader.is_finished()) && Instant::now() < grace {
            thread::sleep(Duration::from_millis(10));
        }
        let printed = |r: thread::JoinHandle<Vec<u8>>| {
            if r.is_finished() {
                String::from_utf8_lossy(&r.join().unwrap_or_default()).into_owned()
            } else {
                "(pipe still held open)".to_owned()
            }
        };
        panic!(
            "timed out after {timeout:?}: {desc}\nstderr:\n{}\nstdout:\n{}",
            printed(err_reader),
            printed(out_reader)
        );
    };
    Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

/// Like [`run_with_timeout`] (stdin closed), but panics with the output unless the command exits
/// 0; returns stdout.
pub fn run_checked(cmd: &mut Command, timeout: Duration) -> String {
    let desc = format!("{cmd:?}");
    let out = run_with_timeout(cmd, None, timeout);
    if !out.status.success() {
        panic!(
            "{desc} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
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

/// Stop `child` as Kubernetes stops a Pod: SIGTERM, then SIGKILL if it has not exited after
/// `grace` (tagflow finishes a push in progress on SIGTERM, and a profiler under it writes its
/// output). Reaped either way.
pub fn terminate(child: &mut Child, grace: Duration) {
    if let Some(pid) = Pid::from_raw(i32::try_from(child.id()).unwrap_or(0)) {
        let _ = rustix::process::kill_process(pid, Signal::TERM);
    }
    if wait_timeout(child, grace).is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Poll `child` until it exits or `timeout` passes (`None` on timeout).
pub(crate) fn wait_timeout(
    child: &mut Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(e) => panic!("wait for child: {e}"),
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// A long-running server process in its own process group; killed (group-wide) and reaped on drop.
pub(crate) struct Daemon {
    child: Child,
    name: String,
    log: PathBuf,
    /// Killed and reaped by [`Daemon::stop`]: nothing left for drop to do.
    stopped: bool,
}

/// Why waiting for a daemon's readiness line failed.
pub(crate) enum NotReady {
    /// The process exited; carries its log.
    Exited(String),
    /// The line did not appear in time; carries the log so far.
    Timeout(String),
}

impl Daemon {
    /// Spawn `cmd` in a new process group with stdout and stderr appended to files.
    pub(crate) fn spawn(name: &str, cmd: &mut Command, stdout: &Path, stderr: &Path) -> Daemon {
        let out = fs::File::create(stdout).expect("create stdout log");
        let err = if stdout == stderr {
            out.try_clone().expect("clone log handle")
        } else {
            fs::File::create(stderr).expect("create stderr log")
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
        Daemon {
            child,
            name: name.to_string(),
            log: stderr.to_path_buf(),
            stopped: false,
        }
    }

    /// Kill the process group and reap it now (a server going down mid-test).
    pub(crate) fn stop(&mut self) {
        if self.stopped {
            return;
        }
        let pid = Pid::from_child(&self.child);
        let _ = kill_process_group(pid, Signal::KILL);
        let _ = self.child.kill();
        if wait_timeout(&mut self.child, Duration::from_secs(10)).is_none() {
            eprintln!(
                "testbed: {} (pid {}) did not exit after SIGKILL",
                self.name,
                self.pid()
            );
        }
        self.stopped = true;
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait until `find` returns `Some` for the content of the log file, or the process exits.
    pub(crate) fn wait_log<T>(
        &mut self,
        timeout: Duration,
        find: impl Fn(&str) -> Option<T>,
    ) -> Result<T, NotReady> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            let text = fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(v) = find(&text) {
                return Ok(v);
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                let text = fs::read_to_string(&self.log).unwrap_or_default();
                return match find(&text) {
                    Some(v) => Ok(v),
                    None => Err(NotReady::Exited(text)),
                };
            }
            if Instant::now() >= deadline {
                return Err(NotReady::Timeout(text));
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }

    /// Panic describing a failed start.
    pub(crate) fn fail(&self, why: NotReady) -> ! {
        match why {
            NotReady::Exited(log) => panic!("{} exited during startup:\n{log}", self.name),
            NotReady::Timeout(log) => panic!("{} not ready in time:\n{log}", self.name),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // The child leads its own group (process_group(0)), so this also reaps CGI children etc.
        self.stop();
    }
}
