//! Appending one entry to a YAML list file (approvals, quarantine) without touching any other
//! byte: the same promise as the rewriter's, for the lists tagflow itself commits to.

use std::collections::BTreeMap;

/// Why an entry could not be appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// The file is not a list tagflow can append to.
    #[error("failed to append to {file}: {why}")]
    Shape {
        /// File.
        file: String,
        /// Why.
        why: String,
    },
}

/// The `key:` list's entries as string maps; `Err` when the file is not `key: [mappings]`.
fn entries(text: &str, key: &str) -> Result<Vec<BTreeMap<String, String>>, String> {
    let root: serde_yaml::Value =
        crate::yamlspan::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
    let list = match &root {
        serde_yaml::Value::Null => return Ok(Vec::new()),
        serde_yaml::Value::Mapping(m) => m.get(key),
        _ => return Err(format!("must be a mapping with `{key}`")),
    };
    let items = match list {
        None | Some(serde_yaml::Value::Null) => return Ok(Vec::new()),
        Some(serde_yaml::Value::Sequence(items)) => items,
        Some(_) => return Err(format!("{key}: must be a list")),
    };
    items
        .iter()
        .map(|item| {
            let m = item
                .as_mapping()
                .ok_or_else(|| format!("{key}: every entry must be a mapping"))?;
            Ok(m.iter()
                .filter_map(|(k, v)| {
                    let v = match v {
                        serde_yaml::Value::String(s) => s.clone(),
                        other => serde_yaml::to_string(other).ok()?.trim_end().to_owned(),
                    };
                    Some((k.as_str()?.to_owned(), v))
                })
                .collect())
        })
        .collect()
}

/// Append `entry` (a flow mapping of `fields`) to the `key:` list of a list file, keeping every
/// other byte; a missing file is created with `header`. The result is parsed again and must hold
/// exactly one more entry. Returns `None` when an equal entry is already there (the `reason`
/// and `at` fields do not count: they describe an entry, they do not make it another one).
pub fn append_entry(
    file: &str,
    text: Option<&str>,
    key: &str,
    header: &str,
    fields: &[(&str, &str)],
) -> Result<Option<String>, AppendError> {
    let shape = |why: String| AppendError::Shape {
        file: file.to_owned(),
        why,
    };
    let line = format!(
        "  - {{{}}}\n",
        fields
            .iter()
            .map(|(k, v)| format!("{k}: {}", serde_json::Value::String((*v).to_owned())))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let before = match text {
        Some(t) => entries(t, key).map_err(shape)?,
        None => Vec::new(),
    };
    let wanted: BTreeMap<String, String> = fields
        .iter()
        .filter(|(k, _)| !matches!(*k, "reason" | "at"))
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    if before
        .iter()
        .any(|e| wanted.iter().all(|(k, v)| e.get(k) == Some(v)))
    {
        return Ok(None);
    }
    let mut out = match text {
        None => format!("{header}{key}:\n"),
        Some(t) => {
            let mut t = t.to_owned();
            let empty_flow = format!("{key}: []");
            if let Some(pos) = t.find(&empty_flow) {
                t.replace_range(pos..pos + empty_flow.len(), &format!("{key}:"));
            }
            if !t.is_empty() && !t.ends_with('\n') {
                t.push('\n');
            }
            if !t
                .lines()
                .any(|l| l.trim_end() == format!("{key}:") || l.starts_with(&format!("{key}:")))
            {
                t.push_str(&format!("{key}:\n"));
            }
            t
        }
    };
    out.push_str(&line);
    let after =
        entries(&out, key).map_err(|e| shape(format!("the appended file does not parse: {e}")))?;
    if after.len() != before.len() + 1
        || after
            .last()
            .is_none_or(|e| wanted.iter().any(|(k, v)| e.get(k) != Some(v)))
    {
        return Err(shape(format!(
            "`{key}:` must be the file's last block, a block list"
        )));
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_keeps_every_byte_and_is_idempotent() {
        let header = "# Approvals\n";
        let created = append_entry(
            "a.yaml",
            None,
            "approvals",
            header,
            &[("env", "prod"), ("tag", "0f1e2d3")],
        )
        .expect("ok")
        .expect("new");
        assert_eq!(
            created,
            "# Approvals\napprovals:\n  - {env: \"prod\", tag: \"0f1e2d3\"}\n"
        );
        let again = append_entry(
            "a.yaml",
            Some(&created),
            "approvals",
            header,
            &[("env", "prod"), ("tag", "0f1e2d3")],
        )
        .expect("ok");
        assert_eq!(again, None, "an equal entry is not added twice");
        let existing = "# keep me\napprovals: [] # none yet";
        let out = append_entry(
            "a.yaml",
            Some(existing),
            "approvals",
            header,
            &[("env", "prod"), ("tag", "b2c3d4e")],
        )
        .expect("ok")
        .expect("new");
        assert_eq!(
            out,
            "# keep me\napprovals: # none yet\n  - {env: \"prod\", tag: \"b2c3d4e\"}\n"
        );
        let q = append_entry(
            "q.yaml",
            None,
            "quarantine",
            "",
            &[
                ("image", "app"),
                ("tag", "b2c3d4e"),
                ("reason", "prod: smoke: \"503\""),
                ("at", "2024-01-01T00:00:00Z"),
            ],
        )
        .expect("ok")
        .expect("new");
        assert_eq!(
            entries(&q, "quarantine").expect("list")[0]["reason"],
            "prod: smoke: \"503\""
        );
        let not_last = "approvals:\n  - {env: prod, tag: a}\nother: 1\n";
        assert!(
            append_entry(
                "a.yaml",
                Some(not_last),
                "approvals",
                header,
                &[("env", "prod"), ("tag", "b")]
            )
            .is_err()
        );
    }
}
