//! Wire formats of the distribution API (pure): manifests, image configs, auth challenges,
//! `Link` headers, `Retry-After`, docker `config.json`.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::Deserialize;

/// Media types tagflow asks for and understands.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// `GET /v2/<name>/tags/list`.
#[derive(Debug, Deserialize)]
pub struct TagList {
    /// Tags; `null` when the repository has none.
    pub tags: Option<Vec<String>>,
}

/// A manifest or an index, whichever came back.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnyManifest {
    /// Media type (may be absent in the body; then the Content-Type decides).
    pub media_type: Option<String>,
    /// Image manifests: the config descriptor.
    pub config: Option<Descriptor>,
    /// Indexes: the per-platform manifests.
    pub manifests: Option<Vec<Descriptor>>,
}

/// A content descriptor.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type.
    pub media_type: Option<String>,
    /// Content digest.
    pub digest: String,
    /// Platform (index entries).
    pub platform: Option<Platform>,
}

/// An index entry's platform.
#[derive(Debug, Deserialize)]
pub struct Platform {
    /// e.g. linux.
    pub os: String,
    /// e.g. amd64.
    pub architecture: String,
    /// e.g. v8.
    pub variant: Option<String>,
}

impl Platform {
    /// Whether this platform is `os/arch[/variant]`.
    pub fn matches(&self, want: &str) -> bool {
        let mut parts = want.split('/');
        let (os, arch, variant) = (parts.next(), parts.next(), parts.next());
        os == Some(self.os.as_str())
            && arch == Some(self.architecture.as_str())
            && (variant.is_none() || variant == self.variant.as_deref())
    }
}

/// The parts of an image config tagflow reads.
#[derive(Debug, Default, Deserialize)]
pub struct ImageConfigBlob {
    /// Build time.
    pub created: Option<String>,
    /// Runtime config with labels.
    pub config: Option<RuntimeConfig>,
}

/// `config` inside an image config.
#[derive(Debug, Default, Deserialize)]
pub struct RuntimeConfig {
    /// Image labels.
    #[serde(rename = "Labels")]
    pub labels: Option<BTreeMap<String, String>>,
}

impl ImageConfigBlob {
    /// `created` as UTC, if present and valid.
    pub fn created_at(&self) -> Option<DateTime<Utc>> {
        let s = self.created.as_deref()?;
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The `org.opencontainers.image.revision` label.
    pub fn revision(&self) -> Option<String> {
        self.config
            .as_ref()?
            .labels
            .as_ref()?
            .get("org.opencontainers.image.revision")
            .cloned()
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm=…`.
    Basic,
    /// `Bearer realm=…,service=…,scope=…`.
    Bearer {
        /// Token endpoint.
        realm: String,
        /// Service parameter.
        service: Option<String>,
        /// Scope parameter.
        scope: Option<String>,
    },
}

/// Parse a `WWW-Authenticate` header value.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(rest);
    Some(Challenge::Bearer {
        realm: params.get("realm")?.clone(),
        service: params.get("service").cloned(),
        scope: params.get("scope").cloned(),
    })
}

/// `k="v", k2=v2` → map; quoted values may hold commas.
fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, tail) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (&q[..end], &q[end + 1..]),
                None => (q, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.insert(key, value.to_owned());
        rest = tail.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// The `rel="next"` target of a `Link` header.
pub fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then(|| target.to_owned())
    })
}

/// `Retry-After` as seconds or an HTTP date, relative to `now`.
pub fn retry_after(header: &str, now: DateTime<Utc>) -> Option<Duration> {
    let h = header.trim();
    if let Ok(secs) = h.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(h).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// Token endpoint answer.
#[derive(Debug, Deserialize)]
pub struct TokenAnswer {
    /// Docker's field.
    pub token: Option<String>,
    /// OAuth2's field.
    pub access_token: Option<String>,
    /// Lifetime in seconds (default 60).
    pub expires_in: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
}

#[derive(Debug, Deserialize)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// Username and password for `host` from a docker `config.json`.
pub fn docker_credentials(json: &str, host: &str) -> Result<Option<(String, String)>, String> {
    let cfg: DockerConfig =
        serde_json::from_str(json).map_err(|e| format!("not a docker config.json: {e}"))?;
    let entry = cfg.auths.iter().find(|(k, _)| {
        let k = k
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        k.split('/').next() == Some(host)
    });
    let Some((_, a)) = entry else { return Ok(None) };
    if let (Some(u), Some(p)) = (&a.username, &a.password) {
        return Ok(Some((u.clone(), p.clone())));
    }
    let Some(auth) = &a.auth else {
        return Err(format!(
            "auths.{host} has neither auth nor username/password"
        ));
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| format!("auths.{host}.auth is not base64"))?;
    let text = String::from_utf8(raw).map_err(|_| format!("auths.{host}.auth is not UTF-8"))?;
    let (u, p) = text
        .split_once(':')
        .ok_or_else(|| format!("auths.{host}.auth is not user:password"))?;
    Ok(Some((u.to_owned(), p.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(parse_challenge("Basic realm=\"r\""), Some(Challenge::Basic));
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="reg",scope="repository:team/app:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("reg".into()),
                scope: Some("repository:team/app:pull,push".into()),
            })
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None);
    }

    #[test]
    fn links() {
        assert_eq!(
            next_link(r#"</v2/app/tags/list?n=2&last=b>; rel="next""#).as_deref(),
            Some("/v2/app/tags/list?n=2&last=b")
        );
        assert_eq!(
            next_link(r#"<https://x/a>; rel="prev", <https://x/b>; rel="next""#).as_deref(),
            Some("https://x/b")
        );
        assert_eq!(next_link("garbage"), None);
    }

    #[test]
    fn retry_after_forms() {
        let now = DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")
            .expect("t")
            .with_timezone(&Utc);
        assert_eq!(retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(
            retry_after("Mon, 01 Jan 2024 00:00:05 GMT", now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn docker_config_forms() {
        let json = r#"{"auths":{"https://r.example:5000/v1/":{"auth":"dTpw"},"b.example":{"username":"x","password":"y"}}}"#;
        assert_eq!(
            docker_credentials(json, "r.example:5000").expect("ok"),
            Some(("u".into(), "p".into()))
        );
        assert_eq!(
            docker_credentials(json, "b.example").expect("ok"),
            Some(("x".into(), "y".into()))
        );
        assert_eq!(docker_credentials(json, "c.example").expect("ok"), None);
        assert!(docker_credentials("{", "x").is_err());
    }

    #[test]
    fn platform_matching() {
        let p = Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: Some("v8".into()),
        };
        assert!(p.matches("linux/arm64"));
        assert!(p.matches("linux/arm64/v8"));
        assert!(!p.matches("linux/amd64"));
    }
}
