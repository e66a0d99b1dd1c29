//! Write the imported objects as `config/tagflow.yaml` text, with comments saying where each
//! setting came from and what to fill in.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::objects::{FluxOrder, ImageRepository, Objects};
use super::{Environment, Note, image_names};

/// Where the Secrets Flux names are to be mounted into tagflow's pod.
const MOUNT_DIR: &str = "/etc/tagflow/registry";

/// A single-quoted YAML scalar (regexes keep their backslashes).
fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

pub(super) fn render(objects: &Objects, envs: &[Environment], notes: &mut Vec<Note>) -> String {
    let mut out = String::from(
        "# Imported from Flux image automation by `tagflow import-flux`. Review the notes it printed\n\
         # on stderr, fill in the mounted-file paths, then run `tagflow check --dir .`.\n",
    );
    interval(objects, &mut out, notes);
    if let Some(a) = objects.automations.iter().find(|a| a.author.is_some())
        && let Some((name, email)) = &a.author
    {
        let _ = write!(
            out,
            "\ngit:\n  # From ImageUpdateAutomation {} spec.git.commit.author.\n  author: {{name: {}, email: {}}}\n",
            a.name,
            q(name),
            q(email)
        );
        for other in &objects.automations {
            if other
                .author
                .as_ref()
                .is_some_and(|o| o != &(name.clone(), email.clone()))
            {
                notes.push(other.doc.note(
                    &["spec", "git", "commit", "author"],
                    format!("commit.author differs from ImageUpdateAutomation {}'s; tagflow has one author (git.author)", a.name),
                ));
            }
        }
    }
    registries(&objects.repositories, &mut out, notes);
    let names = image_names(&objects.policies);
    out.push_str("\nimages:\n");
    for p in &objects.policies {
        let name = &names[&(p.namespace.clone(), p.name.clone())];
        let repo = objects
            .repositories
            .iter()
            .find(|r| (r.namespace.clone(), r.name.clone()) == p.repository);
        let _ = writeln!(out, "  {name}:  # ImagePolicy {}/{}", p.namespace, p.name);
        match repo {
            Some(r) => {
                let _ = writeln!(out, "    repository: {}", q(&r.image));
            }
            None => {
                notes.push(p.doc.note(&["spec", "imageRepositoryRef"], format!(
                    "ImagePolicy {}: ImageRepository {}/{} is not among the inputs; fill in images.{name}.repository",
                    p.name, p.repository.0, p.repository.1
                )));
                out.push_str(
                    "    repository: TODO  # the ImageRepository was not among the inputs\n",
                );
            }
        }
        out.push_str("    policy:\n");
        let _ = writeln!(
            out,
            "      tags: {}",
            q(p.pattern.as_deref().unwrap_or(".*"))
        );
        if let Some(e) = &p.extract {
            let _ = writeln!(out, "      extract: {}", q(e));
        }
        if let Some(r) = repo {
            let items: Vec<String> = r.exclusion.iter().map(|e| q(e)).collect();
            if !items.is_empty() {
                let _ = writeln!(
                    out,
                    "      exclude: [{}]  # exclusionList",
                    items.join(", ")
                );
            }
        }
        match &p.order {
            Some(FluxOrder::Semver(range)) => {
                let _ = writeln!(out, "      order: semver\n      range: {}", q(range));
            }
            Some(FluxOrder::Alphabetical(desc)) => {
                let _ = writeln!(
                    out,
                    "      order: alphabetical\n      direction: {}",
                    dir(*desc)
                );
            }
            Some(FluxOrder::Numerical(desc)) => {
                let _ = writeln!(
                    out,
                    "      order: numerical\n      direction: {}",
                    dir(*desc)
                );
            }
            None => out.push_str(
                "      order: TODO  # Flux's policy could not be mapped (see the notes)\n",
            ),
        }
        if p.namespace != "flux-system" || *name != p.name {
            let _ = writeln!(
                out,
                "    setter: {}",
                q(&format!("{}:{}", p.namespace, p.name))
            );
        }
    }
    out.push_str("\nenvironments:\n");
    for e in envs {
        let mut images = Vec::new();
        for (ns, policy, line) in &e.policies {
            match names.get(&(ns.clone(), policy.clone())) {
                Some(n) => images.push(format!("{n}: {{}}")),
                None => notes.push(Note {
                    file: e.file.clone(),
                    line: *line,
                    message: format!("marker names ImagePolicy {ns}:{policy}, which is not among the inputs; the marker is left out of environments.{}", e.name),
                }),
            }
        }
        let _ = writeln!(out, "  {}:\n    file: {}", e.name, q(&e.file));
        if !images.is_empty() {
            let _ = writeln!(out, "    images: {{{}}}", images.join(", "));
        }
    }
    out
}

fn dir(desc: bool) -> &'static str {
    if desc { "desc" } else { "asc" }
}

/// tagflow scans every image at one interval: the shortest ImageRepository interval.
fn interval(objects: &Objects, out: &mut String, notes: &mut Vec<Note>) {
    let mut seen: Vec<(Duration, &ImageRepository, &str)> = Vec::new();
    for r in &objects.repositories {
        let Some(text) = &r.interval else { continue };
        match humantime::parse_duration(text) {
            Ok(d) => seen.push((d, r, text)),
            Err(_) => notes.push(r.doc.note(
                &["spec", "interval"],
                format!("interval {text:?} is not a duration tagflow reads; left out"),
            )),
        }
    }
    let Some((shortest, from, text)) = seen.iter().min_by_key(|(d, ..)| *d) else {
        return;
    };
    let _ = write!(
        out,
        "\n# The shortest ImageRepository interval ({}/{}): tagflow scans every image at one interval.\ninterval: {}\n",
        from.namespace,
        from.name,
        q(text)
    );
    for (d, r, t) in &seen {
        if d != shortest {
            notes.push(r.doc.note(
                &["spec", "interval"],
                format!(
                    "interval {t}: tagflow scans every image every {text} (the shortest interval)"
                ),
            ));
        }
    }
}

/// One `registries` entry per host that needs settings.
fn registries(repos: &[ImageRepository], out: &mut String, notes: &mut Vec<Note>) {
    let mut hosts: BTreeMap<String, &ImageRepository> = BTreeMap::new();
    for r in repos {
        if r.secret.is_none() && r.cert_secret.is_none() && !r.insecure && r.timeout.is_none() {
            continue;
        }
        let host = crate::reference::RepoRef::parse(&r.image).host;
        match hosts.get(&host) {
            Some(first) => {
                if (
                    &first.secret,
                    &first.cert_secret,
                    first.insecure,
                    &first.timeout,
                ) != (&r.secret, &r.cert_secret, r.insecure, &r.timeout)
                {
                    notes.push(r.doc.note(&["spec"], format!(
                        "ImageRepository {}/{}: registry settings differ from {}/{} on the same host {host}; tagflow has one entry per host and kept the first",
                        r.namespace, r.name, first.namespace, first.name
                    )));
                }
            }
            None => {
                hosts.insert(host, r);
            }
        }
    }
    if hosts.is_empty() {
        return;
    }
    out.push_str("\nregistries:\n");
    for (host, r) in hosts {
        let _ = writeln!(
            out,
            "  - host: {}  # ImageRepository {}/{}",
            q(&host),
            r.namespace,
            r.name
        );
        if let Some(s) = &r.secret {
            let _ = writeln!(
                out,
                "    # spec.secretRef {s}: mount that Secret (kubernetes.io/dockerconfigjson) into tagflow's pod at\n    # {MOUNT_DIR}/{s} and keep or fix the path below.\n    credentials:\n      dockerConfigFile: {MOUNT_DIR}/{s}/.dockerconfigjson"
            );
        }
        if let Some(s) = &r.cert_secret {
            let _ = writeln!(
                out,
                "    # spec.certSecretRef {s}: mount that Secret at {MOUNT_DIR}/{s}; tagflow reads its ca.crt\n    # (a client certificate, tls.crt/tls.key, is not supported).\n    caFile: {MOUNT_DIR}/{s}/ca.crt"
            );
            notes.push(r.doc.note(&["spec", "certSecretRef"], format!(
                "certSecretRef {s}: only its CA (ca.crt) is used; tagflow does not present a client certificate"
            )));
        }
        if r.insecure {
            out.push_str("    insecure: true\n");
        }
        if let Some(t) = &r.timeout {
            let _ = writeln!(out, "    timeout: {}", q(t));
        }
    }
}
