//! The CLI niceties, through the built binary: `--version` names the git revision, and the
//! bash completion script completes subcommands, flags and their values when bash runs it.

use std::process::Command;

fn tagflow(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tagflow"))
        .args(args)
        .output()
        .expect("run tagflow");
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn version_prints_the_version_and_the_git_revision() {
    let out = tagflow(&["--version"]);
    assert_eq!(
        out.trim(),
        format!(
            "tagflow {} (rev {})",
            tagflow::build_info::VERSION,
            tagflow::build_info::REVISION
        )
    );
}

/// What bash completes for the words `line` (the last one being completed).
fn bash_complete(script: &str, line: &[&str]) -> Vec<String> {
    let words = line
        .iter()
        .map(|w| format!("'{w}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let program = format!(
        "{script}\nCOMP_WORDS=({words}); COMP_CWORD={}; _tagflow; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        line.len() - 1
    );
    let out = Command::new("bash")
        .args(["--norc", "-c", &program])
        .output()
        .expect("bash");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completion_completes_subcommands_flags_and_values() {
    let script = tagflow(&["completions", "bash"]);
    assert_eq!(bash_complete(&script, &["tagflow", "ru"]), ["run"]);
    assert_eq!(bash_complete(&script, &["tagflow", "com"]), ["completions"]);
    assert_eq!(
        bash_complete(&script, &["tagflow", "run", "--lis"]),
        ["--listen"]
    );
    // Global flags are offered under every subcommand.
    assert!(bash_complete(&script, &["tagflow", "plan", "--"]).contains(&"--repo".to_owned()));
    assert_eq!(
        bash_complete(&script, &["tagflow", "--log-format", ""]),
        ["text", "json"]
    );
}

#[test]
fn zsh_and_fish_scripts_name_every_subcommand() {
    for shell in ["zsh", "fish"] {
        let script = tagflow(&["completions", shell]);
        for sub in [
            "run",
            "status",
            "approve",
            "once",
            "plan",
            "check",
            "completions",
        ] {
            assert!(script.contains(sub), "{shell}: no {sub}");
        }
        assert!(script.contains("secret-hosts"), "{shell}");
    }
}
