//! Words of a commit (pure): one line per change, a subject from the template, the
//! `Tagflow-Set:`/`Tagflow-Previous:` trailers, and a summary past a size limit.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{EnvChange, PerEnv, trailer};

/// One line describing a change, as used in commits, logs and Slack.
pub fn describe(c: &EnvChange) -> String {
    let old = if c.change.old.is_empty() {
        "(empty)"
    } else {
        c.change.old.as_str()
    };
    format!(
        "{} {} {}: {} → {}",
        c.env, c.change.image, c.change.field, old, c.change.new
    )
}

/// Changes listed one per line in commit messages; past it, counts per environment.
pub const MAX_LISTED: usize = 200;
/// (environment, image) pairs given trailers; past it, one `Tagflow-Truncated:` line (those
/// images cannot be followed from git alone if the state is lost).
pub const MAX_TRAILERS: usize = 500;

/// `changes` as lines (`describe` + file:line), at most `max`; past it, a last line with how
/// many more and their count per environment, so a 10,000-image cycle stays readable (pure).
pub fn listed(changes: &[EnvChange], max: usize, with_place: bool) -> Vec<String> {
    let mut lines: Vec<String> = changes
        .iter()
        .take(max)
        .map(|c| {
            if with_place {
                format!("{} ({}:{})", describe(c), c.change.file, c.change.line)
            } else {
                describe(c)
            }
        })
        .collect();
    if changes.len() > max {
        let mut per_env: BTreeMap<&str, usize> = BTreeMap::new();
        for c in &changes[max..] {
            *per_env.entry(c.env.as_str()).or_default() += 1;
        }
        let counts: Vec<String> = per_env.iter().map(|(e, n)| format!("{e}: {n}")).collect();
        lines.push(format!(
            "… and {} more changes ({})",
            changes.len() - max,
            counts.join(", ")
        ));
    }
    lines
}

/// Commit message: a subject from the template, a line per change, and trailers per image set:
/// what it set and, when known, what it replaced (see [`trailer`]).
pub fn commit_message(subject_template: &str, changes: &[EnvChange], per_env: &PerEnv) -> String {
    let desired_in = |env: &str, img: &str| per_env.get(env).and_then(|m| m.get(img));
    // Summarise by (env, image) → tag, so the subject says what moved, not which fields.
    let mut moved: BTreeMap<(&str, &str), &str> = BTreeMap::new();
    for c in changes {
        if let Some(d) = desired_in(&c.env, &c.change.image) {
            moved.insert((c.env.as_str(), c.change.image.as_str()), d.tag.as_str());
        }
    }
    let summary = if moved.len() <= 2 {
        moved
            .iter()
            .map(|((env, img), tag)| format!("{env} {img} → {tag}"))
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        let envs: std::collections::BTreeSet<&str> = moved.keys().map(|(e, _)| *e).collect();
        format!(
            "update {} images in {}",
            moved.len(),
            envs.into_iter().collect::<Vec<_>>().join(", ")
        )
    };
    let mut msg = subject_template.replace("{summary}", &summary);
    msg.push_str("\n\n");
    for line in listed(changes, MAX_LISTED, true) {
        let _ = writeln!(msg, "{line}");
    }
    msg.push('\n');
    if moved.len() > MAX_TRAILERS {
        let _ = writeln!(
            msg,
            "Tagflow-Truncated: {} more images set",
            moved.len() - MAX_TRAILERS
        );
    }
    for (env, img) in moved.keys().take(MAX_TRAILERS) {
        if let Some(d) = desired_in(env, img) {
            let _ = writeln!(
                msg,
                "Tagflow-Set: {env} {img} {}:{} {}",
                d.repository, d.tag, d.digest
            );
            let set = trailer::Values {
                tag: d.tag.clone(),
                digest: d.digest.clone(),
            };
            if let Some(old) = trailer::previous_values(changes, env, img, &set) {
                let _ = writeln!(msg, "{}", trailer::previous_line(env, img, &old));
            }
        }
    }
    msg
}
