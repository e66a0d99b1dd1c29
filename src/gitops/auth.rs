//! Git credentials and SSH host-key checking for libgit2 callbacks.

use std::cell::Cell;
use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine;
use git2::{CertificateCheckStatus, Cred, CredentialType, RemoteCallbacks};

use crate::secret::{SecretRef, Watched};

/// How tagflow authenticates to git remotes. Secrets come from files or env, never the URL.
#[derive(Debug, Clone, Default)]
pub struct GitAuth {
    /// Private key for ssh:// remotes (a deploy key).
    pub ssh_key_file: Option<PathBuf>,
    /// known_hosts for ssh:// remotes; an unknown host key is refused.
    pub known_hosts_file: Option<PathBuf>,
    /// Username for https:// remotes (default `git`).
    pub username: Option<String>,
    /// Password or token for https:// remotes, read again when its file changes and once when
    /// the server refuses it (a rotated token needs no restart).
    pub password: Option<Arc<Watched>>,
}

impl GitAuth {
    /// The https password: from `file` when given, else from `TAGFLOW_GIT_PASSWORD`. It is read
    /// once now, so a missing file fails at startup, and registered with the log redactor.
    pub fn read_password(
        file: Option<&std::path::Path>,
    ) -> Result<Option<Arc<Watched>>, crate::secret::SecretError> {
        let source = match (file, std::env::var("TAGFLOW_GIT_PASSWORD")) {
            (Some(f), _) => SecretRef::file(f.to_string_lossy()),
            (None, Ok(p)) if !p.is_empty() => SecretRef {
                file: None,
                env: Some("TAGFLOW_GIT_PASSWORD".into()),
            },
            _ => return Ok(None),
        };
        let watched = Watched::new(source);
        watched.get()?;
        Ok(Some(Arc::new(watched)))
    }
}

/// A remote URL split into what the callbacks need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteInfo {
    /// `ssh`, `https`, `http` or `file`.
    pub scheme: String,
    /// Host name.
    pub host: String,
    /// Port, if not the scheme's default.
    pub port: Option<u16>,
    /// Username in the URL, if any.
    pub user: Option<String>,
}

/// Parse a remote URL and refuse one that embeds a password.
pub fn remote_info(raw: &str) -> Result<RemoteInfo, String> {
    if !raw.contains("://") {
        // scp-like `[user@]host:path` (as GitHub and GitLab show it) is ssh.
        if let Some((authority, path)) = raw.split_once(':')
            && !authority.is_empty()
            && !authority.contains('/')
            && !path.is_empty()
        {
            let (user, host) = match authority.rsplit_once('@') {
                Some((u, h)) => (Some(u.to_owned()), h),
                None => (None, authority),
            };
            if !host.is_empty() {
                return Ok(RemoteInfo {
                    scheme: "ssh".into(),
                    host: host.to_owned(),
                    port: None,
                    user,
                });
            }
        }
        return Err(format!(
            "{raw:?}: use a URL with a scheme (ssh://, https://, http:// or file://) or git@host:path"
        ));
    }
    let u = url::Url::parse(raw).map_err(|e| format!("{raw:?} is not a URL: {e}"))?;
    if u.password().is_some() {
        return Err("the repo URL must not contain a password; pass it with --git-password-file or TAGFLOW_GIT_PASSWORD".into());
    }
    let scheme = u.scheme().to_owned();
    if !matches!(scheme.as_str(), "ssh" | "https" | "http" | "file") {
        return Err(format!("unsupported git URL scheme {scheme:?}"));
    }
    Ok(RemoteInfo {
        scheme,
        host: u
            .host_str()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port: u.port(),
        user: Some(u.username().to_owned()).filter(|s| !s.is_empty()),
    })
}

/// One known_hosts entry: the host patterns and the key blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownHost {
    /// Host patterns (`host`, `[host]:port`), or one hashed name.
    pub hosts: Vec<HostName>,
    /// Key type, e.g. `ssh-ed25519`.
    pub key_type: String,
    /// Decoded key blob.
    pub key: Vec<u8>,
    /// `@revoked`: this key is refused for every host.
    pub revoked: bool,
}

/// A host name in known_hosts: plain, or hashed as `ssh-keyscan -H` and OpenSSH's
/// `HashKnownHosts` write it (`|1|base64 salt|base64 HMAC-SHA1(salt, name)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostName {
    /// `host` or `[host]:port`.
    Plain(String),
    /// Salt and hash.
    Hashed(Vec<u8>, Vec<u8>),
}

impl HostName {
    fn matches(&self, name: &str) -> bool {
        match self {
            Self::Plain(p) => p == name,
            Self::Hashed(salt, hash) => {
                use hmac::Mac as _;
                let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(salt) else {
                    return false;
                };
                mac.update(name.as_bytes());
                mac.verify_slice(hash).is_ok()
            }
        }
    }
}

fn host_names(field: &str) -> Option<Vec<HostName>> {
    let b64 = &base64::engine::general_purpose::STANDARD;
    if let Some(rest) = field.strip_prefix("|1|") {
        let (salt, hash) = rest.split_once('|')?;
        return Some(vec![HostName::Hashed(
            b64.decode(salt).ok()?,
            b64.decode(hash).ok()?,
        )]);
    }
    Some(
        field
            .split(',')
            .map(|h| HostName::Plain(h.to_owned()))
            .collect(),
    )
}

/// Parse known_hosts text: plain and hashed (`|1|…`) names, `@revoked` keys. `@cert-authority`
/// lines are skipped (libgit2 hands tagflow the host's plain key, never a certificate), as are
/// lines it cannot read.
pub fn parse_known_hosts(text: &str) -> Vec<KnownHost> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut parts = l.split_whitespace().peekable();
            let revoked = match parts.peek().copied() {
                Some("@revoked") => {
                    parts.next();
                    true
                }
                Some(m) if m.starts_with('@') => return None,
                _ => false,
            };
            let hosts = host_names(parts.next()?)?;
            let key_type = parts.next()?.to_owned();
            let key = base64::engine::general_purpose::STANDARD
                .decode(parts.next()?)
                .ok()?;
            Some(KnownHost {
                hosts,
                key_type,
                key,
                revoked,
            })
        })
        .collect()
}

/// Whether `key` is listed for `host` (and `port`, when not 22) and not revoked.
pub fn host_key_known(known: &[KnownHost], host: &str, port: Option<u16>, key: &[u8]) -> bool {
    let name = match port {
        Some(p) if p != 22 => format!("[{host}]:{p}"),
        _ => host.to_owned(),
    };
    if known.iter().any(|k| k.revoked && k.key == key) {
        return false;
    }
    known
        .iter()
        .any(|k| !k.revoked && k.key == key && k.hosts.iter().any(|h| h.matches(&name)))
}

impl GitAuth {
    /// Callbacks answering credential requests and checking host keys for `remote`.
    pub fn callbacks<'a>(&'a self, remote: &'a RemoteInfo) -> RemoteCallbacks<'a> {
        let mut cb = RemoteCallbacks::new();
        let tries = Cell::new(0u32);
        let passwords = Cell::new(0u32);
        cb.credentials(move |_url, url_user, allowed| {
            // libgit2 asks again after a refusal; stop instead of looping forever.
            tries.set(tries.get() + 1);
            if tries.get() > 3 {
                return Err(git2::Error::from_str("the remote refused tagflow's git credentials"));
            }
            let user = url_user.map(str::to_owned).or_else(|| self.username.clone()).unwrap_or_else(|| "git".into());
            if allowed.contains(CredentialType::USERNAME) {
                return Cred::username(&user);
            }
            if allowed.contains(CredentialType::SSH_KEY) {
                let key = self.ssh_key_file.as_ref().ok_or_else(|| {
                    git2::Error::from_str("an ssh:// repo needs --git-ssh-key-file (a deploy key)")
                })?;
                return Cred::ssh_key(&user, None, key, None);
            }
            if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
                let source = self.password.as_ref().ok_or_else(|| {
                    git2::Error::from_str("the remote wants a password: pass --git-password-file or TAGFLOW_GIT_PASSWORD")
                })?;
                passwords.set(passwords.get() + 1);
                let pass = password_attempt(source, passwords.get())?;
                return Cred::userpass_plaintext(self.username.as_deref().unwrap_or(&user), &pass);
            }
            Err(git2::Error::from_str("the remote asked for a credential type tagflow does not support"))
        });
        cb.certificate_check(move |cert, _host| {
            let Some(hostkey) = cert.as_hostkey() else {
                // TLS: let libgit2 verify the chain against the system's CAs.
                return Ok(CertificateCheckStatus::CertificatePassthrough);
            };
            let file = self.known_hosts_file.as_ref().ok_or_else(|| {
                git2::Error::from_str("an ssh:// repo needs --git-known-hosts-file; tagflow never trusts an unknown host key")
            })?;
            let text = std::fs::read_to_string(file)
                .map_err(|e| git2::Error::from_str(&format!("failed to read known_hosts {}: {e}", file.display())))?;
            let key = hostkey.hostkey().ok_or_else(|| git2::Error::from_str("the ssh server sent no host key"))?;
            if host_key_known(&parse_known_hosts(&text), &remote.host, remote.port, key) {
                Ok(CertificateCheckStatus::CertificateOk)
            } else {
                // libgit2 replaces this message with its own generic one, so say it here too.
                let why = format!(
                    "host key of {}{} is not in {}: refusing to connect",
                    remote.host,
                    remote.port.map(|p| format!(":{p}")).unwrap_or_default(),
                    file.display()
                );
                tracing::error!("{why}");
                Err(git2::Error::from_str(&why))
            }
        });
        cb
    }
}

/// The password for the `attempt`-th ask in one git operation. libgit2 asks again only after
/// the server answered 401/403: then the source is read once more (a rotated token), and if
/// it did not change the refusal is final rather than sent again.
fn password_attempt(source: &Watched, attempt: u32) -> Result<String, git2::Error> {
    let unreadable = |e: crate::secret::SecretError| {
        git2::Error::from_str(&format!("failed to read the git password: {e}"))
    };
    match attempt {
        1 => source.get().map_err(unreadable),
        2 if source.reload().map_err(unreadable)? => {
            tracing::info!("git password changed since the remote refused it: trying the new one");
            source.get().map_err(unreadable)
        }
        _ => Err(git2::Error::from_str(
            "the remote refused tagflow's git credentials (the password file was read again)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let r = remote_info("ssh://git@127.0.0.1:2222/srv/config.git").expect("ok");
        assert_eq!(
            (
                r.scheme.as_str(),
                r.host.as_str(),
                r.port,
                r.user.as_deref()
            ),
            ("ssh", "127.0.0.1", Some(2222), Some("git"))
        );
        assert!(
            remote_info("https://u:secret@h/x.git")
                .expect_err("refused")
                .contains("must not contain a password")
        );
        assert!(
            remote_info("git@github.com:org/x.git").is_ok(),
            "scp-like is ssh"
        );
        assert!(remote_info("ftp://h/x").is_err());
    }

    #[test]
    fn a_refused_password_is_read_again_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("pw");
        std::fs::write(&f, "old-git-pass\n").expect("w");
        let src = Watched::new(SecretRef::file(f.to_string_lossy()));
        assert_eq!(password_attempt(&src, 1).expect("first"), "old-git-pass");
        // Refused and unchanged: final, the same password is not sent again.
        let e = password_attempt(&src, 2).expect_err("unchanged");
        assert!(e.message().contains("refused"), "{}", e.message());
        // Refused, and the file was rotated meanwhile: the new one is tried.
        std::fs::write(&f, "new-git-pass\n").expect("w");
        assert_eq!(password_attempt(&src, 2).expect("rotated"), "new-git-pass");
        assert!(password_attempt(&src, 3).is_err());
    }

    #[test]
    fn known_hosts_matching() {
        let blob = base64::engine::general_purpose::STANDARD.encode(b"key-a");
        let text = format!(
            "# c\n[127.0.0.1]:2222 ssh-ed25519 {blob}\nexample.com,alias ssh-ed25519 {blob}\n|1|hashed|x ssh-rsa AAAA\n"
        );
        let known = parse_known_hosts(&text);
        assert_eq!(known.len(), 2, "the unreadable hashed line is skipped");
        assert!(host_key_known(&known, "127.0.0.1", Some(2222), b"key-a"));
        assert!(!host_key_known(&known, "127.0.0.1", Some(2223), b"key-a"));
        assert!(!host_key_known(&known, "127.0.0.1", Some(2222), b"key-b"));
        assert!(host_key_known(&known, "alias", None, b"key-a"));
    }

    #[test]
    fn scp_like_urls_are_ssh() {
        let r = remote_info("git@github.com:org/config.git").expect("scp-like");
        assert_eq!(
            (
                r.scheme.as_str(),
                r.host.as_str(),
                r.port,
                r.user.as_deref()
            ),
            ("ssh", "github.com", None, Some("git"))
        );
        assert_eq!(
            remote_info("gitlab.example.com:team/cfg")
                .expect("no user")
                .user,
            None
        );
        assert!(remote_info("/srv/config.git").is_err());
        assert!(remote_info("config.git").is_err());
    }

    #[test]
    fn hashed_names_and_revoked_keys() {
        use hmac::Mac as _;
        let b64 = &base64::engine::general_purpose::STANDARD;
        let hashed = |name: &str| {
            let salt = b"0123456789abcdefghij";
            let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(salt).expect("mac");
            mac.update(name.as_bytes());
            format!(
                "|1|{}|{}",
                b64.encode(salt),
                b64.encode(mac.finalize().into_bytes())
            )
        };
        let (a, b) = (b64.encode(b"key-a"), b64.encode(b"key-b"));
        let text = format!(
            "{} ssh-ed25519 {a}\n{} ssh-ed25519 {b}\n@revoked * ssh-ed25519 {b}\n@cert-authority *.example.com ssh-ed25519 {a}\n",
            hashed("[127.0.0.1]:2222"),
            hashed("git.example.com")
        );
        let known = parse_known_hosts(&text);
        assert_eq!(known.len(), 3, "the cert-authority line is skipped");
        assert!(host_key_known(&known, "127.0.0.1", Some(2222), b"key-a"));
        assert!(!host_key_known(&known, "127.0.0.1", Some(2223), b"key-a"));
        assert!(!host_key_known(&known, "other.example.com", None, b"key-a"));
        assert!(
            !host_key_known(&known, "git.example.com", None, b"key-b"),
            "revoked wins over a listed key"
        );
    }
}
