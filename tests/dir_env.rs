//! A directory environment (`environments.<env>.dir`) through a whole `tagflow once` cycle,
//! against an in-process registry and a local bare repo: plain `cargo test`, nothing else.

mod common;
mod inproc;

use std::time::Duration;

use common::{Local, file_url, logs, ok, once, scripted_registry};
use testbed::BareRepo;

const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nspec:\n  template:\n    spec:\n      initContainers:\n        - image: HOST/team/app:a1b2c3d # {\"$imagepolicy\": \"flux-system:app\"}\n      containers:\n        - image: HOST/team/app:a1b2c3d # {\"$imagepolicy\": \"flux-system:app\"}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: app}\n";
const WORKER: &str = "worker:\n  tag: a1b2c3d # {\"$imagepolicy\": \"flux-system:worker:tag\"}\n";
const UNMARKED: &str = "# no marker: must stay byte for byte\nkind: ConfigMap\ndata: {a: '1'}\n";
const TEMPLATE: &str = "{{- if .Values.x }}\nimage: {{ .Values.image }}\n{{- end }}\n";

fn config(host: &str) -> String {
    format!(
        "interval: 1h\nregistries:\n  - {{host: \"{host}\", insecure: true}}\nimages:\n  app:\n    repository: {host}/team/app\n    policy: {{tags: '.*', order: alphabetical}}\n  worker:\n    repository: {host}/team/worker\n    policy: {{tags: '.*', order: alphabetical}}\nenvironments:\n  dev:\n    dir: envs/dev\n"
    )
}

/// The registry (keep it alive) and a repo holding the config, the two-container Deployment
/// at `deployment`, and `files`.
fn setup(deployment: &str, files: &[(&str, &str)]) -> (testbed::Scripted, BareRepo) {
    let server = scripted_registry(serde_json::json!(["b2c3d4e"]), Duration::ZERO).0;
    let host = server.base_url.trim_start_matches("http://").to_owned();
    let config = config(&host);
    let deployment_text = DEPLOYMENT.replace("HOST", &host);
    let mut all = vec![
        ("config/tagflow.yaml", config.as_str()),
        (deployment, deployment_text.as_str()),
    ];
    all.extend_from_slice(files);
    let repo = BareRepo::new(&all);
    (server, repo)
}

#[test]
fn a_cycle_edits_every_marked_file_of_a_directory_environment_in_one_commit() {
    let (_registry, repo) = setup(
        "envs/dev/app/deployment.yaml",
        &[
            ("envs/dev/worker/values.yml", WORKER),
            ("envs/dev/configmap.yaml", UNMARKED),
            ("envs/dev/chart/templates/t.yaml", TEMPLATE),
            ("envs/prod/values.yaml", WORKER),
        ],
    );
    let local = Local::new();
    let out = once(&file_url(&repo), &local, &[]);
    let l = ok(&out);
    assert!(l.contains("cycle done: committed"), "{l}");

    let log = repo.log("main");
    assert_eq!(log.len(), 2, "one commit for the whole directory");
    let dev = repo
        .read("main", "envs/dev/app/deployment.yaml")
        .expect("file");
    assert_eq!(
        dev.matches("team/app:b2c3d4e@sha256:").count(),
        2,
        "both containers sharing the image are set:\n{dev}"
    );
    assert!(dev.ends_with("---\napiVersion: v1\nkind: Service\nmetadata: {name: app}\n"));
    assert_eq!(
        repo.read("main", "envs/dev/worker/values.yml").as_deref(),
        Some(WORKER.replace("a1b2c3d", "b2c3d4e").as_str())
    );
    for (path, content) in [
        ("envs/dev/configmap.yaml", UNMARKED),
        ("envs/dev/chart/templates/t.yaml", TEMPLATE),
        ("envs/prod/values.yaml", WORKER),
    ] {
        assert_eq!(repo.read("main", path).as_deref(), Some(content), "{path}");
    }
    let message = &log[0].message;
    for line in [
        "(envs/dev/app/deployment.yaml:7)",
        "(envs/dev/app/deployment.yaml:9)",
        "(envs/dev/worker/values.yml:2)",
    ] {
        assert!(message.contains(line), "{line} in:\n{message}");
    }
}

#[test]
fn one_refused_file_means_no_file_is_written_and_no_commit() {
    let broken = format!("{WORKER}extra: [unclosed\n");
    let (_registry, repo) = setup(
        "envs/dev/a/deployment.yaml",
        &[("envs/dev/b/values.yaml", &broken)],
    );
    let before = repo.head("main");
    let out = once(&file_url(&repo), &Local::new(), &[]);
    assert!(!out.status.success(), "{}", logs(&out));
    assert!(
        logs(&out).contains("envs/dev/b/values.yaml"),
        "{}",
        logs(&out)
    );
    assert_eq!(repo.head("main"), before, "nothing pushed");
}

/// Commits symlinks (`path` → `target`) on top of `main`, as `git add` of a symlink would.
fn add_symlinks(repo: &BareRepo, links: &[(&str, &str)]) {
    let git = git2::Repository::open_bare(&repo.path).expect("open");
    let head = git
        .find_reference("refs/heads/main")
        .and_then(|r| r.peel_to_commit())
        .expect("main");
    let mut index = git2::Index::new().expect("index");
    index.read_tree(&head.tree().expect("tree")).expect("read");
    for (path, target) in links {
        let blob = git.blob(target.as_bytes()).expect("blob");
        index
            .add(&inproc::index_entry(path, blob, 0o120_000, target.len()))
            .expect("add");
    }
    let tree = git
        .find_tree(index.write_tree_to(&git).expect("write"))
        .expect("tree");
    let sig = git2::Signature::now("test", "test@example.com").expect("sig");
    git.commit(
        Some("refs/heads/main"),
        &sig,
        &sig,
        "links",
        &tree,
        &[&head],
    )
    .expect("commit");
}

#[test]
fn symlinks_are_never_followed_a_yaml_named_one_is_refused_by_name() {
    let (_registry, repo) = setup(
        "envs/dev/deployment.yaml",
        &[
            ("envs/dev/worker.yaml", WORKER),
            ("shared/outside.yaml", WORKER),
        ],
    );
    // A symlinked directory and a non-YAML symlink are skipped: the cycle commits.
    add_symlinks(
        &repo,
        &[
            ("envs/dev/shared", "../../shared"),
            ("envs/dev/README", "../../README"),
        ],
    );
    let l = ok(&once(&file_url(&repo), &Local::new(), &[]));
    assert!(l.contains("cycle done: committed"), "{l}");
    assert_eq!(
        repo.read("main", "shared/outside.yaml").as_deref(),
        Some(WORKER)
    );

    add_symlinks(
        &repo,
        &[("envs/dev/linked.yaml", "../../shared/outside.yaml")],
    );
    let before = repo.head("main");
    let out = once(&file_url(&repo), &Local::new(), &[]);
    assert!(!out.status.success(), "{}", logs(&out));
    assert!(
        logs(&out).contains(
            "failed to read envs/dev/linked.yaml: is a symlink under a directory environment"
        ),
        "{}",
        logs(&out)
    );
    assert_eq!(repo.head("main"), before, "nothing pushed");
    assert_eq!(
        repo.read("main", "shared/outside.yaml").as_deref(),
        Some(WORKER)
    );
}
