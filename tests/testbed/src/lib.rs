//! Test harness: real servers on 127.0.0.1 for tagflow tests.
//!
//! Every server binds 127.0.0.1 on a free port, lives in its own temp dir and is killed (with its
//! whole process group) and reaped when its handle is dropped, so tests can run in parallel.
//! The harness is synchronous (std threads only); methods that do HTTP run on a private thread,
//! so they are safe to call from inside a tokio runtime. Do not keep servers in `static`s:
//! statics are never dropped, so their processes would outlive the test binary.

#![warn(missing_docs)]

mod apps;
mod forge;
mod gitserv;
mod http;
mod kube;
mod proc;
mod registry;
mod slack;
mod tls;
mod token;

pub use apps::{DeployedApps, tag_in};
pub use forge::{Flavor, Forge, GITEA_LABELS, Pr};
pub use gitserv::{BareRepo, Commit, GitHttp, GitSsh};
pub use http::{Request, Response, Scripted};
pub use kube::{ADMIN_TOKEN, KubeApi, apiserver_bin};
pub use proc::{find_bin, free_port, run_checked, run_with_timeout, terminate};
pub use registry::{LoggedRequest, Registry, RegistryOpts};
pub use slack::{CapturedRequest, SlackCapture};
pub use tls::{TlsFiles, make_tls};
pub use token::{TokenIssuer, TokenRequest};

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Timeout for one git CLI invocation.
pub const GIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Fixed identity and date used for every commit the harness makes (reproducible shas).
pub const GIT_ENV: &[(&str, &str)] = &[
    ("GIT_AUTHOR_NAME", "testbed"),
    ("GIT_AUTHOR_EMAIL", "testbed@example.com"),
    ("GIT_AUTHOR_DATE", "2024-01-01T00:00:00Z"),
    ("GIT_COMMITTER_NAME", "testbed"),
    ("GIT_COMMITTER_EMAIL", "testbed@example.com"),
    ("GIT_COMMITTER_DATE", "2024-01-01T00:00:00Z"),
    ("GIT_CONFIG_NOSYSTEM", "1"),
    ("GIT_CONFIG_GLOBAL", "/dev/null"),
    ("GIT_TERMINAL_PROMPT", "0"),
    ("GIT_ASKPASS", ""),
    ("SSH_ASKPASS", ""),
    ("LC_ALL", "C"),
];

/// A `git` command in `dir` with the harness's isolated environment ([`GIT_ENV`]) applied.
pub fn git_command(dir: &Path) -> Command {
    let mut cmd = Command::new(find_bin("git"));
    cmd.current_dir(dir);
    for (k, v) in GIT_ENV {
        cmd.env(k, v);
    }
    cmd
}

/// Run the git CLI in `dir` with a timeout; returns stdout, panics with stderr on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    match try_git(dir, args, &[]) {
        Ok(out) => out,
        Err(err) => panic!("git {args:?} in {} failed: {err}", dir.display()),
    }
}

/// Run the git CLI in `dir` with extra env vars; `Ok(stdout)` or `Err(stderr)` (panics on timeout).
pub fn try_git(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<String, String> {
    let mut cmd = git_command(dir);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run_with_timeout(&mut cmd, None, GIT_TIMEOUT);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

#[cfg(test)]
mod tests {
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_can_be_shared_across_threads_and_tasks() {
        assert_send_sync::<crate::Registry>();
        assert_send_sync::<crate::BareRepo>();
        assert_send_sync::<crate::GitHttp>();
        assert_send_sync::<crate::GitSsh>();
        assert_send_sync::<crate::Scripted>();
        assert_send_sync::<crate::SlackCapture>();
    }
}
