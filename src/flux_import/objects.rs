//! The Flux objects, read from multi-document YAML files with the line of every field.

use serde_yaml::Value;

use super::{Note, SourceFile};
use crate::yamlspan;

const GROUP: &str = "image.toolkit.fluxcd.io/";
const VERSIONS: &[&str] = &["v1beta2", "v1"];

/// One YAML document of an input file, for locating notes.
#[derive(Debug, Clone)]
pub struct Doc {
    file: String,
    /// Lines before the document in its file.
    offset: usize,
    span: Option<yamlspan::Document>,
}

impl Doc {
    /// A note located at `path` inside this document (or its nearest existing ancestor).
    pub fn note(&self, path: &[&str], message: impl Into<String>) -> Note {
        let mut p = path;
        let line = loop {
            if let Some(l) = self.span.as_ref().and_then(|d| d.line_of(p)) {
                break l;
            }
            if p.is_empty() {
                break 1;
            }
            p = &p[..p.len() - 1];
        };
        Note {
            file: self.file.clone(),
            line: self.offset + line,
            message: message.into(),
        }
    }
}

/// An `ImageRepository`: which image to scan and how to reach its registry.
#[derive(Debug, Clone)]
pub struct ImageRepository {
    /// Where it was read.
    pub doc: Doc,
    /// `metadata.namespace` (default `flux-system`).
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `spec.image`.
    pub image: String,
    /// `spec.interval`.
    pub interval: Option<String>,
    /// `spec.timeout`.
    pub timeout: Option<String>,
    /// `spec.secretRef.name`: a docker config Secret.
    pub secret: Option<String>,
    /// `spec.certSecretRef.name`: a TLS Secret (`ca.crt`).
    pub cert_secret: Option<String>,
    /// `spec.insecure`.
    pub insecure: bool,
    /// `spec.exclusionList` (Flux's default when absent).
    pub exclusion: Vec<String>,
}

/// Flux's exclusion list when `spec.exclusionList` is absent: cosign signature tags.
pub const DEFAULT_EXCLUSION: &str = r"^.*\.sig$";

/// How an `ImagePolicy` orders tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FluxOrder {
    /// `policy.semver.range`.
    Semver(String),
    /// `policy.alphabetical.order`: true for `desc`.
    Alphabetical(bool),
    /// `policy.numerical.order`: true for `desc`.
    Numerical(bool),
}

/// An `ImagePolicy`: the tag filter and ordering for one repository.
#[derive(Debug, Clone)]
pub struct ImagePolicy {
    /// Where it was read.
    pub doc: Doc,
    /// `metadata.namespace` (default `flux-system`).
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `spec.imageRepositoryRef`: namespace and name.
    pub repository: (String, String),
    /// `spec.filterTags.pattern`.
    pub pattern: Option<String>,
    /// `spec.filterTags.extract`.
    pub extract: Option<String>,
    /// `spec.policy`; None when it names no ordering tagflow knows (noted).
    pub order: Option<FluxOrder>,
}

/// An `ImageUpdateAutomation`: where markers are and how commits are made.
#[derive(Debug, Clone)]
pub struct Automation {
    /// Where it was read.
    pub doc: Doc,
    /// `metadata.name`.
    pub name: String,
    /// `spec.update.path`, relative to the repo root, without `./` (empty: the whole repo).
    pub path: String,
    /// `spec.git.commit.author`: name and email.
    pub author: Option<(String, String)>,
}

/// Every object read from the inputs.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    /// `ImageRepository` objects.
    pub repositories: Vec<ImageRepository>,
    /// `ImagePolicy` objects.
    pub policies: Vec<ImagePolicy>,
    /// `ImageUpdateAutomation` objects.
    pub automations: Vec<Automation>,
}

fn at<'v>(v: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn text(v: &Value, path: &[&str]) -> Option<String> {
    match at(v, path)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Split a file into its documents: (lines before the document, document text).
fn documents(text: &str) -> Vec<(usize, String)> {
    let mut out = vec![(0, String::new())];
    for (i, line) in text.lines().enumerate() {
        if line == "---" || line.starts_with("--- ") {
            out.push((i + 1, String::new()));
        } else if let Some((_, doc)) = out.last_mut() {
            doc.push_str(line);
            doc.push('\n');
        }
    }
    out
}

/// Which spec fields each kind maps, and what to tell about the others.
fn unmapped_advice(kind: &str, key: &str) -> String {
    let advice = match (kind, key) {
        (_, "suspend") => "tagflow has no per-image suspend; remove the image from the config",
        ("ImageRepository", "provider") => {
            "cloud auto-login is not mapped: give the registry a dockerConfigFile with credHelpers (README, Registries)"
        }
        ("ImageRepository", "serviceAccountName") => {
            "image pull secrets of a service account are not read: give the registry credentials"
        }
        ("ImageRepository", "accessFrom") => "tagflow has no cross-namespace access control",
        ("ImageRepository", "proxySecretRef") => "set HTTPS_PROXY in tagflow's environment instead",
        ("ImagePolicy", "digestReflectionPolicy") => {
            "tagflow always resolves the winner's digest and writes it to :digest targets"
        }
        ("ImagePolicy", "interval") => "tagflow selects on every scan (`interval`)",
        ("ImageUpdateAutomation", "sourceRef") => {
            "the config repo is tagflow's --repo; pass its URL there"
        }
        ("ImageUpdateAutomation", "interval") => {
            "tagflow commits on every cycle that changes something (`interval`)"
        }
        ("ImageUpdateAutomation", "policySelector") => {
            "every image in the config is written where its markers are"
        }
        _ => "no tagflow equivalent",
    };
    format!("{kind} spec.{key} is not mapped: {advice}")
}

impl Objects {
    /// Read every image-automation object in `files`; problems and unmapped fields go to
    /// `notes`.
    pub fn read(files: &[SourceFile], notes: &mut Vec<Note>) -> Self {
        let mut out = Self::default();
        for f in files {
            for (offset, text) in documents(&f.text) {
                let Ok(v) = yamlspan::from_str::<Value>(&text) else {
                    continue;
                };
                let Some(api) = text_of(&v, "apiVersion") else {
                    continue;
                };
                let Some(version) = api.strip_prefix(GROUP) else {
                    continue;
                };
                let doc = Doc {
                    file: f.path.clone(),
                    offset,
                    span: yamlspan::parse(&text).ok(),
                };
                let kind = text_of(&v, "kind").unwrap_or_default();
                if !VERSIONS.contains(&version) {
                    notes.push(doc.note(
                        &["apiVersion"],
                        format!("{kind} {api}: only v1beta2 and v1 are read; skipped"),
                    ));
                    continue;
                }
                match kind.as_str() {
                    "ImageRepository" => out.repository(&v, doc, notes),
                    "ImagePolicy" => out.policy(&v, doc, notes),
                    "ImageUpdateAutomation" => out.automation(&v, doc, notes),
                    _ => {}
                }
            }
        }
        out
    }

    fn repository(&mut self, v: &Value, doc: Doc, notes: &mut Vec<Note>) {
        let (namespace, name) = meta(v);
        note_unmapped(
            v,
            &doc,
            "ImageRepository",
            &[
                "image",
                "interval",
                "timeout",
                "secretRef",
                "certSecretRef",
                "insecure",
                "exclusionList",
            ],
            notes,
        );
        let Some(image) = text(v, &["spec", "image"]) else {
            notes.push(doc.note(
                &["spec"],
                format!("ImageRepository {name}: no spec.image; skipped"),
            ));
            return;
        };
        let exclusion = match at(v, &["spec", "exclusionList"]) {
            None => vec![DEFAULT_EXCLUSION.to_owned()],
            Some(Value::Sequence(items)) => items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect(),
            Some(_) => Vec::new(),
        };
        self.repositories.push(ImageRepository {
            namespace,
            name,
            image,
            interval: text(v, &["spec", "interval"]),
            timeout: text(v, &["spec", "timeout"]),
            secret: text(v, &["spec", "secretRef", "name"]),
            cert_secret: text(v, &["spec", "certSecretRef", "name"]),
            insecure: at(v, &["spec", "insecure"]).and_then(Value::as_bool) == Some(true),
            exclusion,
            doc,
        });
    }

    fn policy(&mut self, v: &Value, doc: Doc, notes: &mut Vec<Note>) {
        let (namespace, name) = meta(v);
        note_unmapped(
            v,
            &doc,
            "ImagePolicy",
            &["imageRepositoryRef", "filterTags", "policy"],
            notes,
        );
        let Some(repo) = text(v, &["spec", "imageRepositoryRef", "name"]) else {
            notes.push(doc.note(
                &["spec"],
                format!("ImagePolicy {name}: no spec.imageRepositoryRef.name; skipped"),
            ));
            return;
        };
        let repo_ns = text(v, &["spec", "imageRepositoryRef", "namespace"])
            .unwrap_or_else(|| namespace.clone());
        let desc =
            |kind: &str| text(v, &["spec", "policy", kind, "order"]).as_deref() == Some("desc");
        let order = if let Some(range) = text(v, &["spec", "policy", "semver", "range"]) {
            Some(FluxOrder::Semver(range))
        } else if at(v, &["spec", "policy", "alphabetical"]).is_some() {
            Some(FluxOrder::Alphabetical(desc("alphabetical")))
        } else if at(v, &["spec", "policy", "numerical"]).is_some() {
            Some(FluxOrder::Numerical(desc("numerical")))
        } else {
            notes.push(doc.note(
                &["spec", "policy"],
                format!("ImagePolicy {name}: spec.policy names no semver, alphabetical or numerical ordering; the image is written with a TODO"),
            ));
            None
        };
        self.policies.push(ImagePolicy {
            namespace,
            name,
            repository: (repo_ns, repo),
            pattern: text(v, &["spec", "filterTags", "pattern"]),
            extract: text(v, &["spec", "filterTags", "extract"]),
            order,
            doc,
        });
    }

    fn automation(&mut self, v: &Value, doc: Doc, notes: &mut Vec<Note>) {
        let (_, name) = meta(v);
        note_unmapped(v, &doc, "ImageUpdateAutomation", &["update", "git"], notes);
        let git = |p: &[&str]| {
            let mut full = vec!["spec", "git"];
            full.extend_from_slice(p);
            text(v, &full)
        };
        let checkout = git(&["checkout", "ref", "branch"]);
        if let Some(push) = git(&["push", "branch"])
            && checkout.as_deref() != Some(push.as_str())
        {
            notes.push(doc.note(&["spec", "git", "push", "branch"], format!(
                "push.branch {push} is not mapped: tagflow pushes to the branch it reads (--branch); open a pull request from it yourself if you need one"
            )));
        }
        for (p, what) in [
            (
                &["push", "refspec"][..],
                "push.refspec is not mapped: tagflow pushes only to --branch",
            ),
            (&["push", "options"][..], "push.options are not mapped"),
            (
                &["commit", "messageTemplate"][..],
                "commit.messageTemplate is not mapped: tagflow writes one line per change in the body and takes its subject from git.commitSubject ({summary})",
            ),
            (
                &["commit", "signingKey"][..],
                "commit.signingKey is not mapped: tagflow does not sign commits",
            ),
        ] {
            let mut full = vec!["spec", "git"];
            full.extend_from_slice(p);
            if at(v, &full).is_some() {
                notes.push(doc.note(&full, what));
            }
        }
        if let Some(s) = text(v, &["spec", "update", "strategy"])
            && s != "Setters"
        {
            notes.push(doc.note(
                &["spec", "update", "strategy"],
                format!("update.strategy {s} is not mapped: tagflow uses setter markers (Setters)"),
            ));
        }
        let path = text(v, &["spec", "update", "path"]).unwrap_or_default();
        let path = path.trim_start_matches("./").trim_end_matches('/');
        let path = if path == "." { "" } else { path };
        let author = git(&["commit", "author", "name"]).zip(git(&["commit", "author", "email"]));
        self.automations.push(Automation {
            doc,
            name,
            path: path.to_owned(),
            author,
        });
    }
}

fn text_of(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn meta(v: &Value) -> (String, String) {
    (
        text(v, &["metadata", "namespace"]).unwrap_or_else(|| "flux-system".to_owned()),
        text(v, &["metadata", "name"]).unwrap_or_default(),
    )
}

/// Note every `spec` key of `kind` outside `mapped`.
fn note_unmapped(v: &Value, doc: &Doc, kind: &str, mapped: &[&str], notes: &mut Vec<Note>) {
    let Some(Value::Mapping(spec)) = v.get("spec") else {
        return;
    };
    for key in spec.keys().filter_map(Value::as_str) {
        if !mapped.contains(&key) {
            notes.push(doc.note(&["spec", key], unmapped_advice(kind, key)));
        }
    }
}
