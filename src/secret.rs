//! Secrets are referenced by file or env var, never inlined, and scrubbed from anything we print.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;

/// Where a secret lives: exactly one of `file` or `env`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// Path of a file holding the secret (trailing newline trimmed).
    pub file: Option<String>,
    /// Name of an environment variable holding the secret.
    pub env: Option<String>,
}

/// Failure to read a secret. Never contains the secret itself.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Neither or both sources given.
    #[error("a secret needs exactly one of `file` or `env`")]
    Ambiguous,
    /// File unreadable.
    #[error("failed to read secret file {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Env var unset or not UTF-8.
    #[error("secret env var {0} is not set")]
    Env(String),
    /// Empty value.
    #[error("secret from {0} is empty")]
    Empty(String),
}

impl SecretRef {
    /// A reference to a file.
    pub fn file(path: impl Into<String>) -> Self {
        Self {
            file: Some(path.into()),
            env: None,
        }
    }

    /// Check the shape without reading.
    pub fn validate(&self) -> Result<(), SecretError> {
        match (&self.file, &self.env) {
            (Some(_), None) | (None, Some(_)) => Ok(()),
            _ => Err(SecretError::Ambiguous),
        }
    }

    /// Read the secret now and register it with the redactor.
    pub fn read(&self) -> Result<String, SecretError> {
        let (value, origin) = match (&self.file, &self.env) {
            (Some(path), None) => {
                let v = std::fs::read_to_string(path).map_err(|source| SecretError::File {
                    path: path.clone(),
                    source,
                })?;
                (v, format!("file {path}"))
            }
            (None, Some(var)) => (
                std::env::var(var).map_err(|_| SecretError::Env(var.clone()))?,
                format!("env {var}"),
            ),
            _ => return Err(SecretError::Ambiguous),
        };
        let value = value.trim_end_matches(['\n', '\r']).to_owned();
        if value.is_empty() {
            return Err(SecretError::Empty(origin));
        }
        register(&value);
        Ok(value)
    }
}

/// How often a use looks at a mounted credential file's metadata.
pub const RECHECK: Duration = Duration::from_secs(1);

/// File identity: when any part changes, the file is read again.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &str) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// When a value read from a mounted file must be read again. Rotation rewrites a mounted
/// Secret in place, so a use looks at the file's metadata (at most once per `recheck`, so a
/// busy cycle does not stat it per request) and reads it again when mtime or size changed.
#[derive(Debug, Default)]
pub struct FileWatch {
    loaded: bool,
    checked: Option<Instant>,
    stamp: Stamp,
}

impl FileWatch {
    /// Whether the value must be (re)read now: never read, or `path` changed since.
    pub fn stale(&mut self, path: Option<&str>, recheck: Duration) -> bool {
        if self.loaded && self.checked.is_some_and(|t| t.elapsed() < recheck) {
            return false;
        }
        self.checked = Some(Instant::now());
        let now = path.and_then(stamp);
        let changed = !self.loaded || now != self.stamp;
        self.stamp = now;
        changed
    }

    /// Record a successful read (a failed one leaves the value stale, so it is tried again).
    pub fn read(&mut self) {
        self.loaded = true;
    }

    /// Record a forced read of `path` (after a refusal), whatever the metadata said.
    pub fn reread(&mut self, path: Option<&str>) {
        self.stamp = path.and_then(stamp);
        self.checked = Some(Instant::now());
        self.loaded = true;
    }
}

/// A secret kept in memory and read again when its file changes, or on demand after the server
/// refused it (for synchronous callers such as libgit2's credential callback).
#[derive(Debug)]
pub struct Watched {
    source: SecretRef,
    recheck: Duration,
    state: Mutex<(FileWatch, Option<String>)>,
}

impl Watched {
    /// Watch `source`; nothing is read yet.
    pub fn new(source: SecretRef) -> Self {
        Self {
            source,
            recheck: RECHECK,
            state: Mutex::new((FileWatch::default(), None)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (FileWatch, Option<String>)> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current value, read again if the file changed since the last read.
    pub fn get(&self) -> Result<String, SecretError> {
        let mut st = self.lock();
        let (watch, value) = &mut *st;
        if watch.stale(self.source.file.as_deref(), self.recheck) || value.is_none() {
            *value = Some(self.source.read()?);
            watch.read();
        }
        Ok(value.clone().unwrap_or_default())
    }

    /// Read again now (the server refused the value). `true` if it changed.
    pub fn reload(&self) -> Result<bool, SecretError> {
        let fresh = self.source.read()?;
        let mut st = self.lock();
        st.0.reread(self.source.file.as_deref());
        let changed = st.1.as_deref() != Some(fresh.as_str());
        st.1 = Some(fresh);
        Ok(changed)
    }
}

fn secrets() -> &'static Mutex<Vec<String>> {
    static SECRETS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    SECRETS.get_or_init(|| Mutex::new(Vec::new()))
}

/// Remember a secret value so that [`redact`] scrubs it from logs and messages.
pub fn register(value: &str) {
    // Very short values would shred ordinary text; they are weak secrets anyway.
    if value.len() < 4 {
        return;
    }
    let mut s = secrets()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !s.iter().any(|v| v == value) {
        s.push(value.to_owned());
        // Longest first so a secret containing another is replaced whole.
        s.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }
}

/// `e` and each of its causes (`a: b: c`; reqwest puts the reason, a refused connection or an
/// unknown certificate authority, in the causes), with every registered secret redacted.
pub fn redacted_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    redact(&s)
}

/// Replace every registered secret in `text` with `***`.
pub fn redact(text: &str) -> String {
    let s = secrets()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut out = text.to_owned();
    for v in s.iter() {
        if out.contains(v.as_str()) {
            out = out.replace(v.as_str(), "***");
        }
    }
    out
}

/// Whether a presented secret equals the expected one, without leaking either's length or the
/// position of the first difference: both are hashed to SHA-256 first and the fixed-size digests
/// are compared with no early exit.
pub fn same(given: &[u8], expected: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(given), Sha256::digest(expected));
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keep the optimiser from turning the fold back into a short-circuiting compare.
    std::hint::black_box(diff) == 0
}

/// Strip a password from a URL (`https://user:pw@host` → `https://user@host`) for display.
pub fn display_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_registered_values_longest_first() {
        register("s3cr3t-token");
        register("s3cr3t");
        assert_eq!(redact("a s3cr3t-token and s3cr3t"), "a *** and ***");
    }

    #[test]
    fn exactly_one_source() {
        assert!(
            SecretRef {
                file: None,
                env: None
            }
            .validate()
            .is_err()
        );
        assert!(
            SecretRef {
                file: Some("a".into()),
                env: Some("B".into())
            }
            .validate()
            .is_err()
        );
        assert!(SecretRef::file("a").validate().is_ok());
    }

    #[test]
    fn secrets_compare_by_digest() {
        assert!(same(b"tok-123456", b"tok-123456"));
        assert!(!same(b"tok-123456", b"tok-123457"));
        // A prefix, a longer value and the empty string are all simply unequal.
        assert!(!same(b"tok-12345", b"tok-123456"));
        assert!(!same(b"tok-1234567", b"tok-123456"));
        assert!(!same(b"", b"tok-123456"));
        assert!(same(b"", b""));
    }

    #[test]
    fn a_watched_file_is_read_again_when_it_changes_or_on_reload() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("pw");
        std::fs::write(&f, "first-pass\n").expect("w");
        let mut w = Watched::new(SecretRef::file(f.to_string_lossy()));
        assert_eq!(w.get().expect("get"), "first-pass");
        // Within RECHECK the file is not looked at; reload reads it anyway.
        std::fs::write(&f, "second-pass-2\n").expect("w");
        assert_eq!(w.get().expect("get"), "first-pass");
        assert!(w.reload().expect("reload"));
        assert!(!w.reload().expect("reload"), "unchanged");
        w.recheck = Duration::ZERO;
        std::fs::write(&f, "third-pass-33\n").expect("w");
        assert_eq!(w.get().expect("get"), "third-pass-33");
        assert_eq!(redact("x third-pass-33 y"), "x *** y");
    }

    #[test]
    fn url_password_is_hidden() {
        assert_eq!(display_url("https://u:pw@h/x.git"), "https://u@h/x.git");
        assert_eq!(display_url("ssh://git@h/x.git"), "ssh://git@h/x.git");
    }
}
