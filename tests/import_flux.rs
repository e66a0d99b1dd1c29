//! `tagflow import-flux` on a repo laid out like a typical Flux image-automation setup (tier 1:
//! the binary and files only): the imported config passes `tagflow check` and picks the tags
//! Flux's policies pick.

use std::path::Path;
use std::process::Command;

use tagflow::config;
use tagflow::policy::Policy;

const RELEASE: &str = "\
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: app, namespace: dev}
spec:
  interval: 10m
  chart:
    spec: {chart: ./chart, sourceRef: {kind: GitRepository, name: flux-system, namespace: flux-system}}
  values:
    image: {repository: ghcr.io/example/app, tag: latest}
";

const IMAGE_REPOSITORY: &str = "\
---
apiVersion: image.toolkit.fluxcd.io/v1beta2
kind: ImageRepository
metadata:
  name: app
  namespace: flux-system
spec:
  image: ghcr.io/example/app
  interval: 5m
  secretRef:
    name: ghcr-auth
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata:
  name: worker
  namespace: flux-system
spec:
  image: ghcr.io/example/worker
  interval: 5m
  secretRef:
    name: ghcr-auth
";

const IMAGE_POLICY: &str = "\
apiVersion: image.toolkit.fluxcd.io/v1beta2
kind: ImagePolicy
metadata:
  name: app
  namespace: flux-system
spec:
  imageRepositoryRef:
    name: app
  filterTags:
    pattern: '^main-[a-f0-9]+-(?P<ts>[0-9]+)$'
    extract: '$ts'
  policy:
    numerical:
      order: asc
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImagePolicy
metadata:
  name: worker
  namespace: flux-system
spec:
  imageRepositoryRef:
    name: worker
  policy:
    semver:
      range: '>=1.0.0 <2.0.0'
";

const AUTOMATION: &str = "\
apiVersion: image.toolkit.fluxcd.io/v1beta2
kind: ImageUpdateAutomation
metadata:
  name: dev
  namespace: flux-system
spec:
  interval: 30m
  sourceRef:
    kind: GitRepository
    name: flux-system
  git:
    checkout:
      ref:
        branch: main
    commit:
      author:
        email: fluxcdbot@users.noreply.github.com
        name: fluxcdbot
      messageTemplate: '{{range .Changed.Changes}}{{print .OldValue}} -> {{println .NewValue}}{{end}}'
    push:
      branch: main
  update:
    path: ./flux/dev
    strategy: Setters
";

const PATCH: &str = r#"apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: app
  namespace: dev
spec:
  values:
    image:
      repository: ghcr.io/example/app # {"$imagepolicy": "flux-system:app:name"}
      tag: main-abc1234-1700000100 # {"$imagepolicy": "flux-system:app:tag"}
    worker:
      image: ghcr.io/example/worker:1.0.0 # {"$imagepolicy": "flux-system:worker"}
"#;

fn write(root: &Path, path: &str, text: &str) {
    let p = root.join(path);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

fn tagflow(root: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tagflow"))
        .args(args)
        .current_dir(root)
        .env_remove("TAGFLOW_REPO")
        .output()
        .expect("run tagflow");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn imported_flux_setup_passes_check_and_picks_what_flux_picks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(root, "flux/base/release.yaml", RELEASE);
    write(root, "flux/dev/image-repository.yaml", IMAGE_REPOSITORY);
    write(root, "flux/dev/image-policy.yaml", IMAGE_POLICY);
    write(root, "flux/dev/image-update-automation.yaml", AUTOMATION);
    write(root, "flux/dev/patch.yaml", PATCH);

    let (ok, config_text, notes) = tagflow(root, &["import-flux", "flux"]);
    assert!(ok, "import-flux failed: {notes}");
    // What tagflow does differently is said, with file:line; nothing is dropped silently.
    for want in [
        "flux/dev/image-update-automation.yaml:7: ImageUpdateAutomation spec.interval is not mapped",
        "flux/dev/image-update-automation.yaml:8: ImageUpdateAutomation spec.sourceRef is not mapped",
        "flux/dev/image-update-automation.yaml:19: commit.messageTemplate is not mapped",
    ] {
        assert!(notes.contains(want), "want {want:?} in:\n{notes}");
    }
    assert_eq!(notes.lines().count(), 3, "{notes}");
    assert!(
        config_text.contains("dockerConfigFile: /etc/tagflow/registry/ghcr-auth/.dockerconfigjson"),
        "{config_text}"
    );

    // Editors checking against the schema see no problem in what import-flux wrote.
    let schema = jsonschema::validator_for(&config::config_schema()).expect("schema");
    let as_json: serde_json::Value =
        serde_json::to_value(serde_yaml::from_str::<serde_yaml::Value>(&config_text).unwrap())
            .unwrap();
    let errors: Vec<String> = schema
        .iter_errors(&as_json)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}\n{config_text}");

    write(root, "config/tagflow.yaml", &config_text);
    let (ok, out, err) = tagflow(root, &["check", "--dir", "."]);
    assert!(ok, "check failed:\n{out}{err}\n--- config:\n{config_text}");
    assert!(out.contains("ok: 2 image(s), 1 environment(s)"), "{out}");

    let cfg = config::parse("config/tagflow.yaml", &config_text).expect("valid");
    assert_eq!(cfg.environments["dev"].file, "flux/dev/patch.yaml");
    assert_eq!(cfg.git.author.name, "fluxcdbot");
    // The tags Flux's policies would pick from these listings.
    for (image, tags, flux_picks) in [
        (
            "app",
            &[
                "main-abc1234-1700000100",
                "main-def5678-1700000200",
                "main-0a1b2c3-999",
                "dev-fff0000-1800000000",
                "main-1234567-1700000300.sig",
                "latest",
            ][..],
            "main-def5678-1700000200",
        ),
        (
            "worker",
            &[
                "1.0.0",
                "1.9.3",
                "v1.4.0",
                "1.10.0-rc.1",
                "2.0.0",
                "1.9.3.sig",
                "latest",
            ][..],
            "1.9.3",
        ),
    ] {
        let policy = Policy::compile(&cfg.images[image].policy).expect("compiles");
        let picked = policy
            .select(
                &policy.screen(tags.iter().copied()),
                &Default::default(),
                chrono::Utc::now(),
            )
            .expect("a tag");
        assert_eq!(picked.tag, flux_picks, "{image}");
    }
}

#[test]
fn import_flux_without_flux_objects_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "flux/base/release.yaml", RELEASE);
    let (ok, out, err) = tagflow(dir.path(), &["import-flux", "flux"]);
    assert!(!ok && out.is_empty(), "{out}");
    assert!(err.contains("no Flux ImageRepository"), "{err}");
}
