//! Secrets are referenced by file or env var, never inlined, and scrubbed from anything we print.

use std::sync::{Mutex, OnceLock};

use serde::Deserialize;

/// Where a secret lives: exactly one of `file` or `env`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
    fn url_password_is_hidden() {
        assert_eq!(display_url("https://u:pw@h/x.git"), "https://u@h/x.git");
        assert_eq!(display_url("ssh://git@h/x.git"), "ssh://git@h/x.git");
    }
}
