//! Where a registry's credentials come from, read again when the mounted files change.
//!
//! ECR passwords last 12 h and tokens get rotated: the Secret is refreshed and the kubelet
//! rewrites the mounted file. A use checks the file's metadata through [`FileWatch`] (at most
//! once per [`RECHECK`], so a scan of many repositories does not stat it per request) and
//! re-reads it when it changed; a 401/403 forces one re-read (and a credential helper run)
//! before it is reported. The git password follows the same rules (`crate::secret::Watched`).

use std::time::Duration;

use tokio::sync::Mutex;

use super::dockercfg::{self, DockerCreds};
use super::helper::{self, HelperError};
use crate::config::RegistryCredentials;
use crate::reference::server_url;
use crate::secret::{FileWatch, SecretError, SecretRef};

/// What tagflow presents to a registry or its token service.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// Username and password: basic auth, or exchanged for a bearer token.
    Basic {
        /// Username.
        username: String,
        /// Password or token.
        password: String,
    },
    /// An OAuth2 refresh token, exchanged with `grant_type=refresh_token`.
    Refresh(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Self::Refresh(_) => write!(f, "Refresh(***)"),
        }
    }
}

/// Credentials that could not be read. Never holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The docker config file could not be read.
    #[error("failed to read dockerConfigFile {path}: {source}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The docker config file is malformed.
    #[error("dockerConfigFile {path}: {reason}")]
    Parse {
        /// File.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The docker config has nothing for this registry.
    #[error("dockerConfigFile {path} has no auths entry or credential helper for {host}")]
    NoEntry {
        /// File.
        path: String,
        /// Registry.
        host: String,
    },
    /// The password secret could not be read.
    #[error("failed to read the registry password: {0}")]
    Secret(#[source] SecretError),
    /// A credential helper failed.
    #[error(transparent)]
    Helper(#[from] HelperError),
    /// A credential helper holds nothing for this registry.
    #[error("credential helper docker-credential-{name} has no credentials for {server}")]
    HelperEmpty {
        /// Helper.
        name: String,
        /// Server URL asked for.
        server: String,
    },
}

impl CredentialError {
    /// Only a helper that timed out may succeed on its own; the rest waits for a fix.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Helper(e) if e.is_transient())
    }
}

#[derive(Debug, Clone)]
enum Origin {
    Anonymous,
    DockerConfig(String),
    Password { username: String, secret: SecretRef },
}

pub use crate::secret::RECHECK;

#[derive(Debug, Default)]
struct State {
    watch: FileWatch,
    current: Option<Credential>,
}

/// One registry's credential source.
#[derive(Debug)]
pub struct CredentialSource {
    host: String,
    origin: Origin,
    helper_timeout: Duration,
    recheck: Duration,
    state: Mutex<State>,
}

impl CredentialSource {
    /// A source for `host` (canonical) from its config entry.
    pub fn new(host: &str, cfg: Option<&RegistryCredentials>) -> Self {
        let origin = match cfg {
            None => Origin::Anonymous,
            Some(c) => match (&c.docker_config_file, &c.username, &c.password) {
                (Some(file), _, _) => Origin::DockerConfig(file.clone()),
                (None, Some(u), Some(p)) => Origin::Password {
                    username: u.clone(),
                    secret: p.clone(),
                },
                _ => Origin::Anonymous,
            },
        };
        Self {
            host: host.to_owned(),
            origin,
            helper_timeout: helper::HELPER_TIMEOUT,
            recheck: RECHECK,
            state: Mutex::new(State::default()),
        }
    }

    /// Whether any credential is configured at all.
    pub fn configured(&self) -> bool {
        !matches!(self.origin, Origin::Anonymous)
    }

    fn file(&self) -> Option<&str> {
        match &self.origin {
            Origin::Anonymous => None,
            Origin::DockerConfig(f) => Some(f),
            Origin::Password { secret, .. } => secret.file.as_deref(),
        }
    }

    /// The current credential, read again if its file changed since the last read.
    pub async fn get(&self) -> Result<Option<Credential>, CredentialError> {
        let mut st = self.state.lock().await;
        if st.watch.stale(self.file(), self.recheck) {
            st.current = self.read().await?;
            st.watch.read();
        }
        Ok(st.current.clone())
    }

    /// Read again whatever the files say (after a 401/403). `true` if the credential changed.
    pub async fn reload(&self) -> Result<bool, CredentialError> {
        let mut st = self.state.lock().await;
        let fresh = self.read().await?;
        let changed = fresh != st.current;
        st.current = fresh;
        st.watch.reread(self.file());
        Ok(changed)
    }

    async fn read(&self) -> Result<Option<Credential>, CredentialError> {
        let cred = match &self.origin {
            Origin::Anonymous => None,
            Origin::Password { username, secret } => Some(Credential::Basic {
                username: username.clone(),
                password: secret.read().map_err(CredentialError::Secret)?,
            }),
            Origin::DockerConfig(path) => Some(self.read_docker_config(path).await?),
        };
        match &cred {
            Some(Credential::Basic { password, .. }) => crate::secret::register(password),
            Some(Credential::Refresh(t)) => crate::secret::register(t),
            None => {}
        }
        Ok(cred)
    }

    async fn read_docker_config(&self, path: &str) -> Result<Credential, CredentialError> {
        let json = std::fs::read_to_string(path).map_err(|source| CredentialError::Read {
            path: path.to_owned(),
            source,
        })?;
        let found = dockercfg::docker_credentials(&json, &self.host).map_err(|reason| {
            CredentialError::Parse {
                path: path.to_owned(),
                reason,
            }
        })?;
        match found {
            DockerCreds::Basic { username, password } => {
                Ok(Credential::Basic { username, password })
            }
            DockerCreds::IdentityToken(t) => Ok(Credential::Refresh(t)),
            DockerCreds::None => Err(CredentialError::NoEntry {
                path: path.to_owned(),
                host: self.host.clone(),
            }),
            DockerCreds::Helper(name) => {
                let server = server_url(&self.host);
                let origin = format!("named in {path}");
                match helper::get(&name, &origin, &server, self.helper_timeout).await? {
                    Some(a) if a.username == "<token>" => Ok(Credential::Refresh(a.secret)),
                    Some(a) => Ok(Credential::Basic {
                        username: a.username,
                        password: a.secret,
                    }),
                    None => Err(CredentialError::HelperEmpty { name, server }),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docker_cfg(path: &str) -> RegistryCredentials {
        RegistryCredentials {
            docker_config_file: Some(path.to_owned()),
            username: None,
            password: None,
        }
    }

    fn basic(u: &str, p: &str) -> Option<Credential> {
        Some(Credential::Basic {
            username: u.into(),
            password: p.into(),
        })
    }

    #[tokio::test]
    async fn a_rewritten_config_file_is_read_again() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("config.json");
        // "u:old-pass-1" then "u:new-pass-22" (a different length, as a rotated token is).
        std::fs::write(&f, r#"{"auths":{"r.example":{"auth":"dTpvbGQtcGFzcy0x"}}}"#).expect("w");
        let mut src = CredentialSource::new("r.example", Some(&docker_cfg(&f.to_string_lossy())));
        assert_eq!(src.get().await.expect("get"), basic("u", "old-pass-1"));
        std::fs::write(
            &f,
            r#"{"auths":{"r.example":{"auth":"dTpuZXctcGFzcy0yMg=="}}}"#,
        )
        .expect("w");
        // Within RECHECK of the last look the file is not even stat'ed.
        assert_eq!(src.get().await.expect("get"), basic("u", "old-pass-1"));
        src.recheck = Duration::ZERO;
        std::fs::write(
            &f,
            r#"{"auths":{"r.example":{"auth":"dTpuZXctcGFzcy0yMg=="}}}"#,
        )
        .expect("w");
        assert_eq!(src.get().await.expect("get"), basic("u", "new-pass-22"));
        assert!(!src.reload().await.expect("reload"), "unchanged");
    }

    #[tokio::test]
    async fn a_password_file_is_read_again_on_reload() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("pw");
        std::fs::write(&f, "first-secret\n").expect("w");
        let cfg = RegistryCredentials {
            docker_config_file: None,
            username: Some("u".into()),
            password: Some(SecretRef::file(f.to_string_lossy())),
        };
        let src = CredentialSource::new("r.example", Some(&cfg));
        assert_eq!(src.get().await.expect("get"), basic("u", "first-secret"));
        std::fs::write(&f, "second-secret\n").expect("w");
        assert!(src.reload().await.expect("reload"));
        assert_eq!(src.get().await.expect("get"), basic("u", "second-secret"));
    }

    #[tokio::test]
    async fn a_missing_helper_is_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("config.json");
        std::fs::write(
            &f,
            r#"{"credHelpers":{"r.example":"tagflow-no-such-helper"}}"#,
        )
        .expect("w");
        let src = CredentialSource::new("r.example", Some(&docker_cfg(&f.to_string_lossy())));
        let e = src.get().await.expect_err("missing");
        let msg = e.to_string();
        assert!(
            msg.contains("docker-credential-tagflow-no-such-helper is not on PATH"),
            "{msg}"
        );
        assert!(msg.contains(&*f.to_string_lossy()), "{msg}");
        assert!(!e.is_transient());
    }
}
