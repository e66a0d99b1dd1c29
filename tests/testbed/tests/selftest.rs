//! Proves each testbed server works: real pushes, clone/push over HTTP and SSH (git CLI and
//! libgit2), TLS and auth rejection, access-log counts, scripted HTTP edge cases, Slack capture,
//! and that every server process is gone after drop.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use testbed::{
    BareRepo, GitHttp, GitSsh, Registry, RegistryOpts, Request, Response, Scripted, SlackCapture,
    git, try_git,
};

fn count(reqs: &[testbed::LoggedRequest], method: &str, status: u16) -> usize {
    reqs.iter()
        .filter(|r| r.method == method && r.status == status)
        .count()
}

fn alive(pid: u32) -> bool {
    // A reaped process has no /proc entry; a zombie would show state Z.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.contains(") Z "),
        Err(_) => false,
    }
}

#[test]
#[ignore = "real servers: run by scripts/test"]
fn registry_push_image_and_access_log() {
    let t0 = Instant::now();
    let reg = Registry::start(RegistryOpts::default());
    let started = t0.elapsed();
    assert!(reg.base_url.starts_with("http://127.0.0.1:"));
    assert_eq!(reg.host, format!("127.0.0.1:{}", reg.port));

    let t1 = Instant::now();
    let digest = reg.push_image(
        "team/app",
        "a1b2c3d",
        "2024-01-01T12:00:00Z",
        Some("a1b2c3d"),
    );
    let push = t1.elapsed();
    eprintln!("timing: registry start {started:?}, push_image {push:?}");
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );

    let reqs = reg.requests();
    // layer + config: HEAD 404, POST 202, PUT 201 each; then the manifest PUT.
    assert_eq!(count(&reqs, "HEAD", 404), 2, "{reqs:?}");
    assert_eq!(count(&reqs, "POST", 202), 2, "{reqs:?}");
    assert_eq!(count(&reqs, "PUT", 201), 3, "{reqs:?}");
    assert_eq!(reqs.len(), 7, "{reqs:?}");
    assert!(
        reqs.iter()
            .any(|r| r.uri == "/v2/team/app/manifests/a1b2c3d")
    );
    assert!(
        reqs.iter()
            .any(|r| r.uri.contains("digest=sha256%3A") || r.uri.contains("digest=sha256:"))
    );

    // Same revision again under another tag: layer differs (content names the tag), both new.
    reg.push_image("team/app", "e4f5a6b", "2024-01-02T12:00:00Z", None);
    let (status, tags) = reg.get_json("/v2/team/app/tags/list");
    assert_eq!(status, 200);
    let mut tags: Vec<&str> = tags["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    tags.sort();
    assert_eq!(tags, ["a1b2c3d", "e4f5a6b"]);

    // The manifest and config blob are what a registry client will read.
    let (status, manifest) = reg.get_json("/v2/team/app/manifests/a1b2c3d");
    assert_eq!(status, 200);
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let (status, config) = reg.get_json(&format!("/v2/team/app/blobs/{config_digest}"));
    assert_eq!(status, 200);
    assert_eq!(config["created"], "2024-01-01T12:00:00Z");
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["os"], "linux");
    assert_eq!(
        config["config"]["Labels"]["org.opencontainers.image.revision"],
        "a1b2c3d"
    );

    // Deleting by digest removes the manifest.
    reg.delete_tag_manifest("team/app", &digest);
    let (status, _) = reg.get_json(&format!("/v2/team/app/manifests/{digest}"));
    assert_eq!(status, 404);
    let reqs = reg.requests();
    assert!(reqs.iter().any(|r| r.method == "DELETE" && r.status == 202));
    assert!(!reg.json_log().is_empty());

    let pid = reg.pid();
    drop(reg);
    assert!(!alive(pid), "registry pid {pid} still running");
}

#[test]
#[ignore = "real servers: run by scripts/test"]
fn registry_push_index_platforms_differ() {
    let reg = Registry::start(RegistryOpts::default());
    let (index, per) = reg.push_index(
        "team/multi",
        "v1.2.3",
        "2024-03-01T00:00:00Z",
        Some("deadbee"),
        &[("linux", "amd64"), ("linux", "arm64")],
    );
    assert_eq!(per.len(), 2);
    assert_ne!(per[0], per[1]);
    assert_ne!(index, per[0]);
    let (status, body) = reg.get_json("/v2/team/multi/manifests/v1.2.3");
    assert_eq!(status, 200);
    assert_eq!(body["mediaType"], "application/vnd.oci.image.index.v1+json");
    let listed: Vec<&str> = body["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [per[0].as_str(), per[1].as_str()]);
    assert_eq!(body["manifests"][1]["platform"]["architecture"], "arm64");
}

#[tokio::test]
#[ignore = "real servers: run by scripts/test"]
async fn registry_tls_and_auth_reject_without_creds() {
    // Called from inside a tokio runtime on purpose: the harness must not trip reqwest::blocking.
    let reg = Registry::start(RegistryOpts {
        auth: true,
        tls: true,
        notify: None,
        token: false,
    });
    assert!(reg.base_url.starts_with("https://127.0.0.1:"));
    let digest = reg.push_image(
        "team/secure",
        "1.0.0",
        "2024-01-01T00:00:00Z",
        Some("abc1234"),
    );
    assert!(digest.starts_with("sha256:"));

    let ca = std::fs::read(reg.ca_file.as_ref().unwrap()).unwrap();
    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    // No creds: 401 with a Basic challenge.
    let resp = trusting
        .get(format!("{}/v2/", reg.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(challenge.starts_with("Basic"), "{challenge}");
    // Wrong password: 401.
    let resp = trusting
        .get(format!("{}/v2/", reg.base_url))
        .basic_auth("tagflow", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    // Creds: 200, and tags are visible.
    let resp = trusting
        .get(format!("{}/v2/team/secure/tags/list", reg.base_url))
        .basic_auth(reg.username.as_ref().unwrap(), reg.password.as_ref())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["tags"], json!(["1.0.0"]));
    // A client that does not trust the test CA fails the handshake.
    let untrusting = reqwest::Client::new();
    let err = untrusting
        .get(format!("{}/v2/", reg.base_url))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect() || err.is_request(), "{err:?}");

    // Docker config JSON carries the same creds.
    let cfg: Value = serde_json::from_str(&reg.docker_config_json()).unwrap();
    let auth = cfg["auths"][&reg.host]["auth"].as_str().unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth)
        .unwrap();
    assert_eq!(
        String::from_utf8(decoded).unwrap(),
        format!("tagflow:{}", reg.password.as_ref().unwrap())
    );

    // The access log sees the rejected requests too.
    let reqs = reg.requests();
    assert!(count(&reqs, "GET", 401) >= 2, "{reqs:?}");
    assert_eq!(count(&reqs, "GET", 200), 1, "{reqs:?}");
}

#[test]
#[ignore = "real servers: run by scripts/test"]
fn registry_notifies_on_push() {
    let hook = Scripted::start(|_req: &Request| Response::new(200));
    let reg = Registry::start(RegistryOpts {
        notify: Some((hook.url("/registry-events"), "s3cret".to_string())),
        ..RegistryOpts::default()
    });
    let digest = reg.push_image("team/app", "n1", "2024-01-01T00:00:00Z", None);
    let deadline = Instant::now() + Duration::from_secs(10);
    let event = loop {
        let found = hook.requests().into_iter().find_map(|r| {
            let v: Value = serde_json::from_slice(&r.body).ok()?;
            let events = v["events"].as_array()?.clone();
            let e = events.into_iter().find(|e| e["target"]["tag"] == "n1")?;
            Some((r, e))
        });
        if let Some(f) = found {
            break f;
        }
        assert!(
            Instant::now() < deadline,
            "no push event: {:?}",
            hook.requests()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let (req, e) = event;
    assert_eq!(req.path, "/registry-events");
    assert_eq!(req.header("authorization"), Some("Bearer s3cret"));
    assert_eq!(e["action"], "push");
    assert_eq!(e["target"]["repository"], "team/app");
    assert_eq!(e["target"]["digest"], digest);
}

#[test]
fn bare_repo_commits_reads_logs_and_diffs() {
    let repo = BareRepo::new(&[("envs/dev/patch.yaml", "tag: a\n"), ("README.md", "hi\n")]);
    assert_eq!(
        repo.read("main", "envs/dev/patch.yaml").as_deref(),
        Some("tag: a\n")
    );
    assert_eq!(repo.read("main", "missing"), None);
    let first = repo.head("main").unwrap();
    let second = repo.commit_files(
        "main",
        &[("envs/dev/patch.yaml", "tag: b\n")],
        "Bump dev\n\nBody.",
    );
    let log = repo.log("main");
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].sha, second);
    assert_eq!(log[0].author_name, "Other Writer");
    assert_eq!(log[0].subject, "Bump dev");
    assert_eq!(log[0].message, "Bump dev\n\nBody.");
    assert_eq!(log[0].parents, std::slice::from_ref(&first));
    assert_eq!(log[1].author_name, "testbed");
    assert!(repo.diff(&first, &second).contains("-tag: a\n+tag: b"));

    // Two writers racing on one branch: the loser rebases and both land.
    let repo = Arc::new(repo);
    let handles: Vec<_> = (0..2)
        .map(|i| {
            let repo = repo.clone();
            std::thread::spawn(move || {
                let name = format!("file{i}.txt");
                repo.commit_files("main", &[(name.as_str(), "x\n")], &format!("writer {i}"))
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(repo.log("main").len(), 4);
    assert!(repo.read("main", "file0.txt").is_some() && repo.read("main", "file1.txt").is_some());
    // A new branch from main.
    repo.commit_files("feature", &[("f.txt", "1\n")], "on feature");
    assert_eq!(repo.log("feature").len(), 5);
}

fn clone_and_push(work: &Path, url: &str, env: &[(&str, &str)], repo: &BareRepo, file: &str) {
    let w = work.to_string_lossy().into_owned();
    try_git(work.parent().unwrap(), &["clone", "-q", url, &w], env).expect("clone");
    std::fs::write(work.join(file), "pushed\n").unwrap();
    git(work, &["add", "-A"]);
    git(work, &["commit", "-q", "-m", &format!("add {file}")]);
    try_git(work, &["push", "-q", "origin", "HEAD:main"], env).expect("push");
    assert_eq!(repo.read("main", file).as_deref(), Some("pushed\n"));
}

#[test]
#[ignore = "real servers: run by scripts/test"]
fn git_http_clone_push_and_auth_required() {
    let repo = BareRepo::new(&[("a.txt", "a\n")]);
    let srv = GitHttp::start(&repo);
    assert!(srv.url.starts_with("http://127.0.0.1:") && srv.url.ends_with("/git/config.git"));
    let scratch = repo.scratch_dir();

    // No credentials: fetch is refused.
    let err = try_git(&scratch, &["ls-remote", &srv.url], &[]).unwrap_err();
    assert!(
        err.contains("Authentication failed") || err.contains("could not read Username"),
        "{err}"
    );
    // Wrong credentials too.
    let wrong = srv.url.replacen("http://", "http://tagflow:nope@", 1);
    assert!(try_git(&scratch, &["ls-remote", &wrong], &[]).is_err());

    clone_and_push(
        &scratch.join("cli"),
        &srv.url_with_credentials(),
        &[],
        &repo,
        "http-cli.txt",
    );

    // libgit2 (what tagflow uses): clone + push with userpass credentials.
    let dest = scratch.join("git2");
    let mut cb = git2::RemoteCallbacks::new();
    let (u, p) = (srv.username.clone(), srv.password.clone());
    cb.credentials(move |_, _, _| git2::Cred::userpass_plaintext(&u, &p));
    let mut fo = git2::FetchOptions::new();
    fo.remote_callbacks(cb);
    let cloned = git2::build::RepoBuilder::new()
        .fetch_options(fo)
        .clone(&srv.url, &dest)
        .unwrap();
    assert!(dest.join("http-cli.txt").exists());
    git2_commit_and_push(&cloned, "http-git2.txt", || {
        let mut cb = git2::RemoteCallbacks::new();
        let (u, p) = (srv.username.clone(), srv.password.clone());
        cb.credentials(move |_, _, _| git2::Cred::userpass_plaintext(&u, &p));
        cb
    });
    assert_eq!(
        repo.read("main", "http-git2.txt").as_deref(),
        Some("git2\n")
    );

    let pid = srv.pid();
    drop(srv);
    assert!(!alive(pid), "lighttpd pid {pid} still running");
}

fn git2_commit_and_push<'a>(
    repo: &git2::Repository,
    file: &str,
    callbacks: impl Fn() -> git2::RemoteCallbacks<'a>,
) {
    let workdir = repo.workdir().unwrap().to_path_buf();
    std::fs::write(workdir.join(file), "git2\n").unwrap();
    let mut index = repo.index().unwrap();
    index.add_path(Path::new(file)).unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let parent = repo.head().unwrap().peel_to_commit().unwrap();
    let sig = git2::Signature::now("tagflow", "tagflow@example.com").unwrap();
    repo.commit(
        Some("HEAD"),
        &sig,
        &sig,
        &format!("add {file}"),
        &tree,
        &[&parent],
    )
    .unwrap();
    let rejected = Arc::new(Mutex::new(Vec::new()));
    let mut cb = callbacks();
    let r = rejected.clone();
    cb.push_update_reference(move |refname, status| {
        if let Some(s) = status {
            r.lock().unwrap().push(format!("{refname}: {s}"));
        }
        Ok(())
    });
    let mut po = git2::PushOptions::new();
    po.remote_callbacks(cb);
    repo.find_remote("origin")
        .unwrap()
        .push(&["refs/heads/main:refs/heads/main"], Some(&mut po))
        .unwrap();
    assert!(
        rejected.lock().unwrap().is_empty(),
        "{:?}",
        rejected.lock().unwrap()
    );
}

fn ssh_callbacks<'a>(srv: &GitSsh) -> git2::RemoteCallbacks<'a> {
    let mut cb = git2::RemoteCallbacks::new();
    let key = srv.key_file.clone();
    cb.credentials(move |_, user, _| git2::Cred::ssh_key(user.unwrap_or("root"), None, &key, None));
    // Verify the host key against the known_hosts entry, like tagflow must.
    let expected_b64 = srv
        .host_public_key
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    cb.certificate_check(move |cert, _host| {
        let got = cert
            .as_hostkey()
            .and_then(|h| h.hostkey())
            .map(|k| base64::engine::general_purpose::STANDARD.encode(k));
        if got.as_deref() == Some(expected_b64.as_str()) {
            Ok(git2::CertificateCheckStatus::CertificateOk)
        } else {
            Err(git2::Error::from_str("host key mismatch"))
        }
    });
    cb
}

#[test]
#[ignore = "real servers: run by scripts/test"]
fn git_ssh_clone_push_and_host_key_checking() {
    let repo = BareRepo::new(&[("a.txt", "a\n")]);
    let t0 = Instant::now();
    let srv = GitSsh::start(&repo);
    eprintln!("timing: sshd start {:?}", t0.elapsed());
    assert!(
        srv.url
            .starts_with(&format!("ssh://{}@127.0.0.1:", srv.user))
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&srv.key_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let known = std::fs::read_to_string(&srv.known_hosts_file).unwrap();
    assert!(
        known.starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 ", srv.port)),
        "{known}"
    );
    let scratch = repo.scratch_dir();

    // Wrong host key: strict checking refuses to connect.
    let bad = srv.ssh_command(&srv.wrong_known_hosts_file);
    let err = try_git(
        &scratch,
        &["ls-remote", &srv.url],
        &[("GIT_SSH_COMMAND", &bad)],
    )
    .unwrap_err();
    assert!(
        err.contains("HOST IDENTIFICATION HAS CHANGED")
            || err.contains("Host key verification failed"),
        "{err}"
    );

    let good = srv.ssh_command(&srv.known_hosts_file);
    clone_and_push(
        &scratch.join("cli"),
        &srv.url,
        &[("GIT_SSH_COMMAND", &good)],
        &repo,
        "ssh-cli.txt",
    );

    // libgit2 + libssh2 with the ed25519 deploy key: clone and push.
    let dest = scratch.join("git2");
    let mut fo = git2::FetchOptions::new();
    fo.remote_callbacks(ssh_callbacks(&srv));
    let cloned = git2::build::RepoBuilder::new()
        .fetch_options(fo)
        .clone(&srv.url, &dest)
        .unwrap();
    assert!(dest.join("ssh-cli.txt").exists());
    git2_commit_and_push(&cloned, "ssh-git2.txt", || ssh_callbacks(&srv));
    assert_eq!(repo.read("main", "ssh-git2.txt").as_deref(), Some("git2\n"));

    let pid = srv.pid();
    drop(srv);
    assert!(!alive(pid), "sshd pid {pid} still running");
}

#[tokio::test]
async fn scripted_server_edge_cases() {
    let srv = Scripted::start(|req: &Request| match req.path.as_str() {
        "/v2/team/app/tags/list" => match req.query_param("last").as_deref() {
            None => Response::json(200, &json!({"name": "team/app", "tags": ["a", "b"]}))
                .header("Link", "</v2/team/app/tags/list?n=2&last=b>; rel=\"next\""),
            Some("b") => Response::json(200, &json!({"name": "team/app", "tags": ["c"]})),
            Some(_) => Response::new(400),
        },
        "/limited" => Response::json(429, &json!({"errors": []})).header("Retry-After", "2"),
        "/truncated" => Response::json(200, &json!({"tags": ["a"]})).truncated(),
        "/malformed" => {
            Response::text(200, "{\"tags\": [").header("Content-Type", "application/json")
        }
        "/slow" => Response::text(200, "late").delayed(Duration::from_millis(300)),
        "/token" => Response::json(200, &json!({"token": "t0k"})),
        "/echo" => Response::text(200, &req.body_text()),
        _ => Response::new(404),
    });
    let c = reqwest::Client::new();

    let r = c
        .get(srv.url("/v2/team/app/tags/list?n=2"))
        .send()
        .await
        .unwrap();
    let link = r.headers()["link"].to_str().unwrap().to_string();
    assert!(link.contains("last=b"));
    let r = c
        .get(srv.url("/v2/team/app/tags/list?n=2&last=b"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!(["c"]));

    let r = c.get(srv.url("/limited")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()["retry-after"], "2");

    let r = c.get(srv.url("/truncated")).send().await.unwrap();
    assert!(r.bytes().await.is_err(), "truncated body must fail to read");

    let r = c.get(srv.url("/malformed")).send().await.unwrap();
    assert!(r.json::<Value>().await.is_err());

    let t = Instant::now();
    let err = c
        .get(srv.url("/slow"))
        .timeout(Duration::from_millis(100))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(t.elapsed() < Duration::from_millis(290));

    let r = c
        .post(srv.url("/echo"))
        .body("hello body")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "hello body");

    let reqs = srv.wait_for(7, Duration::from_secs(5));
    assert_eq!(reqs[0].query, "n=2");
    assert_eq!(reqs[1].query_param("last").as_deref(), Some("b"));
    let echo = reqs.iter().find(|r| r.path == "/echo").unwrap();
    assert_eq!(echo.method, "POST");
    assert_eq!(echo.body, b"hello body");
}

#[tokio::test]
async fn slack_capture_webhook_api_and_scripted_failures() {
    let slack = SlackCapture::start();
    let c = reqwest::Client::new();
    slack.fail_next(&[(429, Some(1)), (500, None)]);

    let r = c
        .post(&slack.url)
        .json(&json!({"text": "one"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let r = c
        .post(&slack.url)
        .json(&json!({"text": "one"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 500);
    let r = c
        .post(&slack.url)
        .json(&json!({"text": "one"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().await.unwrap(), "ok");

    let post = format!("{}chat.postMessage", slack.api_url);
    let r: Value = c
        .post(&post)
        .bearer_auth("xoxb-test")
        .json(&json!({"channel": "#deploys", "text": "deploying"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["ok"], true);
    assert_eq!(r["channel"], "C1");
    let ts = r["ts"].as_str().unwrap().to_string();
    let r2: Value = c
        .post(&post)
        .form(&[("channel", "#deploys"), ("text", "a b&c")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(r2["ts"], ts, "ts must be unique");
    let r3: Value = c
        .post(format!("{}chat.update", slack.api_url))
        .json(&json!({"channel": "C1", "ts": ts, "text": "done"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r3["ts"], ts);

    let msgs = slack.wait_for(6, Duration::from_secs(5));
    assert_eq!(msgs.len(), 6);
    assert_eq!(slack.delivered().len(), 4);
    assert_eq!(msgs[0].status, 429);
    assert_eq!(msgs[2].body["text"], "one");
    assert_eq!(msgs[3].path, "/api/chat.postMessage");
    assert_eq!(msgs[3].header("Authorization"), Some("Bearer xoxb-test"));
    assert_eq!(msgs[4].body["text"], "a b&c");
    assert_eq!(msgs[5].path, "/api/chat.update");
}
