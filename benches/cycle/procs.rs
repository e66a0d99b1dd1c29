//! Timed `tagflow` processes: a whole `once` under GNU time, and a `run` read through its
//! `/metrics`. Every process started here is stopped by its id.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::Result;

/// How often `run`'s `/metrics` is read.
const POLL: Duration = Duration::from_millis(10);

/// A finished `tagflow once`.
pub struct Once {
    /// Wall time, monotonic clock around the process.
    pub took: Duration,
    /// Peak RSS (GNU time `%M`), kB.
    pub rss_kb: u64,
}

/// SIGKILL the process group `pgid` (a child started with `process_group(0)`).
pub fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .status();
}

/// Last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Run `tagflow` (a prepared command) under `/usr/bin/time -f %M`, its output in `log`;
/// killed with its group after `timeout`. Fails when it exits non-zero.
pub fn timed(tagflow: &Command, log: &Path, timeout: Duration) -> Result<Once> {
    let rss_file = log.with_extension("rss");
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-f").arg("%M").arg("-o").arg(&rss_file);
    cmd.arg(tagflow.get_program()).args(tagflow.get_args());
    for (k, v) in tagflow.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = fs::File::create(log).map_err(|e| format!("log file: {e}"))?;
    let err = out.try_clone().map_err(|e| format!("log file: {e}"))?;
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("start /usr/bin/time: {e}"))?;
    // A watchdog kills on timeout, so the wait itself is exact (no polling granularity).
    let done = Arc::new(AtomicBool::new(false));
    let pid = child.id();
    let watchdog = {
        let done = done.clone();
        thread::spawn(move || {
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline {
                if done.load(Ordering::Relaxed) {
                    return;
                }
                thread::sleep(Duration::from_millis(50));
            }
            kill_group(pid);
        })
    };
    let status = child.wait().map_err(|e| format!("wait: {e}"))?;
    let took = start.elapsed();
    done.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    let text = fs::read_to_string(log).unwrap_or_default();
    if !status.success() {
        return Err(format!(
            "tagflow exited with {status} after {:.1}s; log:\n{}",
            took.as_secs_f64(),
            tail(&text, 30)
        ));
    }
    let figures = fs::read_to_string(&rss_file).unwrap_or_default();
    let rss_kb = figures
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    Ok(Once { took, rss_kb })
}

/// What `/metrics` said right after a cycle ended.
#[derive(Debug, Clone, Copy)]
pub struct CycleSample {
    /// `tagflow_last_cycle_duration_seconds`.
    pub took: Duration,
    /// Registry requests since the previous sample.
    pub requests: u64,
}

/// A `tagflow run` process with its log in a file; SIGTERM (then SIGKILL) on drop.
pub struct Agent {
    child: Child,
    log: PathBuf,
    metrics_url: String,
    http: reqwest::blocking::Client,
}

/// Sum of every sample of `name` (with or without labels) in an OpenMetrics text.
fn metric(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let v: f64 = rest.rsplit(' ').next()?.parse().ok()?;
        *found.get_or_insert(0.0) += v;
    }
    found
}

impl Agent {
    /// Start `cmd` (a `tagflow ... run --listen 127.0.0.1:port`).
    pub fn start(mut cmd: Command, port: u16, log: &Path) -> Result<Agent> {
        let out = fs::File::create(log).map_err(|e| format!("log file: {e}"))?;
        let err = out.try_clone().map_err(|e| format!("log file: {e}"))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("start tagflow run: {e}"))?;
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("metrics client: {e}"))?;
        Ok(Agent {
            child,
            log: log.to_path_buf(),
            metrics_url: format!("http://127.0.0.1:{port}/metrics"),
            http,
        })
    }

    /// The log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn scrape(&self) -> Option<(f64, f64, f64, f64)> {
        let text = self.http.get(&self.metrics_url).send().ok()?.text().ok()?;
        let bad = metric(&text, "tagflow_cycles_total{result=\"failed\"}").unwrap_or(0.0)
            + metric(&text, "tagflow_cycles_total{result=\"partial\"}").unwrap_or(0.0);
        Some((
            bad,
            metric(&text, "tagflow_cycles_total").unwrap_or(0.0),
            metric(&text, "tagflow_last_cycle_duration_seconds").unwrap_or(0.0),
            metric(&text, "tagflow_registry_requests_total").unwrap_or(0.0),
        ))
    }

    /// Wait for `n` more cycles after the first `skip`, reading each one's duration and
    /// registry requests from `/metrics` as its count goes up. Fails on a failed cycle.
    pub fn cycles(&self, skip: usize, n: usize, timeout: Duration) -> Result<Vec<CycleSample>> {
        let deadline = Instant::now() + timeout;
        let mut seen = 0.0;
        let mut requests = 0.0;
        let mut out = Vec::new();
        while out.len() < n {
            if Instant::now() >= deadline {
                return Err(format!(
                    "tagflow run: {} cycles in {}s; log:\n{}",
                    seen,
                    timeout.as_secs(),
                    tail(&self.log(), 30)
                ));
            }
            let scraped = self.scrape();
            if let Some((bad, ..)) = scraped
                && bad > 0.0
            {
                return Err(format!(
                    "tagflow run: a cycle failed:\n{}",
                    tail(&self.log(), 30)
                ));
            }
            if let Some((_, count, took, reqs)) = scraped
                && count > seen
            {
                if count > seen + 1.0 && seen as usize >= skip {
                    return Err("tagflow run: two cycles ended between scrapes".into());
                }
                if count as usize > skip {
                    out.push(CycleSample {
                        took: Duration::from_secs_f64(took),
                        requests: (reqs - requests) as u64,
                    });
                }
                seen = count;
                requests = reqs;
            }
            thread::sleep(POLL);
        }
        Ok(out)
    }

    /// Peak resident set so far (VmHWM), kB.
    pub fn peak_rss_kb(&self) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        testbed::terminate(&mut self.child, Duration::from_secs(10));
    }
}
