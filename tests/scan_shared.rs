//! Many images on one repository cost one tags listing per cycle (issue 11 §3): requests are
//! counted at the registry, an in-process server, while `tagflow once` runs a whole cycle.

mod common;

use std::time::Duration;

use common::{Local, file_url, ok, once, scripted_registry};
use testbed::BareRepo;

/// Images per environment file, all on one repository.
const IMAGES: usize = 1_000;

fn values(host: &str, env: &str) -> String {
    let mut s = format!("# {env}\n");
    for i in 0..IMAGES {
        s.push_str(&format!(
            "app{i:04}:\n  image:\n    repository: {host}/team/app\n    tag: a1b2c3d # {{\"$imagepolicy\": \"flux-system:app{i:04}:tag\"}}\n"
        ));
    }
    s
}

#[test]
fn a_thousand_images_on_one_repository_list_it_once_per_cycle() {
    let tags = serde_json::json!(["a1b2c3d", "b2c3d4e", "c3d4e5f"]);
    let (server, _) = scripted_registry(tags, Duration::from_millis(200));
    let host = server.base_url.trim_start_matches("http://").to_owned();
    let mut cfg = format!(
        "interval: 1h\nregistries:\n  - {{host: \"{host}\", insecure: true, rateLimit: 10000, concurrency: 8}}\nimages:\n"
    );
    for i in 0..IMAGES {
        cfg.push_str(&format!(
            "  app{i:04}: {{repository: {host}/team/app, policy: {{tags: '^[0-9a-f]{{7}}$', order: built}}}}\n"
        ));
    }
    cfg.push_str("environments:\n  dev: {file: envs/dev/patch.yaml}\n  staging: {file: envs/staging/patch.yaml}\n");
    let repo = BareRepo::new(&[
        ("config/tagflow.yaml", &cfg),
        ("envs/dev/patch.yaml", &values(&host, "dev")),
        ("envs/staging/patch.yaml", &values(&host, "staging")),
    ]);
    let local = Local::new();
    let logs = ok(&once(&file_url(&repo), &local, &[]));

    let dev = repo.read("main", "envs/dev/patch.yaml").expect("dev");
    assert_eq!(
        dev.matches("tag: c3d4e5f #").count(),
        IMAGES,
        "every image updated"
    );
    let requests = server.requests();
    let count = |part: &str| requests.iter().filter(|r| r.path.contains(part)).count();
    assert_eq!(
        count("/tags/list"),
        1,
        "one listing for {IMAGES} images in two environments; logs:\n{}",
        logs.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    // Three tags, each resolved once (the new pin reads the cached answer).
    assert!(
        count("/manifests/") <= 3,
        "manifests: {}",
        count("/manifests/")
    );
    assert!(count("/blobs/") <= 3, "blobs: {}", count("/blobs/"));
}

/// A failing listing is shared too: every image asking at once gets the same error from one
/// set of attempts, not one set per image.
#[tokio::test]
async fn a_failed_listing_is_shared_by_every_image_that_asked() {
    let server = testbed::Scripted::start(|_| testbed::Response::new(401));
    let host = server.base_url.trim_start_matches("http://").to_owned();
    let text = format!(
        "registries:\n  - {{host: \"{host}\", insecure: true, timeout: 5s}}\nimages:\n  app: {{repository: \"{host}/team/app\", policy: {{tags: '.*', order: alphabetical}}}}\nenvironments:\n  dev: {{file: envs/dev/patch.yaml}}\n"
    );
    let cfg = tagflow::config::parse("c.yaml", &text).expect("config");
    let registries = tagflow::registry::Registries::new(tagflow::metrics::Metrics::new());
    let scan = registries.scan(&cfg);
    let repo = format!("{host}/team/app");
    let answers = futures::future::join_all((0..50).map(|_| scan.list_tags(&repo))).await;
    assert!(answers.iter().all(|a| matches!(
        a.as_ref().map_err(|e| &**e),
        Err(tagflow::registry::RegistryError::Unauthorized { .. })
    )));
    assert_eq!(server.requests().len(), 1, "one request for fifty askers");
}

/// A tag asked for by many images at once is resolved by one set of requests; once resolved it
/// leaves the scan (the registry cache answers later askers, with no request), while a failed
/// resolution stays so every image asking gets the same error without asking again.
#[tokio::test]
async fn a_resolution_is_shared_while_in_flight_and_leaves_the_scan_once_cached() {
    let (server, _) = scripted_registry(serde_json::json!(["a1b2c3d"]), Duration::ZERO);
    let host = server.base_url.trim_start_matches("http://").to_owned();
    let text = format!(
        "registries:\n  - {{host: \"{host}\", insecure: true, timeout: 5s}}\nimages:\n  app: {{repository: \"{host}/team/app\", policy: {{tags: '.*', order: built}}}}\nenvironments:\n  dev: {{file: envs/dev/patch.yaml}}\n"
    );
    let cfg = tagflow::config::parse("c.yaml", &text).expect("config");
    let registries = tagflow::registry::Registries::new(tagflow::metrics::Metrics::new());
    let scan = registries.scan(&cfg);
    let repo = format!("{host}/team/app");
    let answers =
        futures::future::join_all((0..50).map(|_| scan.resolve(&repo, "a1b2c3d", "linux/amd64")))
            .await;
    assert!(answers.iter().all(Result::is_ok));
    let requests = server.requests().len();
    assert_eq!(
        requests, 2,
        "one manifest and one config blob for fifty askers"
    );
    assert_eq!(
        format!("{scan:?}"),
        "Scan(0 repositories, 0 tags)",
        "a resolved tag is not held by the scan"
    );
    let again = scan
        .resolve(&repo, "a1b2c3d", "linux/amd64")
        .await
        .expect("cached");
    assert_eq!(again, answers[0].clone().expect("ok"));
    assert_eq!(server.requests().len(), requests, "answered from the cache");

    // A registry that has no such manifest.
    let gone = testbed::Scripted::start(|_| testbed::Response::new(404));
    let gone_host = gone.base_url.trim_start_matches("http://").to_owned();
    let text = format!(
        "registries:\n  - {{host: \"{gone_host}\", insecure: true, timeout: 5s}}\nimages:\n  app: {{repository: \"{gone_host}/team/app\", policy: {{tags: '.*', order: built}}}}\nenvironments:\n  dev: {{file: envs/dev/patch.yaml}}\n"
    );
    let cfg = tagflow::config::parse("c.yaml", &text).expect("config");
    let scan = registries.scan(&cfg);
    let repo = format!("{gone_host}/team/app");
    let missing =
        futures::future::join_all((0..10).map(|_| scan.resolve(&repo, "0000000", "linux/amd64")))
            .await;
    assert!(missing.iter().all(Result::is_err));
    assert_eq!(gone.requests().len(), 1, "one 404 for ten askers");
    assert!(scan.resolve(&repo, "0000000", "linux/amd64").await.is_err());
    assert_eq!(gone.requests().len(), 1, "a failure is shared for the scan");
    assert_eq!(format!("{scan:?}"), "Scan(0 repositories, 1 tags)");
}
