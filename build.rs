//! Stamps the git revision into the binary for `tagflow --version` and `tagflow_build_info`:
//! `$TAGFLOW_GIT_REVISION` when set (an image build from a tarball), else
//! `git rev-parse --short HEAD`, else "unknown" (a plain `cargo build` without git still works).
//!
//! Release builds of the `tagflow` binary are also linked with the functions a cycle runs laid
//! out next to each other ([`symbol_order`]) and stripped at link time.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (out.status.success() && !text.is_empty()).then(|| text.to_owned())
}

fn main() {
    symbol_order();
    println!("cargo:rerun-if-env-changed=TAGFLOW_GIT_REVISION");
    let revision = std::env::var("TAGFLOW_GIT_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| git(&["rev-parse", "--short", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=TAGFLOW_GIT_REVISION={revision}");
    // Rebuild when HEAD moves: HEAD itself (checkout), the branch it names (commit) and
    // packed-refs (gc). In a worktree HEAD is in the worktree's git dir, refs in the common one.
    // Only paths that exist: cargo takes a missing one as changed, so every build recompiled
    // the crate (a fresh clone has packed-refs but no loose branch file; a repo that never ran
    // gc has no packed-refs). The branch is watched through its directory, where a commit
    // writes the loose ref file even when there was none before.
    if let (Some(git_dir), Some(common)) = (
        git(&["rev-parse", "--git-dir"]),
        git(&["rev-parse", "--git-common-dir"]),
    ) {
        let mut watched = vec![format!("{git_dir}/HEAD"), format!("{common}/packed-refs")];
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"])
            && let Some((dir, _)) = branch.rsplit_once('/')
        {
            watched.push(format!("{common}/{dir}"));
        }
        for path in watched {
            if std::path::Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
}

/// Link a release `tagflow` with the functions listed in `link/tagflow.order` first, in that
/// order (lld's `--symbol-ordering-file`), then strip it.
///
/// The kernel maps an executable's pages 64 KiB at a time around each one touched, and the
/// ~2,000 functions a cycle runs are otherwise spread over all 13 MB of code, so nearly every
/// page was resident: ~13 MB of a `once`'s peak RSS was the binary. Laid out together they take
/// ~2.5 MB. The list is made by `scripts/order-symbols` from the functions real cycles run;
/// names missing from the binary (code changed since) are skipped, so a stale list only
/// orders less. Symbols are stripped here rather than by the profile's `strip`, because that
/// setting changes every symbol's hash, and the list is read from an unstripped build
/// (`TAGFLOW_KEEP_SYMBOLS=1`) of the very same profile.
///
/// Only where rustc links with its own lld (x86_64 Linux, Rust 1.90 and later, no other linker
/// configured); `TAGFLOW_SYMBOL_ORDER=off` turns it off.
fn symbol_order() {
    println!("cargo:rerun-if-env-changed=TAGFLOW_KEEP_SYMBOLS");
    println!("cargo:rerun-if-env-changed=TAGFLOW_SYMBOL_ORDER");
    println!("cargo:rerun-if-changed=link/tagflow.order");
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    if env("PROFILE") != "release" {
        return;
    }
    if env("TAGFLOW_KEEP_SYMBOLS") != "1" {
        println!("cargo:rustc-link-arg-bin=tagflow=-Wl,--strip-all");
    }
    let order = std::path::Path::new(&env("CARGO_MANIFEST_DIR")).join("link/tagflow.order");
    let own_lld = env("TARGET") == "x86_64-unknown-linux-gnu"
        && env("RUSTC_LINKER").is_empty()
        && !env("CARGO_ENCODED_RUSTFLAGS").contains("link")
        && rustc_minor().is_some_and(|m| m >= 90);
    if own_lld && env("TAGFLOW_SYMBOL_ORDER") != "off" && order.is_file() {
        println!(
            "cargo:rustc-link-arg-bin=tagflow=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bin=tagflow=-Wl,--no-warn-symbol-ordering");
    }
}

/// The minor version of the rustc building this (`rustc 1.95.0 ...` gives 95).
fn rustc_minor() -> Option<u32> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc).arg("-V").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    text.split_whitespace()
        .nth(1)?
        .split('.')
        .nth(1)?
        .parse()
        .ok()
}
