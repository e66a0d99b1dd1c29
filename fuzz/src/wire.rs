//! Registry wire formats: `WWW-Authenticate`, `Link` (pagination must never leave the
//! registry's origin), `Retry-After`, and the JSON bodies (tag lists, manifests and indexes,
//! image configs, token answers).

use chrono::{DateTime, Utc};
use tagflow::registry::wire;

/// Fuzz the header parsers (first three lines) and the body decoders (the rest).
pub fn wire(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.splitn(4, '\n');
    let (challenge, link, retry) = (
        lines.next().unwrap_or(""),
        lines.next().unwrap_or(""),
        lines.next().unwrap_or(""),
    );
    let body = lines.next().unwrap_or("").as_bytes();

    if let Some(wire::Challenge::Bearer { realm, .. }) = wire::parse_challenge(challenge) {
        let _ = url::Url::parse(&realm);
    }
    let origin = url::Url::parse("https://registry.example.com:5000/").expect("origin");
    let page = url::Url::parse("https://registry.example.com:5000/v2/team/app/tags/list?n=100")
        .expect("page");
    for l in [wire::next_link(link), Some(link.trim().to_owned())]
        .into_iter()
        .flatten()
    {
        if let Ok(next) = wire::next_page(&origin, &page, &l) {
            assert!(
                wire::same_origin(&next, &origin),
                "followed {next} off the registry"
            );
            assert_eq!(next.scheme(), "https");
            assert_eq!(next.host_str(), Some("registry.example.com"));
            assert_eq!(next.port_or_known_default(), Some(5000));
        }
    }
    let now: DateTime<Utc> = DateTime::from_timestamp(1_700_000_000, 0).expect("now");
    let _ = wire::retry_after(retry, now);

    if let Ok(list) = serde_json::from_slice::<wire::TagList>(body) {
        let _ = list.tags.map(|t| t.len());
    }
    if let Ok(m) = serde_json::from_slice::<wire::AnyManifest>(body) {
        for d in m.manifests.iter().flatten() {
            if let Some(p) = &d.platform {
                let _ = p.matches("linux/amd64");
                let _ = p.matches("linux/arm64/v8");
            }
            let _ = tagflow::rewrite::valid_digest(&d.digest);
        }
    }
    if let Ok(blob) = serde_json::from_slice::<wire::ImageConfigBlob>(body) {
        let _ = blob.created_at();
        let _ = blob.revision();
    }
    if let Ok(ans) = serde_json::from_slice::<wire::TokenAnswer>(body) {
        let _ = ans.token.or(ans.access_token);
    }
}
