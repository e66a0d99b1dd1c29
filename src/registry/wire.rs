//! Wire formats of the distribution API (pure): manifests, image configs, auth challenges,
//! `Link` headers and their origin, `Retry-After`.

use std::collections::BTreeMap;
use std::time::Duration;

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

/// Whether two URLs share scheme, host and port (the origin credentials belong to).
pub fn same_origin(a: &url::Url, b: &url::Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// The next page of a listing: `link` (a `Link` target, absolute or relative) resolved against
/// the page it came with. Only a page on the registry's own origin is followed, so neither
/// credentials nor tokens ever reach another host, and https never drops to http.
pub fn next_page(origin: &url::Url, current: &url::Url, link: &str) -> Result<url::Url, String> {
    let next = current
        .join(link)
        .map_err(|e| format!("pagination link is not a URL: {e}"))?;
    if !same_origin(&next, origin) {
        return Err(format!(
            "pagination link leaves the registry ({}://{}) for {}://{}; not followed",
            origin.scheme(),
            origin.host_str().unwrap_or_default(),
            next.scheme(),
            next.host_str().unwrap_or_default(),
        ));
    }
    Ok(next)
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
    fn pagination_stays_on_the_registry_origin() {
        let u = |s: &str| url::Url::parse(s).expect("url");
        let origin = u("https://r.example");
        let page = u("https://r.example/v2/app/tags/list?n=2");
        let ok = [
            (
                "/v2/app/tags/list?n=2&last=b",
                "https://r.example/v2/app/tags/list?n=2&last=b",
            ),
            (
                "?n=2&last=b",
                "https://r.example/v2/app/tags/list?n=2&last=b",
            ),
            ("https://r.example:443/v2/x", "https://r.example/v2/x"),
        ];
        for (link, want) in ok {
            assert_eq!(next_page(&origin, &page, link).expect(link).as_str(), want);
        }
        for link in [
            "https://other.example/v2/app/tags/list",
            "http://r.example/v2/app/tags/list",
            "https://r.example:8443/v2/app/tags/list",
            "//evil.example/v2/x",
        ] {
            let e = next_page(&origin, &page, link).expect_err(link);
            assert!(e.contains("not followed"), "{e}");
        }
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
