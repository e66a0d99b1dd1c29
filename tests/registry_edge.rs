//! Registry behaviour a real registry cannot be made to show (pagination, bearer challenges,
//! 429, broken bodies, slow answers) against in-process servers, plus multi-arch indexes and
//! the metadata cache against the real docker-registry.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tagflow::config::{self, Config};
use tagflow::metrics::Metrics;
use tagflow::registry::{Registries, RegistryError};
use testbed::{Registry, RegistryOpts, Response, Scripted};

fn cfg(host: &str, extra: &str) -> Config {
    let text = format!(
        "registries:\n  - {{host: \"{host}\", insecure: true, timeout: 1s, rateLimit: 1000{extra}}}\nimages:\n  app: {{repository: \"{host}/team/app\", policy: {{tags: '.*', order: built}}}}\nenvironments:\n  dev: {{file: envs/dev/patch.yaml}}\n"
    );
    // The operator lets secrets go to the in-process servers (as `--secret-hosts 127.0.0.1`).
    tagflow::egress::set(Some("127.0.0.1")).expect("allowlist");
    config::parse("c.yaml", &text).unwrap_or_else(|e| panic!("{e}"))
}

fn host_of(s: &Scripted) -> String {
    s.base_url.trim_start_matches("http://").to_owned()
}

fn registries() -> (Registries, Arc<Metrics>) {
    let m = Metrics::new();
    (Registries::new(m.clone()), m)
}

#[tokio::test]
async fn follows_link_pagination_to_the_end() {
    let s = Scripted::start(|req| match req.query_param("last").as_deref() {
        None => Response::json(
            200,
            &serde_json::json!({"name": "team/app", "tags": ["a", "b"]}),
        )
        .header("Link", r#"</v2/team/app/tags/list?n=2&last=b>; rel="next""#),
        Some("b") => Response::json(
            200,
            &serde_json::json!({"name": "team/app", "tags": ["c", "d"]}),
        )
        .header("Link", r#"</v2/team/app/tags/list?n=2&last=d>; rel="next""#),
        Some(_) => Response::json(200, &serde_json::json!({"name": "team/app", "tags": ["e"]})),
    });
    let c = cfg(&host_of(&s), "");
    let (r, m) = registries();
    let tags = r
        .list_tags(&c, &format!("{}/team/app", host_of(&s)))
        .await
        .expect("tags");
    assert_eq!(tags, ["a", "b", "c", "d", "e"]);
    assert_eq!(s.requests().len(), 3);
    assert_eq!(m.registry_requests_total(), 3);
}

#[tokio::test]
async fn a_pagination_loop_is_an_error_not_a_hang() {
    let s = Scripted::start(|_| {
        Response::json(200, &serde_json::json!({"tags": ["a"]}))
            .header("Link", r#"</v2/team/app/tags/list?last=a>; rel="next""#)
    });
    let c = cfg(&host_of(&s), "");
    let e = registries()
        .0
        .list_tags(&c, &format!("{}/team/app", host_of(&s)))
        .await
        .expect_err("loop");
    assert!(e.to_string().contains("pagination loops"), "{e}");
}

#[tokio::test]
async fn bearer_challenge_gets_a_token_with_basic_credentials_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret-pw\n").expect("write");
    let realm = Arc::new(std::sync::Mutex::new(String::new()));
    let realm2 = realm.clone();
    let s = Scripted::start(move |req| {
        if req.path == "/token" {
            // "user:s3cret-pw" in base64.
            if req.header("authorization") != Some("Basic dXNlcjpzM2NyZXQtcHc=") {
                return Response::new(401);
            }
            assert_eq!(
                req.query_param("scope").as_deref(),
                Some("repository:team/app:pull")
            );
            assert_eq!(req.query_param("service").as_deref(), Some("reg"));
            return Response::json(
                200,
                &serde_json::json!({"token": "tkn-abcdef", "expires_in": 300}),
            );
        }
        if req.header("authorization") == Some("Bearer tkn-abcdef") {
            return Response::json(200, &serde_json::json!({"tags": ["x"]}));
        }
        let r = realm2.lock().expect("lock").clone();
        Response::new(401).header(
            "WWW-Authenticate",
            &format!(r#"Bearer realm="{r}/token",service="reg",scope="repository:team/app:pull""#),
        )
    });
    *realm.lock().expect("lock") = s.base_url.clone();
    let extra = format!(
        ", credentials: {{username: user, password: {{file: {}}}}}",
        pw.display()
    );
    let c = cfg(&host_of(&s), &extra);
    let (r, _) = registries();
    let repo = format!("{}/team/app", host_of(&s));
    assert_eq!(r.list_tags(&c, &repo).await.expect("tags"), ["x"]);
    assert_eq!(r.list_tags(&c, &repo).await.expect("tags"), ["x"]);
    let paths: Vec<String> = s.requests().iter().map(|q| q.path.clone()).collect();
    assert_eq!(
        paths.iter().filter(|p| *p == "/token").count(),
        1,
        "token cached: {paths:?}"
    );
    assert_eq!(
        paths.len(),
        4,
        "challenge, token, retry, then one cached call: {paths:?}"
    );
}

#[tokio::test]
async fn honours_429_retry_after_then_succeeds() {
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let s = Scripted::start(move |_| {
        if n2.fetch_add(1, Ordering::SeqCst) == 0 {
            Response::text(429, "slow down").header("Retry-After", "1")
        } else {
            Response::json(200, &serde_json::json!({"tags": ["ok"]}))
        }
    });
    let c = cfg(&host_of(&s), "");
    let (r, m) = registries();
    let started = std::time::Instant::now();
    let tags = r
        .list_tags(&c, &format!("{}/team/app", host_of(&s)))
        .await
        .expect("tags after a 429");
    assert_eq!(tags, ["ok"]);
    assert_eq!(n.load(Ordering::SeqCst), 2);
    // Behaviour, not speed: the retry waited for the server's Retry-After.
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(m.encode().contains(r#"status="429"} 1"#), "{}", m.encode());
}

#[tokio::test]
async fn persistent_429_and_5xx_are_transient_errors() {
    let s = Scripted::start(|req| {
        if req.path.contains("/a/") {
            Response::text(429, "no").header("Retry-After", "0")
        } else {
            Response::text(503, "down")
        }
    });
    let h = host_of(&s);
    let c = cfg(&h, "");
    let (r, _) = registries();
    let e = r
        .list_tags(&c, &format!("{h}/a/app"))
        .await
        .expect_err("429");
    assert!(
        matches!(e, RegistryError::RateLimited { .. }) && e.is_transient(),
        "{e}"
    );
    let e = r
        .list_tags(&c, &format!("{h}/b/app"))
        .await
        .expect_err("503");
    assert!(
        matches!(e, RegistryError::Status { status: 503, .. }) && e.is_transient(),
        "{e}"
    );
}

#[tokio::test]
async fn truncated_and_malformed_bodies_are_clear_errors() {
    let s = Scripted::start(|req| {
        if req.path.contains("/trunc/") {
            Response::json(200, &serde_json::json!({"tags": ["a", "b", "c"]})).truncated()
        } else if req.path.contains("/junk/") {
            Response::text(200, "{\"tags\": [\"a\", ")
        } else {
            Response::json(200, &serde_json::json!({"tags": "not-a-list"}))
        }
    });
    let h = host_of(&s);
    let c = cfg(&h, "");
    let (r, _) = registries();
    for (repo, want) in [
        ("trunc", "failed to reach registry"),
        ("junk", "not valid JSON"),
        ("shape", "not valid JSON"),
    ] {
        let e = r
            .list_tags(&c, &format!("{h}/{repo}/app"))
            .await
            .expect_err("bad body");
        assert!(e.to_string().contains(want), "{repo}: {e}");
    }
}

#[tokio::test]
async fn a_slow_registry_times_out() {
    let s = Scripted::start(|_| {
        Response::json(200, &serde_json::json!({"tags": []})).delayed(Duration::from_secs(5))
    });
    let c = cfg(&host_of(&s), "");
    let e = registries()
        .0
        .list_tags(&c, &format!("{}/team/app", host_of(&s)))
        .await
        .expect_err("timeout");
    assert!(
        matches!(e, RegistryError::Transport { timeout: true, .. }),
        "{e}"
    );
}

#[tokio::test]
async fn a_manifest_that_does_not_match_its_digest_is_refused() {
    let s = Scripted::start(|_| {
        Response::text(200, r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":"sha256:00"}}"#)
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .header("Docker-Content-Digest", &format!("sha256:{}", "1".repeat(64)))
    });
    let h = host_of(&s);
    let c = cfg(&h, "");
    let e = registries()
        .0
        .resolve(&c, &format!("{h}/team/app"), "a1b2c3d", "linux/amd64")
        .await
        .expect_err("mismatch");
    assert!(e.to_string().contains("does not match its digest"), "{e}");
}

/// Real registry: a multi-arch index resolves to the index digest with the wanted platform's
/// build time; metadata is fetched once and then served from the cache.
#[tokio::test]
#[ignore = "real servers: run by scripts/test"]
async fn multi_arch_index_and_cache_on_the_real_registry() {
    let reg = tokio::task::spawn_blocking(|| {
        let reg = Registry::start(RegistryOpts::default());
        let pushed = reg.push_index(
            "team/app",
            "a1b2c3d",
            "2024-01-01T10:00:00Z",
            Some("a1b2c3d"),
            &[("linux", "amd64"), ("linux", "arm64")],
        );
        (reg, pushed)
    })
    .await
    .expect("push");
    let (reg, (index_digest, _)) = reg;
    let host = reg.host.clone();
    let c = cfg(&host, "");
    let (r, m) = registries();
    let repo = format!("{host}/team/app");
    let meta = r
        .resolve(&c, &repo, "a1b2c3d", "linux/arm64")
        .await
        .expect("resolve");
    assert_eq!(meta.digest, index_digest);
    assert!(meta.created.is_some());
    assert_eq!(meta.revision.as_deref(), Some("a1b2c3d"));
    let first = m.registry_requests_total();
    assert_eq!(first, 3, "index, platform manifest, config");
    let again = r
        .resolve(&c, &repo, "a1b2c3d", "linux/arm64")
        .await
        .expect("cached");
    assert_eq!(again, meta);
    assert_eq!(m.registry_requests_total(), first, "served from the cache");
    let e = r
        .resolve(&c, &repo, "a1b2c3d", "linux/s390x")
        .await
        .expect_err("no such platform");
    assert!(
        e.to_string()
            .contains("no manifest for platform linux/s390x"),
        "{e}"
    );
    // The digest the registry reports for the tag matches what tagflow computed.
    let head = r.current_digest(&c, &repo, "a1b2c3d").await.expect("HEAD");
    assert_eq!(head, index_digest);
    drop(reg);
}
