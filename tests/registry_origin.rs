//! No registry credential leaves the registry's origin (issue 11): a `Link` to another host is
//! not followed, and a redirect to another host arrives without `Authorization`. Two
//! in-process servers: the registry, and a second one that records whatever reaches it.

use std::sync::{Arc, Mutex};

use tagflow::config::{self, Config};
use tagflow::metrics::Metrics;
use tagflow::registry::Registries;
use testbed::{Response, Scripted};

const PASSWORD: &str = "pw-never-elsewhere";

fn cfg(host: &str, pw_file: &std::path::Path) -> Config {
    let text = format!(
        "registries:\n  - {{host: \"{host}\", insecure: true, timeout: 2s, rateLimit: 1000, credentials: {{username: u, password: {{file: {}}}}}}}\nimages:\n  app: {{repository: \"{host}/team/app\", policy: {{tags: '.*', order: built}}}}\nenvironments:\n  dev: {{file: envs/dev/patch.yaml}}\n",
        pw_file.display()
    );
    // The operator lets secrets go to the in-process servers (as `--secret-hosts 127.0.0.1`).
    tagflow::egress::set(Some("127.0.0.1")).expect("allowlist");
    config::parse("c.yaml", &text).unwrap_or_else(|e| panic!("{e}"))
}

fn host_of(s: &Scripted) -> String {
    s.base_url.trim_start_matches("http://").to_owned()
}

/// The registry: basic auth for everything, the tags list paginated to `next`.
fn registry(next: String, expect_auth: &'static str) -> Scripted {
    Scripted::start(move |req| {
        if req.header("authorization") != Some(expect_auth) {
            return Response::new(401).header("WWW-Authenticate", r#"Basic realm="r""#);
        }
        if req.path.ends_with("/tags/list") {
            return Response::json(200, &serde_json::json!({"tags": ["a"]}))
                .header("Link", &format!("<{next}>; rel=\"next\""));
        }
        // Manifests are "moved" to the other host, as registries do with blobs on a CDN.
        Response::new(307).header("Location", &next)
    })
}

fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tmp");
    let pw = dir.path().join("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).expect("write");
    (dir, pw)
}

#[tokio::test]
async fn a_link_to_another_origin_is_not_followed_and_gets_no_credentials() {
    let (_dir, pw) = setup();
    let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let seen2 = seen.clone();
    let other = Scripted::start(move |req| {
        seen2
            .lock()
            .expect("lock")
            .push(req.header("authorization").map(str::to_owned));
        Response::json(200, &serde_json::json!({"tags": ["stolen"]}))
    });
    let next = format!("{}/v2/team/app/tags/list?last=a", other.base_url);
    // base64("u:pw-never-elsewhere")
    let reg = registry(next, "Basic dTpwdy1uZXZlci1lbHNld2hlcmU=");
    let host = host_of(&reg);
    let c = cfg(&host, &pw);
    let r = Registries::new(Metrics::new());
    let e = r
        .list_tags(&c, &format!("{host}/team/app"))
        .await
        .expect_err("cross-origin link refused");
    let msg = e.to_string();
    assert!(msg.contains("leaves the registry"), "{msg}");
    assert!(!msg.contains(PASSWORD), "{msg}");
    assert!(!e.is_transient(), "a hostile link is not retried: {e}");
    assert!(
        seen.lock().expect("lock").is_empty(),
        "nothing reached the other host"
    );
    assert!(other.requests().is_empty());
    // The registry itself did get the credentials (so the test is not vacuous).
    assert!(
        reg.requests()
            .iter()
            .any(|q| q.header("authorization").is_some())
    );
}

#[tokio::test]
async fn a_redirect_to_another_origin_arrives_without_credentials() {
    let (_dir, pw) = setup();
    let other = Scripted::start(|_| Response::new(404));
    let next = format!("{}/blobs/elsewhere", other.base_url);
    let reg = registry(next, "Basic dTpwdy1uZXZlci1lbHNld2hlcmU=");
    let host = host_of(&reg);
    let c = cfg(&host, &pw);
    let r = Registries::new(Metrics::new());
    let _ = r
        .resolve(&c, &format!("{host}/team/app"), "a1b2c3d", "linux/amd64")
        .await
        .expect_err("the other host has nothing");
    let reached = other.requests();
    assert_eq!(reached.len(), 1, "the redirect was followed once");
    assert_eq!(
        reached[0].header("authorization"),
        None,
        "{:?}",
        reached[0].headers
    );
}
