//! Pull-request mode end to end: `tagflow once` pushes the change to its own branch (never the
//! target), opens one PR per branch on a stand-in forge (tests/testbed/src/forge.rs: the
//! documented GitHub/GitLab/Gitea endpoints, in process — the only stand-in), leaves an
//! up-to-date branch alone, rebuilds it when the target moves, closes a superseded PR before
//! pushing the newer change, and retires the branch once the target has the values.
//!
//! The same scenario runs over git's smart HTTP (lighttpd) with GitHub's API and over sshd with
//! GitLab's (tier 2, real servers), and over file:// with Gitea's (tier 1).

mod common;

use std::sync::{Arc, Mutex};

use common::{Local, file_url, logs, once, p, pinned_values};
use testbed::{BareRepo, Flavor, Forge, GitHttp, GitSsh, Response, Scripted};

const TOKEN: &str = "forge-token-5ec2e7";
const BRANCH: &str = "tagflow/dev-app";

/// An in-process registry whose tag list the test changes; every tag is one tiny image.
fn registry(tags: Arc<Mutex<Vec<String>>>) -> Scripted {
    use sha2::Digest as _;
    let config_blob =
        br#"{"created":"2024-01-01T00:00:00Z","architecture":"amd64","os":"linux","config":{}}"#
            .to_vec();
    let config_digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&config_blob)));
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_blob.len()},
        "layers": []
    })
    .to_string();
    let digest = format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(manifest.as_bytes()))
    );
    Scripted::start(move |req| {
        if req.path.ends_with("/tags/list") {
            let tags = tags.lock().unwrap().clone();
            Response::json(200, &serde_json::json!({"name": "team/app", "tags": tags}))
        } else if req.path.contains("/manifests/") {
            Response::text(200, &manifest)
                .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                .header("Docker-Content-Digest", &digest)
        } else if req.path.contains("/blobs/") {
            Response::new(200).body(config_blob.clone())
        } else {
            Response::new(404)
        }
    })
}

struct World {
    repo: BareRepo,
    host: String,
    tags: Arc<Mutex<Vec<String>>>,
    _registry: Scripted,
    local: Local,
}

fn world(forge: &Forge, provider: &str, env_extra: &str) -> World {
    world_at(&forge.api_url(), provider, env_extra)
}

/// [`world`] with the forge API at `api_url`.
fn world_at(api_url: &str, provider: &str, env_extra: &str) -> World {
    let tags = Arc::new(Mutex::new(vec!["a1b2c3d".to_owned(), "b2c3d4e".to_owned()]));
    let registry = registry(tags.clone());
    let host = registry.base_url.trim_start_matches("http://").to_owned();
    let local = Local::new();
    let token = local.file("forge-token", &format!("{TOKEN}\n"));
    let config = format!(
        "registries:\n  - {{host: \"{host}\", insecure: true}}\nimages:\n  app:\n    repository: {host}/team/app\n    policy: {{tags: '^[0-9a-f]{{7}}$', order: alphabetical}}\nenvironments:\n  dev:\n    file: envs/dev/patch.yaml\n    push: {{branch: 'tagflow/{{env}}-{{image}}'}}\n    pullRequest:\n      provider: {provider}\n      tokenFile: {}\n      apiUrl: {}\n      project: org/config\n      labels: [tagflow]\n{env_extra}",
        token.display(),
        api_url,
    );
    let repo = BareRepo::new(&[
        ("config/tagflow.yaml", &config),
        (
            "envs/dev/patch.yaml",
            &pinned_values(&format!("{host}/team/app")),
        ),
    ]);
    World {
        repo,
        host,
        tags,
        _registry: registry,
        local,
    }
}

/// `tagflow once` over `url` with `auth`, allowed to send secrets to the stand-in forge.
fn run_once(w: &World, url: &str, auth: &[&str]) -> String {
    let mut args = vec!["--secret-hosts", "127.0.0.1"];
    args.extend_from_slice(auth);
    let out = once(url, &w.local, &args);
    let l = logs(&out);
    assert!(out.status.success(), "{l}");
    assert!(
        !l.contains(TOKEN),
        "the forge token leaked into the logs:\n{l}"
    );
    l
}

fn parent_of(repo: &BareRepo, rev: &str) -> String {
    testbed::git(&repo.path, &["rev-parse", &format!("{rev}^1")])
        .trim()
        .to_owned()
}

/// Merge tagflow's branch into main with a merge commit, as a forge's merge button does.
fn merge(repo: &BareRepo, branch: &str) {
    let tree = testbed::git(&repo.path, &["rev-parse", &format!("{branch}^{{tree}}")]);
    let commit = testbed::git(
        &repo.path,
        &[
            "commit-tree",
            tree.trim(),
            "-p",
            "main",
            "-p",
            branch,
            "-m",
            "Merge pull request from tagflow",
        ],
    );
    testbed::git(
        &repo.path,
        &["update-ref", "refs/heads/main", commit.trim()],
    );
}

/// Every request the GitLab stand-in got carried the token as GitLab wants it.
fn assert_gitlab_token_on_every_request(forge: &Forge) {
    for r in forge.server.requests() {
        assert_eq!(
            r.header("private-token"),
            Some(TOKEN),
            "{} {}",
            r.method,
            r.path
        );
    }
}

/// The whole life of one PR; `url` and `auth` reach `w.repo` over some transport.
fn scenario(forge: &Forge, w: &World, url: &str, auth: &[&str]) {
    let main0 = w.repo.head("main").expect("main");

    // 1. The change goes to tagflow's branch and a PR; main is untouched.
    run_once(w, url, auth);
    assert_eq!(
        w.repo.head("main").as_deref(),
        Some(main0.as_str()),
        "main never moves"
    );
    let dev = w
        .repo
        .read(BRANCH, "envs/dev/patch.yaml")
        .expect("branch pushed");
    assert!(dev.contains("tag: b2c3d4e #"), "{dev}");
    assert_eq!(parent_of(&w.repo, BRANCH), main0, "built on main's head");
    let open = forge.open();
    assert_eq!(open.len(), 1, "{:#?}", forge.prs());
    let pr = &open[0];
    assert_eq!((pr.head.as_str(), pr.base.as_str()), (BRANCH, "main"));
    assert_eq!(pr.title, "tagflow: dev app → b2c3d4e");
    assert!(
        pr.body
            .contains("dev app tag: a1b2c3d → b2c3d4e (envs/dev/patch.yaml:3)"),
        "the change list is the body: {}",
        pr.body
    );
    assert_eq!(pr.labels, ["tagflow"]);
    let writes = forge.writes().len();

    // 2. Nothing changed: no push, no new PR, no update.
    let tip = w.repo.head(BRANCH).expect("tip");
    run_once(w, url, auth);
    assert_eq!(
        w.repo.head(BRANCH).as_deref(),
        Some(tip.as_str()),
        "no push"
    );
    assert_eq!(forge.writes().len(), writes, "{:#?}", forge.calls());

    // 3. Someone moves main: the branch is rebuilt on it; the same PR stays.
    let main1 = w
        .repo
        .commit_files("main", &[("README.md", "hello\n")], "docs");
    run_once(w, url, auth);
    assert_eq!(w.repo.head("main").as_deref(), Some(main1.as_str()));
    assert_eq!(parent_of(&w.repo, BRANCH), main1, "rebuilt on the new head");
    assert_eq!(forge.prs().len(), 1, "{:#?}", forge.prs());
    assert_eq!(forge.writes().len(), writes, "same change, same PR text");

    // 4. A newer tag supersedes the change: the old PR is closed, a new one opened.
    w.tags.lock().unwrap().push("c3d4e5f".into());
    run_once(w, url, auth);
    let prs = forge.prs();
    assert_eq!(prs.len(), 2, "{prs:#?}");
    assert_eq!(prs[0].state, "closed");
    assert!(
        prs[0].body.starts_with("Closed by tagflow: superseded"),
        "{}",
        prs[0].body
    );
    assert_eq!(prs[1].state, "open");
    assert_eq!(prs[1].title, "tagflow: dev app → c3d4e5f");
    let dev = w.repo.read(BRANCH, "envs/dev/patch.yaml").expect("branch");
    assert!(dev.contains("tag: c3d4e5f #"), "{dev}");
    let new_writes: Vec<String> = forge.writes()[writes..]
        .iter()
        .map(|r| r.method.clone())
        .collect();
    assert!(
        matches!(
            new_writes.first().map(String::as_str),
            Some("PATCH" | "PUT")
        ),
        "the close comes first: {new_writes:?}"
    );

    // 5. The PR is merged: the branch is retired, nothing new is proposed, main is not touched.
    merge(&w.repo, BRANCH);
    forge.mark_merged(prs[1].number);
    let merged = w.repo.head("main").expect("main");
    run_once(w, url, auth);
    assert_eq!(w.repo.head("main").as_deref(), Some(merged.as_str()));
    assert_eq!(w.repo.head(BRANCH), None, "branch deleted");
    assert!(forge.open().is_empty(), "{:#?}", forge.prs());
    let writes = forge.writes().len();
    run_once(w, url, auth);
    assert_eq!(forge.writes().len(), writes, "a no-op proposes nothing");
    assert_eq!(w.repo.head(BRANCH), None);
    assert!(w.host.contains("127.0.0.1"));
}

#[test]
fn gitea_over_file_urls_branch_pr_supersede_and_retire() {
    let forge = Forge::start(Flavor::Gitea, "org/config", TOKEN);
    let w = world(&forge, "gitea", "");
    scenario(&forge, &w, &file_url(&w.repo), &[]);
    // Gitea takes label ids: the names were looked up first.
    assert!(
        forge
            .calls()
            .iter()
            .any(|c| c.starts_with("GET /repos/org/config/labels"))
    );
    let create = forge
        .writes()
        .into_iter()
        .find(|r| r.method == "POST")
        .expect("create");
    let body: serde_json::Value = serde_json::from_slice(&create.body).expect("json");
    assert_eq!(body["labels"], serde_json::json!([11]));
}

#[test]
#[ignore = "real servers: run by scripts/test"]
fn github_over_smart_http_branch_pr_supersede_and_retire() {
    let forge = Forge::start(Flavor::Github, "org/config", TOKEN);
    let w = world(&forge, "github", "");
    let http = GitHttp::start(&w.repo);
    let pw = w
        .local
        .file("git-password", &format!("{}\n", http.password));
    let pw = p(&pw);
    let auth = ["--git-username", &http.username, "--git-password-file", &pw];
    scenario(&forge, &w, &http.url, &auth);
    let calls = forge.calls();
    assert!(
        calls.iter().any(|c| c.starts_with(
            "GET /repos/org/config/pulls?state=open&head=org%3Atagflow%2Fdev-app&base=main"
        )),
        "{calls:#?}"
    );
    assert!(
        calls
            .iter()
            .any(|c| c == "POST /repos/org/config/issues/1/labels"),
        "{calls:#?}"
    );
    for r in forge.server.requests() {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert_eq!(r.header("x-github-api-version"), Some("2022-11-28"));
    }
}

#[test]
#[ignore = "real servers: run by scripts/test"]
fn gitlab_over_ssh_branch_mr_supersede_and_retire() {
    let forge = Forge::start(Flavor::Gitlab, "org/config", TOKEN);
    let w = world(&forge, "gitlab", "");
    let ssh = GitSsh::start(&w.repo);
    let (key, known) = (p(&ssh.key_file), p(&ssh.known_hosts_file));
    let auth = ["--git-ssh-key-file", &key, "--git-known-hosts-file", &known];
    scenario(&forge, &w, &ssh.url, &auth);
    let calls = forge.calls();
    assert!(
        calls.iter().any(|c| c.starts_with("GET /projects/org%2Fconfig/merge_requests?state=opened&source_branch=tagflow%2Fdev-app&target_branch=main")),
        "{calls:#?}"
    );
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("PUT /projects/org%2Fconfig/merge_requests/1")),
        "{calls:#?}"
    );
    assert_gitlab_token_on_every_request(&forge);
}

/// `plan` shows a pull-request environment's change as the branch push and PR it would be,
/// not as a commit to the target; it pushes nothing and calls no forge.
#[test]
fn plan_shows_the_branch_and_pull_request_it_would_push() {
    let forge = Forge::start(Flavor::Gitea, "org/config", TOKEN);
    let w = world(&forge, "gitea", "");
    let mut c = common::tagflow();
    c.args([
        "plan",
        "--secret-hosts",
        "127.0.0.1",
        "--repo",
        &file_url(&w.repo),
    ]);
    let out = common::run(&mut c);
    assert!(out.status.success(), "{}", logs(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "# would push to branch tagflow/dev-app (rebuilt on main) and its pull request into main"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("# would commit to main"), "{stdout}");
    assert!(stdout.contains("+  tag: b2c3d4e"), "{stdout}");
    assert_eq!(w.repo.head(BRANCH), None, "nothing pushed");
    assert!(forge.calls().is_empty(), "{:?}", forge.calls());
}

/// Closing tagflow's PR without merging says no to that change: later cycles (each `once` a
/// new process, so nothing is remembered in memory) leave it closed, also when the branch is
/// rebuilt on a moved target, and a newer tag opens a new PR. Each forge lists closed PRs its
/// own way (GitLab apart from merged ones; GitHub and Gitea with them, marked).
#[test]
fn a_pull_request_closed_by_hand_stays_closed_until_a_newer_change() {
    for (flavor, provider) in [
        (Flavor::Github, "github"),
        (Flavor::Gitlab, "gitlab"),
        (Flavor::Gitea, "gitea"),
    ] {
        let forge = Forge::start(flavor, "org/config", TOKEN);
        let w = world(&forge, provider, "");
        let url = file_url(&w.repo);
        run_once(&w, &url, &[]);
        let open = forge.open();
        assert_eq!(open.len(), 1, "{provider}: {:#?}", forge.prs());
        forge.close_by_hand(open[0].number);

        let l = run_once(&w, &url, &[]);
        assert!(forge.open().is_empty(), "{provider}: reopened\n{l}");
        assert_eq!(forge.prs().len(), 1, "{provider}: {:#?}", forge.prs());
        assert!(l.contains("closed without merging"), "{provider}: {l}");

        w.repo
            .commit_files("main", &[("README.md", "hello\n")], "docs");
        run_once(&w, &url, &[]);
        assert!(forge.open().is_empty(), "{provider}: reopened on a rebuild");
        let main = w.repo.head("main").expect("main");
        assert_eq!(
            parent_of(&w.repo, BRANCH),
            main,
            "{provider}: still rebuilt"
        );

        w.tags.lock().unwrap().push("c3d4e5f".into());
        run_once(&w, &url, &[]);
        let open = forge.open();
        assert_eq!(open.len(), 1, "{provider}: {:#?}", forge.prs());
        assert_eq!(open[0].title, "tagflow: dev app → c3d4e5f", "{provider}");
        assert_eq!(forge.prs().len(), 2, "{provider}");
        assert!(
            forge.prs()[0].body.starts_with("tagflow proposes"),
            "{provider}: the declined PR is left as the person closed it"
        );
    }
}

/// A self-hosted GitLab behind a private CA: git over https and the MR API on one host and one
/// certificate, both trusted through `--git-ca-file` alone (tier 2: lighttpd's mod_openssl
/// serving git and proxying `/api/` to the stand-in).
#[test]
#[ignore = "real servers: run by scripts/test"]
fn gitlab_behind_a_private_ca_is_trusted_for_git_and_its_api_through_git_ca_file() {
    let forge = Forge::start(Flavor::Gitlab, "org/config", TOKEN);
    // The repo's config names the API URL, which is known once the server is up: start it
    // with a placeholder, then commit the real URL.
    let placeholder = "https://127.0.0.1:9/api";
    let w = world_at(placeholder, "gitlab", "");
    let http = GitHttp::start_tls_with_api(&w.repo, &forge.api_url());
    let config = w.repo.read("main", "config/tagflow.yaml").expect("config");
    w.repo.commit_files(
        "main",
        &[(
            "config/tagflow.yaml",
            &config.replace(placeholder, &http.api_url()),
        )],
        "point pullRequest.apiUrl at the TLS host",
    );
    let pw = w
        .local
        .file("git-password", &format!("{}\n", http.password));
    let pw = p(&pw);
    let ca = p(http.ca_cert.as_ref().expect("a TLS server has a CA"));

    // Without the CA: the clone fails and says what to do.
    let out = once(
        &http.url,
        &w.local,
        &[
            "--secret-hosts",
            "127.0.0.1",
            "--git-username",
            &http.username,
            "--git-password-file",
            &pw,
        ],
    );
    assert!(!out.status.success());
    assert!(logs(&out).contains("--git-ca-file"), "{}", logs(&out));
    assert!(forge.prs().is_empty());

    // With it: the branch is pushed over https and the MR opened over https.
    let l = run_once(
        &w,
        &http.url,
        &[
            "--git-username",
            &http.username,
            "--git-password-file",
            &pw,
            "--git-ca-file",
            &ca,
        ],
    );
    assert!(w.repo.head(BRANCH).is_some(), "{l}");
    let open = forge.open();
    assert_eq!(open.len(), 1, "{l}");
    assert_eq!(open[0].head, BRANCH);
    assert_gitlab_token_on_every_request(&forge);
}

/// A branch of that name that a person wrote is never overwritten: the cycle says why, and
/// the branch, main and the forge are left as they were.
#[test]
fn a_branch_tagflow_did_not_write_is_left_alone() {
    let forge = Forge::start(Flavor::Github, "org/config", TOKEN);
    let w = world(&forge, "github", "");
    let theirs = w
        .repo
        .commit_files(BRANCH, &[("notes.md", "mine\n")], "a person's work");
    let main0 = w.repo.head("main").expect("main");
    let out = once(
        &file_url(&w.repo),
        &w.local,
        &["--secret-hosts", "127.0.0.1"],
    );
    let l = logs(&out);
    assert!(
        l.contains("was not written by tagflow") && l.contains("refusing to overwrite it"),
        "{l}"
    );
    assert_eq!(w.repo.head(BRANCH).as_deref(), Some(theirs.as_str()));
    assert_eq!(w.repo.head("main").as_deref(), Some(main0.as_str()));
    assert!(forge.prs().is_empty());
}

/// The forge host is not on the operator's allowlist: the config is refused with its line,
/// nothing is pushed and the token goes nowhere.
#[test]
fn a_forge_host_the_operator_did_not_allow_is_refused_with_its_line() {
    let forge = Forge::start(Flavor::Github, "org/config", TOKEN);
    let w = world(&forge, "github", "");
    let out = once(&file_url(&w.repo), &w.local, &["--secret-hosts", "ghcr.io"]);
    let l = logs(&out);
    assert!(!out.status.success(), "{l}");
    assert!(
        l.contains("config/tagflow.yaml:14: environments.dev.pullRequest: sending the forge token to 127.0.0.1:"),
        "{l}"
    );
    assert_eq!(w.repo.head(BRANCH), None);
    assert!(forge.server.requests().is_empty(), "the token went nowhere");
}
