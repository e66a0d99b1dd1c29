//! Token (bearer) auth against the real docker-registry in `auth: token` mode, with the
//! testbed's token issuer (the only stand-in: it signs JWTs the registry verifies against its
//! `rootcertbundle`). Token requests are counted in the issuer's log.

use std::time::Duration;

use tagflow::config::{self, Config};
use tagflow::metrics::Metrics;
use tagflow::registry::{Registries, RegistryError};
use testbed::{Registry, RegistryOpts, TokenIssuer, TokenRequest};

fn cfg(host: &str, credentials: &str) -> Config {
    let text = format!(
        "registries:\n  - {{host: \"{host}\", insecure: true, timeout: 5s, rateLimit: 1000{credentials}}}\nimages:\n  app: {{repository: \"{host}/team/app\", policy: {{tags: '.*', order: built}}}}\nenvironments:\n  dev: {{file: envs/dev/patch.yaml}}\n"
    );
    config::parse("c.yaml", &text).unwrap_or_else(|e| panic!("{e}"))
}

/// A token-auth registry with `team/app:a1b2c3d` and `pub/app:v1` pushed.
async fn token_registry() -> Registry {
    tokio::task::spawn_blocking(|| {
        let reg = Registry::start(RegistryOpts {
            token: true,
            ..RegistryOpts::default()
        });
        reg.push_image(
            "team/app",
            "a1b2c3d",
            "2024-01-01T10:00:00Z",
            Some("a1b2c3d"),
        );
        reg.push_image("pub/app", "v1", "2024-01-01T10:00:00Z", None);
        reg
    })
    .await
    .expect("start registry")
}

fn issuer(reg: &Registry) -> &TokenIssuer {
    reg.token.as_ref().expect("token mode")
}

fn docker_config(reg: &Registry) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("config.json");
    std::fs::write(&f, reg.docker_config_json()).expect("write");
    let extra = format!(", credentials: {{dockerConfigFile: {}}}", f.display());
    (dir, extra)
}

fn token_requests(reg: &Registry) -> Vec<TokenRequest> {
    issuer(reg).requests()
}

#[tokio::test]
#[ignore = "real servers: run by scripts/test"]
async fn anonymous_token_pulls_a_public_repository_and_nothing_else() {
    let reg = token_registry().await;
    issuer(&reg).set_public("pub/app");
    let c = cfg(&reg.host, "");
    let r = Registries::new(Metrics::new());
    let tags = r
        .list_tags(&c, &reg.image("pub/app"))
        .await
        .expect("anonymous pull of a public repository");
    assert_eq!(tags, ["v1"]);
    let meta = r
        .resolve(&c, &reg.image("pub/app"), "v1", "linux/amd64")
        .await
        .expect("manifest and config with the same token");
    assert!(meta.created.is_some());
    let log = token_requests(&reg);
    assert_eq!(
        log.len(),
        1,
        "one token for list, manifest and blob: {log:?}"
    );
    assert_eq!(log[0].grant, "anonymous");
    assert_eq!(log[0].scope, "repository:pub/app:pull");
    let e = r
        .list_tags(&c, &reg.image("team/app"))
        .await
        .expect_err("a private repository refuses an anonymous token");
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e}");
    assert!(!e.is_transient());
}

#[tokio::test]
#[ignore = "real servers: run by scripts/test"]
async fn basic_credentials_are_exchanged_for_a_token_reused_until_it_expires() {
    let reg = token_registry().await;
    issuer(&reg).set_expires_in(10);
    let (_dir, extra) = docker_config(&reg);
    let c = cfg(&reg.host, &extra);
    let r = Registries::new(Metrics::new());
    let repo = reg.image("team/app");
    for _ in 0..3 {
        assert_eq!(r.list_tags(&c, &repo).await.expect("tags"), ["a1b2c3d"]);
    }
    r.resolve(&c, &repo, "a1b2c3d", "linux/amd64")
        .await
        .expect("resolve");
    let log = token_requests(&reg);
    assert_eq!(
        log.len(),
        1,
        "one token for 3 listings and a resolve: {log:?}"
    );
    assert_eq!(log[0].grant, "basic");
    assert_eq!(log[0].account.as_deref(), Some("tagflow"));
    assert_eq!(log[0].scope, "repository:team/app:pull");
    assert_eq!(log[0].status, 200);
    // Past expires_in (10 s) the next call asks for a new token, once.
    tokio::time::sleep(Duration::from_secs(11)).await;
    r.list_tags(&c, &repo).await.expect("tags after expiry");
    r.list_tags(&c, &repo).await.expect("tags again");
    assert_eq!(token_requests(&reg).len(), 2, "{:?}", token_requests(&reg));
}

#[tokio::test]
#[ignore = "real servers: run by scripts/test"]
async fn a_cached_token_the_registry_refuses_is_replaced() {
    let reg = token_registry().await;
    let (_dir, extra) = docker_config(&reg);
    let c = cfg(&reg.host, &extra);
    let r = Registries::new(Metrics::new());
    let repo = reg.image("team/app");
    // Permissions revoked: the token carries no access, the registry answers 401.
    issuer(&reg).set_deny_all(true);
    let e = r.list_tags(&c, &repo).await.expect_err("no access");
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e}");
    assert_eq!(token_requests(&reg).len(), 1);
    // Restored: the cached (useless) token meets a 401 and is refreshed once.
    issuer(&reg).set_deny_all(false);
    assert_eq!(r.list_tags(&c, &repo).await.expect("tags"), ["a1b2c3d"]);
    assert_eq!(r.list_tags(&c, &repo).await.expect("tags"), ["a1b2c3d"]);
    assert_eq!(token_requests(&reg).len(), 2, "{:?}", token_requests(&reg));
}

#[tokio::test]
#[ignore = "real servers: run by scripts/test"]
async fn an_identity_token_is_a_refresh_token_posted_to_the_realm() {
    let reg = token_registry().await;
    issuer(&reg).add_refresh_token("rt-robot-7f3a9c", "robot$ci");
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("config.json");
    let json = serde_json::json!({"auths": {reg.host.clone(): {"auth": "", "identitytoken": "rt-robot-7f3a9c"}}});
    std::fs::write(&f, json.to_string()).expect("write");
    let c = cfg(
        &reg.host,
        &format!(", credentials: {{dockerConfigFile: {}}}", f.display()),
    );
    let r = Registries::new(Metrics::new());
    assert_eq!(
        r.list_tags(&c, &reg.image("team/app")).await.expect("tags"),
        ["a1b2c3d"]
    );
    let log = token_requests(&reg);
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].method, "POST");
    assert_eq!(log[0].grant, "refresh_token");
    assert_eq!(log[0].account.as_deref(), Some("robot$ci"));
    assert_eq!(log[0].scope, "repository:team/app:pull");
    // An unknown refresh token is a clear refusal.
    std::fs::write(
        &f,
        serde_json::json!({"auths": {reg.host.clone(): {"identitytoken": "rt-revoked-000"}}})
            .to_string(),
    )
    .expect("write");
    let r = Registries::new(Metrics::new());
    let e = r
        .list_tags(&c, &reg.image("team/app"))
        .await
        .expect_err("revoked");
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e}");
    assert!(!e.to_string().contains("rt-revoked-000"), "{e}");
}

#[tokio::test]
#[ignore = "real servers: run by scripts/test"]
async fn a_rotated_password_works_once_the_mounted_file_changes() {
    let mut reg = token_registry().await;
    let (dir, extra) = docker_config(&reg);
    let c = cfg(&reg.host, &extra);
    let r = Registries::new(Metrics::new());
    let repo = reg.image("team/app");
    r.list_tags(&c, &repo).await.expect("tags");
    let old = reg.password.clone().expect("pw");
    // The token service rotates first; the cached token still works until it expires, so
    // forget it (as a new scope or an expiry would), then the old password is refused.
    reg.set_password("rotated-pw-51c2e8");
    let r = Registries::new(Metrics::new());
    let e = r.list_tags(&c, &repo).await.expect_err("old password");
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e}");
    assert!(!e.to_string().contains(&old), "{e}");
    // The kubelet rewrites the mounted config: the next call uses it, no restart.
    std::fs::write(dir.path().join("config.json"), reg.docker_config_json()).expect("write");
    assert_eq!(r.list_tags(&c, &repo).await.expect("tags"), ["a1b2c3d"]);
    let log = token_requests(&reg);
    let statuses: Vec<u16> = log.iter().map(|t| t.status).collect();
    assert_eq!(statuses.last(), Some(&200), "{log:?}");
    assert!(statuses.contains(&401), "{log:?}");
}
