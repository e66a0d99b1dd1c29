//! Bearer tokens (distribution token auth): asked for once per scope and reused until
//! `expires_in`, from a realm the registry names in its challenge.
//!
//! Basic credentials go to the realm as HTTP basic auth (`GET ?service=&scope=`); an OAuth2
//! refresh token (docker's `identitytoken`) is POSTed as `grant_type=refresh_token`. Either way
//! a credential is sent only over https when the registry itself is https.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use super::creds::Credential;

/// A token kept for its lifetime.
#[derive(Debug, Clone)]
struct Held {
    token: String,
    until: Instant,
}

/// Tokens by scope.
#[derive(Debug, Default)]
pub struct Tokens {
    held: Mutex<HashMap<String, Held>>,
}

impl Tokens {
    /// A token for `scope` that has not expired.
    pub async fn get(&self, scope: &str) -> Option<String> {
        let held = self.held.lock().await;
        held.get(scope)
            .filter(|h| h.until > Instant::now())
            .map(|h| h.token.clone())
    }

    /// Keep `token` for `scope` for `expires_in` seconds (60 when the answer has none).
    pub async fn put(&self, scope: &str, token: String, expires_in: Option<u64>) {
        crate::secret::register(&token);
        self.held.lock().await.insert(
            scope.to_owned(),
            Held {
                token,
                until: Instant::now() + lifetime(expires_in),
            },
        );
    }

    /// Forget every token (credentials changed).
    pub async fn clear(&self) {
        self.held.lock().await.clear();
    }
}

/// Longest a token is kept, whatever the server says: `expires_in` is outside input, and
/// `Instant::now() + u64::MAX seconds` panics.
const MAX_LIFETIME_SECS: u64 = 86_400;

/// How long to use a token: renew a little early so one never expires mid-request.
pub fn lifetime(expires_in: Option<u64>) -> Duration {
    let secs = expires_in.unwrap_or(60).clamp(10, MAX_LIFETIME_SECS);
    Duration::from_secs(secs - secs.min(60) / 12)
}

/// The request for a token at `realm`, or why none may be sent.
pub fn token_request(
    http: &reqwest::Client,
    base: &url::Url,
    realm: &str,
    service: Option<&str>,
    scope: &str,
    cred: Option<&Credential>,
) -> Result<(reqwest::RequestBuilder, url::Url), String> {
    let mut url = url::Url::parse(realm).map_err(|_| "token realm is not a URL".to_owned())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("token realm is not http(s)".into());
    }
    if cred.is_some() && base.scheme() == "https" && url.scheme() != "https" {
        return Err("token realm would downgrade https to http; credentials not sent".into());
    }
    let req = match cred {
        Some(Credential::Refresh(token)) => {
            let mut form = vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", token.as_str()),
                ("client_id", "tagflow"),
                ("scope", scope),
            ];
            if let Some(s) = service {
                form.push(("service", s));
            }
            http.post(url.clone()).form(&form)
        }
        other => {
            {
                let mut q = url.query_pairs_mut();
                if let Some(s) = service {
                    q.append_pair("service", s);
                }
                q.append_pair("scope", scope);
            }
            let req = http.get(url.clone());
            match other {
                Some(Credential::Basic { username, password }) => {
                    req.basic_auth(username, Some(password))
                }
                _ => req,
            }
        }
    };
    Ok((req, url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_live_almost_as_long_as_the_server_says() {
        assert_eq!(lifetime(Some(300)), Duration::from_secs(295));
        assert_eq!(lifetime(None), Duration::from_secs(55));
        assert_eq!(lifetime(Some(0)), Duration::from_secs(10));
        assert_eq!(lifetime(Some(3600)), Duration::from_secs(3595));
    }

    /// A token answer is outside input: `"expires_in": 18446744073709551615` once made
    /// `Instant::now() + lifetime` overflow and panic the scan (found by review of the wire
    /// fuzz target's token answers).
    #[tokio::test]
    async fn a_huge_expires_in_is_capped_not_a_panic() {
        let tokens = Tokens::default();
        tokens.put("s", "t".into(), Some(u64::MAX)).await;
        assert_eq!(tokens.get("s").await.as_deref(), Some("t"));
        assert!(lifetime(Some(u64::MAX)) <= Duration::from_secs(MAX_LIFETIME_SECS));
    }

    #[test]
    fn no_credential_goes_to_a_plain_http_realm_of_an_https_registry() {
        let http = reqwest::Client::new();
        let base = url::Url::parse("https://r.example").expect("url");
        let cred = Credential::Basic {
            username: "u".into(),
            password: "p".into(),
        };
        let e = token_request(
            &http,
            &base,
            "http://auth.example/t",
            None,
            "s",
            Some(&cred),
        )
        .expect_err("downgrade");
        assert!(e.contains("downgrade"), "{e}");
        // Anonymous is fine: nothing secret is sent.
        assert!(token_request(&http, &base, "http://auth.example/t", None, "s", None).is_ok());
        assert!(token_request(&http, &base, "ftp://x/t", None, "s", None).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_is_reused_until_it_expires() {
        let t = Tokens::default();
        t.put("repository:a:pull", "tok-1".into(), Some(60)).await;
        assert_eq!(t.get("repository:a:pull").await.as_deref(), Some("tok-1"));
        assert_eq!(t.get("repository:b:pull").await, None);
        tokio::time::advance(Duration::from_secs(56)).await;
        assert_eq!(t.get("repository:a:pull").await, None);
    }
}
