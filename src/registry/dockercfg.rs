//! Docker `config.json` (pure): which credential a host uses, as the docker CLI decides it.
//!
//! Order, as in docker: `credHelpers.<host>` names a helper; else `credsStore` names one for
//! every host; else `auths.<host>` holds `auth` (base64 `user:password`), `username`/`password`,
//! or an `identitytoken` (an OAuth2 refresh token, as Harbor, ACR and Quay robots use).

use std::collections::BTreeMap;

use base64::Engine;
use serde::Deserialize;

use crate::reference::auth_key_host;

/// What `config.json` says to use for one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerCreds {
    /// Username and password (or a personal access token).
    Basic {
        /// Username.
        username: String,
        /// Password or token.
        password: String,
    },
    /// An OAuth2 refresh token, exchanged at the token realm (`grant_type=refresh_token`).
    IdentityToken(String),
    /// Run `docker-credential-<name> get`.
    Helper(String),
    /// Nothing for this host.
    None,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
    creds_store: Option<String>,
}

#[derive(Debug, Deserialize)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

/// The credential `config.json` gives `host` (a canonical host, see [`super::reference`]).
/// Errors name the key, never its value.
pub fn docker_credentials(json: &str, host: &str) -> Result<DockerCreds, String> {
    let cfg: DockerConfig =
        serde_json::from_str(json).map_err(|e| format!("not a docker config.json: {e}"))?;
    if let Some((_, helper)) = cfg
        .cred_helpers
        .iter()
        .find(|(k, _)| auth_key_host(k) == host)
    {
        return helper_name(helper, &format!("credHelpers.{host}"));
    }
    if let Some(store) = &cfg.creds_store {
        return helper_name(store, "credsStore");
    }
    let Some((key, a)) = cfg.auths.iter().find(|(k, _)| auth_key_host(k) == host) else {
        return Ok(DockerCreds::None);
    };
    if let Some(t) = a.identitytoken.as_deref().filter(|t| !t.is_empty()) {
        return Ok(DockerCreds::IdentityToken(t.to_owned()));
    }
    if let (Some(u), Some(p)) = (&a.username, &a.password) {
        return Ok(DockerCreds::Basic {
            username: u.clone(),
            password: p.clone(),
        });
    }
    let Some(auth) = a.auth.as_deref().filter(|s| !s.is_empty()) else {
        return Err(format!(
            "auths.{key} has neither auth, username/password nor identitytoken"
        ));
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| format!("auths.{key}.auth is not base64"))?;
    let text = String::from_utf8(raw).map_err(|_| format!("auths.{key}.auth is not UTF-8"))?;
    let (u, p) = text
        .split_once(':')
        .ok_or_else(|| format!("auths.{key}.auth is not user:password"))?;
    Ok(DockerCreds::Basic {
        username: u.to_owned(),
        password: p.to_owned(),
    })
}

/// A helper name becomes part of a program name: keep it to what docker's helpers are called.
fn helper_name(name: &str, key: &str) -> Result<DockerCreds, String> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(DockerCreds::Helper(name.to_owned()))
    } else {
        Err(format!("{key} is not a credential helper name: {name:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(u: &str, p: &str) -> DockerCreds {
        DockerCreds::Basic {
            username: u.into(),
            password: p.into(),
        }
    }

    #[test]
    fn auths_forms() {
        let json = r#"{"auths":{"https://r.example:5000/v1/":{"auth":"dTpw"},"b.example":{"username":"x","password":"y"},"https://index.docker.io/v1/":{"auth":"aHViOnB3"},"h.example":{"auth":"","identitytoken":"refresh-1"}}}"#;
        let cases = [
            ("r.example:5000", basic("u", "p")),
            ("b.example", basic("x", "y")),
            ("docker.io", basic("hub", "pw")),
            ("h.example", DockerCreds::IdentityToken("refresh-1".into())),
            ("c.example", DockerCreds::None),
        ];
        for (host, want) in cases {
            assert_eq!(docker_credentials(json, host).expect(host), want, "{host}");
        }
        assert!(docker_credentials("{", "x").is_err());
        let e = docker_credentials(r#"{"auths":{"x.example":{}}}"#, "x.example").expect_err("e");
        assert!(e.contains("auths.x.example has neither"), "{e}");
    }

    #[test]
    fn helpers_come_first_as_in_docker() {
        let json = r#"{"auths":{"a.example":{"auth":"dTpw"}},"credHelpers":{"a.example":"ecr-login"},"credsStore":"pass"}"#;
        assert_eq!(
            docker_credentials(json, "a.example").expect("a"),
            DockerCreds::Helper("ecr-login".into())
        );
        assert_eq!(
            docker_credentials(json, "b.example").expect("b"),
            DockerCreds::Helper("pass".into())
        );
        let bad = r#"{"credsStore":"../../bin/sh"}"#;
        assert!(docker_credentials(bad, "a.example").is_err());
    }
}
