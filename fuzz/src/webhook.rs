//! Webhook bodies of every kind tagflow accepts. The harness signs or authorises the body
//! correctly (so the fuzzer reaches the parsers behind authentication) or wrongly (then the
//! answer must be a refusal, whatever the body).

use std::sync::OnceLock;

use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue, header};
use sha2::Sha256;
use tagflow::config::Config;
use tagflow::server::{self, PushedRepo, Secrets, WebhookError, hosted};

const CONFIG: &str = "images:
  app: {repository: registry.example.com/team/app, policy: {tags: '.*', order: alphabetical}}
  hub: {repository: nginx, policy: {tags: '.*', order: alphabetical}}
  gh: {repository: ghcr.io/org/app, policy: {tags: '.*', order: alphabetical}}
environments:
  dev: {file: envs/dev/patch.yaml}
";

fn config() -> &'static Config {
    static C: OnceLock<Config> = OnceLock::new();
    C.get_or_init(|| tagflow::config::parse("fuzz.yaml", CONFIG).expect("fuzz config"))
}

fn sign(key: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn set(h: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

/// Fuzz every webhook kind's authentication and body parsing, then `images_for`.
pub fn webhook(data: &[u8]) {
    let Some((mode, body)) = crate::mode(data) else {
        return;
    };
    let wrong = mode & 8 != 0;
    let secret = |s: &'static str| if wrong { "not-the-secret" } else { s };
    let mut h = HeaderMap::new();
    let ct = if mode & 16 == 0 {
        server::EVENTS_MEDIA_TYPE
    } else {
        "application/json"
    };
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    let result: Result<Vec<PushedRepo>, WebhookError> = match mode & 7 {
        0 => {
            set(&mut h, server::SIGNATURE_HEADER, &sign(secret("key"), body));
            server::authenticate_and_parse(&h, body, &secrets())
        }
        1 => {
            set(
                &mut h,
                "authorization",
                &format!("Bearer {}", secret("tok")),
            );
            server::authenticate_and_parse(&h, body, &secrets())
        }
        2 => {
            set(&mut h, "authorization", secret("h-secret"));
            hosted::harbor(&h, body, Some("h-secret"))
        }
        3 => hosted::docker_hub(secret("hub-secret"), body, Some("hub-secret")),
        4 => {
            set(
                &mut h,
                hosted::GITHUB_SIGNATURE_HEADER,
                &sign(secret("gh-secret"), body),
            );
            let event = if mode & 16 == 0 {
                "registry_package"
            } else {
                "package"
            };
            set(&mut h, hosted::GITHUB_EVENT_HEADER, event);
            hosted::github(&h, body, Some("gh-secret"))
        }
        5 => {
            set(&mut h, hosted::GITLAB_TOKEN_HEADER, secret("gl-secret"));
            hosted::gitlab(&h, body, Some("gl-secret"), "registry.example.com")
        }
        _ => hosted::quay(secret("q-secret"), body, Some("q-secret")),
    };
    if wrong {
        assert!(
            matches!(result, Err(WebhookError::Unauthorized(_))),
            "a wrong secret was not refused: {result:?}"
        );
        return;
    }
    let Ok(repos) = result else { return };
    assert!(
        !repos.is_empty(),
        "accepted a delivery naming no repository"
    );
    for (host, path) in &repos {
        assert!(!path.is_empty(), "empty repository path");
        assert!(!path.contains(char::is_whitespace), "{path:?}");
        // A host is only compared with configured ones (`images_for`): any text is harmless.
        let _ = host;
    }
    if let Ok(images) = server::images_for(config(), &repos) {
        assert!(images.iter().all(|i| config().images.contains_key(i)));
    }
}

fn secrets() -> Secrets {
    Secrets {
        bearer: Some("tok".into()),
        hmac: Some("key".into()),
    }
}
