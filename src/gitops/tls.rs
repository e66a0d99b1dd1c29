//! libgit2's CA bundle, read when a transfer first needs TLS rather than at startup.
//!
//! libgit2 (OpenSSL build) initialises OpenSSL as soon as any git2 call is made and loads the
//! whole system CA bundle into its context then: OpenSSL 3 parses the 144 certificates of
//! Debian's bundle in 40–90 ms, the largest single cost of a `tagflow once` over a `file://` or
//! ssh repo, which never uses TLS. So main initialises libgit2 with `SSL_CERT_FILE` pointing at
//! an empty file (OpenSSL ignores a file with no certificate; its lookup in `SSL_CERT_DIR`, which
//! reads one hashed file per issuer when a certificate is checked, stays), puts the variable back
//! at once (subprocesses see the environment they were given), and [`load_bundle`] adds the
//! bundle OpenSSL would have read before the first http(s) transfer. The certificates trusted
//! are the same as before; only when they are read changes.

use std::path::PathBuf;
use std::sync::{Once, OnceLock};

/// The bundle left for later; set only when [`init_deferred`] ran.
static DEFERRED: OnceLock<Option<PathBuf>> = OnceLock::new();
static LOADED: Once = Once::new();

const CERT_FILE: &str = "SSL_CERT_FILE";

/// Initialise libgit2 (running `init`, which must make the first git2 call) without reading the
/// CA bundle. Call first thing in `main`, before the async runtime or any other thread exists.
#[allow(unsafe_code)]
pub fn init_deferred(init: impl FnOnce()) {
    // The bundle OpenSSL would read: $SSL_CERT_FILE when it exists, else the system's.
    let bundle = openssl_probe::probe().cert_file;
    let original = std::env::var_os(CERT_FILE);
    // SAFETY: main calls this before starting any thread, so nothing reads or writes the
    // environment concurrently; the variable is restored before this returns.
    unsafe { std::env::set_var(CERT_FILE, "/dev/null") };
    init();
    // SAFETY: as above, still single-threaded.
    unsafe {
        match &original {
            Some(v) => std::env::set_var(CERT_FILE, v),
            None => std::env::remove_var(CERT_FILE),
        }
    }
    let _ = DEFERRED.set(bundle);
}

/// Before a transfer that may use TLS (an http or https remote, which can redirect to https):
/// load the bundle [`init_deferred`] left out, once. A no-op when nothing was deferred (tests
/// and other embedders that never called it get libgit2's own eager load).
#[allow(unsafe_code)]
pub fn load_bundle() {
    let Some(Some(path)) = DEFERRED.get() else {
        return;
    };
    LOADED.call_once(|| {
        // SAFETY: this adds certificates to libgit2's global TLS context. `call_once` blocks
        // every other caller until it is done, and every TLS transfer calls this first, so no
        // transfer reads the context while it changes.
        if let Err(e) = unsafe { git2::opts::set_ssl_cert_file(path) } {
            tracing::warn!(file = %path.display(), error = %e.message(), "could not load the CA bundle for git over https");
        }
    });
}

/// Whether a remote URL may need TLS: anything but `file://` and ssh.
pub fn may_use_tls(url: &str) -> bool {
    let lower = url.trim_start().to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_remotes_load_the_bundle() {
        assert!(may_use_tls("https://git.example.com/org/config.git"));
        assert!(
            may_use_tls("HTTP://git.example.com/org/config.git"),
            "may redirect to https"
        );
        assert!(!may_use_tls("file:///srv/config.git"));
        assert!(!may_use_tls("ssh://git@git.example.com/org/config.git"));
        assert!(!may_use_tls("git@github.com:org/config.git"));
    }

    #[test]
    fn nothing_deferred_means_nothing_to_load() {
        // Tests never call init_deferred: libgit2 loaded its bundle itself.
        load_bundle();
        assert!(DEFERRED.get().is_none());
    }
}
