//! The trailers of tagflow's commits (pure): what a commit set (`Tagflow-Set:`) and what it
//! replaced (`Tagflow-Previous:`), so any replica can follow or undo a commit from git alone,
//! even when the replica that pushed it died before it saved its rollout state.

use crate::rewrite::Field;

use super::EnvChange;

/// Tag and digest of one image in one environment, as a trailer states them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Values {
    /// Tag.
    pub tag: String,
    /// Digest; empty when the values file pins none.
    pub digest: String,
}

/// What one of tagflow's commits did to one (environment, image), read from its trailers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetRecord {
    /// What the commit set.
    pub set: Values,
    /// What it replaced, when the commit says.
    pub previous: Option<Values>,
}

/// The tag and digest (env, image) had before `changes` (a commit's change list) made it `set`:
/// a field the commit left alone kept its value. `None` when the old tag is unknown or empty.
pub fn previous_values(
    changes: &[EnvChange],
    env: &str,
    image: &str,
    set: &Values,
) -> Option<Values> {
    let mut old = set.clone();
    let mut touched = false;
    for c in changes
        .iter()
        .filter(|c| c.env == env && c.change.image == image)
    {
        match c.change.field {
            Field::Tag => old.tag.clone_from(&c.change.old),
            Field::Digest => old.digest.clone_from(&c.change.old),
            Field::Full => {
                let (t, d) = split_full(&c.change.old);
                old.tag = t.unwrap_or_default().to_owned();
                old.digest = d.unwrap_or_default().to_owned();
            }
            Field::Name => continue,
        }
        touched = true;
    }
    (touched && !old.tag.is_empty() && old != *set).then_some(old)
}

/// Tag and digest of a full image reference `name[:tag][@digest]`; a `:` before the last `/`
/// is a registry port, not a tag.
pub fn split_full(full: &str) -> (Option<&str>, Option<&str>) {
    let r = crate::reference::ImageRef::split(full);
    (r.tag, r.digest)
}

/// The `Tagflow-Previous:` trailer line for (env, image).
pub fn previous_line(env: &str, image: &str, v: &Values) -> String {
    let mut line = format!("Tagflow-Previous: {env} {image} {}", v.tag);
    if !v.digest.is_empty() {
        line.push(' ');
        line.push_str(&v.digest);
    }
    line
}

/// What `message` (a commit message) says it did to (env, image); `None` when it is not one of
/// tagflow's commits setting that image there.
pub fn parse(message: &str, env: &str, image: &str) -> Option<SetRecord> {
    let mut set = None;
    let mut previous = None;
    for line in message.lines() {
        if let Some(rest) = line.strip_prefix("Tagflow-Set: ") {
            let mut w = rest.split_whitespace();
            if w.next() == Some(env) && w.next() == Some(image) {
                let full = w.next()?;
                let tag = split_full(full).0?.to_owned();
                let digest = w.next().unwrap_or_default().to_owned();
                set = Some(Values { tag, digest });
            }
        } else if let Some(rest) = line.strip_prefix("Tagflow-Previous: ") {
            let mut w = rest.split_whitespace();
            if w.next() == Some(env) && w.next() == Some(image) {
                let tag = w.next()?.to_owned();
                let digest = w.next().unwrap_or_default().to_owned();
                previous = Some(Values { tag, digest });
            }
        }
    }
    set.map(|set| SetRecord { set, previous })
}

/// Whether `message` is tagflow's revert of (env, image): the values there are the ones it
/// restored, not a rollout to follow.
pub fn is_revert(message: &str, env: &str, image: &str) -> bool {
    message.starts_with(&format!("tagflow: revert {env} {image} "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::Change;

    fn change(field: Field, old: &str) -> EnvChange {
        EnvChange {
            env: "prod".into(),
            change: Change {
                file: "envs/prod/patch.yaml".into(),
                image: "app".into(),
                field,
                line: 3,
                old: old.into(),
                new: "x".into(),
            },
        }
    }

    #[test]
    fn full_references_split_on_the_last_component() {
        assert_eq!(split_full("r:5000/team/app"), (None, None));
        assert_eq!(split_full("r:5000/team/app:v1"), (Some("v1"), None));
        assert_eq!(
            split_full("r:5000/app:v1@sha256:ab"),
            (Some("v1"), Some("sha256:ab"))
        );
        assert_eq!(split_full("app@sha256:ab"), (None, Some("sha256:ab")));
        assert_eq!(split_full("nginx:1.27"), (Some("1.27"), None));
    }

    fn set() -> Values {
        Values {
            tag: "0f1e2d3".into(),
            digest: "sha256:bb".into(),
        }
    }

    #[test]
    fn previous_values_come_from_the_change_list() {
        let tag_and_digest = [
            change(Field::Tag, "a1b2c3d"),
            change(Field::Digest, "sha256:aa"),
        ];
        assert_eq!(
            previous_values(&tag_and_digest, "prod", "app", &set()),
            Some(Values {
                tag: "a1b2c3d".into(),
                digest: "sha256:aa".into()
            })
        );
        let full = [change(Field::Full, "r:5000/team/app:v2.3.0@sha256:old")];
        assert_eq!(
            previous_values(&full, "prod", "app", &set()),
            Some(Values {
                tag: "v2.3.0".into(),
                digest: "sha256:old".into()
            })
        );
        assert_eq!(
            previous_values(
                &[change(Field::Full, "r:5000/team/app")],
                "prod",
                "app",
                &set()
            ),
            None,
            "a port is not a tag"
        );
        assert_eq!(previous_values(&full, "dev", "app", &set()), None);
        assert_eq!(
            previous_values(&[change(Field::Tag, "")], "prod", "app", &set()),
            None
        );
        assert_eq!(
            previous_values(&[change(Field::Digest, "sha256:aa")], "prod", "app", &set()),
            Some(Values {
                tag: "0f1e2d3".into(),
                digest: "sha256:aa".into()
            }),
            "a new digest under the same tag: the tag stays"
        );
    }

    #[test]
    fn trailers_round_trip() {
        let v = Values {
            tag: "a1b2c3d".into(),
            digest: "sha256:aa".into(),
        };
        let message = format!(
            "tagflow: prod app → 0f1e2d3\n\nprod app tag: a1b2c3d → 0f1e2d3 (f:3)\n\nTagflow-Set: prod app r:5000/team/app:0f1e2d3 sha256:bb\n{}\nTagflow-Set: dev app r:5000/team/app:9e8d7c6 \n",
            previous_line("prod", "app", &v)
        );
        assert_eq!(
            parse(&message, "prod", "app"),
            Some(SetRecord {
                set: Values {
                    tag: "0f1e2d3".into(),
                    digest: "sha256:bb".into()
                },
                previous: Some(v)
            })
        );
        let dev = parse(&message, "dev", "app").expect("dev is set too");
        assert_eq!(
            (dev.set.tag.as_str(), dev.set.digest.as_str()),
            ("9e8d7c6", "")
        );
        assert_eq!(dev.previous, None);
        assert_eq!(parse(&message, "prod", "api"), None);
        assert_eq!(parse("fix: by hand\n", "prod", "app"), None);
        assert!(is_revert(
            "tagflow: revert prod app 0f1e2d3 → a1b2c3d, quarantine 0f1e2d3\n",
            "prod",
            "app"
        ));
        assert!(!is_revert(
            "tagflow: revert prod application x\n",
            "prod",
            "app"
        ));
    }
}
