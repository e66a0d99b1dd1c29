//! Signed commits with the real signers: `ssh-keygen -Y sign` and `gpg`, checked by
//! `git verify-commit` (an allowed-signers file / the imported public key), and refused once a
//! signed commit is tampered with.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use tagflow::config::{GitConfig, SigningConfig, SigningFormat};
use tagflow::gitops::{Checkout, GitAuth, Pushed};
use tagflow::plan::{Edit, Prepared};
use testbed::{BareRepo, Registry, RegistryOpts, run_checked, run_with_timeout};

const T: Duration = Duration::from_secs(60);

/// A signing key and how `git verify-commit` is told to trust it.
struct Key {
    signing: SigningConfig,
    /// `git -c` settings for verification.
    git_config: Vec<String>,
    /// GNUPGHOME holding the public key (openpgp).
    gnupghome: Option<PathBuf>,
    /// Bytes that must never appear in logs.
    secret_marker: String,
}

fn ssh_key(local: &Local) -> Key {
    let path = local.dir.path().join("id_signing");
    run_checked(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "tagflow", "-f"])
            .arg(&path),
        T,
    );
    let public = std::fs::read_to_string(path.with_extension("pub")).expect("pub");
    let allowed = local.file(
        "allowed_signers",
        &format!("tagflow@localhost namespaces=\"git\" {public}"),
    );
    let secret = std::fs::read_to_string(&path).expect("key");
    Key {
        signing: SigningConfig {
            format: SigningFormat::Ssh,
            key_file: p(&path),
        },
        git_config: vec![
            "gpg.format=ssh".into(),
            format!("gpg.ssh.allowedSignersFile={}", allowed.display()),
        ],
        gnupghome: None,
        secret_marker: secret.lines().nth(2).expect("key body").to_owned(),
    }
}

fn gpg_key(local: &Local) -> Key {
    // Short: gpg-agent's socket path is limited to 108 bytes.
    let home = tempfile::Builder::new()
        .prefix("gh")
        .tempdir_in("/tmp")
        .expect("home")
        .keep();
    let gpg = |args: &[&str]| {
        let mut c = Command::new("gpg");
        c.args(["--batch", "--no-tty", "--homedir"])
            .arg(&home)
            .args(args);
        c
    };
    run_checked(
        &mut gpg(&[
            "--passphrase",
            "",
            "--quick-gen-key",
            "tagflow <tagflow@localhost>",
            "ed25519",
            "sign",
            "never",
        ]),
        T,
    );
    let secret = run_checked(&mut gpg(&["--armor", "--export-secret-keys"]), T);
    let path = local.file("signing.asc", &secret);
    Key {
        signing: SigningConfig {
            format: SigningFormat::Openpgp,
            key_file: p(&path),
        },
        git_config: vec![],
        gnupghome: Some(home),
        secret_marker: secret.lines().nth(3).expect("key body").to_owned(),
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        if let Some(home) = &self.gnupghome {
            let _ = run_with_timeout(
                Command::new("gpgconf")
                    .arg("--homedir")
                    .arg(home)
                    .args(["--kill", "all"]),
                None,
                T,
            );
            let _ = std::fs::remove_dir_all(home);
        }
    }
}

/// `git verify-commit SHA` in `repo`: (passed, its output).
fn verify(key: &Key, repo: &Path, sha: &str) -> (bool, String) {
    let mut c = Command::new("git");
    for kv in &key.git_config {
        c.args(["-c", kv]);
    }
    c.arg("--git-dir")
        .arg(repo)
        .args(["verify-commit", "-v", sha]);
    if let Some(home) = &key.gnupghome {
        c.env("GNUPGHOME", home);
    }
    let out = run_with_timeout(&mut c, None, T);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    (out.status.success(), text)
}

/// A copy of signed commit `sha` with its message changed, signature kept.
fn tampered(repo: &Path, sha: &str) -> String {
    let raw = run_checked(
        Command::new("git")
            .arg("--git-dir")
            .arg(repo)
            .args(["cat-file", "commit", sha]),
        T,
    );
    assert!(raw.contains("gpgsig "), "not signed:\n{raw}");
    let forged = format!("{raw}forged line\n");
    let out = run_with_timeout(
        Command::new("git").arg("--git-dir").arg(repo).args([
            "hash-object",
            "-t",
            "commit",
            "-w",
            "--stdin",
        ]),
        Some(forged.as_bytes()),
        T,
    );
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn check_signed(key: &Key, repo: &Path, sha: &str) {
    let (ok, text) = verify(key, repo, sha);
    assert!(ok, "verify-commit {sha} failed:\n{text}");
    let forged = tampered(repo, sha);
    let (ok, text) = verify(key, repo, &forged);
    assert!(!ok, "a tampered commit verified:\n{text}");
}

/// Value commits and state-ref commits, made by the one commit path, both carry a signature
/// git accepts, in both formats.
fn branch_and_state_commits_are_signed(key: &Key, local: &Local) {
    let repo = BareRepo::new(&[("envs/dev/patch.yaml", "image:\n  tag: a1b2c3d\n")]);
    let checkout = Checkout::open(
        &file_url(&repo),
        "main",
        &local.workdir(),
        GitAuth::default(),
    )
    .expect("open");
    let git = GitConfig {
        signing: Some(key.signing.clone()),
        ..GitConfig::default()
    };
    let pushed = checkout
        .commit_and_push(&git, None, |_snap| -> Result<_, std::io::Error> {
            Ok(Some(Prepared {
                edits: vec![Edit {
                    path: "envs/dev/patch.yaml".into(),
                    content: b"image:\n  tag: 0f1e2d3\n".to_vec(),
                }],
                message: "tagflow: set tag\n".into(),
                changes: Vec::new(),
            }))
        })
        .expect("pushed");
    let Pushed::Committed { commit, .. } = pushed else {
        panic!("expected a commit")
    };
    assert_eq!(
        repo.head("main").as_deref(),
        Some(commit.to_string().as_str())
    );
    check_signed(key, &repo.path, &commit.to_string());

    let state = checkout
        .record(None, "state.json", b"{}", "tagflow: rollout state\n", &git)
        .expect("state commit");
    assert!(
        checkout
            .push_ref("refs/tagflow/state", state, None)
            .expect("push")
    );
    check_signed(key, &repo.path, &state.to_string());
}

#[test]
#[ignore = "real servers: run by scripts/test"]
fn ssh_signed_commits_verify_and_tampering_is_caught() {
    let local = Local::new();
    let key = ssh_key(&local);
    branch_and_state_commits_are_signed(&key, &local);
}

#[test]
#[ignore = "real servers: run by scripts/test"]
fn openpgp_signed_commits_verify_and_tampering_is_caught() {
    let local = Local::new();
    let key = gpg_key(&local);
    branch_and_state_commits_are_signed(&key, &local);
}

/// `tagflow once` with `git.signing` in the config: the update commit is signed, the key is
/// nowhere in the logs; a key file that is not there stops the commit (nothing unsigned lands).
#[test]
#[ignore = "real servers: run by scripts/test"]
fn tagflow_once_signs_its_update_commit() {
    let reg = Registry::start(RegistryOpts::default());
    push_three(&reg);
    for gpg in [false, true] {
        let local = Local::new();
        let key = if gpg {
            gpg_key(&local)
        } else {
            ssh_key(&local)
        };
        let format = if gpg { "openpgp" } else { "ssh" };
        let signing =
            |file: &str| format!("git:\n  signing:\n    format: {format}\n    keyFile: {file}\n");
        let repo = BareRepo::new(&[
            (
                "config/tagflow.yaml",
                &config(
                    &reg,
                    &local,
                    "{tags: '^[0-9a-f]{7}$', order: built}",
                    &signing("/nonexistent/key"),
                ),
            ),
            (
                "envs/dev/patch.yaml",
                &dev_values(&format!("{}/team/app", reg.host)),
            ),
        ]);
        let before = repo.head("main");
        let out = once(&file_url(&repo), &local, &[]);
        let l = logs(&out);
        assert!(!out.status.success(), "{l}");
        assert!(l.contains("failed to sign the commit"), "{l}");
        assert_eq!(repo.head("main"), before, "nothing unsigned was pushed");

        repo.commit_files(
            "main",
            &[(
                "config/tagflow.yaml",
                &config(
                    &reg,
                    &local,
                    "{tags: '^[0-9a-f]{7}$', order: built}",
                    &signing(&key.signing.key_file),
                ),
            )],
            "sign commits",
        );
        let l = ok(&once(&file_url(&repo), &local, &[]));
        let head = repo.head("main").expect("head");
        assert!(
            repo.read("main", "envs/dev/patch.yaml")
                .expect("values")
                .contains("0f1e2d3"),
            "{l}"
        );
        check_signed(&key, &repo.path, &head);
        assert!(
            !l.contains(&key.secret_marker),
            "key material in logs:\n{l}"
        );
    }
}
