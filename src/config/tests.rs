use super::*;

const GOOD: &str = r#"# example
interval: 30s
git:
  author: {name: bot, email: bot@example.com}
registries:
  - host: registry.example.com
    credentials:
      dockerConfigFile: /etc/tagflow/registry/config.json
images:
  app:
    repository: registry.example.com/team/app
    policy:
      tags: '^[0-9a-f]{7}$'
      order: built
environments:
  dev:
    file: envs/dev/patch.yaml
  prod:
    file: envs/prod/patch.yaml
    images:
      app: {paths: {tag: image.tag}}
notify:
  slack:
    webhookUrl: {file: /etc/tagflow/slack/webhook-url}
"#;

#[test]
fn parses_the_example() {
    let c = parse("config/tagflow.yaml", GOOD).expect("valid");
    assert_eq!(c.interval, Duration::from_secs(30));
    assert_eq!(c.images["app"].policy.order, Order::Built);
    assert_eq!(c.images["app"].platform, "linux/amd64");
    let dev = &c.environments["dev"];
    assert_eq!(c.setter_for(dev, "app").as_deref(), Some("flux-system:app"));
    let prod = &c.environments["prod"];
    assert_eq!(c.setter_for(prod, "app"), None);
    assert!(c.registry_for("registry.example.com/team/app").is_some());
    assert!(c.registry_for("other.example.com/team/app").is_none());
}

#[test]
fn the_committed_example_config_is_valid() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/tagflow.yaml"))
        .expect("config/tagflow.yaml exists");
    if let Err(e) = parse("config/tagflow.yaml", &text) {
        panic!("{e}");
    }
}

fn problems(text: &str) -> Vec<String> {
    parse("c.yaml", text)
        .expect_err("invalid")
        .problems
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn reports_every_problem_with_its_line() {
    let text = "images:\n  app:\n    repository: Bad Repo\n    policy:\n      tags: '(['\n      order: built\n  web:\n    repository: r.example.com/web\n    polcy: {}\nenvironments:\n  dev:\n    file: ../../etc/passwd\n";
    let p = problems(text);
    assert!(
        p.iter()
            .any(|s| s.starts_with("c.yaml:3: images.app.repository")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|s| s.starts_with("c.yaml:5: images.app.policy.tags: bad regex")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|s| s.starts_with("c.yaml:9: images.web.polcy: unknown field `polcy`")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|s| s.starts_with("c.yaml:12: environments.dev.file")),
        "{p:?}"
    );
    assert_eq!(p.len(), 4, "{p:?}");
}

#[test]
fn table_of_single_problems() {
    let base_env = "environments:\n  dev:\n    file: envs/dev/patch.yaml\n";
    let img = |policy: &str| {
        format!(
            "images:\n  app:\n    repository: r.example.com/app\n    policy: {policy}\n{base_env}"
        )
    };
    let cases: Vec<(String, &str)> = vec![
        (
            img("{tags: '.*', order: newest}"),
            "c.yaml:4: images.app.policy.order: unknown variant `newest`",
        ),
        (
            img("{tags: '.*', order: git}"),
            "c.yaml:4: images.app.policy.order: git needs",
        ),
        (
            img("{tags: '^(?P<v>.*)$', extract: '$w', order: alphabetical}"),
            "images.app.policy.extract: group $w",
        ),
        (
            img("{tags: '.*', order: semver, range: '>>1'}"),
            "bad semver range",
        ),
        (
            img("{tags: '.*', order: built, range: '>1'}"),
            "only used with order: semver",
        ),
        (
            format!("{}\nbogus: 1\n", img("{tags: '.*', order: built}")),
            "c.yaml:9: unknown top-level key `bogus`",
        ),
        (
            format!("{}interval: 0s\n", img("{tags: '.*', order: built}")),
            "interval: must be at least 1s",
        ),
        (
            format!(
                "{}notify: {{slack: {{webhookUrl: {{file: a, env: B}}}}}}\n",
                img("{tags: '.*', order: built}")
            ),
            "exactly one of `file` or `env`",
        ),
        (
            format!(
                "{}notify: {{slack: {{webhookUrl: https://hooks.example/x}}}}\n",
                img("{tags: '.*', order: built}")
            ),
            "notify.slack.webhookUrl",
        ),
        ("images: {}\n".to_owned(), "at least one image"),
        (
            img("{tags: '.*', order: built}").replace(
                "file: envs/dev/patch.yaml",
                "file: envs/dev/patch.yaml\n    dir: envs/dev",
            ),
            "environments.dev: give `file` or `dir`, not both",
        ),
        (
            img("{tags: '.*', order: built}").replace(
                "file: envs/dev/patch.yaml",
                "release: {namespace: a, name: b}",
            ),
            "environments.dev: needs `file` (a values file) or `dir`",
        ),
        (
            img("{tags: '.*', order: built}").replace("file: envs/dev/patch.yaml", "dir: ../envs"),
            "environments.dev.dir: \"../envs\" must not contain `..`",
        ),
        (
            img("{tags: '.*', order: built}").replace(
                "file: envs/dev/patch.yaml",
                "dir: envs/dev\n    images: {app: {paths: {tag: image.tag}}}",
            ),
            "c.yaml:8: environments.dev.images.app.paths: a directory environment finds images by setter markers only",
        ),
        ("a: [\n".to_owned(), "c.yaml:"),
        ("- 1\n".to_owned(), "must be a mapping"),
    ];
    for (text, want) in cases {
        let p = problems(&text).join("\n");
        assert!(p.contains(want), "want {want:?} in:\n{p}\n--- for:\n{text}");
    }
}

#[test]
fn an_environment_may_name_a_directory() {
    let text = "images:\n  app: {repository: r.example.com/app, policy: {tags: '.*', order: built}}\nenvironments:\n  dev: {dir: envs/dev}\n";
    let c = parse("c.yaml", text).expect("valid");
    let dev = &c.environments["dev"];
    assert_eq!(
        (dev.dir.as_deref(), dev.file.as_str()),
        (Some("envs/dev"), "")
    );
}

#[test]
fn repo_paths_stay_inside_the_checkout() {
    use super::repo_path::check_repo_path;
    for bad in ["", "/etc/passwd", "a/../../b", "a//b", "..", "a\\b"] {
        assert!(check_repo_path(bad).is_err(), "{bad}");
    }
    assert!(check_repo_path("envs/dev/patch.yaml").is_ok());
}

#[test]
fn a_broken_entry_is_its_one_problem_not_also_a_missing_section() {
    let text = "images:\n  app:\n    repository: r.example.com/app\n    policy: {tags: '.*', order: built}\nenvironments:\n  dev:\n    file: envs/dev/patch.yaml\n    colour: blue\n  prod:\n    file: envs/prod/patch.yaml\n    promoteFrom: dev\n";
    assert_eq!(
        problems(text),
        [
            "c.yaml:8: environments.dev.colour: unknown field `colour`, expected one of `file`, `dir`, `images`, `release`, `smoke`, `promoteFrom`, `gate`, `push`, `pullRequest`, `timeout`"
        ]
    );
    // An image dropped for its own problem is not "no such image" where an environment names it.
    let text = "images:\n  app:\n    repository: r.example.com/app\n    polcy: {}\nenvironments:\n  dev:\n    file: envs/dev/patch.yaml\n    images: {app: {}}\n";
    let p = problems(text);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("c.yaml:4: images.app.polcy"), "{p:?}");
    // Missing or empty sections are still reported.
    let p = problems("images: {}\n").join("\n");
    assert!(
        p.contains("c.yaml:1: images: at least one image is needed"),
        "{p}"
    );
    assert!(
        p.contains("environments: at least one environment is needed"),
        "{p}"
    );
}

#[test]
fn signing_problems_are_located() {
    let body = "images:\n  app:\n    repository: r.example.com/app\n    policy: {tags: '.*', order: built}\nenvironments:\n  dev:\n    file: envs/dev/patch.yaml\n";
    let cases = [
        (
            "git:\n  signing:\n    format: ssh\n",
            "c.yaml:2: git.signing: missing field `keyFile`",
        ),
        (
            "git:\n  signing:\n    format: x509\n    keyFile: /k\n",
            "c.yaml:3: git.signing.format: unknown variant `x509`",
        ),
        (
            "git:\n  signing:\n    format: ssh\n    keyFile: keys/id\n",
            "c.yaml:4: git.signing.keyFile: \"keys/id\" must be an absolute path",
        ),
    ];
    for (git, want) in cases {
        let p = problems(&format!("{git}{body}")).join("\n");
        assert!(p.contains(want), "want {want:?} in:\n{p}");
    }
    let c = parse(
        "c.yaml",
        &format!("git:\n  signing: {{format: openpgp, keyFile: /etc/tagflow/gpg/key.asc}}\n{body}"),
    )
    .expect("valid");
    assert_eq!(
        c.git.signing,
        Some(SigningConfig {
            format: SigningFormat::Openpgp,
            key_file: "/etc/tagflow/gpg/key.asc".into()
        })
    );
}

#[test]
fn a_bad_regex_shared_by_images_is_reported_for_each_of_them() {
    // Validation compiles each distinct regex once; every image using a bad one still hears it.
    let text = "images:\n  a:\n    repository: r.example.com/a\n    policy: {tags: '([', order: built}\n  b:\n    repository: r.example.com/b\n    policy: {tags: '([', order: built, exclude: ['([']}\nenvironments:\n  dev:\n    file: envs/dev/values.yaml\n";
    let p = problems(text);
    for want in [
        "c.yaml:4: images.a.policy.tags: bad regex",
        "c.yaml:7: images.b.policy.tags: bad regex",
        "images.b.policy.exclude[0]: bad regex",
    ] {
        assert!(p.iter().any(|s| s.contains(want)), "{want}: {p:?}");
    }
}

/// Syntax errors are located by the span tree, as `check` has always said them, although a
/// valid config is parsed by serde alone (the tree is built only to locate a problem).
#[test]
fn syntax_errors_are_located_and_duplicate_keys_name_both_lines() {
    let dup = GOOD.replace("  prod:\n", "  dev:\n");
    let found = problems(&dup);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("c.yaml:18: ")
            && found[0].contains("duplicate key \"dev\" (first at line 16, again at line 18)"),
        "{found:?}"
    );
    let unclosed = GOOD.replace("{name: bot,", "{name: bot,,[");
    let found = problems(&unclosed);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("c.yaml:4:"), "{found:?}");
    let two = format!("{GOOD}---\ninterval: 1m\n");
    let found = problems(&two);
    assert!(
        found[0].contains("more than one YAML document"),
        "{found:?}"
    );
}

/// A config nested thousands of flow levels deep is refused before serde_yaml reads it: libyaml
/// under serde_yaml takes time in the square of the nesting (1 MB of `{a: ` took minutes). The
/// same for the approval and quarantine lists read against it, and a plan approval.
#[test]
fn deep_nesting_is_refused_at_its_line_before_serde_reads_it() {
    // The guard's limit is serde_yaml's (128); the span tree's, had serde_yaml read the text
    // first, would be 256. Where the scanner reads ahead (runs of `[`), its own limit (255)
    // speaks first.
    for (unit, limit) in [
        ("{a: ", "128"),
        ("[", "255"),
        ("[a, ", "255"),
        ("{? ", "128"),
    ] {
        let deep = format!("interval: 1m\nimages:\n  x: {}\n", unit.repeat(20_000));
        let found = problems(&deep);
        assert_eq!(found.len(), 1, "{unit}: {found:?}");
        let want = format!("nesting deeper than {limit} levels");
        assert!(
            found[0].starts_with("c.yaml:3: ") && found[0].contains(&want),
            "{unit}: {found:?}"
        );
    }
    // Block nesting costs libyaml no more than its length; the tree refuses it all the same.
    let found = problems(&format!(
        "interval: 1m\nimages:\n{}x\n",
        "- ".repeat(20_000)
    ));
    assert!(
        found[0].starts_with("c.yaml:3: nesting deeper than"),
        "{found:?}"
    );
    let config = parse("c.yaml", GOOD).expect("good");
    let deep = format!("approvals:\n- {}\n", "{a: ".repeat(20_000));
    let err = parse_gates(&config, ("a.yaml", Some(&deep)), ("q.yaml", None)).unwrap_err();
    let found: Vec<String> = err.problems.iter().map(ToString::to_string).collect();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("a.yaml:2: ") && found[0].contains("nesting deeper than"),
        "{found:?}"
    );
    let err = plan_approval(&"{a: ".repeat(20_000), "aws").unwrap_err();
    assert!(err.contains("nesting deeper than"), "{err}");
}
