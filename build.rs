//! Stamps the git revision into the binary for `tagflow --version` and `tagflow_build_info`:
//! `$TAGFLOW_GIT_REVISION` when set (an image build from a tarball), else
//! `git rev-parse --short HEAD`, else "unknown" (a plain `cargo build` without git still works).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (out.status.success() && !text.is_empty()).then(|| text.to_owned())
}

fn main() {
    println!("cargo:rerun-if-env-changed=TAGFLOW_GIT_REVISION");
    let revision = std::env::var("TAGFLOW_GIT_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| git(&["rev-parse", "--short", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=TAGFLOW_GIT_REVISION={revision}");
    // Rebuild when HEAD moves: HEAD itself (checkout), the branch it names (commit) and
    // packed-refs (gc). In a worktree HEAD is in the worktree's git dir, refs in the common one.
    if let (Some(git_dir), Some(common)) = (
        git(&["rev-parse", "--git-dir"]),
        git(&["rev-parse", "--git-common-dir"]),
    ) {
        println!("cargo:rerun-if-changed={git_dir}/HEAD");
        println!("cargo:rerun-if-changed={common}/packed-refs");
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={common}/{branch}");
        }
    }
}
