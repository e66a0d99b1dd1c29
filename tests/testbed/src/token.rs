//! A small token issuer for docker-registry's `auth: token` mode — the one stand-in of the
//! token-auth testbed. It signs ES256 JWTs with a key whose certificate chains to the CA the
//! registry trusts (`rootcertbundle`), the way Docker Hub's, Harbor's or GitLab's token
//! services do:
//!
//! - `GET /token?service=&scope=` anonymous: pull on public repositories only;
//! - the same with HTTP basic credentials: every action asked for, when the password is right;
//! - `POST /token` with `grant_type=refresh_token` (docker's `identitytoken`, as Harbor, ACR and
//!   Quay robots use) or `grant_type=password`;
//!
//! and logs every request (so tests count token requests).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use serde_json::json;

use crate::http::{Request, Response, Scripted, parse_form};
use crate::tls::{SignerFiles, make_signer, random_hex};

/// The `service` the registry and the issuer agree on.
pub const TOKEN_SERVICE: &str = "testbed-registry";
/// The `iss` of every token.
pub const TOKEN_ISSUER: &str = "testbed-issuer";

/// One request the issuer answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// "GET" or "POST".
    pub method: String,
    /// "anonymous", "basic", "refresh_token" or "password".
    pub grant: String,
    /// The account the credentials named, if any.
    pub account: Option<String>,
    /// The scope asked for.
    pub scope: String,
    /// The status answered.
    pub status: u16,
}

#[derive(Debug, Default)]
struct State {
    users: BTreeMap<String, String>,
    refresh_tokens: BTreeMap<String, String>,
    public: BTreeSet<String>,
    expires_in: u64,
    deny_all: bool,
    log: Vec<TokenRequest>,
}

struct Signer {
    key: EcdsaKeyPair,
    x5c: String,
}

impl Signer {
    fn load(files: &SignerFiles) -> Signer {
        let der = std::fs::read(&files.key_der).expect("read signer key");
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &SystemRandom::new())
                .expect("signer key is a P-256 PKCS#8 key");
        let cert = std::fs::read(&files.cert_der).expect("read signer cert");
        Signer {
            key,
            x5c: base64::engine::general_purpose::STANDARD.encode(cert),
        }
    }

    /// A JWT for `sub` granting `access` (`[(type, name, actions)]`) for `expires_in` seconds.
    fn sign(&self, sub: &str, access: &[(String, String, Vec<String>)], expires_in: u64) -> String {
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let header = json!({"typ": "JWT", "alg": "ES256", "x5c": [self.x5c]});
        let access: Vec<_> = access
            .iter()
            .map(|(t, n, a)| json!({"type": t, "name": n, "actions": a}))
            .collect();
        let claims = json!({
            "iss": TOKEN_ISSUER, "sub": sub, "aud": TOKEN_SERVICE,
            "exp": now + expires_in, "nbf": now - 10, "iat": now,
            "jti": random_hex(8), "access": access,
        });
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self
            .key
            .sign(&SystemRandom::new(), input.as_bytes())
            .expect("sign");
        format!("{input}.{}", b64(sig.as_ref()))
    }
}

/// A running token issuer (in-process, on 127.0.0.1); stops on drop.
pub struct TokenIssuer {
    /// The token endpoint, the registry's `realm`.
    pub realm: String,
    /// Files for the registry's `rootcertbundle`.
    pub files: SignerFiles,
    server: Scripted,
    state: Arc<Mutex<State>>,
    signer: Arc<Signer>,
}

/// `repository:team/app:pull,push` → (type, name, actions); several scopes space-separated.
fn parse_scopes(s: &str) -> Vec<(String, String, Vec<String>)> {
    s.split(' ')
        .filter_map(|one| {
            let (t, rest) = one.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            Some((
                t.to_owned(),
                name.to_owned(),
                actions.split(',').map(str::to_owned).collect(),
            ))
        })
        .collect()
}

fn basic_of(req: &Request) -> Option<(String, String)> {
    let v = req.header("authorization")?.strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(v.trim())
        .ok()?;
    let (u, p) = String::from_utf8(raw)
        .ok()?
        .split_once(':')
        .map(|(u, p)| (u.to_owned(), p.to_owned()))?;
    Some((u, p))
}

fn answer(state: &Mutex<State>, signer: &Signer, req: &Request) -> Response {
    let form = if req.method == "POST" {
        parse_form(&req.body_text())
    } else {
        parse_form(&req.query)
    };
    let param = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let scope = param("scope").unwrap_or_default();
    let mut st = state.lock().expect("issuer state");
    let expires_in = st.expires_in;
    // Who is asking: None = anonymous, Some(Err) = bad credentials.
    let (grant, who): (&str, Option<Result<String, String>>) =
        match (req.method.as_str(), param("grant_type").as_deref()) {
            ("POST", Some("refresh_token")) => {
                let t = param("refresh_token").unwrap_or_default();
                (
                    "refresh_token",
                    Some(
                        st.refresh_tokens
                            .get(&t)
                            .cloned()
                            .ok_or_else(|| "unknown".to_owned()),
                    ),
                )
            }
            ("POST", Some("password")) => {
                let (u, p) = (
                    param("username").unwrap_or_default(),
                    param("password").unwrap_or_default(),
                );
                let ok = st.users.get(&u) == Some(&p);
                ("password", Some(if ok { Ok(u) } else { Err(u) }))
            }
            ("GET", _) => match basic_of(req) {
                Some((u, p)) => {
                    let ok = st.users.get(&u) == Some(&p);
                    ("basic", Some(if ok { Ok(u) } else { Err(u) }))
                }
                None => ("anonymous", None),
            },
            _ => ("unsupported", Some(Err(String::new()))),
        };
    let service_ok = param("service").as_deref() == Some(TOKEN_SERVICE);
    let (status, account, resp) = match who {
        _ if !service_ok => (
            400,
            None,
            Response::json(400, &json!({"error": "unknown service"})),
        ),
        Some(Err(u)) => (
            401,
            Some(u).filter(|u| !u.is_empty()),
            Response::json(401, &json!({"errors": [{"code": "UNAUTHORIZED"}]})),
        ),
        who => {
            let account = who.and_then(Result::ok);
            let granted: Vec<_> = parse_scopes(&scope)
                .into_iter()
                .map(|(t, name, actions)| {
                    let actions: Vec<String> = match &account {
                        _ if st.deny_all => Vec::new(),
                        Some(_) => actions,
                        None if st.public.contains(&name) => {
                            actions.into_iter().filter(|a| a == "pull").collect()
                        }
                        None => Vec::new(),
                    };
                    (t, name, actions)
                })
                .collect();
            let token = signer.sign(account.as_deref().unwrap_or(""), &granted, expires_in);
            let body = json!({"token": token, "access_token": token, "expires_in": expires_in});
            (200, account, Response::json(200, &body))
        }
    };
    st.log.push(TokenRequest {
        method: req.method.clone(),
        grant: grant.to_owned(),
        account,
        scope,
        status,
    });
    resp
}

impl TokenIssuer {
    /// Make a signing key and its CA in `dir` and start serving `/token`. Tokens last 300 s.
    pub fn start(dir: &Path) -> TokenIssuer {
        let files = make_signer(dir);
        let signer = Arc::new(Signer::load(&files));
        let state = Arc::new(Mutex::new(State {
            expires_in: 300,
            ..State::default()
        }));
        let (s2, k2) = (state.clone(), signer.clone());
        let server = Scripted::start(move |req| {
            if req.path != "/token" {
                return Response::new(404);
            }
            answer(&s2, &k2, req)
        });
        TokenIssuer {
            realm: server.url("/token"),
            files,
            server,
            state,
            signer,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().expect("issuer state"))
    }

    /// Accept `password` for `user` (replacing an earlier one: a rotated credential).
    pub fn set_user(&self, user: &str, password: &str) {
        self.with(|s| s.users.insert(user.to_owned(), password.to_owned()));
    }

    /// Accept `token` as an OAuth2 refresh token for `user`.
    pub fn add_refresh_token(&self, token: &str, user: &str) {
        self.with(|s| s.refresh_tokens.insert(token.to_owned(), user.to_owned()));
    }

    /// Let anonymous clients pull `repo`.
    pub fn set_public(&self, repo: &str) {
        self.with(|s| s.public.insert(repo.to_owned()));
    }

    /// The `expires_in` of tokens issued from now on.
    pub fn set_expires_in(&self, secs: u64) {
        self.with(|s| s.expires_in = secs);
    }

    /// Issue tokens without any access from now on (permissions revoked), or normal ones again.
    pub fn set_deny_all(&self, deny: bool) {
        self.with(|s| s.deny_all = deny);
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.with(|s| s.log.clone())
    }

    /// A token with pull, push and delete on `repo`, minted without a request (the harness's
    /// own pushes; not in [`Self::requests`]).
    pub fn mint(&self, repo: &str) -> String {
        let actions = ["pull", "push", "delete"].map(str::to_owned).to_vec();
        self.signer.sign(
            "testbed-admin",
            &[("repository".into(), repo.to_owned(), actions)],
            300,
        )
    }

    /// The issuer's base URL.
    pub fn base_url(&self) -> &str {
        &self.server.base_url
    }
}
