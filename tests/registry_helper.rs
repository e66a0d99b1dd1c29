//! Docker credential helpers against the real htpasswd registry: a `credHelpers` entry runs
//! `docker-credential-<name> get` from PATH, and a helper that is not there is named.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use testbed::{BareRepo, Registry, RegistryOpts};

/// Write `docker-credential-test` into `bin`: it records the server URL it was asked for and
/// answers with `username`/`password`.
fn write_helper(bin: &Path, username: &str, password: &str) {
    let asked = bin.join("asked");
    let script = format!(
        "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread -r server\nprintf '%s\\n' \"$server\" >> '{}'\n\
         printf '{{\"ServerURL\":\"%s\",\"Username\":\"{username}\",\"Secret\":\"{password}\"}}\\n' \"$server\"\n",
        asked.display()
    );
    let path = bin.join("docker-credential-test");
    std::fs::write(&path, script).expect("write helper");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// The htpasswd+TLS scenario with its dockerConfigFile naming the `test` helper for the
/// registry instead of holding the password; returns that file too.
fn helper_scenario() -> (Registry, Local, BareRepo, PathBuf) {
    let (reg, local, repo) = scenario(
        RegistryOpts {
            auth: true,
            tls: true,
            ..RegistryOpts::default()
        },
        dev_values,
        |_| String::new(),
    );
    let cfg = local.file(
        "docker-config.json",
        &format!("{{\"credHelpers\":{{\"{}\":\"test\"}}}}", reg.host),
    );
    (reg, local, repo, cfg)
}

/// `tagflow once` with exactly `path` as PATH.
fn once_with_path(repo: &BareRepo, local: &Local, path: &str) -> Output {
    let mut cmd = tagflow();
    cmd.env("PATH", path)
        .args(["once", "--repo", &file_url(repo), "--workdir"])
        .arg(local.workdir());
    run(&mut cmd)
}

fn path_with(bin: &Path) -> String {
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
#[ignore = "real servers: run by scripts/test"]
fn a_cred_helper_on_path_logs_in_to_the_htpasswd_registry() {
    let (reg, local, repo, _) = helper_scenario();
    let bin = tempfile::tempdir().expect("bin dir");
    let password = reg.password.clone().expect("password");
    write_helper(bin.path(), "tagflow", &password);

    let out = once_with_path(&repo, &local, &path_with(bin.path()));
    let l = ok(&out);
    assert!(
        repo.read("main", "envs/dev/patch.yaml")
            .expect("values")
            .contains("tag: 0f1e2d3 #"),
        "{l}"
    );
    let asked = std::fs::read_to_string(bin.path().join("asked")).expect("helper ran");
    assert_eq!(asked.lines().next(), Some(reg.host.as_str()), "{asked}");
    assert!(
        !l.contains(&password),
        "the helper's secret reached the logs"
    );

    // A wrong secret from the helper is the registry's refusal, reported without the secret.
    write_helper(bin.path(), "tagflow", "not-the-password-123");
    reg.push_image("team/app", "1a1a1a1", "2024-02-01T00:00:00Z", None);
    let out = once_with_path(&repo, &local, &path_with(bin.path()));
    let l = logs(&out);
    assert!(!out.status.success(), "{l}");
    assert!(!l.contains("not-the-password-123"), "{l}");
}

#[test]
#[ignore = "real servers: run by scripts/test"]
fn a_cred_helper_missing_from_path_is_named() {
    let (_reg, local, repo, cfg) = helper_scenario();
    let empty = tempfile::tempdir().expect("bin dir");
    let before = repo.head("main");
    // Only an empty directory on PATH: no docker-credential-test anywhere.
    let out = once_with_path(&repo, &local, &p(empty.path()));
    let l = logs(&out);
    assert!(!out.status.success(), "{l}");
    assert!(
        l.contains("credential helper docker-credential-test is not on PATH"),
        "{l}"
    );
    assert!(l.contains(&p(&cfg)), "the error names the config file: {l}");
    assert_eq!(repo.head("main"), before, "nothing committed");
}
