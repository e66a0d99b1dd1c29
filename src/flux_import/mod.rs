//! `tagflow import-flux`: read Flux image-automation objects (`ImageRepository`, `ImagePolicy`,
//! `ImageUpdateAutomation`, `image.toolkit.fluxcd.io` v1beta2 and v1) and write the equivalent
//! `config/tagflow.yaml`.
//!
//! Pure: files in, config text plus notes out. Every field that has no tagflow equivalent is a
//! note with file:line, so nothing is dropped silently. Other kinds in the same files are ignored.

mod objects;
mod render;

use std::collections::BTreeMap;

pub use objects::{Automation, Doc, ImagePolicy, ImageRepository, Objects};

/// One input file, its path relative to the repo root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// Path relative to the repo root (`flux/dev/image-policy.yaml`).
    pub path: String,
    /// Its text.
    pub text: String,
}

/// Something the import could not map, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// File.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// What was not mapped, and what to do instead.
    pub message: String,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// The imported config and what could not be mapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// `config/tagflow.yaml` text.
    pub config: String,
    /// Unmapped fields and problems, in file order.
    pub notes: Vec<Note>,
    /// Flux image-automation objects read.
    pub objects: usize,
}

/// The `update.path` directories of every `ImageUpdateAutomation` in `files`, relative to the
/// repo root: the shell reads the values files under them too.
pub fn update_paths(files: &[SourceFile]) -> Vec<String> {
    let mut notes = Vec::new();
    Objects::read(files, &mut notes)
        .automations
        .iter()
        .map(|a| a.path.clone())
        .collect()
}

/// Import the Flux objects in `files`. Values files under an automation's `update.path` become
/// environments when they carry `$imagepolicy` markers.
pub fn import(files: &[SourceFile]) -> Imported {
    let mut notes = Vec::new();
    let objects = Objects::read(files, &mut notes);
    let environments = environments(&objects, files, &mut notes);
    let config = render::render(&objects, &environments, &mut notes);
    notes.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    Imported {
        config,
        notes,
        objects: objects.repositories.len() + objects.policies.len() + objects.automations.len(),
    }
}

/// A values file with markers, and the images (policy names) it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Environment {
    pub name: String,
    pub file: String,
    /// ImagePolicy namespace and name of each marker in the file, with the line of the first.
    pub policies: Vec<(String, String, usize)>,
}

fn environments(
    objects: &Objects,
    files: &[SourceFile],
    notes: &mut Vec<Note>,
) -> Vec<Environment> {
    let marker =
        regex::Regex::new(r#"\{\s*"\$imagepolicy"\s*:\s*"([^":]+):([^":]+)(?::[a-z]+)?"\s*\}"#)
            .expect("static regex");
    let mut out: Vec<Environment> = Vec::new();
    for a in &objects.automations {
        let under: Vec<&SourceFile> = files
            .iter()
            .filter(|f| a.path.is_empty() || f.path.starts_with(&format!("{}/", a.path)))
            .collect();
        let mut found = Vec::new();
        for f in under {
            let mut policies: Vec<(String, String, usize)> = Vec::new();
            for c in marker.captures_iter(&f.text) {
                let (ns, name) = (c[1].to_owned(), c[2].to_owned());
                if !policies.iter().any(|(n, p, _)| *n == ns && *p == name) {
                    let line = f.text[..c.get(0).map_or(0, |m| m.start())]
                        .matches('\n')
                        .count()
                        + 1;
                    policies.push((ns, name, line));
                }
            }
            if !policies.is_empty() {
                found.push((f.path.clone(), policies));
            }
        }
        if found.is_empty() {
            notes.push(a.doc.note(
                &["spec", "update", "path"],
                format!(
                    "update.path {:?}: no file under it carries a $imagepolicy marker, so no environment was made",
                    a.path
                ),
            ));
        }
        let base = a
            .path
            .rsplit('/')
            .next()
            .filter(|s| !s.is_empty() && *s != ".")
            .unwrap_or(&a.name)
            .to_owned();
        let several = found.len() > 1;
        for (file, policies) in found {
            let mut name = if several {
                let stem = file.rsplit('/').next().unwrap_or(&file);
                format!(
                    "{base}-{}",
                    stem.trim_end_matches(".yaml").trim_end_matches(".yml")
                )
            } else {
                base.clone()
            };
            if out.iter().any(|e| e.name == name) {
                name = format!("{name}-{}", out.len() + 1);
            }
            if out.iter().any(|e| e.file == file) {
                continue;
            }
            out.push(Environment {
                name,
                file,
                policies,
            });
        }
    }
    out
}

/// Names of tagflow images: the ImagePolicy's name, with its namespace in front when two
/// policies share a name.
pub(crate) fn image_names(policies: &[ImagePolicy]) -> BTreeMap<(String, String), String> {
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for p in policies {
        *count.entry(p.name.as_str()).or_default() += 1;
    }
    policies
        .iter()
        .map(|p| {
            let name = if count[p.name.as_str()] > 1 {
                format!("{}-{}", p.namespace, p.name)
            } else {
                p.name.clone()
            };
            ((p.namespace.clone(), p.name.clone()), name)
        })
        .collect()
}

#[cfg(test)]
mod tests;
