use super::*;
use crate::config::{ReleaseKind, parse};

const BASE: &str =
    "images:\n  app: {repository: r.example.com/team/app, policy: {tags: '.*', order: built}}\n";

fn problems(envs: &str) -> Vec<String> {
    match parse("c.yaml", &format!("{BASE}environments:\n{envs}")) {
        Ok(_) => Vec::new(),
        Err(e) => e.problems.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn parses_rollout_fields() {
    let c = parse(
        "c.yaml",
        &format!(
            "{BASE}environments:\n  dev:\n    file: envs/dev/patch.yaml\n    release: {{namespace: dev, name: app}}\n    smoke: {{url: 'http://app.dev/version', expect: {{status: 200, bodyContains: '{{tag}}'}}, retries: 2, interval: 1s, deadline: 30s}}\n    timeout: 2m\n  prod:\n    file: envs/prod/patch.yaml\n    promoteFrom: dev\n    gate: {{soak: 10m, approval: true}}\n"
        ),
    )
    .expect("valid");
    let dev = &c.environments["dev"];
    assert_eq!(dev.release.as_ref().expect("release").name, "app");
    let smoke = dev.smoke.as_ref().expect("smoke");
    assert_eq!(smoke.expect.body_contains.as_deref(), Some("{tag}"));
    assert_eq!((smoke.retries, smoke.interval.as_secs()), (2, 1));
    assert_eq!(dev.timeout.as_secs(), 120);
    let prod = &c.environments["prod"];
    assert_eq!(prod.promote_from.as_deref(), Some("dev"));
    let gate = prod.gate.as_ref().expect("gate");
    assert_eq!(
        (gate.soak.as_secs(), gate.approval),
        (600, crate::config::ApprovalMode::List)
    );
    assert_eq!(prod.timeout.as_secs(), 600, "default timeout");
}

#[test]
fn rollout_problems_have_lines() {
    let table: &[(&str, &str)] = &[
        (
            "  dev: {file: a.yaml, promoteFrom: dev}\n",
            "c.yaml:4: environments.dev.promoteFrom: an environment cannot promote from itself",
        ),
        (
            "  dev: {file: a.yaml}\n  prod: {file: b.yaml, promoteFrom: qa}\n",
            "c.yaml:5: environments.prod.promoteFrom: no environment qa (known: dev, prod)",
        ),
        (
            "  dev: {file: a.yaml, gate: {soak: 1m}}\n",
            "c.yaml:4: environments.dev.gate: only used with promoteFrom",
        ),
        (
            "  dev:\n    file: a.yaml\n    release: {namespace: Dev, name: app}\n",
            "c.yaml:6: environments.dev.release.namespace: \"Dev\" is not a Kubernetes name",
        ),
        (
            "  dev:\n    file: a.yaml\n    release:\n      kind: Deployment\n      namespace: dev\n      name: app\n",
            "c.yaml:7: environments.dev.release.kind: unknown variant `Deployment`, expected one of `HelmRelease`, `Kustomization`, `Application`",
        ),
        (
            "  dev:\n    file: a.yaml\n    smoke: {url: 'ftp://x'}\n",
            "c.yaml:6: environments.dev.smoke.url: \"ftp://x\" is not an http(s) URL",
        ),
        (
            "  dev:\n    file: a.yaml\n    smoke: {url: 'http://x', colour: red}\n",
            "c.yaml:6: environments.dev.smoke.colour: unknown field `colour`, expected one of `url`, `expect`, `retries`, `interval`, `deadline`, `timeout`",
        ),
        (
            "  dev: {file: a.yaml, gate: {soak: soon}}\n  p: {file: b.yaml, promoteFrom: dev}\n",
            "c.yaml:4: environments.dev.gate.soak: bad duration \"soon\": expected number at 0",
        ),
        (
            "  a: {file: a.yaml, promoteFrom: b}\n  b: {file: b.yaml, promoteFrom: a}\n",
            "c.yaml:4: environments.a.promoteFrom: promotion loop through a",
        ),
        (
            "  dev: {file: a.yaml}\n  p1: {file: b.yaml, promoteFrom: dev}\n  p2: {file: c.yaml, promoteFrom: dev}\n",
            "c.yaml:6: environments.p2.promoteFrom: p1 already promotes from dev; chain them instead (dev → staging → prod)",
        ),
    ];
    for (envs, want) in table {
        let got = problems(envs);
        assert!(
            got.iter().any(|p| p == want),
            "{envs}\nwant {want}\ngot {got:#?}"
        );
    }
}

#[test]
fn release_kind_defaults_to_helm_release_and_names_the_others() {
    let c = parse(
        "c.yaml",
        &format!("{BASE}environments:\n  dev: {{file: a.yaml, release: {{namespace: dev, name: app}}}}\n  qa: {{file: b.yaml, release: {{kind: Kustomization, namespace: flux-system, name: apps-qa}}}}\n  prod: {{file: c.yaml, release: {{kind: Application, namespace: argocd, name: app-prod}}}}\n"),
    )
    .expect("valid");
    let kind = |env: &str| c.environments[env].release.as_ref().expect("release").kind;
    assert_eq!(kind("dev"), ReleaseKind::HelmRelease);
    assert_eq!(kind("qa"), ReleaseKind::Kustomization);
    assert_eq!(kind("prod"), ReleaseKind::Application);
}

fn config() -> Config {
    parse(
        "c.yaml",
        &format!("{BASE}environments:\n  dev: {{file: a.yaml}}\n  prod: {{file: b.yaml, promoteFrom: dev}}\n"),
    )
    .expect("valid")
}

#[test]
fn lists_parse_and_answer() {
    let g = parse_gates(
        &config(),
        (
            "config/approvals.yaml",
            Some("# approvals\napprovals:\n  - {env: prod, tag: 0f1e2d3}\n"),
        ),
        (
            "config/quarantine.yaml",
            Some("quarantine:\n  - {image: app, tag: b2c3d4e, reason: smoke failed}\n"),
        ),
    )
    .expect("valid");
    assert!(g.approved("prod", "app", "0f1e2d3"));
    assert!(
        !g.approved("prod", "app", "b2c3d4e"),
        "an approval for another tag does nothing"
    );
    assert!(
        !g.approved("dev", "app", "0f1e2d3"),
        "an approval for another env does nothing"
    );
    assert!(g.quarantined("app", "b2c3d4e"));
    assert!(!g.quarantined("app", "0f1e2d3"));
    let none = parse_gates(&config(), ("a", None), ("q", Some("quarantine: []\n"))).expect("empty");
    assert_eq!(none, Gates::default());
}

#[test]
fn list_problems_have_file_and_line() {
    let e = parse_gates(
        &config(),
        ("config/approvals.yaml", Some("approvals:\n  - {env: prod, tag: 0f1e2d3}\n  - {env: qa, tag: 0f1e2d3}\n  - {env: prod, tg: x}\n")),
        ("config/quarantine.yaml", Some("quarantine:\n  - {image: web, tag: a}\n")),
    )
    .expect_err("invalid");
    let got: Vec<String> = e.problems.iter().map(ToString::to_string).collect();
    assert!(got.contains(&"config/approvals.yaml:4: approvals.2.tg: unknown field `tg`, expected one of `env`, `tag`, `image`".to_owned()), "{got:#?}");
    let e = parse_gates(
        &config(),
        (
            "config/approvals.yaml",
            Some("approvals:\n  - {env: prod, tag: 0f1e2d3}\n  - {env: qa, tag: 0f1e2d3}\n"),
        ),
        (
            "config/quarantine.yaml",
            Some("quarantine:\n  - {image: web, tag: a}\n"),
        ),
    )
    .expect_err("invalid");
    let got: Vec<String> = e.problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        vec![
            "config/approvals.yaml:3: approvals[1].env: no environment qa".to_owned(),
            "config/quarantine.yaml:2: quarantine[0].image: no image web".to_owned(),
        ]
    );
}

#[test]
fn the_committed_lists_are_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/config/");
    let text = |f: &str| std::fs::read_to_string(format!("{dir}{f}")).expect("committed list");
    let cfg = parse("config/tagflow.yaml", &text("tagflow.yaml")).expect("example config");
    let (a, q) = (text(APPROVALS), text(QUARANTINE));
    assert_eq!(
        parse_gates(
            &cfg,
            ("config/approvals.yaml", Some(&a)),
            ("config/quarantine.yaml", Some(&q))
        ),
        Ok(Gates::default())
    );
}

#[test]
fn plan_approvals_in_the_approvals_file() {
    let text = "prod: {app: a1b2c3d}\nterraform:\n  aws: 1a2b3c4d5e6f\n  gcp: 123456789012\n";
    assert_eq!(
        plan_approval(text, "aws").unwrap().as_deref(),
        Some("1a2b3c4d5e6f")
    );
    assert_eq!(plan_approval(text, "azure").unwrap(), None);
    assert!(plan_approval(text, "gcp").unwrap_err().contains("quote"));
    assert_eq!(plan_approval("other: 1\n", "aws").unwrap(), None);
    assert!(plan_approval("terraform: [a]\n", "aws").is_err());
    assert!(plan_approval(": :\n  - [", "aws").is_err());
}
