//! A throwaway Kubernetes control plane for the deploy tests: etcd + kube-apiserver
//! (`testbed::KubeApi`, built by scripts/install-deploy-deps) on free loopback ports, driven
//! with kubectl.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value as Json;
use serde_yaml::Value as Yaml;
use testbed::KubeApi;

use crate::support::{
    TOOL_TIMEOUT, cached_tool, check_subset, object_key, repo, run_ok, run_with_timeout, to_json,
    yaml_docs, yaml_files,
};

// kube-apiserver + etcd

/// etcd and kube-apiserver on free 127.0.0.1 ports, in a private temp dir; both are killed by
/// PID and reaped on drop. No controller-manager runs, so nothing reconciles: tests see exactly
/// what the API server accepts.
pub struct Cluster {
    kubectl: PathBuf,
    api: KubeApi,
}

impl Cluster {
    pub fn start() -> Cluster {
        // No controller-manager creates the namespaces' default ServiceAccounts, which this
        // admission plugin would require of every Pod (the chart's helm test Pod).
        let api = KubeApi::start_with(&["--disable-admission-plugins=ServiceAccount"]);
        Cluster {
            kubectl: cached_tool("kubectl"),
            api,
        }
    }

    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg("--kubeconfig").arg(&self.api.kubeconfig);
        cmd.arg("--cache-dir")
            .arg(self.api.dir().join("kube-cache"));
        // kubectl 1.33 warns about the skew to the 1.20 server on every call.
        cmd.arg("--warnings-as-errors=false");
        cmd.env("KUBECONFIG", &self.api.kubeconfig)
            .env("HOME", self.api.dir());
        cmd.current_dir(repo());
        cmd
    }

    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        run_ok(self.kubectl().args(args), None, TOOL_TIMEOUT)
    }

    /// Applies the Flux CRDs from tests/crds and waits until the server serves them.
    pub fn install_flux_crds(&self) {
        self.kubectl_ok(&["apply", "-f", "tests/crds/"]);
        self.kubectl_ok(&[
            "wait",
            "--for=condition=established",
            "--timeout=60s",
            "-f",
            "tests/crds/",
        ]);
    }

    /// Creates the namespaces the manifests live in: flux-system (made by `flux install` in a
    /// real cluster) and every Namespace under flux/.
    pub fn create_namespaces(&self) {
        self.kubectl_ok(&["create", "namespace", "flux-system"]);
        for file in yaml_files(&repo().join("flux")) {
            let text = fs::read_to_string(&file).expect("read");
            let nss: Vec<Yaml> = yaml_docs(&text)
                .into_iter()
                .filter(|d| d["kind"].as_str() == Some("Namespace"))
                .collect();
            for ns in nss {
                let body = serde_yaml::to_string(&ns).expect("yaml");
                run_ok(
                    self.kubectl().args(["apply", "-f", "-"]),
                    Some(body.as_bytes()),
                    TOOL_TIMEOUT,
                );
            }
        }
    }

    /// Server-side dry-run of a YAML stream; panics with the server's message if any object is
    /// rejected, or if the server dropped or changed any field that was sent.
    pub fn dry_run(&self, what: &str, yaml: &str) {
        if let Err(e) = self.try_dry_run(yaml) {
            panic!("{what}: {e}");
        }
    }

    pub fn try_dry_run(&self, yaml: &str) -> Result<(), String> {
        let sent = yaml_docs(yaml);
        if sent.is_empty() {
            return Err("no objects".into());
        }
        // kubectl validates against the server's OpenAPI (CRD schemas included) before sending.
        let out = run_with_timeout(
            self.kubectl()
                .args(["apply", "--dry-run=server", "--output=json", "-f", "-"]),
            Some(yaml.as_bytes()),
            TOOL_TIMEOUT,
        );
        if !out.status.success() {
            return Err(format!(
                "rejected:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let got: Json = serde_json::from_slice(&out.stdout).expect("kubectl JSON");
        let got_items: Vec<&Json> = if got["kind"] == "List" {
            got["items"].as_array().expect("items").iter().collect()
        } else {
            vec![&got]
        };
        let by_key: BTreeMap<String, &Json> =
            got_items.into_iter().map(|o| (object_key(o), o)).collect();
        let mut problems = Vec::new();
        for doc in &sent {
            let doc = to_json(doc);
            let key = object_key(&doc);
            match by_key.get(&key) {
                Some(got) => check_subset(&doc, got, &key, &mut problems),
                None => problems.push(format!("{key}: not in the server's answer")),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the server did not keep what was sent:\n{}",
                problems.join("\n")
            ))
        }
    }

    /// `--kube-version` and `--api-versions` flags describing this server, for helm template.
    pub fn helm_capabilities(&self) -> Vec<String> {
        let version: Json =
            serde_json::from_str(&self.kubectl_ok(&["version", "--output=json"])).expect("version");
        let mut flags = vec![format!(
            "--kube-version={}",
            version["serverVersion"]["gitVersion"]
                .as_str()
                .expect("server gitVersion")
        )];
        flags.extend(
            self.kubectl_ok(&["api-versions"])
                .lines()
                .map(|v| format!("--api-versions={v}")),
        );
        flags
    }

    /// `kubectl auth can-i` as `user` in `ns`: true for "yes".
    pub fn can_i(&self, user: &str, ns: Option<&str>, verb: &str, resource: &str) -> bool {
        let mut cmd = self.kubectl();
        cmd.args(["auth", "can-i", verb, resource, "--as", user]);
        match ns {
            Some(ns) => cmd.args(["--namespace", ns]),
            None => cmd.arg("--all-namespaces"),
        };
        let out = run_with_timeout(&mut cmd, None, TOOL_TIMEOUT);
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        match (out.status.code(), answer.as_str()) {
            (Some(0), "yes") => true,
            (Some(1), "no") => false,
            _ => panic!("can-i {verb} {resource} as {user}: {out:?}"),
        }
    }

    /// What `user` may do in `ns` beyond an unprivileged ServiceAccount of the same namespace
    /// (discovery, self reviews), as `can_i_list` rows.
    pub fn granted(&self, user: &str, ns: &str) -> BTreeSet<String> {
        let sa_ns = user.split(':').nth(2).unwrap_or("default");
        let baseline = self.can_i_list(&format!("system:serviceaccount:{sa_ns}:nobody"), ns);
        self.can_i_list(user, ns)
            .difference(&baseline)
            .cloned()
            .collect()
    }

    /// `kubectl auth can-i --list` as `user` in `ns`: one "resource [names] [verbs]" per rule.
    pub fn can_i_list(&self, user: &str, ns: &str) -> BTreeSet<String> {
        let out = self.kubectl_ok(&["auth", "can-i", "--list", "--namespace", ns, "--as", user]);
        out.lines().skip(1).map(parse_can_i_row).collect()
    }
}

/// "leases.coordination.k8s.io   []   [tagflow]   [get update]" → "leases.coordination.k8s.io
/// names=[tagflow] urls=[] verbs=[get update]".
fn parse_can_i_row(line: &str) -> String {
    let first_bracket = line.find('[').unwrap_or(line.len());
    let resource = line[..first_bracket].trim();
    let groups: Vec<&str> = line[first_bracket..]
        .split(']')
        .map(|g| g.trim().trim_start_matches('['))
        .collect();
    let (urls, names, verbs) = (
        groups.first().copied(),
        groups.get(1).copied(),
        groups.get(2).copied(),
    );
    format!(
        "{resource} urls=[{}] names=[{}] verbs=[{}]",
        urls.unwrap_or_default(),
        names.unwrap_or_default(),
        verbs.unwrap_or_default()
    )
}
