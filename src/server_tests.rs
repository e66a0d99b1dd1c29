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
