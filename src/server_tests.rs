use super::*;
use axum::http::HeaderValue;

fn secrets() -> Secrets {
    Secrets {
        bearer: Some("tok-123456".into()),
        hmac: Some("key-abcdef".into()),
    }
}

pub(super) fn sign(body: &[u8], key: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn events(repo: &str, action: &str) -> Vec<u8> {
    serde_json::json!({"events": [{"action": action, "target": {"repository": repo, "tag": "a1b2c3d", "digest": "sha256:00"}, "request": {"host": "127.0.0.1:5000"}}]})
        .to_string()
        .into_bytes()
}

pub(super) fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, HeaderValue::from_str(v).expect("header"));
    }
    h
}

#[test]
fn registry_notification_with_token() {
    let h = headers(&[
        ("content-type", EVENTS_MEDIA_TYPE),
        ("authorization", "Bearer tok-123456"),
    ]);
    let got = authenticate_and_parse(&h, &events("team/app", "push"), &secrets()).expect("ok");
    assert_eq!(
        got,
        vec![(Some("127.0.0.1:5000".to_owned()), "team/app".to_owned())]
    );
}

#[test]
fn refusals() {
    let ev = events("team/app", "push");
    let cases: Vec<(HeaderMap, Vec<u8>, Secrets, WebhookError)> = vec![
        (
            headers(&[("content-type", EVENTS_MEDIA_TYPE)]),
            ev.clone(),
            secrets(),
            WebhookError::Unauthorized("missing bearer token"),
        ),
        (
            headers(&[
                ("content-type", EVENTS_MEDIA_TYPE),
                ("authorization", "Bearer nope"),
            ]),
            ev.clone(),
            secrets(),
            WebhookError::Unauthorized("wrong bearer token"),
        ),
        (
            headers(&[
                ("content-type", EVENTS_MEDIA_TYPE),
                ("authorization", "Bearer tok-123456"),
            ]),
            ev.clone(),
            Secrets::default(),
            WebhookError::Unauthorized("no bearerToken configured"),
        ),
        (
            headers(&[
                ("content-type", EVENTS_MEDIA_TYPE),
                ("authorization", "Bearer tok-123456"),
            ]),
            events("team/app", "pull"),
            secrets(),
            WebhookError::NoPush,
        ),
        (
            headers(&[(SIGNATURE_HEADER, "sha256=00")]),
            br#"{"repository":"team/app"}"#.to_vec(),
            secrets(),
            WebhookError::Unauthorized("bad signature"),
        ),
        (
            headers(&[(SIGNATURE_HEADER, "md5=00")]),
            br#"{"repository":"team/app"}"#.to_vec(),
            secrets(),
            WebhookError::Unauthorized("signature must be sha256=<hex>"),
        ),
    ];
    for (h, body, s, want) in cases {
        assert_eq!(
            authenticate_and_parse(&h, &body, &s).expect_err("refused"),
            want
        );
    }
}

#[test]
fn generic_signed_body() {
    let body = br#"{"repository":"registry.example.com/team/app","tag":"a1b2c3d"}"#;
    let h = headers(&[(SIGNATURE_HEADER, &sign(body, "key-abcdef"))]);
    let got = authenticate_and_parse(&h, body, &secrets()).expect("ok");
    assert_eq!(
        got,
        vec![(
            Some("registry.example.com".to_owned()),
            "team/app".to_owned()
        )]
    );
    // Same signature, body changed by one byte.
    let tampered = br#"{"repository":"registry.example.com/team/apq","tag":"a1b2c3d"}"#;
    assert!(authenticate_and_parse(&h, tampered, &secrets()).is_err());
    // Signed but hostile tag.
    let hostile = b"{\"repository\":\"team/app\",\"tag\":\"a\\nb: c\"}";
    let h2 = headers(&[(SIGNATURE_HEADER, &sign(hostile, "key-abcdef"))]);
    assert!(matches!(
        authenticate_and_parse(&h2, hostile, &secrets()),
        Err(WebhookError::BadBody(_))
    ));
    // Found by fuzzing: `host/` was a push to the empty path of `host`.
    for name in ["registry.example.com/", "/team/app", "team//app", ""] {
        let body = format!(r#"{{"repository":"{name}","tag":"a1b2c3d"}}"#);
        let h = headers(&[(SIGNATURE_HEADER, &sign(body.as_bytes(), "key-abcdef"))]);
        assert!(
            matches!(
                authenticate_and_parse(&h, body.as_bytes(), &secrets()),
                Err(WebhookError::BadBody(_))
            ),
            "{name:?}"
        );
    }
}

#[test]
fn repositories_map_to_images() {
    let cfg = crate::config::parse(
        "c.yaml",
        "images:\n  app: {repository: 127.0.0.1:5000/team/app, policy: {tags: '.*', order: built}}\nenvironments:\n  dev: {file: envs/dev/patch.yaml}\n",
    )
    .expect("config");
    let ok =
        images_for(&cfg, &[(Some("127.0.0.1:5000".into()), "team/app".into())]).expect("known");
    assert_eq!(ok.into_iter().collect::<Vec<_>>(), vec!["app".to_owned()]);
    assert_eq!(
        images_for(&cfg, &[(None, "team/other".into())]).expect_err("unknown"),
        WebhookError::UnknownRepository("team/other".into())
    );
    assert!(images_for(&cfg, &[(Some("other:5000".into()), "team/app".into())]).is_err());
}

#[tokio::test]
async fn the_status_page_needs_its_token_when_one_is_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-status-token\n").expect("write");
    let current = crate::config::Current::new();
    let opts = crate::gitops::RepoOptions::new(
        "file:///nonexistent/repo.git".into(),
        "main".into(),
        "config/tagflow.yaml".into(),
        Some(dir.path().join("work")),
        crate::gitops::GitAuth::default(),
    );
    let metrics = Metrics::new();
    let (tx, _rx) = mpsc::channel(1);
    let state = Arc::new(ServerState {
        metrics: metrics.clone(),
        ready: Arc::new(AtomicBool::new(false)),
        current: current.clone(),
        trigger: tx,
        board: Some(Arc::new(board::Board {
            repo: Arc::new(crate::gitops::ConfigRepo::new(opts, metrics)),
            current,
            token: Some(crate::secret::SecretRef::file(token.to_string_lossy())),
            activity: crate::activity::Activity::new(),
        })),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router(state)).await });
    let client = reqwest::Client::new();
    let get = |path: &str, auth: Option<&str>| {
        let mut r = client.get(format!("http://{addr}{path}"));
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    for path in ["/", "/api/status"] {
        for auth in [None, Some("Bearer wrong"), Some("s3cret-status-token")] {
            let r = get(path, auth).await.expect("send");
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path} {auth:?}");
        }
    }
    let page = get("/", Some("Bearer s3cret-status-token"))
        .await
        .expect("send");
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_owned();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = page.text().await.expect("body");
    assert!(html.contains("no good config loaded yet"), "{html}");
    let json: serde_json::Value = get("/api/status", Some("Bearer s3cret-status-token"))
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert!(json["problems"][0].as_str().is_some(), "{json}");
}
