use super::*;

fn file(path: &str, text: &str) -> SourceFile {
    SourceFile {
        path: path.to_owned(),
        text: text.to_owned(),
    }
}

const OBJECTS: &str = "\
apiVersion: v1
kind: ConfigMap
metadata: {name: unrelated}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata: {name: web, namespace: apps}
spec:
  image: registry.example.com/team/web
  interval: 10m
  provider: aws
  secretRef: {name: regcred}
---
apiVersion: image.toolkit.fluxcd.io/v1beta2
kind: ImagePolicy
metadata: {name: web, namespace: apps}
spec:
  imageRepositoryRef: {name: web}
  filterTags: {pattern: '^v(?P<v>.*)$', extract: '$v'}
  policy:
    alphabetical: {order: desc}
  digestReflectionPolicy: Always
---
apiVersion: image.toolkit.fluxcd.io/v1alpha1
kind: ImagePolicy
metadata: {name: old}
";

#[test]
fn maps_what_it_can_and_notes_the_rest_with_file_and_line() {
    let files = [
        file("flux/objects.yaml", OBJECTS),
        file(
            "flux/auto.yaml",
            "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImageUpdateAutomation\nmetadata: {name: auto}\nspec:\n  interval: 30m\n  git:\n    push: {branch: image-updates}\n    checkout: {ref: {branch: main}}\n  update: {path: ./envs/web}\n",
        ),
        file(
            "envs/web/values.yaml",
            "image:\n  tag: va # {\"$imagepolicy\": \"apps:web:tag\"}\n  other: x # {\"$imagepolicy\": \"apps:gone\"}\n",
        ),
    ];
    let got = import(&files);
    let notes: Vec<String> = got.notes.iter().map(ToString::to_string).collect();
    for want in [
        "envs/web/values.yaml:3: marker names ImagePolicy apps:gone",
        "flux/auto.yaml:5: ImageUpdateAutomation spec.interval is not mapped",
        "flux/auto.yaml:7: push.branch image-updates is not mapped",
        "flux/objects.yaml:11: ImageRepository spec.provider is not mapped",
        "flux/objects.yaml:22: ImagePolicy spec.digestReflectionPolicy is not mapped",
        "flux/objects.yaml:24: ImagePolicy image.toolkit.fluxcd.io/v1alpha1: only v1beta2 and v1",
    ] {
        assert!(
            notes.iter().any(|n| n.starts_with(want)),
            "want {want:?} in {notes:#?}"
        );
    }
    assert_eq!(notes.len(), 6, "{notes:#?}");
    let cfg = crate::config::parse("config/tagflow.yaml", &got.config)
        .unwrap_or_else(|e| panic!("{e}\n{}", got.config));
    let web = &cfg.images["web"];
    assert_eq!(web.repository, "registry.example.com/team/web");
    assert_eq!(web.policy.extract.as_deref(), Some("$v"));
    assert_eq!(
        web.policy.exclude,
        [r"^.*\.sig$"],
        "Flux's default exclusion list"
    );
    assert_eq!(web.policy.direction, crate::config::Direction::Desc);
    assert_eq!(web.setter.as_deref(), Some("apps:web"));
    assert_eq!(cfg.interval, std::time::Duration::from_secs(600));
    let reg = cfg
        .registry_for("registry.example.com/team/web")
        .expect("registry entry");
    assert_eq!(
        reg.credentials
            .as_ref()
            .and_then(|c| c.docker_config_file.as_deref()),
        Some("/etc/tagflow/registry/regcred/.dockerconfigjson")
    );
    assert_eq!(cfg.environments["web"].file, "envs/web/values.yaml");
    assert_eq!(update_paths(&files), ["envs/web"]);
}
