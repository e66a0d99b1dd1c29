//! Repository names as users write them (pure), following docker's reference grammar.
//!
//! `nginx`, `library/nginx`, `docker.io/library/nginx` and `index.docker.io/library/nginx` are
//! one Docker Hub repository: a first component is a registry host only if it has a `.` or a
//! `:` or is `localhost`; anything else is a Docker Hub namespace. Docker Hub's API lives at
//! `registry-1.docker.io` and its official images under `library/`. Values files keep whatever
//! spelling the user wrote; only the registry requests use the canonical form.

/// Docker Hub's canonical name, used as the key for config, credentials and metrics.
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's distribution API answers.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// The key Docker Hub credentials have in a docker `config.json` (and for credential helpers).
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// A repository split into its registry and its path on that registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoRef {
    /// Canonical registry host (`docker.io` for every Docker Hub spelling).
    pub host: String,
    /// Path on the registry (`library/nginx` for `nginx`).
    pub path: String,
}

impl RepoRef {
    /// Split `repository` the way docker does.
    pub fn parse(repository: &str) -> Self {
        let (host, path) = match repository.split_once('/') {
            Some((first, rest)) if is_host(first) => (canonical_host(first), rest.to_owned()),
            _ => (DOCKER_HUB, repository.to_owned()),
        };
        let path = if host == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        Self {
            host: host.to_owned(),
            path,
        }
    }

    /// The host the distribution API is reached at.
    pub fn api_host(&self) -> &str {
        api_host(&self.host)
    }

    /// `host/path`, the one spelling tagflow keys caches by.
    pub fn canonical(&self) -> String {
        format!("{}/{}", self.host, self.path)
    }
}

/// Whether a first path component names a registry host.
fn is_host(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

/// Docker Hub's aliases folded into `docker.io`; other hosts unchanged.
pub fn canonical_host(host: &str) -> &str {
    match host {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB
        }
        other => other,
    }
}

/// The API host for a canonical host.
pub fn api_host(host: &str) -> &str {
    if host == DOCKER_HUB {
        DOCKER_HUB_API
    } else {
        host
    }
}

/// The canonical host of a docker `config.json` `auths` key (`https://index.docker.io/v1/`,
/// `ghcr.io`, `http://127.0.0.1:5000/v2/`).
pub fn auth_key_host(key: &str) -> &str {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    canonical_host(k.split('/').next().unwrap_or(k))
}

/// The server URL docker uses for a host in `config.json` and credential helpers.
pub fn server_url(host: &str) -> String {
    if host == DOCKER_HUB {
        DOCKER_HUB_AUTH_KEY.to_owned()
    } else {
        host.to_owned()
    }
}

/// An image reference as written in a values file, split without normalising any part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageRef<'a> {
    /// Repository as spelled (`host:5000/team/app`).
    pub name: &'a str,
    /// Tag after the last `:` that follows the last `/`, if any.
    pub tag: Option<&'a str>,
    /// Digest after `@` (`sha256:…`), if any.
    pub digest: Option<&'a str>,
}

impl<'a> ImageRef<'a> {
    /// Splits `name[:tag][@digest]`; a `:` before the last `/` is a registry port, not a tag.
    pub fn split(reference: &'a str) -> Self {
        let (rest, digest) = match reference.split_once('@') {
            Some((r, d)) => (r, Some(d)),
            None => (reference, None),
        };
        let slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[slash..].rfind(':') {
            Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
            None => (rest, None),
        };
        Self { name, tag, digest }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_split_without_normalising() {
        let split = |r: &str| {
            let i = ImageRef::split(r);
            (
                i.name.to_owned(),
                i.tag.map(str::to_owned),
                i.digest.map(str::to_owned),
            )
        };
        let own = |n: &str, t: Option<&str>, d: Option<&str>| {
            (n.to_owned(), t.map(str::to_owned), d.map(str::to_owned))
        };
        let cases = [
            ("nginx", own("nginx", None, None)),
            ("nginx:1.25", own("nginx", Some("1.25"), None)),
            ("host:5000/team/app", own("host:5000/team/app", None, None)),
            (
                "host:5000/team/app:v2",
                own("host:5000/team/app", Some("v2"), None),
            ),
            (
                "r.example.com/app:v2.3.0@sha256:ab",
                own("r.example.com/app", Some("v2.3.0"), Some("sha256:ab")),
            ),
            (
                "r.example.com/app@sha256:ab",
                own("r.example.com/app", None, Some("sha256:ab")),
            ),
            (
                "host:5000/app:v1@sha256:ab",
                own("host:5000/app", Some("v1"), Some("sha256:ab")),
            ),
        ];
        for (r, want) in cases {
            assert_eq!(split(r), want, "{r:?}");
        }
    }

    #[test]
    fn docker_reference_grammar() {
        let hub = |p: &str| RepoRef {
            host: "docker.io".into(),
            path: p.into(),
        };
        let cases: &[(&str, RepoRef)] = &[
            ("nginx", hub("library/nginx")),
            ("library/nginx", hub("library/nginx")),
            ("docker.io/library/nginx", hub("library/nginx")),
            ("index.docker.io/library/nginx", hub("library/nginx")),
            ("docker.io/nginx", hub("library/nginx")),
            ("bitnami/redis", hub("bitnami/redis")),
            ("docker.io/bitnami/redis", hub("bitnami/redis")),
            (
                "ghcr.io/org/app",
                RepoRef {
                    host: "ghcr.io".into(),
                    path: "org/app".into(),
                },
            ),
            (
                "localhost/app",
                RepoRef {
                    host: "localhost".into(),
                    path: "app".into(),
                },
            ),
            (
                "127.0.0.1:5000/team/app",
                RepoRef {
                    host: "127.0.0.1:5000".into(),
                    path: "team/app".into(),
                },
            ),
            (
                "registry.example.com/a/b/c",
                RepoRef {
                    host: "registry.example.com".into(),
                    path: "a/b/c".into(),
                },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(&RepoRef::parse(input), want, "{input}");
        }
    }

    #[test]
    fn docker_hub_is_reached_at_registry_1() {
        assert_eq!(RepoRef::parse("nginx").api_host(), "registry-1.docker.io");
        assert_eq!(
            RepoRef::parse("index.docker.io/library/nginx").canonical(),
            "docker.io/library/nginx"
        );
        assert_eq!(RepoRef::parse("ghcr.io/o/a").api_host(), "ghcr.io");
    }

    #[test]
    fn auth_keys_fold_to_canonical_hosts() {
        assert_eq!(auth_key_host("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(auth_key_host("ghcr.io"), "ghcr.io");
        assert_eq!(auth_key_host("http://127.0.0.1:5000/v2/"), "127.0.0.1:5000");
        assert_eq!(server_url("docker.io"), "https://index.docker.io/v1/");
        assert_eq!(server_url("ghcr.io"), "ghcr.io");
    }
}
