//! Commit signatures: the commit buffer libgit2 would write, signed by `ssh-keygen -Y sign` or
//! `gpg --detach-sign` with the mounted key, stored as the commit's `gpgsig` header — what
//! `git commit -S` writes, so `git verify-commit` checks it.
//!
//! Each signature is made in a fresh private directory (0700): the ssh key is copied there with
//! the 0600 mode ssh-keygen insists on; the openpgp key is imported into a throwaway GNUPGHOME
//! whose agent is stopped afterwards. The key's bytes never reach a log or an error message.

use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::config::{SigningConfig, SigningFormat};
use crate::proc::{self, ProcError};

/// Limit for each signing step (a gpg import, a signature).
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a commit could not be signed (nothing is committed unsigned).
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The key file could not be read.
    #[error("failed to read the signing key {path}: {source}")]
    Key {
        /// The configured `git.signing.keyFile`.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The private scratch directory could not be made.
    #[error("failed to prepare a private signing directory: {0}")]
    Scratch(#[source] std::io::Error),
    /// ssh-keygen or gpg could not run or timed out.
    #[error(transparent)]
    Proc(#[from] ProcError),
    /// The signer refused (wrong key type, passphrase needed, broken key).
    #[error("{step} failed ({status}): {stderr}")]
    Refused {
        /// What was run.
        step: &'static str,
        /// Its exit status.
        status: String,
        /// Its redacted stderr.
        stderr: String,
    },
}

impl SignError {
    /// A timeout may pass; a bad key will not.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Proc(ProcError::Timeout { .. }))
    }
}

/// The armored signature of `payload` (a commit buffer) with the configured key.
pub fn sign(cfg: &SigningConfig, payload: &[u8]) -> Result<String, SignError> {
    let key = std::fs::read(&cfg.key_file).map_err(|source| SignError::Key {
        path: cfg.key_file.clone(),
        source,
    })?;
    let dir = Scratch::new()?;
    match cfg.format {
        SigningFormat::Ssh => ssh(&dir, &key, payload),
        SigningFormat::Openpgp => openpgp(&dir, &key, payload),
    }
}

fn ssh(dir: &Scratch, key: &[u8], payload: &[u8]) -> Result<String, SignError> {
    let path = dir.0.join("key");
    write_private(&path, key)?;
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-Y", "sign", "-n", "git", "-f"])
        .arg(&path)
        // Never ask for a passphrase: there is nobody to answer.
        .env("SSH_ASKPASS_REQUIRE", "never")
        .env_remove("SSH_AUTH_SOCK")
        .env("LC_ALL", "C");
    let out = proc::run(&mut cmd, payload, STEP_TIMEOUT)?;
    checked("ssh-keygen -Y sign", &out)
}

fn openpgp(dir: &Scratch, key: &[u8], payload: &[u8]) -> Result<String, SignError> {
    let home = dir.0.join("gnupg");
    mkdir_private(&home)?;
    let gpg = |args: &[&str]| {
        let mut cmd = Command::new("gpg");
        cmd.args(["--batch", "--no-tty", "--quiet", "--homedir"])
            .arg(&home)
            .args(args)
            .env("GNUPGHOME", &home)
            .env("LC_ALL", "C");
        cmd
    };
    let signed = (|| {
        let out = proc::run(&mut gpg(&["--import"]), key, STEP_TIMEOUT)?;
        if !out.status.success() {
            return Err(refused("gpg --import", &out));
        }
        let mut cmd = gpg(&["--pinentry-mode", "loopback", "--detach-sign", "--armor"]);
        let out = proc::run(&mut cmd, payload, STEP_TIMEOUT)?;
        checked("gpg --detach-sign", &out)
    })();
    // The import started an agent for this home; it must not outlive the signature.
    let mut stop = Command::new("gpgconf");
    stop.arg("--homedir")
        .arg(&home)
        .args(["--kill", "all"])
        .env("GNUPGHOME", &home);
    let _ = proc::run(&mut stop, b"", STEP_TIMEOUT);
    signed
}

fn checked(step: &'static str, out: &proc::Finished) -> Result<String, SignError> {
    let text = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && text.contains("-----BEGIN ") {
        Ok(text.into_owned())
    } else {
        Err(refused(step, out))
    }
}

fn refused(step: &'static str, out: &proc::Finished) -> SignError {
    SignError::Refused {
        step,
        status: out.status.to_string(),
        stderr: out.stderr_text(),
    }
}

fn mkdir_private(path: &Path) -> Result<(), SignError> {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(SignError::Scratch)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), SignError> {
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(SignError::Scratch)
}

/// A private directory removed when dropped (it may hold a copy of the key).
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self, SignError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        // Short: gpg-agent's socket path must fit in 108 bytes.
        let path = std::env::temp_dir().join(format!(
            "tfsign-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        // Left by a crashed process that had this pid; never reuse its contents.
        let _ = std::fs::remove_dir_all(&path);
        mkdir_private(&path)?;
        Ok(Self(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_key_is_a_terminal_error_naming_the_path() {
        let cfg = SigningConfig {
            format: SigningFormat::Ssh,
            key_file: "/nonexistent/tagflow-key".into(),
        };
        let e = sign(&cfg, b"tree 0\n").unwrap_err();
        assert!(e.to_string().contains("/nonexistent/tagflow-key"), "{e}");
        assert!(!e.is_transient());
    }
}
