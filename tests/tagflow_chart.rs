//! tagflow's own Helm chart (charts/tagflow): `helm lint --strict`, the schema, the rendered Pod's
//! security, every rendered object server-side dry-run against a real kube-apiserver, the
//! ServiceAccount's rules per namespace with `kubectl auth can-i`, and flux/tagflow/ being
//! exactly what scripts/render-manifests makes of the chart (no second source of truth).
//!
//! Tools come from scripts/install-deploy-deps, as for tests/deploy.rs.

#[path = "deploy/cluster.rs"]
#[allow(dead_code, reason = "shared with tests/deploy.rs, which uses the rest")]
mod cluster;
#[path = "deploy/support.rs"]
#[allow(dead_code, reason = "shared with tests/deploy.rs, which uses the rest")]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::Value as Json;

use cluster::Cluster;
use support::{
    Helm, TOOL_TIMEOUT, at, cached_tool, release_resources, repo, run_ok, run_with_timeout,
    tagflow_rules, to_json, write_values, yaml_docs,
};

const CHART: &str = "charts/tagflow";
/// The values flux/tagflow/ is rendered with.
const FLUX_VALUES: &str = "charts/tagflow/ci/flux.yaml";

/// `helm template tagflow charts/tagflow -n tagflow -f FILE... ARG...`, or helm's stderr.
fn template(helm: &Helm, values: &[&Path], extra: &[&str]) -> Result<String, String> {
    let mut cmd = helm.cmd();
    cmd.args(["template", "tagflow", CHART, "--namespace", "tagflow"]);
    for file in values {
        cmd.arg("--values").arg(file);
    }
    cmd.args(extra);
    let out = run_with_timeout(&mut cmd, None, TOOL_TIMEOUT);
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).expect("utf-8"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn objects(text: &str) -> Vec<Json> {
    yaml_docs(text).iter().map(to_json).collect()
}

fn one<'a>(objs: &'a [Json], kind: &str) -> &'a Json {
    let found: Vec<&Json> = objs.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "expected one {kind}");
    found[0]
}

/// The chart's `releases` value as `plural.group` per namespace, by tagflow's own mapping.
fn releases_of(values: &Json) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (ns, kinds) in values["releases"].as_object().expect("releases") {
        for kind in kinds.as_array().expect("kinds") {
            let kind: tagflow::config::ReleaseKind =
                serde_json::from_value(kind.clone()).expect("release kind");
            let api = tagflow::k8s::observed::api_resource(kind);
            out.entry(ns.clone())
                .or_default()
                .insert(format!("{}.{}", api.plural, api.group));
        }
    }
    out
}

fn yaml_file(path: &str) -> Json {
    let text = fs::read_to_string(repo().join(path)).expect("read");
    to_json(&serde_yaml::from_str(&text).expect("YAML"))
}

/// Tier 1: the values flux/tagflow/ is rendered with grant read on exactly the kinds and
/// namespaces config/tagflow.yaml's `release:` entries name.
#[test]
fn flux_values_follow_exactly_the_releases_the_config_names() {
    assert_eq!(releases_of(&yaml_file(FLUX_VALUES)), release_resources());
}

#[test]
#[ignore = "real servers: run by scripts/test"]
fn tagflow_chart_passes_helm_lint_strict() {
    let helm = Helm::new();
    for values in [None, Some(FLUX_VALUES)] {
        let mut cmd = helm.cmd();
        cmd.args(["lint", "--strict", CHART]);
        if let Some(file) = values {
            cmd.args(["--values", file]);
        }
        let out = run_ok(&mut cmd, None, TOOL_TIMEOUT);
        assert!(
            out.contains("1 chart(s) linted, 0 chart(s) failed"),
            "{out}"
        );
    }
}

#[test]
#[ignore = "real servers: run by scripts/test"]
fn flux_tagflow_is_the_chart_rendered_with_its_fixed_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("tagflow");
    run_ok(
        Command::new(repo().join("scripts/render-manifests"))
            .arg(&out)
            .env("HELM", cached_tool("helm")),
        None,
        TOOL_TIMEOUT,
    );
    let names = |d: &Path| -> BTreeSet<String> {
        fs::read_dir(d)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    };
    let committed = repo().join("flux/tagflow");
    assert_eq!(
        names(&committed),
        names(&out),
        "flux/tagflow/ has other files than the chart renders: run scripts/render-manifests"
    );
    for name in names(&out) {
        let want = fs::read_to_string(out.join(&name)).expect("read rendered");
        let have = fs::read_to_string(committed.join(&name)).expect("read committed");
        assert!(
            want == have,
            "flux/tagflow/{name} differs from the chart's render: run scripts/render-manifests"
        );
    }
}

#[test]
#[ignore = "real servers: run by scripts/test"]
fn rendered_pod_is_non_root_read_only_and_mounts_the_chosen_secrets() {
    let helm = Helm::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let values = write_values(
        dir.path(),
        "v.yaml",
        "secretHosts: registry.example.com,*.slack.com\n\
         replicas: 1\nlease: {enabled: false, name: tagflow, duration: 15s}\n\
         secrets: {git: {name: git-https, type: https, username: bot, caCert: true}, slack: {name: ''}}\n",
    );
    let objs = objects(&template(&helm, &[&values], &[]).expect("render"));
    let deploy = one(&objs, "Deployment");
    let pod = at(deploy, "spec.template.spec");
    let c = &pod["containers"][0];
    assert_eq!(at(pod, "securityContext.runAsNonRoot"), true);
    assert_eq!(at(c, "securityContext.readOnlyRootFilesystem"), true);
    assert_eq!(at(c, "securityContext.allowPrivilegeEscalation"), false);
    assert_eq!(
        at(c, "securityContext.capabilities.drop"),
        &serde_json::json!(["ALL"])
    );
    assert_eq!(at(deploy, "spec.replicas"), 1);

    let args: Vec<&str> = c["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Json::as_str)
        .collect();
    assert!(args.contains(&"--git-username=bot"), "{args:?}");
    assert!(
        args.contains(&"--git-password-file=/etc/tagflow/git/password"),
        "{args:?}"
    );
    assert!(
        args.contains(&"--git-ca-file=/etc/tagflow/git/ca.crt"),
        "{args:?}"
    );
    assert!(!args.iter().any(|a| a.starts_with("--lease")), "{args:?}");
    assert!(!args.iter().any(|a| a.contains("ssh")), "{args:?}");
    // --secret-hosts comes from the ConfigMap (TAGFLOW_SECRET_HOSTS), outside the config repo.
    assert_eq!(
        at(one(&objs, "ConfigMap"), "data.TAGFLOW_SECRET_HOSTS"),
        "registry.example.com,*.slack.com"
    );

    let secrets: BTreeMap<&str, &str> = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter_map(|v| Some((v["name"].as_str()?, v["secret"]["secretName"].as_str()?)))
        .collect();
    assert_eq!(
        secrets,
        BTreeMap::from([
            ("git", "git-https"),
            ("registry", "tagflow-registry"),
            ("webhook", "tagflow-webhook"),
        ])
    );
    // Without leader election tagflow needs no Lease.
    let role = objs
        .iter()
        .find(|o| o["kind"] == "Role" && o["metadata"]["namespace"] == "tagflow")
        .expect("own Role");
    assert!(!role.to_string().contains("leases"), "{role}");
}

#[test]
#[ignore = "real servers: run by scripts/test"]
fn wrong_values_are_refused_with_the_reason() {
    let helm = Helm::new();
    let cases: [(&[&str], &str); 5] = [
        (&["--set", "releases.dev[0]=Deployment"], "/releases/dev/0"),
        (
            &["--set", "securityContext.readOnlyRootFilesystem=false"],
            "readOnlyRootFilesystem",
        ),
        (
            &["--set", "podSecurityContext.runAsNonRoot=false"],
            "runAsNonRoot",
        ),
        (
            &["--set", "lease.enabled=false"],
            "replicas > 1 needs lease.enabled",
        ),
        (&["--set", "config.repo=git@host:repo.git"], "/config/repo"),
    ];
    for (args, needle) in cases {
        let err = template(&helm, &[], args).expect_err(&format!("accepted {args:?}"));
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
#[ignore = "real servers: run by scripts/test"]
fn every_rendered_object_passes_dry_run_and_rbac_is_exactly_per_namespace_and_kind() {
    let cluster = Cluster::start();
    cluster.install_flux_crds();
    for ns in [
        "tagflow",
        "dev",
        "flux-system",
        "argocd",
        "apps",
        "default-x",
    ] {
        cluster.kubectl_ok(&["create", "namespace", ns]);
    }
    let helm = Helm::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let body = "releases:\n  dev: [HelmRelease]\n  flux-system: [Kustomization]\n  \
                argocd: [Application]\n  apps: [HelmRelease, Kustomization]\n\
                lease: {enabled: true, name: tagflow-leader, duration: 20s}\n\
                serviceMonitor: {enabled: true}\n\
                networkPolicy: {enabled: true, ingressFrom: [{namespaceSelector: {}}]}\n";
    let values = write_values(dir.path(), "v.yaml", body);
    let text = template(&helm, &[&values], &[]).expect("render");
    let objs = objects(&text);
    let kinds: BTreeSet<&str> = objs.iter().filter_map(|o| o["kind"].as_str()).collect();
    for kind in ["ServiceMonitor", "NetworkPolicy", "Deployment", "Role"] {
        assert!(kinds.contains(kind), "no {kind} rendered: {kinds:?}");
    }
    cluster.dry_run("charts/tagflow rendered with every option", &text);
    // The defaults too (what `helm install` without values gives).
    let defaults = template(&helm, &[], &[]).expect("render defaults");
    cluster.dry_run("charts/tagflow defaults", &defaults);

    run_ok(
        cluster.kubectl().args(["apply", "-f", "-"]),
        Some(text.as_bytes()),
        TOOL_TIMEOUT,
    );
    let sa = "system:serviceaccount:tagflow:tagflow";
    let releases = releases_of(&to_json(&serde_yaml::from_str(body).expect("values")));
    let want = tagflow_rules(
        "tagflow",
        Some("tagflow-leader"),
        &releases,
        &["default", "default-x", "kube-system"],
    );
    for (ns, want) in want {
        assert_eq!(cluster.granted(sa, &ns), want, "rules of {sa} in {ns}");
    }
    for (ns, verb, resource) in [
        (Some("apps"), "get", "applications.argoproj.io"),
        (Some("argocd"), "get", "helmreleases.helm.toolkit.fluxcd.io"),
        (Some("dev"), "patch", "helmreleases.helm.toolkit.fluxcd.io"),
        (Some("tagflow"), "get", "leases/tagflow"),
        (Some("tagflow"), "get", "secrets"),
        (None, "list", "kustomizations.kustomize.toolkit.fluxcd.io"),
    ] {
        assert!(
            !cluster.can_i(sa, ns, verb, resource),
            "{sa} may {verb} {resource} in {ns:?}"
        );
    }
}
