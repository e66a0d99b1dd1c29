//! The floors: the requests tagflow makes, done by curl over keep-alive against the same
//! registry, timed with a monotonic clock around the curl process.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::Result;
use crate::push::Pushed;

/// What tagflow's manifest GET accepts (the floor asks for the same).
const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
                      application/vnd.oci.image.index.v1+json, \
                      application/vnd.docker.distribution.manifest.v2+json, \
                      application/vnd.docker.distribution.manifest.list.v2+json";

/// One timed curl run.
#[derive(Debug, Clone, Copy)]
pub struct Floor {
    /// Wall time of the curl process.
    pub took: Duration,
    /// Requests it made (one per URL).
    pub requests: usize,
}

/// The tags-list URL tagflow asks for first, per repository.
pub fn tags_urls(base: &str, repos: &[String]) -> Vec<String> {
    repos
        .iter()
        .map(|r| format!("{base}/v2/{r}/tags/list?n=1000"))
        .collect()
}

/// Tags lists, then one manifest GET per tag and one GET per unique config blob.
pub fn cold_urls(base: &str, repos: &[String], pushed: &[Pushed]) -> Vec<String> {
    let mut urls = tags_urls(base, repos);
    urls.extend(
        pushed
            .iter()
            .map(|p| format!("{base}/v2/{}/manifests/{}", p.repo, p.tag)),
    );
    let mut configs: Vec<(&str, &str)> = pushed
        .iter()
        .map(|p| (p.config.as_str(), p.repo.as_str()))
        .collect();
    configs.sort_unstable();
    configs.dedup_by_key(|(d, _)| *d);
    urls.extend(
        configs
            .iter()
            .map(|(d, r)| format!("{base}/v2/{r}/blobs/{d}")),
    );
    urls
}

/// `curl -K` over `urls`: one process, so connections are reused; `parallel` N keeps up to N
/// transfers (and connections) in flight. Every answer must be a 200.
pub fn curl(dir: &Path, urls: &[String], parallel: Option<usize>) -> Result<Floor> {
    let mut cfg =
        format!("silent\nheader = \"Accept: {ACCEPT}\"\nwrite-out = \"%{{http_code}}\\n\"\n");
    if let Some(n) = parallel {
        let _ = writeln!(cfg, "parallel\nparallel-immediate\nparallel-max = {n}");
    }
    for u in urls {
        let _ = writeln!(cfg, "url = \"{u}\"\noutput = \"/dev/null\"");
    }
    let file = dir.join("curl.cfg");
    fs::write(&file, cfg).map_err(|e| format!("curl config: {e}"))?;
    let start = Instant::now();
    let out = Command::new("curl")
        .arg("-K")
        .arg(&file)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("start curl: {e}"))?;
    let took = start.elapsed();
    let codes = String::from_utf8_lossy(&out.stdout);
    let ok = codes.lines().filter(|l| *l == "200").count();
    if !out.status.success() || ok != urls.len() {
        return Err(format!(
            "curl floor: {ok} of {} answers were 200 (exit {}): {}",
            urls.len(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(Floor {
        took,
        requests: urls.len(),
    })
}

/// The median of `n` curl runs (`n` ≥ 1).
pub fn curl_median(
    dir: &Path,
    urls: &[String],
    parallel: Option<usize>,
    n: usize,
) -> Result<Floor> {
    let mut runs = (0..n.max(1))
        .map(|_| curl(dir, urls, parallel))
        .collect::<Result<Vec<_>>>()?;
    runs.sort_by_key(|f| f.took);
    Ok(runs[runs.len() / 2])
}
