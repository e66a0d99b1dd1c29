//! What every scenario is made of: tag names and build times, the config and values files,
//! and the `tagflow` command line.

use std::path::Path;
use std::process::Command;

/// Raised registry limits, so tagflow's own limiter is not what is measured (defaults: 20/s, 4).
pub const RATE_LIMIT: u32 = 100_000;
/// The configured registry concurrency, and N of the parallel floor.
pub const CONCURRENCY: usize = 16;
/// The one environment file, holding every image.
pub const VALUES: &str = "envs/bench/values.yaml";

/// A 7-hex-digit tag that looks like a short git hash; distinct for every `j` < 2^28.
pub fn tag(j: usize) -> String {
    format!("{:07x}", ((j as u64 + 1) * 2_654_435_761) % (1 << 28))
}

/// Build time of the `j`th tag: one minute apart, so a later `j` is newer.
pub fn created(j: usize) -> String {
    format!(
        "2024-01-{:02}T{:02}:{:02}:00Z",
        1 + j / 1440,
        j / 60 % 24,
        j % 60
    )
}

/// Image name `i` in the config (and key in the values file).
pub fn image_name(i: usize) -> String {
    format!("img{i:05}")
}

/// One block per image, found by its setter markers, all at `start_tag`.
pub fn values_yaml(host: &str, repos: &[String], start_tag: &str) -> String {
    let mut out = String::from("# tagflow benchmark: one block per image, found by its markers.\n");
    for (i, repo) in repos.iter().enumerate() {
        let name = image_name(i);
        out.push_str(&format!(
            "{name}:\n  image:\n    repository: {host}/{repo}\n    \
             tag: {start_tag} # {{\"$imagepolicy\": \"flux-system:{name}:tag\"}}\n    \
             digest: \"\" # {{\"$imagepolicy\": \"flux-system:{name}:digest\"}}\n"
        ));
    }
    out
}

/// `interval`, the raised registry limits, one image per repository (`order: built`).
pub fn config_yaml(
    host: &str,
    repos: &[String],
    interval: &str,
    token_file: Option<&Path>,
) -> String {
    let mut out = format!(
        "interval: {interval}\n\
         git:\n  author: {{name: tagflow-bench, email: bench@example.com}}\n\
         registries:\n  - host: {host}\n    insecure: true\n    \
         rateLimit: {RATE_LIMIT}\n    concurrency: {CONCURRENCY}\n\
         images:\n"
    );
    for (i, repo) in repos.iter().enumerate() {
        out.push_str(&format!(
            "  {}:\n    repository: {host}/{repo}\n    policy: {{tags: '^[0-9a-f]{{7}}$', order: built}}\n",
            image_name(i)
        ));
    }
    out.push_str(&format!("environments:\n  bench:\n    file: {VALUES}\n"));
    if let Some(f) = token_file {
        out.push_str(&format!(
            "webhook:\n  bearerToken: {{file: {}}}\n",
            serde_json::Value::String(f.to_string_lossy().into_owned())
        ));
    }
    out
}

/// `tagflow --repo URL --workdir DIR` with no `TAGFLOW_*` from the bench's environment.
pub fn tagflow(bin: &Path, repo_url: &str, workdir: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("--repo")
        .arg(repo_url)
        .arg("--workdir")
        .arg(workdir);
    for (k, _) in std::env::vars() {
        if k.starts_with("TAGFLOW_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("NO_COLOR", "1");
    cmd
}

/// `file://` URL of a bare repo.
pub fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}
