//! The deploy surface, checked with the real tools: the app chart with helm (lint, template,
//! schema), every rendered manifest and every file under `flux/` with a real kube-apiserver +
//! etcd (server-side dry-run against hand-written Flux CRDs), tagflow's RBAC with
//! `kubectl auth can-i`, and tagflow's image built by `scripts/build-image`, pushed to a real
//! registry, unpacked with umoci and run with chroot.
//!
//! Tools come from `scripts/install-deploy-deps` (helm, kubectl, kube-apiserver under
//! ~/.cache/tagflow/bin; etcd, umoci, skopeo, docker-registry from Debian). A missing tool fails
//! the test with that hint; nothing is skipped.

#[path = "deploy/cluster.rs"]
mod cluster;
#[path = "deploy/support.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use cluster::Cluster;
use support::{
    Helm, TOOL_TIMEOUT, all_files, at, check_subset, env_file, env_image, release_resources, repo,
    run_ok, run_with_timeout, system_tool, tagflow_rules, to_json, write_values, yaml_docs,
    yaml_files,
};

/// scripts/build-image with an already built binary (well under 10 s).
const BUILD_IMAGE_TIMEOUT: Duration = Duration::from_secs(180);

// ---------------------------------------------------------------------------------------------
// Chart tests

#[test]
#[ignore = "real servers: run by scripts/test"]
fn chart_passes_helm_lint_strict_for_defaults_and_each_env() {
    let helm = Helm::new();
    for values in [None, Some(env_file("dev")), Some(env_file("prod"))] {
        let mut cmd = helm.cmd();
        cmd.args(["lint", "--strict", "chart", "--values", "chart/values.yaml"]);
        if let Some(file) = &values {
            cmd.arg("--values").arg(file);
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
fn dev_and_prod_render_zero_downtime_deployments_with_their_own_sizes() {
    let helm = Helm::new();
    let mut replicas = BTreeMap::new();
    for env in ["dev", "prod"] {
        let r = helm.render(env, &[&env_file(env)], &[]);
        let (repository, tag, digest) = env_image(env);
        let deploy = r.get("Deployment");
        let pod = &deploy["spec"]["template"]["spec"];
        let c = r.container();

        // Image: exactly what tagflow wrote into envs/<env>/patch.yaml.
        let want = if digest.is_empty() {
            format!("{repository}:{tag}")
        } else {
            format!("{repository}@{digest}")
        };
        assert_eq!(c["image"], want, "{env}");

        // Every object is in the env's namespace and carries the recommended labels.
        for (kind, obj) in &r.objects {
            assert_eq!(obj["metadata"]["namespace"], env, "{env} {kind}");
            let labels = &obj["metadata"]["labels"];
            for key in [
                "name",
                "instance",
                "version",
                "component",
                "part-of",
                "managed-by",
            ] {
                assert!(
                    labels[format!("app.kubernetes.io/{key}")].is_string(),
                    "{env} {kind} lacks label {key}"
                );
            }
            assert_eq!(
                labels["app.kubernetes.io/version"],
                tag.as_str(),
                "{env} {kind}"
            );
        }

        // Zero downtime: surge one new Pod, never remove a Ready one first, count a Pod as
        // available only after it has stayed Ready a while.
        assert_eq!(at(deploy, "spec.strategy.type"), "RollingUpdate", "{env}");
        assert_eq!(
            at(deploy, "spec.strategy.rollingUpdate.maxUnavailable"),
            0,
            "{env}"
        );
        assert_eq!(
            at(deploy, "spec.strategy.rollingUpdate.maxSurge"),
            1,
            "{env}"
        );
        assert!(
            at(deploy, "spec.minReadySeconds").as_u64().unwrap_or(0) >= 10,
            "{env} minReadySeconds"
        );

        // Probes, rendered through tpl from app.*Path.
        assert_eq!(at(c, "readinessProbe.httpGet.path"), "/readyz", "{env}");
        assert_eq!(at(c, "readinessProbe.httpGet.port"), "http", "{env}");
        assert_eq!(at(c, "livenessProbe.httpGet.path"), "/healthz", "{env}");
        assert_eq!(at(c, "startupProbe.httpGet.path"), "/healthz", "{env}");
        assert_eq!(at(c, "ports")[0]["name"], "http", "{env}");

        // Restrictive security context.
        assert_eq!(at(pod, "securityContext.runAsNonRoot"), true, "{env}");
        assert_eq!(
            at(pod, "securityContext.seccompProfile.type"),
            "RuntimeDefault",
            "{env}"
        );
        assert_eq!(at(pod, "automountServiceAccountToken"), false, "{env}");
        assert_eq!(
            at(c, "securityContext.readOnlyRootFilesystem"),
            true,
            "{env}"
        );
        assert_eq!(
            at(c, "securityContext.allowPrivilegeEscalation"),
            false,
            "{env}"
        );
        assert_eq!(
            at(c, "securityContext.capabilities.drop"),
            &serde_json::json!(["ALL"]),
            "{env}"
        );
        assert_eq!(
            pod["serviceAccountName"],
            r.get("ServiceAccount")["metadata"]["name"],
            "{env}"
        );

        // The Service sends traffic to this Deployment's (Ready) Pods on the named port.
        let svc = r.get("Service");
        assert_eq!(
            at(svc, "spec.selector"),
            at(deploy, "spec.selector.matchLabels"),
            "{env}"
        );
        assert_eq!(at(svc, "spec.ports")[0]["targetPort"], "http", "{env}");

        // Ingress with ingress-nginx and the env's own host.
        let ing = r.get("Ingress");
        assert_eq!(at(ing, "spec.ingressClassName"), "nginx", "{env}");
        let host = at(ing, "spec.rules")[0]["host"]
            .as_str()
            .expect("host")
            .to_owned();
        assert!(host.ends_with("example.com"), "{env} host {host}");

        // helm test hook: requests the Service and expects the deployed tag in the answer.
        let test_pod = r.get("Pod");
        assert_eq!(
            at(test_pod, "metadata.annotations")["helm.sh/hook"],
            "test",
            "{env}"
        );
        let env_vars: BTreeMap<&str, &str> = test_pod["spec"]["containers"][0]["env"]
            .as_array()
            .expect("env")
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap_or(""),
                    e["value"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(
            env_vars["URL"],
            format!("http://app.{env}.svc:80/version"),
            "{env}"
        );
        assert_eq!(env_vars["EXPECT_STATUS"], "200", "{env}");
        assert_eq!(env_vars["EXPECT_TAG"], tag, "{env}");

        assert!(
            !r.has("HorizontalPodAutoscaler"),
            "{env}: HPA is off unless asked for"
        );
        replicas.insert(
            env,
            (at(deploy, "spec.replicas").as_u64().expect("replicas"), r),
        );
    }

    // Prod differs where production would: more replicas, a PDB, bigger resources.
    let (dev_replicas, dev) = &replicas["dev"];
    let (prod_replicas, prod) = &replicas["prod"];
    assert_eq!(*dev_replicas, 1);
    assert!(*prod_replicas >= 3, "prod replicas {prod_replicas}");
    assert!(
        !dev.has("PodDisruptionBudget"),
        "dev runs one replica: a PDB would block drains"
    );
    let pdb = prod.get("PodDisruptionBudget");
    let min_available = at(pdb, "spec.minAvailable")
        .as_u64()
        .expect("prod PDB minAvailable");
    assert!(
        (1..*prod_replicas).contains(&min_available),
        "prod PDB minAvailable {min_available}"
    );
    assert_eq!(
        at(pdb, "spec.selector.matchLabels"),
        at(prod.get("Deployment"), "spec.selector.matchLabels")
    );
    assert_ne!(
        at(dev.container(), "resources"),
        at(prod.container(), "resources")
    );
    assert!(
        at(prod.container(), "resources.limits.cpu").is_string(),
        "prod caps CPU"
    );
    assert!(
        at(prod.get("Ingress"), "spec.tls").is_array(),
        "prod serves TLS"
    );
}

#[test]
#[ignore = "real servers: run by scripts/test"]
fn chart_defaults_are_zero_downtime_with_a_pdb() {
    let r = Helm::new().render("default", &[], &[]);
    let deploy = r.get("Deployment");
    assert_eq!(at(deploy, "spec.replicas"), 2);
    assert_eq!(at(deploy, "spec.strategy.rollingUpdate.maxUnavailable"), 0);
    assert_eq!(at(r.get("PodDisruptionBudget"), "spec.minAvailable"), 1);
    assert_eq!(
        r.container()["image"],
        "registry.example.com/team/app:0.1.0"
    );
}

#[test]
#[ignore = "real servers: run by scripts/test"]
fn image_is_pulled_by_digest_when_one_is_set() {
    let helm = Helm::new();
    let digest = format!("sha256:{}", "ab".repeat(32));
    let by_digest = helm.render(
        "dev",
        &[&env_file("dev")],
        &["--set", &format!("image.digest={digest}")],
    );
    assert_eq!(
        by_digest.container()["image"],
        format!("registry.example.com/team/app@{digest}")
    );
    let by_tag = helm.render(
        "dev",
        &[&env_file("dev")],
        &["--set", "image.digest=", "--set", "image.tag=v1.2.3"],
    );
    assert_eq!(
        by_tag.container()["image"],
        "registry.example.com/team/app:v1.2.3"
    );
}

#[test]
#[ignore = "real servers: run by scripts/test"]
fn probes_and_env_are_rendered_through_tpl_from_other_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let values = write_values(
        dir.path(),
        "tpl.yaml",
        "app:\n  port: 9090\n  readyPath: /ready-for-traffic\n\
         livenessProbe:\n  tcpSocket:\n    port: \"{{ .Values.app.port }}\"\n\
         env:\n  - name: RUNNING_TAG\n    value: \"{{ .Values.image.tag }}\"\n",
    );
    let r = Helm::new().render("dev", &[&env_file("dev"), &values], &[]);
    let c = r.container();
    assert_eq!(at(c, "readinessProbe.httpGet.path"), "/ready-for-traffic");
    assert_eq!(at(c, "livenessProbe.tcpSocket.port"), "9090");
    assert_eq!(at(c, "ports")[0]["containerPort"], 9090);
    let (_, tag, _) = env_image("dev");
    assert_eq!(at(c, "env")[0]["value"], tag.as_str());
}

#[test]
#[ignore = "real servers: run by scripts/test"]
fn pdb_and_hpa_api_versions_follow_the_cluster_version() {
    let helm = Helm::new();
    let on = ["--set", "autoscaling.enabled=true"];
    let current = helm.render("prod", &[&env_file("prod")], &on);
    assert_eq!(
        current.get("PodDisruptionBudget")["apiVersion"],
        "policy/v1"
    );
    assert_eq!(
        current.get("HorizontalPodAutoscaler")["apiVersion"],
        "autoscaling/v2"
    );
    assert!(
        at(current.get("Deployment"), "spec.replicas").is_null(),
        "the HPA owns replicas"
    );

    let old = helm.render(
        "prod",
        &[&env_file("prod")],
        &[&on[..], &["--kube-version", "v1.20.2"]].concat(),
    );
    assert_eq!(
        old.get("PodDisruptionBudget")["apiVersion"],
        "policy/v1beta1"
    );
    assert_eq!(
        old.get("HorizontalPodAutoscaler")["apiVersion"],
        "autoscaling/v2beta2"
    );
}

#[test]
#[ignore = "real servers: run by scripts/test"]
fn wrong_typed_values_are_rejected_by_the_schema_with_a_clear_message() {
    let helm = Helm::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "replicaCount: \"three\"\n",
            &["/replicaCount", "want integer"][..],
        ),
        ("image:\n  tag: 42\n", &["/image/tag", "want string"]),
        (
            "image:\n  digest: latest\n",
            &["/image/digest", "does not match pattern"],
        ),
        (
            "image:\n  tag: \"-rc1\"\n",
            &["/image/tag", "does not match pattern"],
        ),
        ("service:\n  port: 80\n  typo: 1\n", &["/service", "typo"]),
        (
            "podDisruptionBudget:\n  enabled: \"yes\"\n",
            &["/podDisruptionBudget/enabled", "want boolean"],
        ),
    ];
    for (i, (body, expected)) in cases.iter().enumerate() {
        let file = write_values(dir.path(), &format!("bad{i}.yaml"), body);
        let out = helm.template_output("dev", &[&env_file("dev"), &file], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted bad values {body:?}");
        assert!(
            stderr.contains("values don't meet the specifications of the schema"),
            "{body:?}: {stderr}"
        );
        for needle in *expected {
            assert!(
                stderr.contains(needle),
                "{body:?}: expected {needle:?} in: {stderr}"
            );
        }
    }
    // The marker contract: an empty digest and tagflow's usual tags are valid.
    let good = write_values(
        dir.path(),
        "good.yaml",
        "image:\n  tag: a1b2c3d_2024-01.1\n  digest: \"\"\n",
    );
    assert!(helm.template_output("dev", &[&good], &[]).status.success());
}

#[test]
fn env_values_carry_the_setter_markers_tagflow_rewrites() {
    for env in ["dev", "prod"] {
        let text = fs::read_to_string(env_file(env)).expect("read");
        let tag_line = text
            .lines()
            .find(|l| l.trim_start().starts_with("tag:"))
            .expect("tag line");
        let digest_line = text
            .lines()
            .find(|l| l.trim_start().starts_with("digest:"))
            .expect("digest line");
        assert!(
            tag_line.ends_with(r#"# {"$imagepolicy": "flux-system:app:tag"}"#),
            "{env}: {tag_line}"
        );
        assert!(
            digest_line.ends_with(r#"# {"$imagepolicy": "flux-system:app:digest"}"#),
            "{env}: {digest_line}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// API server tests

#[test]
#[ignore = "real servers: run by scripts/test"]
fn every_flux_file_and_rendered_manifest_passes_server_side_dry_run() {
    let cluster = Cluster::start();
    cluster.install_flux_crds();
    cluster.create_namespaces();

    let files = yaml_files(&repo().join("flux"));
    assert!(files.len() >= 8, "expected the flux/ tree, found {files:?}");
    let mut kinds = BTreeSet::new();
    for file in &files {
        let text = fs::read_to_string(file).expect("read");
        for doc in yaml_docs(&text) {
            kinds.insert(
                to_json(&doc)["kind"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
        cluster.dry_run(
            &file
                .strip_prefix(repo())
                .unwrap_or(file)
                .display()
                .to_string(),
            &text,
        );
    }
    for kind in [
        "GitRepository",
        "HelmRelease",
        "Kustomization",
        "Deployment",
        "Role",
        "RoleBinding",
    ] {
        assert!(kinds.contains(kind), "flux/ has no {kind}: {kinds:?}");
    }

    // The chart as this 1.20 server would get it from helm (old PDB/HPA API versions), for each
    // env, and with the optional HPA turned on.
    let helm = Helm::new();
    let caps = cluster.helm_capabilities();
    let caps: Vec<&str> = caps.iter().map(String::as_str).collect();
    for env in ["dev", "prod"] {
        for extra in [&[][..], &["--set", "autoscaling.enabled=true"]] {
            let text = helm.template(env, &[&env_file(env)], &[&caps[..], extra].concat());
            cluster.dry_run(&format!("chart rendered for {env} {extra:?}"), &text);
        }
    }
}

#[test]
#[ignore = "real servers: run by scripts/test"]
fn misspelt_or_mistyped_flux_fields_are_rejected_not_silently_pruned() {
    let cluster = Cluster::start();
    cluster.install_flux_crds();
    cluster.create_namespaces();
    let text = fs::read_to_string(repo().join("flux/apps/dev/helmrelease.yaml")).expect("read");
    cluster.dry_run("flux/apps/dev/helmrelease.yaml", &text);
    let cases = [
        ("  test:\n", "  tests:\n", "tests"),
        ("      retries: 3\n", "      retries: three\n", "retries"),
        ("strategy: rollback", "strategy: rollforward", "strategy"),
        ("interval: 5m\n", "interval: often\n", "interval"),
    ];
    for (from, to, needle) in cases {
        let bad = text.replacen(from, to, 1);
        assert_ne!(bad, text, "helmrelease.yaml has no {from:?}");
        let err = cluster
            .try_dry_run(&bad)
            .expect_err(&format!("accepted {to:?}"));
        assert!(err.contains(needle), "{to:?}: {err}");
    }
}

#[test]
#[ignore = "real servers: run by scripts/test"]
fn tagflow_service_account_has_exactly_the_rbac_it_needs_and_nothing_cluster_wide() {
    let cluster = Cluster::start();
    cluster.install_flux_crds();
    cluster.create_namespaces();
    cluster.kubectl_ok(&["apply", "-f", "flux/tagflow/"]);

    let sa = "system:serviceaccount:tagflow:tagflow";
    // Where config/tagflow.yaml follows releases: read on exactly those kinds, and Events.
    let releases = release_resources();
    assert!(
        !releases.is_empty(),
        "config/tagflow.yaml follows no release"
    );
    let others = ["default", "kube-system", "flux-system", "argocd"];
    for (ns, want) in tagflow_rules("tagflow", Some("tagflow"), &releases, &others) {
        assert_eq!(
            cluster.granted(sa, &ns),
            want,
            "rules of {sa} in namespace {ns} beyond an unprivileged ServiceAccount"
        );
    }

    // Spot checks of what must be denied.
    let denied = [
        (Some("tagflow"), "get", "secrets"),
        (Some("tagflow"), "list", "secrets"),
        (Some("dev"), "get", "secrets"),
        (Some("tagflow"), "get", "leases/another-lease"),
        (Some("tagflow"), "delete", "leases/tagflow"),
        (Some("tagflow"), "list", "leases"),
        (Some("dev"), "patch", "helmreleases.helm.toolkit.fluxcd.io"),
        (
            Some("dev"),
            "update",
            "helmreleases.helm.toolkit.fluxcd.io/app",
        ),
        (
            Some("default"),
            "get",
            "helmreleases.helm.toolkit.fluxcd.io",
        ),
        (
            Some("dev"),
            "get",
            "kustomizations.kustomize.toolkit.fluxcd.io",
        ),
        (
            Some("flux-system"),
            "list",
            "kustomizations.kustomize.toolkit.fluxcd.io",
        ),
        (Some("argocd"), "get", "applications.argoproj.io"),
        (Some("dev"), "create", "pods"),
        (Some("dev"), "update", "deployments.apps"),
        (None, "list", "helmreleases.helm.toolkit.fluxcd.io"),
        (None, "get", "secrets"),
        (None, "create", "events"),
        (None, "list", "namespaces"),
        (None, "*", "*"),
    ];
    for (ns, verb, resource) in denied {
        assert!(
            !cluster.can_i(sa, ns, verb, resource),
            "{sa} may {verb} {resource} in {ns:?}"
        );
    }
    assert!(cluster.can_i(sa, Some("tagflow"), "update", "leases/tagflow"));
    assert!(cluster.can_i(
        sa,
        Some("prod"),
        "watch",
        "helmreleases.helm.toolkit.fluxcd.io"
    ));

    // Nothing cluster-wide: no ClusterRoleBinding names tagflow's ServiceAccount.
    let crbs: Json =
        serde_json::from_str(&cluster.kubectl_ok(&["get", "clusterrolebindings", "--output=json"]))
            .expect("clusterrolebindings");
    for crb in crbs["items"].as_array().expect("items") {
        for subject in crb["subjects"].as_array().into_iter().flatten() {
            assert!(
                !(subject["kind"] == "ServiceAccount" && subject["name"] == "tagflow"),
                "ClusterRoleBinding {} binds tagflow",
                crb["metadata"]["name"]
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The image

#[test]
#[ignore = "real servers: run by scripts/test"]
fn image_builds_without_docker_holds_no_shell_and_runs_tagflow_version() {
    let umoci = system_tool("umoci");
    let skopeo = system_tool("skopeo");
    let chroot = system_tool("chroot");
    let registry = testbed::Registry::start(testbed::RegistryOpts::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = format!("{}/platform/tagflow", registry.host);

    let started = Instant::now();
    let out = run_ok(
        Command::new(repo().join("scripts/build-image"))
            .arg("--binary")
            .arg(env!("CARGO_BIN_EXE_tagflow"))
            .arg("--layout")
            .arg(dir.path().join("build"))
            .arg("--dest-tls-verify=false")
            .arg(&dest)
            .current_dir(repo()),
        None,
        BUILD_IMAGE_TIMEOUT,
    );
    println!("{out}build-image took {:?}", started.elapsed());
    let image = out
        .lines()
        .find_map(|l| l.strip_prefix("IMAGE="))
        .unwrap_or_else(|| panic!("no IMAGE= line in:\n{out}"))
        .to_owned();
    let short = run_ok(
        Command::new("git")
            .args(["rev-parse", "--short=7", "HEAD"])
            .current_dir(repo()),
        None,
        TOOL_TIMEOUT,
    );
    assert_eq!(
        image,
        format!("{dest}:{}", short.trim()),
        "tagged with the short git hash"
    );
    assert!(
        out.contains("image size "),
        "build-image prints the size:\n{out}"
    );

    // What the registry serves: labels, non-root user, entrypoint.
    let inspect: Json = serde_json::from_str(&run_ok(
        Command::new(&skopeo)
            .args(["inspect", "--tls-verify=false", "--config"])
            .arg(format!("docker://{image}")),
        None,
        TOOL_TIMEOUT,
    ))
    .expect("skopeo inspect --config");
    let config = &inspect["config"];
    let labels = &config["Labels"];
    let revision = run_ok(
        Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(repo()),
        None,
        TOOL_TIMEOUT,
    );
    assert_eq!(labels["org.opencontainers.image.revision"], revision.trim());
    for label in ["created", "source"] {
        assert!(
            labels[format!("org.opencontainers.image.{label}")]
                .as_str()
                .is_some_and(|v| !v.is_empty()),
            "label {label} missing: {labels}"
        );
    }
    assert_eq!(config["User"], "65532:65532");
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/usr/local/bin/tagflow"])
    );

    // Pull it back, unpack it, look inside, run it.
    let layout = dir.path().join("pulled");
    run_ok(
        Command::new(&skopeo)
            .args(["copy", "--quiet", "--src-tls-verify=false"])
            .arg(format!("docker://{image}"))
            .arg(format!("oci:{}:test", layout.display())),
        None,
        TOOL_TIMEOUT,
    );
    let bundle = dir.path().join("bundle");
    run_ok(
        Command::new(&umoci)
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:test", layout.display()))
            .arg(&bundle),
        None,
        TOOL_TIMEOUT,
    );
    let rootfs = bundle.join("rootfs");
    for forbidden in [
        "bin/sh",
        "bin/bash",
        "bin/dash",
        "bin/busybox",
        "usr/bin/apt",
        "usr/bin/dpkg",
        "sbin/apk",
    ] {
        assert!(
            fs::symlink_metadata(rootfs.join(forbidden)).is_err(),
            "image contains /{forbidden}"
        );
    }
    let files = all_files(&rootfs);
    let shells: Vec<&PathBuf> = files
        .iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| ["sh", "bash", "dash", "ash"].contains(&&*n.to_string_lossy()))
        })
        .collect();
    assert!(shells.is_empty(), "shells in the image: {shells:?}");
    assert!(
        files
            .iter()
            .any(|p| p.ends_with("etc/ssl/certs/ca-certificates.crt")),
        "no CA bundle"
    );
    let passwd = fs::read_to_string(rootfs.join("etc/passwd")).expect("/etc/passwd");
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("tagflow:x:65532:65532:")),
        "{passwd}"
    );
    println!("image holds {} files", files.len());

    let out = run_with_timeout(
        Command::new(chroot)
            .arg("--userspec=65532:65532")
            .arg(&rootfs)
            .args(["/usr/local/bin/tagflow", "--version"]),
        None,
        TOOL_TIMEOUT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(env!("CARGO_PKG_VERSION")),
        "tagflow --version inside the image: {} stdout={stdout} stderr={}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn subset_check_reports_dropped_and_changed_fields() {
    let sent = serde_json::json!({"spec": {"a": 1, "typo": true, "list": [{"mode": 440}]}});
    let got = serde_json::json!({"spec": {"a": 1, "default": "x", "list": [{"mode": 288}]}});
    let mut problems = Vec::new();
    check_subset(&sent, &got, "obj", &mut problems);
    problems.sort();
    assert_eq!(
        problems,
        [
            "obj.spec.list[0].mode: sent 440, server has 288",
            "obj.spec.typo: dropped by the server (unknown field?)",
        ]
    );
}

/// Every /etc/tagflow/... file that config/tagflow.yaml or the Deployment's flags name is
/// mounted from a Secret volume, so a new credential in the config cannot be forgotten here.
#[test]
fn tagflow_deployment_mounts_every_credential_file_the_config_names() {
    let config_text = fs::read_to_string(repo().join("config/tagflow.yaml")).expect("config");
    let config = to_json(&serde_yaml::from_str(&config_text).expect("config YAML"));
    let deploy_text =
        fs::read_to_string(repo().join("flux/tagflow/deployment.yaml")).expect("read");
    let deploy = to_json(&yaml_docs(&deploy_text)[0]);
    let pod = at(&deploy, "spec.template.spec");
    let container = &pod["containers"][0];

    let mut wanted = BTreeSet::new();
    collect_strings(&config, &mut |s| {
        if s.starts_with("/etc/tagflow/") {
            wanted.insert(s.to_owned());
        }
    });
    for arg in container["args"].as_array().expect("args") {
        if let Some((_, path)) = arg.as_str().and_then(|a| a.split_once("=/etc/tagflow/")) {
            wanted.insert(format!("/etc/tagflow/{path}"));
        }
    }
    assert!(
        wanted.len() >= 4,
        "expected git, registry and Slack files, got {wanted:?}"
    );

    let volumes: BTreeMap<&str, &Json> = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|v| (v["name"].as_str().expect("volume name"), v))
        .collect();
    for file in &wanted {
        let mount = container["volumeMounts"]
            .as_array()
            .expect("volumeMounts")
            .iter()
            .find(|m| {
                m["mountPath"]
                    .as_str()
                    .is_some_and(|p| file.starts_with(&format!("{p}/")))
            })
            .unwrap_or_else(|| panic!("{file} is not under any volumeMount"));
        let volume = volumes[mount["name"].as_str().expect("mount name")];
        let secret = &volume["secret"];
        assert!(secret.is_object(), "{file} is not mounted from a Secret");
        assert_eq!(mount["readOnly"], true, "{file}");
        if let Some(items) = secret["items"].as_array() {
            let rel = &file[mount["mountPath"].as_str().unwrap_or_default().len() + 1..];
            assert!(
                items.iter().any(|i| i["path"] == rel),
                "{file}: no item with path {rel}"
            );
        }
    }
}

fn collect_strings(v: &Json, f: &mut impl FnMut(&str)) {
    match v {
        Json::String(s) => f(s),
        Json::Array(a) => a.iter().for_each(|x| collect_strings(x, f)),
        Json::Object(o) => o.values().for_each(|x| collect_strings(x, f)),
        _ => {}
    }
}
