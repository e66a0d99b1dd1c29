//! Hosted-registry webhooks through a real `tagflow run`: a valid delivery of each vendor's
//! documented payload triggers a scan; a bad signature or secret triggers nothing.

mod common;

use common::*;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use testbed::{BareRepo, Registry, RegistryOpts};

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/testdata/webhooks/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn github_signature(body: &str, key: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("key");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

const HARBOR_AUTH: &str = "Basic aGFyYm9yOmhhcmJvci1ob29rLTAxMjM=";
const HUB_SECRET: &str = "hub-path-secret-0123456789";
const GITHUB_KEY: &str = "github-hook-key-0123456789";
const GITLAB_TOKEN: &str = "gitlab-hook-token-0123456789";
const QUAY_SECRET: &str = "quay-path-secret-0123456789";

/// Harbor, Quay and GitLab name the local registry (by `resource_url`, `docker_url` and
/// `webhook.gitlab.registryHost`), so their scans find a freshly pushed tag and commit it.
/// Docker Hub and GHCR are fixed hosts this machine cannot reach: their deliveries are shown to
/// start a scan of the right image (the answer, the log, one more cycle), which then fails.
#[test]
#[ignore = "real servers: run by scripts/test"]
fn each_hosted_registry_webhook_triggers_a_scan_and_a_bad_one_does_not() {
    let reg = Registry::start(RegistryOpts::default());
    push_three(&reg);
    let local = Local::new();
    let f = |name: &str, v: &str| p(&local.file(name, v));
    let hooks = format!(
        "webhook:\n  harbor: {{secret: {{file: {}}}}}\n  dockerHub: {{secret: {{file: {}}}}}\n  \
         github: {{secret: {{file: {}}}}}\n  gitlab: {{secret: {{file: {}}}, registryHost: \"{}\"}}\n  \
         quay: {{secret: {{file: {}}}}}\n",
        f("harbor", HARBOR_AUTH),
        f("hub", HUB_SECRET),
        f("github", GITHUB_KEY),
        f("gitlab", GITLAB_TOKEN),
        reg.host,
        f("quay", QUAY_SECRET),
    );
    let hosted = "  hub: {repository: docker.io/acme/app, policy: {tags: '.*', order: built}}\n  \
                  gh: {repository: ghcr.io/acme/app, policy: {tags: '.*', order: built}}\n";
    // Docker Hub and GHCR entries with a short timeout: their scans fail fast offline.
    let cfg = config(&reg, &local, "{tags: '^[0-9a-f]{7}$', order: built}", &hooks)
        .replace("interval: 1s", "interval: 1h")
        .replace(
            "images:\n",
            &format!(
                "  - {{host: docker.io, timeout: 2s}}\n  - {{host: ghcr.io, timeout: 2s}}\nimages:\n{hosted}"
            ),
        );
    let repo = BareRepo::new(&[
        ("config/tagflow.yaml", &cfg),
        (
            "envs/dev/patch.yaml",
            &dev_values(&format!("{}/team/app", reg.host)),
        ),
    ]);
    let run = Running::start(&file_url(&repo), &local, &[]);
    run.wait_ready();
    let start = run.cycles_done();

    let http = reqwest::blocking::Client::new();
    let post = |path: &str, body: &str, headers: &[(&str, &str)]| {
        let mut r = http
            .post(run.url(path))
            .header("Content-Type", "application/json")
            .body(body.to_owned());
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let resp = r.send().expect("post");
        (resp.status().as_u16(), resp.text().unwrap_or_default())
    };
    let mut good = 0;
    let mut committed = |tag: &str| {
        good += 1;
        run.wait_cycles(start + good);
        let dev = repo.read("main", "envs/dev/patch.yaml").expect("values");
        assert!(
            dev.contains(&format!("tag: {tag} #")),
            "{tag}:\n{dev}\n{}",
            run.logs()
        );
    };

    // Harbor: the Authorization header configured on the webhook.
    reg.push_image("team/app", "1a1a1a1", "2024-02-01T00:00:00Z", None);
    let harbor = fixture("harbor_push_artifact.json").replace("harbor.example.com", &reg.host);
    let bad = post(
        "/webhook/harbor",
        &harbor,
        &[("Authorization", "Basic bm9wZQ==")],
    );
    assert_eq!(bad.0, 401, "{bad:?}");
    let ok = post(
        "/webhook/harbor",
        &harbor,
        &[("Authorization", HARBOR_AUTH)],
    );
    assert_eq!(ok, (202, "scanning app\n".to_owned()));
    committed("1a1a1a1");

    // Quay: the secret is the URL's last segment; `docker_url` names the registry.
    reg.push_image("team/app", "2b2b2b2", "2024-02-02T00:00:00Z", None);
    let quay = fixture("quay_repository_push.json")
        .replace("quay.io", &reg.host)
        .replace("acme/app", "team/app");
    let bad = post("/webhook/quay/not-the-secret", &quay, &[]);
    assert_eq!(bad.0, 401, "{bad:?}");
    let ok = post(&format!("/webhook/quay/{QUAY_SECRET}"), &quay, &[]);
    assert_eq!(ok.0, 202, "{ok:?}");
    committed("2b2b2b2");

    // GitLab's registry: distribution's envelope with X-Gitlab-Token.
    reg.push_image("team/app", "3c3c3c3", "2024-02-03T00:00:00Z", None);
    let gitlab = fixture("gitlab_registry_push.json").replace("group/project/app", "team/app");
    let bad = post("/webhook/gitlab", &gitlab, &[("X-Gitlab-Token", "wrong")]);
    assert_eq!(bad.0, 401, "{bad:?}");
    let ok = post(
        "/webhook/gitlab",
        &gitlab,
        &[("X-Gitlab-Token", GITLAB_TOKEN)],
    );
    assert_eq!(ok.0, 202, "{ok:?}");
    committed("3c3c3c3");

    // Docker Hub and GitHub: the scan of the named image starts (and fails offline).
    let mut scanned = |image: &str| {
        good += 1;
        run.wait_cycles(start + good);
        assert!(
            run.logs().contains(&format!("images={{\"{image}\"}}")),
            "{image}: {}",
            run.logs()
        );
    };
    let hub = fixture("dockerhub_push.json");
    let bad = post("/webhook/dockerhub/not-the-secret", &hub, &[]);
    assert_eq!(bad.0, 401, "{bad:?}");
    let ok = post(&format!("/webhook/dockerhub/{HUB_SECRET}"), &hub, &[]);
    assert_eq!(ok, (202, "scanning hub\n".to_owned()));
    scanned("hub");

    // A repository tagflow does not track is ignored with a 200, and scans nothing.
    let other = fixture("dockerhub_push.json").replace("acme/app", "acme/unrelated");
    let ignored = post(&format!("/webhook/dockerhub/{HUB_SECRET}"), &other, &[]);
    assert_eq!(ignored.0, 200, "{ignored:?}");

    let gh = fixture("github_package_published.json");
    let bad = post(
        "/webhook/github",
        &gh,
        &[
            ("X-GitHub-Event", "package"),
            ("X-Hub-Signature-256", &github_signature(&gh, "other-key")),
        ],
    );
    assert_eq!(bad.0, 401, "{bad:?}");
    let ok = post(
        "/webhook/github",
        &gh,
        &[
            ("X-GitHub-Event", "package"),
            ("X-Hub-Signature-256", &github_signature(&gh, GITHUB_KEY)),
        ],
    );
    assert_eq!(ok, (202, "scanning gh\n".to_owned()));
    scanned("gh");

    // Only the five good deliveries caused cycles; the refused and the ignored ones none (all
    // came before the last good one, whose cycle has finished).
    let metrics = reqwest::blocking::get(run.url("/metrics"))
        .expect("metrics")
        .text()
        .expect("text");
    for line in [
        r#"tagflow_webhooks_total{result="unauthorized"} 5"#,
        r#"tagflow_webhooks_total{result="accepted"} 5"#,
        r#"tagflow_webhooks_total{result="unknown_repository"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line}\n{metrics}");
    }
    assert_eq!(run.cycles_done(), start + 5, "{}", run.logs());
    let logs = run.logs();
    for secret in [
        HARBOR_AUTH,
        HUB_SECRET,
        GITHUB_KEY,
        GITLAB_TOKEN,
        QUAY_SECRET,
    ] {
        assert!(!logs.contains(secret), "a webhook secret reached the logs");
    }
}
