//! Selection against an in-process registry stand-in (tier 1): what `minAge` fetches and keeps,
//! and what a cycle says when no tag qualifies.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{Duration, Utc};
use sha2::{Digest, Sha256};
use tagflow::config::{self, Gates};
use tagflow::cycle::Scope;
use tagflow::cycle::select::Selector;
use tagflow::gitops::{GitAuth, RepoOptions};
use tagflow::metrics::Metrics;
use tagflow::registry::Registries;
use testbed::{Response, Scripted};

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A registry serving `team/app` with one single-platform image per `(tag, age)`.
fn registry(images: &[(&str, Duration)]) -> Scripted {
    let now = Utc::now();
    let mut manifests = BTreeMap::new();
    let mut blobs = BTreeMap::new();
    for (tag, age) in images {
        let created = (now - *age).to_rfc3339();
        let blob = serde_json::json!({"created": created, "architecture": "amd64", "os": "linux", "config": {}})
            .to_string();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(blob.as_bytes()), "size": blob.len()},
            "layers": []
        })
        .to_string();
        blobs.insert(sha(blob.as_bytes()), blob);
        manifests.insert((*tag).to_owned(), manifest);
    }
    let tags: Vec<String> = manifests.keys().cloned().collect();
    Scripted::start(move |req| {
        let last = req.path.rsplit('/').next().unwrap_or_default();
        if req.path.ends_with("/tags/list") {
            Response::json(200, &serde_json::json!({"name": "team/app", "tags": tags}))
        } else if let Some(m) = req
            .path
            .contains("/manifests/")
            .then(|| manifests.get(last))
            .flatten()
        {
            Response::text(200, m)
                .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                .header("Docker-Content-Digest", &sha(m.as_bytes()))
        } else if let Some(b) = req
            .path
            .contains("/blobs/")
            .then(|| blobs.get(last))
            .flatten()
        {
            Response::text(200, b)
        } else {
            Response::new(404)
        }
    })
}

/// Config blobs read: one per tag whose build time was needed.
fn blob_reads(server: &Scripted) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| r.path.contains("/blobs/"))
        .count()
}

async fn select(server: &Scripted, policy: &str) -> Result<tagflow::plan::Desired, String> {
    let host = server.base_url.trim_start_matches("http://");
    let text = format!(
        "registries:\n  - {{host: \"{host}\", insecure: true}}\nimages:\n  app:\n    repository: {host}/team/app\n    policy: {policy}\nenvironments:\n  dev: {{file: envs/dev/patch.yaml}}\n"
    );
    let cfg = config::parse("c.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
    let work = tempfile::tempdir().expect("tempdir");
    let opts = RepoOptions::new(
        "file:///nonexistent".into(),
        "main".into(),
        "config/tagflow.yaml".into(),
        Some(work.path().to_owned()),
        GitAuth::default(),
    );
    let metrics = Metrics::new();
    let selector = Selector::new(&opts, Arc::new(Registries::new(metrics.clone())), metrics);
    let (mut desired, errors) = selector
        .select(&cfg, &Gates::default(), &Scope::All)
        .await
        .expect("not cancelled");
    match errors.into_iter().next() {
        Some((_, e)) => Err(e.to_string()),
        None => Ok(desired.remove("app").expect("app selected")),
    }
}

#[tokio::test]
async fn min_age_reads_build_times_for_semver_and_keeps_the_older_tag() {
    let server = registry(&[
        ("1.0.0", Duration::hours(3)),
        ("1.1.0", Duration::hours(2)),
        ("1.2.0", Duration::minutes(12)),
    ]);
    let d = select(&server, "{tags: '.*', order: semver, minAge: 1h}")
        .await
        .expect("a tag");
    assert_eq!(d.tag, "1.1.0");
    assert!(
        d.reason.contains("newest qualifying tag 1.2.0 is 12m")
            && d.reason.ends_with("old, minAge 1h: keeping 1.1.0"),
        "{}",
        d.reason
    );
    assert_eq!(blob_reads(&server), 3, "each tag's build time was read");

    // Without minAge, semver needs no build times and takes the newest.
    let plain = registry(&[
        ("1.0.0", Duration::hours(3)),
        ("1.2.0", Duration::minutes(1)),
    ]);
    let d = select(&plain, "{tags: '.*', order: semver}")
        .await
        .expect("a tag");
    assert_eq!(d.tag, "1.2.0");
    assert_eq!(blob_reads(&plain), 1, "only the winner is resolved");
}

#[tokio::test]
async fn no_qualifying_tag_is_explained() {
    let server = registry(&[
        ("v1", Duration::hours(1)),
        ("vnext", Duration::hours(1)),
        ("latest", Duration::hours(1)),
    ]);
    let e = select(&server, "{tags: '^v', order: semver}")
        .await
        .expect_err("none");
    assert_eq!(
        e,
        "no tag qualifies: the registry listed 3 tags, 2 matched `^v`; 2 not semver: v1, vnext"
    );
    let young = registry(&[("1.0.0", Duration::minutes(5))]);
    let e = select(&young, "{tags: '.*', order: built, minAge: 1h}")
        .await
        .expect_err("none");
    assert!(e.ends_with("1 younger than minAge 1h: 1.0.0"), "{e}");
}
