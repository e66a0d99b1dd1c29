//! Shared by the deploy tests: tools from scripts/install-deploy-deps, subprocesses with
//! timeouts, YAML handling, and helm with a private home.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;
use tempfile::TempDir;

/// One helm or kubectl call.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

pub const HINT: &str = "run scripts/install-deploy-deps";

// ---------------------------------------------------------------------------------------------
// Tools and processes

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// helm, kubectl, kube-apiserver: installed by scripts/install-deploy-deps into
/// `$TAGFLOW_CACHE/bin` (default ~/.cache/tagflow/bin). Not taken from PATH: the test must use
/// the versions that script pins, not whatever kubectl a machine happens to have.
pub fn cached_tool(name: &str) -> PathBuf {
    let cache = std::env::var_os("TAGFLOW_CACHE").map_or_else(
        || {
            let home = std::env::var_os("HOME").expect("HOME is not set");
            PathBuf::from(home).join(".cache/tagflow")
        },
        PathBuf::from,
    );
    let path = cache.join("bin").join(name);
    assert!(path.is_file(), "missing {}: {HINT}", path.display());
    path
}

/// A system tool from PATH (or /usr/sbin, /sbin).
pub fn system_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("missing {name}: {HINT}"))
}

pub use testbed::run_with_timeout;

/// Like [`run_with_timeout`] but panics with the output unless the command succeeds; returns stdout.
pub fn run_ok(cmd: &mut Command, input: Option<&[u8]>, timeout: Duration) -> String {
    let desc = format!("{cmd:?}");
    let out = run_with_timeout(cmd, input, timeout);
    assert!(
        out.status.success(),
        "{desc} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

// ---------------------------------------------------------------------------------------------
// YAML

/// All non-empty documents of a multi-document YAML stream. serde_yaml rejects duplicate keys,
/// which the API server would silently collapse.
pub fn yaml_docs(text: &str) -> Vec<Yaml> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| Yaml::deserialize(doc).unwrap_or_else(|e| panic!("invalid YAML: {e}\n{text}")))
        .filter(|doc| !doc.is_null())
        .collect()
}

pub fn to_json(doc: &Yaml) -> Json {
    serde_json::to_value(doc).expect("YAML to JSON")
}

/// `doc` at a dotted path ("spec.template.spec"); Null when absent.
pub fn at<'a>(doc: &'a Json, path: &str) -> &'a Json {
    path.split('.').fold(doc, |v, key| &v[key])
}

pub fn kind_name(doc: &Json) -> (String, String) {
    (
        doc["kind"].as_str().unwrap_or_default().to_owned(),
        doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// Object identity for matching what was sent with what the server returned.
pub fn object_key(doc: &Json) -> String {
    let (kind, name) = kind_name(doc);
    let ns = doc["metadata"]["namespace"].as_str().unwrap_or("");
    format!("{kind} {ns}/{name}")
}

/// Checks that everything in `sent` is in `got` unchanged (the server may add defaults). The API
/// server prunes fields a schema does not know instead of rejecting them, so a misspelt field
/// in a manifest shows up here as missing.
pub fn check_subset(sent: &Json, got: &Json, path: &str, problems: &mut Vec<String>) {
    match (sent, got) {
        (Json::Object(s), Json::Object(g)) => {
            for (k, v) in s {
                match g.get(k) {
                    Some(gv) => check_subset(v, gv, &format!("{path}.{k}"), problems),
                    None => problems.push(format!(
                        "{path}.{k}: dropped by the server (unknown field?)"
                    )),
                }
            }
        }
        (Json::Array(s), Json::Array(g)) if s.len() == g.len() => {
            for (i, (sv, gv)) in s.iter().zip(g).enumerate() {
                check_subset(sv, gv, &format!("{path}[{i}]"), problems);
            }
        }
        _ if sent == got => {}
        _ => problems.push(format!("{path}: sent {sent}, server has {got}")),
    }
}

// ---------------------------------------------------------------------------------------------
// helm

/// helm with its config, cache and data homes in a private temp dir (parallel-safe, offline).
pub struct Helm {
    bin: PathBuf,
    home: TempDir,
}

impl Helm {
    pub fn new() -> Helm {
        Helm {
            bin: cached_tool("helm"),
            home: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        for var in ["HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"] {
            cmd.env(var, self.home.path());
        }
        cmd.current_dir(repo());
        cmd
    }

    /// `helm template app ./chart -n NS -f chart/values.yaml -f FILE... EXTRA...`.
    pub fn template_output(&self, ns: &str, values: &[&Path], extra: &[&str]) -> Output {
        let mut cmd = self.cmd();
        cmd.args([
            "template",
            "app",
            "chart",
            "--namespace",
            ns,
            "--values",
            "chart/values.yaml",
        ]);
        for file in values {
            cmd.arg("--values").arg(file);
        }
        cmd.args(extra);
        run_with_timeout(&mut cmd, None, TOOL_TIMEOUT)
    }

    pub fn template(&self, ns: &str, values: &[&Path], extra: &[&str]) -> String {
        let out = self.template_output(ns, values, extra);
        assert!(
            out.status.success(),
            "helm template -n {ns} {values:?} {extra:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    pub fn render(&self, ns: &str, values: &[&Path], extra: &[&str]) -> Rendered {
        Rendered::new(&self.template(ns, values, extra))
    }
}

/// `helm template` output, indexed by kind (each kind at most once in this chart).
pub struct Rendered {
    pub objects: BTreeMap<String, Json>,
}

impl Rendered {
    pub fn new(text: &str) -> Rendered {
        let mut objects = BTreeMap::new();
        for doc in yaml_docs(text) {
            let json = to_json(&doc);
            let kind = json["kind"].as_str().expect("kind").to_owned();
            assert!(
                objects.insert(kind.clone(), json).is_none(),
                "two objects of kind {kind}"
            );
        }
        Rendered { objects }
    }

    pub fn get(&self, kind: &str) -> &Json {
        self.objects
            .get(kind)
            .unwrap_or_else(|| panic!("no {kind} rendered; have {:?}", self.objects.keys()))
    }

    pub fn has(&self, kind: &str) -> bool {
        self.objects.contains_key(kind)
    }

    pub fn container(&self) -> &Json {
        &self.get("Deployment")["spec"]["template"]["spec"]["containers"][0]
    }
}

pub fn env_file(env: &str) -> PathBuf {
    repo().join("envs").join(env).join("patch.yaml")
}

/// The image block of an env's values file (tagflow rewrites it, so tests read it, not guess).
pub fn env_image(env: &str) -> (String, String, String) {
    let text = fs::read_to_string(env_file(env)).expect("read env values");
    let values = to_json(&serde_yaml::from_str::<Yaml>(&text).expect("env values parse"));
    let field = |k: &str| values["image"][k].as_str().unwrap_or_default().to_owned();
    (field("repository"), field("tag"), field("digest"))
}

pub fn write_values(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, body).expect("write values file");
    path
}

/// Every .yaml / .yml file under `dir`, sorted.
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap_or_else(|e| panic!("read {}: {e}", d.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

pub fn all_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() && !path.is_symlink() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Per namespace, the release resources (`plural.group`) config/tagflow.yaml follows, by the
/// same kind-to-API mapping tagflow's watches use.
pub fn release_resources() -> BTreeMap<String, BTreeSet<String>> {
    let text = fs::read_to_string(repo().join("config/tagflow.yaml")).expect("config");
    let cfg = tagflow::config::parse("config/tagflow.yaml", &text).expect("valid config");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for env in cfg.environments.values() {
        if let Some(r) = &env.release {
            let api = tagflow::k8s::observed::api_resource(r.kind);
            out.entry(r.namespace.clone())
                .or_default()
                .insert(format!("{}.{}", api.plural, api.group));
        }
    }
    out
}

/// The `can_i_list` rows tagflow's ServiceAccount needs, per namespace: in its own namespace the
/// Lease `lease` (when leader election is on) and Events; where it follows releases, read on
/// exactly those resources (`plural.group`) and Events; in each of `others`, nothing.
pub fn tagflow_rules(
    own_ns: &str,
    lease: Option<&str>,
    releases: &BTreeMap<String, BTreeSet<String>>,
    others: &[&str],
) -> BTreeMap<String, BTreeSet<String>> {
    let events = [
        "events urls=[] names=[] verbs=[create patch]".to_owned(),
        "events.events.k8s.io urls=[] names=[] verbs=[create patch]".to_owned(),
    ];
    let mut out: BTreeMap<String, BTreeSet<String>> = others
        .iter()
        .map(|ns| ((*ns).to_owned(), BTreeSet::new()))
        .collect();
    let own = out.entry(own_ns.to_owned()).or_default();
    own.extend(events.clone());
    if let Some(name) = lease {
        own.insert(format!(
            "leases.coordination.k8s.io urls=[] names=[{name}] verbs=[get update]"
        ));
        own.insert("leases.coordination.k8s.io urls=[] names=[] verbs=[create]".to_owned());
    }
    for (ns, resources) in releases {
        let want = out.entry(ns.clone()).or_default();
        want.extend(
            resources
                .iter()
                .map(|r| format!("{r} urls=[] names=[] verbs=[get list watch]")),
        );
        want.extend(events.clone());
    }
    out
}
