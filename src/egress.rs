//! Where tagflow may send a secret. tagflow is configured by commits to the config repo, so
//! whoever can push there chooses registry hosts and the Slack API URL; the operator, outside
//! the repo (`--secret-hosts` / `TAGFLOW_SECRET_HOSTS`), fixes which hosts may receive the
//! secrets tagflow holds. A config that would send a password or a bot token to any other host
//! is refused with its file:line, and git credentials are never offered to another host.
//!
//! Patterns: `host` (any port), `host:port`, `*.example.com` (any subdomain, any port), and
//! `*` (anything: turns the check off). Without the flag only `slack.com` is allowed.

use std::sync::RwLock;

/// Allowed when the operator says nothing: the Slack Web API, for the bot token.
pub const DEFAULT: &str = "slack.com";

/// One allowed destination.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Any,
    /// `*.suffix`: hosts ending in `.suffix`.
    Subdomains(String),
    /// A host, on any port or on one.
    Host(String, Option<u16>),
}

/// The operator's allowlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Egress {
    patterns: Vec<Pattern>,
    text: String,
}

impl Egress {
    /// Parse a comma-separated list of patterns.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut patterns = Vec::new();
        for raw in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let p = raw.to_ascii_lowercase();
            patterns.push(if p == "*" {
                Pattern::Any
            } else if let Some(suffix) = p.strip_prefix("*.") {
                if !plain_host(suffix) {
                    return Err(format!("secret host pattern {raw:?}: not *.domain"));
                }
                Pattern::Subdomains(suffix.to_owned())
            } else {
                let (host, port) = split_port(&p)
                    .ok_or_else(|| format!("secret host pattern {raw:?}: bad port"))?;
                if !plain_host(host) {
                    return Err(format!(
                        "secret host pattern {raw:?}: not a host, host:port or *.domain"
                    ));
                }
                Pattern::Host(host.to_owned(), port)
            });
        }
        Ok(Self {
            text: list.trim().to_owned(),
            patterns,
        })
    }

    /// Whether a secret may go to `authority` (`host` or `host:port`, as a registry host or a
    /// URL's authority is written).
    pub fn allows(&self, authority: &str) -> bool {
        let a = authority.to_ascii_lowercase();
        let Some((host, port)) = split_port(&a) else {
            return false;
        };
        self.patterns.iter().any(|p| match p {
            Pattern::Any => true,
            Pattern::Subdomains(s) => host
                .strip_suffix(s.as_str())
                .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
            Pattern::Host(h, want) => h == host && want.is_none_or(|w| port == Some(w)),
        })
    }

    /// The list as the operator wrote it, for error messages.
    pub fn describe(&self) -> &str {
        if self.text.is_empty() {
            "no host"
        } else {
            &self.text
        }
    }
}

/// `host[:port]`; `None` when the port is not a number. IPv6 literals in brackets keep them.
fn split_port(s: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(port) => Some((ip, Some(port.parse().ok()?))),
            None if after.is_empty() => Some((ip, None)),
            None => None,
        };
    }
    match s.rsplit_once(':') {
        Some((h, port)) => Some((h, Some(port.parse().ok()?))),
        None => Some((s, None)),
    }
}

fn plain_host(h: &str) -> bool {
    !h.is_empty()
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
}

static POLICY: RwLock<Option<Egress>> = RwLock::new(None);

/// Set the process's allowlist (from `--secret-hosts`); `None` restores the default.
pub fn set(list: Option<&str>) -> Result<(), String> {
    let e = list.map(Egress::parse).transpose()?;
    if let Some(e) = &e
        && e.patterns.contains(&Pattern::Any)
    {
        tracing::warn!("--secret-hosts '*': secrets may be sent to any host the config repo names");
    }
    *POLICY
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = e;
    Ok(())
}

/// The allowlist in force.
pub fn current() -> Egress {
    POLICY
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
        .unwrap_or_else(|| Egress::parse(DEFAULT).unwrap_or_else(|_| unreachable!()))
}

/// The authority (`host[:port]`) of an http(s) URL, as [`Egress::allows`] takes it.
pub fn authority(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    let host = match u.host()? {
        url::Host::Ipv6(ip) => format!("[{ip}]"),
        h => h.to_string(),
    };
    Some(match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host,
    })
}

/// Tests that need hosts allowed: the default (`slack.com`) plus `list`, held until the guard
/// drops, one test at a time (the allowlist is process-wide).
#[cfg(test)]
pub(crate) fn test_lock(list: &str) -> impl Drop {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    struct Guard(#[allow(dead_code)] std::sync::MutexGuard<'static, ()>);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = set(None);
        }
    }
    let g = LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    set(Some(&format!("{DEFAULT},{list}"))).expect("test allowlist");
    Guard(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let e =
            Egress::parse("ghcr.io, registry.example.com:5000,*.ecr.aws,127.0.0.1").expect("parse");
        for ok in [
            "ghcr.io",
            "GHCR.io:443",
            "registry.example.com:5000",
            "1234.dkr.ecr.aws",
            "127.0.0.1:39001",
        ] {
            assert!(e.allows(ok), "{ok}");
        }
        for no in [
            "evil.io",
            "ghcr.io.evil.io",
            "registry.example.com",
            "registry.example.com:5001",
            "ecr.aws",
            "x.ecr.aws.evil",
            "127.0.0.2",
            "ghcr.io:notaport",
        ] {
            assert!(!e.allows(no), "{no}");
        }
        assert!(Egress::parse("*").expect("any").allows("anything:1"));
        assert!(!Egress::parse("").expect("empty").allows("x"));
        assert!(Egress::parse("a b").is_err());
        assert!(Egress::parse("*.").is_err());
        assert!(Egress::parse("h:99999").is_err());
        let v6 = Egress::parse("[::1]").expect("v6");
        assert!(v6.allows("[::1]:5000"));
    }

    #[test]
    fn default_is_slack_only() {
        let d = Egress::parse(DEFAULT).expect("default");
        assert!(d.allows("slack.com"));
        assert!(!d.allows("hooks.slack.com.evil"));
        assert!(!d.allows("127.0.0.1:8080"));
    }

    #[test]
    fn authorities_of_urls() {
        assert_eq!(
            authority("https://slack.com/api/").as_deref(),
            Some("slack.com")
        );
        assert_eq!(
            authority("http://127.0.0.1:9/api/").as_deref(),
            Some("127.0.0.1:9")
        );
        assert_eq!(authority("http://[::1]:9/").as_deref(), Some("[::1]:9"));
        assert_eq!(authority("not a url"), None);
    }
}
