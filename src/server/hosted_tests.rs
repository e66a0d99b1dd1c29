use super::*;
// The signing and header helpers of the generic webhook's tests serve here too.
use crate::server::tests::{headers, sign as github_sign};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/testdata/webhooks/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn at(host: &str, path: &str) -> Vec<PushedRepo> {
    vec![(Some(host.to_owned()), path.to_owned())]
}

fn unauthorized(r: Result<Vec<PushedRepo>, WebhookError>) -> bool {
    matches!(r, Err(WebhookError::Unauthorized(_)))
}

const AUTH: &str = "Basic aGFyYm9yOmhvb2stc2VjcmV0";

#[test]
fn harbor_push_artifact() {
    let body = fixture("harbor_push_artifact.json");
    let h = headers(&[("authorization", AUTH)]);
    assert_eq!(
        harbor(&h, &body, Some(AUTH)).expect("ok"),
        at("harbor.example.com", "team/app")
    );
    assert!(
        unauthorized(harbor(&h, &body, None)),
        "no secret configured"
    );
    assert!(unauthorized(harbor(&headers(&[]), &body, Some(AUTH))));
    assert!(unauthorized(harbor(
        &headers(&[("authorization", "Basic bm9wZQ==")]),
        &body,
        Some(AUTH)
    )));
    // Other event types are not pushes; a resource_url for another path does not lend its host.
    let pull = String::from_utf8(body.clone())
        .expect("utf8")
        .replace("PUSH_ARTIFACT", "PULL_ARTIFACT");
    assert_eq!(
        harbor(&h, pull.as_bytes(), Some(AUTH)),
        Err(WebhookError::NoPush)
    );
    let moved = String::from_utf8(body).expect("utf8").replace(
        "harbor.example.com/team/app:",
        "harbor.example.com/team/other:",
    );
    assert_eq!(
        harbor(&h, moved.as_bytes(), Some(AUTH)).expect("ok"),
        vec![(None, "team/app".to_owned())]
    );
    assert!(matches!(
        harbor(&h, b"{\"type\":\"PUSH_ARTIFACT\"}", Some(AUTH)),
        Err(WebhookError::BadBody(_))
    ));
}

#[test]
fn docker_hub_push() {
    let body = fixture("dockerhub_push.json");
    assert_eq!(
        docker_hub("s3cret-path-0123", &body, Some("s3cret-path-0123")).expect("ok"),
        at("docker.io", "acme/app")
    );
    assert!(unauthorized(docker_hub(
        "s3cret-path-0124",
        &body,
        Some("s3cret-path-0123")
    )));
    assert!(unauthorized(docker_hub("anything", &body, None)));
    // An official image's one-component name is Docker Hub's `library/` path.
    let official = br#"{"push_data":{"tag":"1.27"},"repository":{"repo_name":"nginx"}}"#;
    assert_eq!(
        docker_hub("k", official, Some("k")).expect("ok"),
        at("docker.io", "library/nginx")
    );
    let hostile = br#"{"push_data":{"tag":"a\nb: c"},"repository":{"repo_name":"acme/app"}}"#;
    assert!(matches!(
        docker_hub("k", hostile, Some("k")),
        Err(WebhookError::BadBody(_))
    ));
}

#[test]
fn github_package_events() {
    let key = "gh-hook-key";
    for (event, file) in [
        ("package", "github_package_published.json"),
        ("registry_package", "github_registry_package_published.json"),
    ] {
        let body = fixture(file);
        let sig = github_sign(&body, key);
        let h = headers(&[
            (GITHUB_EVENT_HEADER, event),
            (GITHUB_SIGNATURE_HEADER, &sig),
        ]);
        assert_eq!(
            github(&h, &body, Some(key)).expect(file),
            at("ghcr.io", "acme/app"),
            "{file}: namespace lowercased as GHCR names are"
        );
        assert!(unauthorized(github(&h, &body, Some("other-key"))), "{file}");
        assert!(unauthorized(github(&h, &body, None)), "{file}");
        let unsigned = headers(&[(GITHUB_EVENT_HEADER, event)]);
        assert!(unauthorized(github(&unsigned, &body, Some(key))), "{file}");
        // One byte changed after signing.
        let mut tampered = body.clone();
        let i = tampered.iter().position(|b| *b == b'a').expect("an a");
        tampered[i] = b'b';
        assert!(unauthorized(github(&h, &tampered, Some(key))), "{file}");
    }
    // Signed pings, updates and npm packages are ignored, not refused.
    let ping = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
    let h = headers(&[
        (GITHUB_EVENT_HEADER, "ping"),
        (GITHUB_SIGNATURE_HEADER, &github_sign(ping, key)),
    ]);
    assert_eq!(github(&h, ping, Some(key)), Err(WebhookError::NoPush));
    let npm = br#"{"action":"published","package":{"name":"lib","namespace":"acme","package_type":"npm"}}"#;
    let h = headers(&[
        (GITHUB_EVENT_HEADER, "package"),
        (GITHUB_SIGNATURE_HEADER, &github_sign(npm, key)),
    ]);
    assert_eq!(github(&h, npm, Some(key)), Err(WebhookError::NoPush));
}

#[test]
fn gitlab_registry_notification() {
    let body = fixture("gitlab_registry_push.json");
    let h = headers(&[(GITLAB_TOKEN_HEADER, "gl-token-0123")]);
    // The internal host the registry saw is not the one images are pulled from.
    assert_eq!(
        gitlab(
            &h,
            &body,
            Some("gl-token-0123"),
            "registry.gitlab.example.com"
        )
        .expect("ok"),
        at("registry.gitlab.example.com", "group/project/app")
    );
    assert!(unauthorized(gitlab(
        &h,
        &body,
        Some("gl-token-0124"),
        "registry.gitlab.example.com"
    )));
    assert!(unauthorized(gitlab(
        &headers(&[]),
        &body,
        Some("gl-token-0123"),
        "registry.gitlab.example.com"
    )));
    assert!(matches!(
        gitlab(&h, b"{nope", Some("gl-token-0123"), "r.example"),
        Err(WebhookError::BadBody(_))
    ));
}

#[test]
fn quay_repository_push() {
    for (file, host) in [
        ("quay_repository_push.json", "quay.io"),
        ("quay_repository_push_legacy.json", "quay.example.com"),
    ] {
        let body = fixture(file);
        assert_eq!(
            quay("q-secret-0123", &body, Some("q-secret-0123")).expect(file),
            at(host, "acme/app")
        );
        assert!(unauthorized(quay("q-secret", &body, Some("q-secret-0123"))));
        assert!(unauthorized(quay("q-secret-0123", &body, None)));
    }
    // A build notification to the same URL is not a push.
    let build = br#"{"repository":"acme/app","docker_url":"quay.io/acme/app","build_id":"b1","docker_tags":["latest"]}"#;
    assert_eq!(quay("k", build, Some("k")), Err(WebhookError::NoPush));
    let mismatch =
        br#"{"repository":"acme/app","docker_url":"quay.io/acme/other","updated_tags":["x"]}"#;
    assert!(matches!(
        quay("k", mismatch, Some("k")),
        Err(WebhookError::BadBody(_))
    ));
}

#[test]
fn hosted_names_map_to_configured_images() {
    let cfg = crate::config::parse(
        "c.yaml",
        "images:\n  hub: {repository: acme/app, policy: {tags: '.*', order: built}}\n  official: {repository: nginx, policy: {tags: '.*', order: built}}\n  gh: {repository: ghcr.io/acme/app, policy: {tags: '.*', order: built}}\nenvironments:\n  dev: {file: envs/dev/patch.yaml}\n",
    )
    .expect("config");
    let names = |repos: &[PushedRepo]| {
        super::super::images_for(&cfg, repos)
            .map(|s| s.into_iter().collect::<Vec<_>>())
            .map_err(|e| e.to_string())
    };
    assert_eq!(names(&at("docker.io", "acme/app")), Ok(vec!["hub".into()]));
    assert_eq!(
        names(&at("docker.io", "library/nginx")),
        Ok(vec!["official".into()])
    );
    assert_eq!(names(&at("ghcr.io", "acme/app")), Ok(vec!["gh".into()]));
    // Unknown repositories next to a known one are skipped; alone they are reported.
    let mixed = [
        (Some("quay.io".to_owned()), "acme/app".to_owned()),
        (Some("ghcr.io".to_owned()), "acme/app".to_owned()),
    ];
    assert_eq!(names(&mixed), Ok(vec!["gh".into()]));
    assert!(names(&at("quay.io", "acme/app")).is_err());
}
