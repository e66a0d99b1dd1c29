//! tagflow's cycle against real servers on 127.0.0.1: `cargo bench --bench cycle` (or
//! `scripts/bench`, which installs the servers and builds the release binary first).
//!
//! Prints figures and asserts nothing about time:
//! 1. wall time and peak RSS of `tagflow once`, cold and idle, for 1 image × 10 tags and for
//!    100 images × up to 100 tags (fewer if pushing them would blow the push budget);
//! 2. registry requests of an idle cycle, for `once` (a fresh process) and inside `run`;
//! 3. push → commit latency through the registry webhook with `tagflow run`.
//!
//! Knobs (environment): `TAGFLOW_BIN` (binary; default the release build cargo made for this
//! bench), `TAGFLOW_BENCH_PUSH_BUDGET_SECS` (default 180), `TAGFLOW_BENCH_IMAGES` (default 100),
//! `TAGFLOW_BENCH_TAGS` (default 100), `TAGFLOW_BENCH_PUSHES` (latency samples, default 50),
//! `TAGFLOW_BENCH_LATENCY_ONLY` (set: run part 3 only).
//! Every loop is bounded in count and time; every process started here is stopped by its id.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use testbed::{BareRepo, GitHttp, LoggedRequest, Registry, RegistryOpts};

/// Raised registry limits, so tagflow's own limiter is not what is measured (defaults: 20/s, 4).
const RATE_LIMIT: u32 = 100_000;
const CONCURRENCY: usize = 16;
/// Threads pushing images in parallel (the registry does the work; 2 cores are enough).
const PUSH_THREADS: usize = 8;
/// Longest a single `tagflow once` may run before it is killed.
const ONCE_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest to wait for one pushed tag to be committed.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the bare repo's main is polled for the commit.
const POLL: Duration = Duration::from_millis(20);
/// `run`'s interval in the idle-cycle measurement.
const RUN_INTERVAL_SECS: u64 = 5;

type Result<T> = std::result::Result<T, String>;

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; there is nothing to filter.
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nbench FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bench() -> Result<()> {
    let bin = tagflow_bin()?;
    let time_bin = PathBuf::from("/usr/bin/time");
    if !time_bin.is_file() {
        return Err("/usr/bin/time is missing: apt-get install time (scripts/bench does)".into());
    }
    let budget = Duration::from_secs(env_num("TAGFLOW_BENCH_PUSH_BUDGET_SECS", 180) as u64);
    let big_images = env_num("TAGFLOW_BENCH_IMAGES", 100).clamp(1, 999);
    let big_tags = env_num("TAGFLOW_BENCH_TAGS", 100).clamp(2, 1000);
    let pushes = env_num("TAGFLOW_BENCH_PUSHES", 50).clamp(1, 1000);
    let latency_only = std::env::var_os("TAGFLOW_BENCH_LATENCY_ONLY").is_some();

    println!("tagflow cycle benchmark: figures only, nothing here asserts a time");
    println!("binary      {}", bin.display());
    println!(
        "machine     {} cores; registry = Debian docker-registry, git = lighttpd + git-http-backend, all on 127.0.0.1",
        thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "limits      registries[].rateLimit {RATE_LIMIT}/s and concurrency {CONCURRENCY} (defaults 20/s, 4):\n            \
         raised so tagflow's rate limiter is not what is measured"
    );
    println!(
        "policy      tags '^[0-9a-f]{{7}}$', order: built; one environment file holds every image"
    );

    if latency_only {
        section("3. Push -> commit latency through the registry webhook (`tagflow run`)");
        return latency(&bin, pushes);
    }
    section("1+2. tagflow once: wall time, peak RSS, registry requests");
    println!(
        "cold = first `once`: empty --workdir, every tag resolved, one commit;\n\
         idle = a second `once` (new process, same --workdir) with nothing new in the registry."
    );
    println!(
        "\n{:<22} {:<5} {:>8} {:>10} {:>9}  registry requests",
        "scenario", "cycle", "wall", "peak RSS", "commit"
    );
    let small = Scenario::new(&bin, 1, 10, budget, None, "1h", None)?;
    small.print_once_rows(&time_bin)?;
    let big = Scenario::new(
        &bin,
        big_images,
        big_tags,
        budget,
        None,
        &format!("{RUN_INTERVAL_SECS}s"),
        None,
    )?;
    big.print_once_rows(&time_bin)?;
    println!("\n{}", small.push_note());
    println!("{}", big.push_note());

    section("2b. Idle cycle inside `tagflow run` (registry cache warm)");
    big.idle_run_cycle()?;
    let t = Instant::now();
    drop(big);
    drop(small);
    println!(
        "\n(parts 1-2: servers stopped and their temp files removed in {:.1}s)",
        t.elapsed().as_secs_f64()
    );

    section("3. Push -> commit latency through the registry webhook (`tagflow run`)");
    latency(&bin, pushes)?;
    println!("\nAll servers and tagflow processes stopped.");
    Ok(())
}

fn section(title: &str) {
    println!("\n== {title} ==");
}

/// `$TAGFLOW_BIN`, else the release binary cargo built alongside this bench.
fn tagflow_bin() -> Result<PathBuf> {
    let p = std::env::var_os("TAGFLOW_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_tagflow")),
        PathBuf::from,
    );
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!("{} does not exist", p.display()))
    }
}

/// A 7-hex-digit tag that looks like a short git hash; distinct for every `j` < 2^28.
fn tag(j: usize) -> String {
    format!("{:07x}", ((j as u64 + 1) * 2_654_435_761) % (1 << 28))
}

/// Build time of the `j`th tag: one minute apart, so a later `j` is newer.
fn created(j: usize) -> String {
    format!(
        "2024-01-{:02}T{:02}:{:02}:00Z",
        1 + j / 1440,
        j / 60 % 24,
        j % 60
    )
}

fn image_name(i: usize) -> String {
    format!("img{i:03}")
}

fn image_path(i: usize) -> String {
    format!("bench/{}", image_name(i))
}

const VALUES: &str = "envs/bench/values.yaml";

fn values_yaml(host: &str, images: usize, start_tag: &str) -> String {
    let mut out = String::from("# tagflow benchmark: one block per image, found by its markers.\n");
    for i in 0..images {
        let name = image_name(i);
        out.push_str(&format!(
            "{name}:\n  image:\n    repository: {host}/{path}\n    \
             tag: {start_tag} # {{\"$imagepolicy\": \"flux-system:{name}:tag\"}}\n    \
             digest: \"\" # {{\"$imagepolicy\": \"flux-system:{name}:digest\"}}\n",
            path = image_path(i)
        ));
    }
    out
}

fn config_yaml(host: &str, images: usize, interval: &str, token_file: Option<&Path>) -> String {
    let mut out = format!(
        "interval: {interval}\n\
         git:\n  author: {{name: tagflow-bench, email: bench@example.com}}\n\
         registries:\n  - host: {host}\n    insecure: true\n    \
         rateLimit: {RATE_LIMIT}\n    concurrency: {CONCURRENCY}\n\
         images:\n"
    );
    for i in 0..images {
        out.push_str(&format!(
            "  {}:\n    repository: {host}/{}\n    policy: {{tags: '^[0-9a-f]{{7}}$', order: built}}\n",
            image_name(i),
            image_path(i)
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

/// Push `tag(j)` of every image for `j` in `tags`, `PUSH_THREADS` at a time, one tag round at a
/// time; stops after the round that crosses `budget`. Returns the rounds completed.
fn push_rounds(
    registry: &Registry,
    images: usize,
    tags: std::ops::Range<usize>,
    budget: Duration,
) -> usize {
    let start = Instant::now();
    let mut done = 0;
    for j in tags {
        if start.elapsed() >= budget {
            break;
        }
        let next = AtomicUsize::new(0);
        thread::scope(|s| {
            for _ in 0..PUSH_THREADS.min(images) {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= images {
                            break;
                        }
                        let t = tag(j);
                        registry.push_image(&image_path(i), &t, &created(j), Some(&t));
                    }
                });
            }
        });
        done += 1;
    }
    done
}

/// One registry + config repo + git HTTP server with `images` × `tags` pushed.
struct Scenario {
    label: String,
    bin: PathBuf,
    images: usize,
    tags_wanted: usize,
    tags: usize,
    push_time: Duration,
    registry: Registry,
    repo: BareRepo,
    http: GitHttp,
    scratch: TempDir,
    password_file: PathBuf,
}

impl Scenario {
    fn new(
        bin: &Path,
        images: usize,
        tags_wanted: usize,
        budget: Duration,
        registry: Option<Registry>,
        interval: &str,
        webhook_token: Option<&str>,
    ) -> Result<Scenario> {
        let registry = registry.unwrap_or_else(|| Registry::start(RegistryOpts::default()));
        let t = Instant::now();
        let tags = push_rounds(&registry, images, 0..tags_wanted, budget);
        let push_time = t.elapsed();
        let scratch = tempfile::Builder::new()
            .prefix("tagflow-bench-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let token_file = scratch.path().join("webhook-token");
        if let Some(token) = webhook_token {
            fs::write(&token_file, token).map_err(|e| format!("token file: {e}"))?;
        }
        let token_file = webhook_token.map(|_| token_file.as_path());
        let config = config_yaml(&registry.host, images, interval, token_file);
        let values = values_yaml(&registry.host, images, &tag(0));
        let repo = BareRepo::new(&[
            ("config/tagflow.yaml", config.as_str()),
            (VALUES, values.as_str()),
        ]);
        let http = GitHttp::start(&repo);
        let password_file = scratch.path().join("git-password");
        fs::write(&password_file, &http.password).map_err(|e| format!("password file: {e}"))?;
        Ok(Scenario {
            label: format!(
                "{images} image{} x {tags} tags",
                if images == 1 { "" } else { "s" }
            ),
            bin: bin.to_path_buf(),
            images,
            tags_wanted,
            tags,
            push_time,
            registry,
            repo,
            http,
            scratch,
            password_file,
        })
    }

    fn push_note(&self) -> String {
        let n = self.images * self.tags;
        let mut note = format!(
            "pushed {} ({n} images: a layer blob, a config blob and a manifest each) in {:.1}s = {:.0} images/s with {PUSH_THREADS} threads",
            self.label,
            self.push_time.as_secs_f64(),
            n as f64 / self.push_time.as_secs_f64().max(1e-9)
        );
        if self.tags < self.tags_wanted {
            note.push_str(&format!(
                "\n  NOTE: wanted {} tags per image; the push budget (TAGFLOW_BENCH_PUSH_BUDGET_SECS) stopped at {}",
                self.tags_wanted, self.tags
            ));
        }
        note
    }

    fn tagflow(&self, workdir: &Path) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--repo")
            .arg(&self.http.url)
            .arg("--git-username")
            .arg(&self.http.username)
            .arg("--git-password-file")
            .arg(&self.password_file)
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

    /// Cold and idle `tagflow once`, one table row each.
    fn print_once_rows(&self, time_bin: &Path) -> Result<()> {
        let workdir = self.scratch.path().join("once-work");
        for (i, cycle) in ["cold", "idle"].iter().enumerate() {
            let head_before = self.repo.head("main");
            let seen = self.registry.requests().len();
            let mut cmd = self.tagflow(&workdir);
            cmd.arg("once");
            let m = timed_once(time_bin, cmd, self.scratch.path(), i)?;
            let reqs = self.registry.requests();
            let committed = self.repo.head("main") != head_before;
            println!(
                "{:<22} {:<5} {:>7.2}s {:>7.1} MB {:>9}  {}",
                if i == 0 { self.label.as_str() } else { "" },
                cycle,
                m.wall_secs,
                m.peak_rss_kb as f64 / 1024.0,
                if committed { "yes" } else { "no" },
                breakdown(reqs.get(seen..).unwrap_or_default())
            );
            if !m.ok {
                return Err(format!(
                    "tagflow once ({cycle}) failed; its log:\n{}",
                    tail(&m.log, 30)
                ));
            }
            let want_commit = i == 0;
            if committed != want_commit {
                return Err(format!(
                    "{cycle} cycle: expected commit={want_commit}, got {committed}; log:\n{}",
                    tail(&m.log, 30)
                ));
            }
        }
        Ok(())
    }

    /// Requests of an idle cycle inside one `tagflow run` process (cache warm after cycle 1).
    fn idle_run_cycle(&self) -> Result<()> {
        let port = testbed::free_port();
        let mut cmd = self.tagflow(&self.scratch.path().join("run-work"));
        cmd.arg("run")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"));
        let agent = RunningAgent::start(cmd, &self.scratch.path().join("run-idle.log"))?;
        let t = Instant::now();
        let first = agent.wait_cycles(1, ONCE_TIMEOUT)?;
        let cold = t.elapsed();
        let seen = self.registry.requests().len();
        agent.wait_cycles(2, ONCE_TIMEOUT + Duration::from_secs(RUN_INTERVAL_SECS))?;
        let idle = first
            .elapsed()
            .saturating_sub(Duration::from_secs(RUN_INTERVAL_SECS));
        let reqs = self.registry.requests();
        let delta = reqs.get(seen..).unwrap_or_default();
        let rss = agent.peak_rss_kb();
        drop(agent);
        let tag_lists = delta
            .iter()
            .filter(|r| r.uri.contains("/tags/list"))
            .count();
        println!(
            "{}, `tagflow run` with interval {RUN_INTERVAL_SECS}s:\n  \
             first cycle (cold, no commit needed): {:.2}s incl. start-up\n  \
             second cycle (idle): ~{:.2}s (time between the two 'cycle done' lines minus the interval)\n  \
             peak RSS of the run process: {}\n  \
             registry requests of the idle cycle: {}\n  \
             expected one tags/list per image ({}): {}",
            self.label,
            cold.as_secs_f64(),
            idle.as_secs_f64(),
            rss.map_or("n/a".into(), |kb| format!("{:.1} MB", kb as f64 / 1024.0)),
            breakdown(delta),
            self.images,
            if tag_lists == self.images && delta.len() == self.images {
                "yes, and nothing else".to_string()
            } else {
                format!("NO: {tag_lists} tags/list, {} requests in all", delta.len())
            }
        );
        Ok(())
    }
}

struct OnceMeasure {
    ok: bool,
    wall_secs: f64,
    peak_rss_kb: u64,
    log: String,
}

/// `tagflow once` under `/usr/bin/time -f '%e %M'`, in its own process group (killed whole on timeout).
fn timed_once(time_bin: &Path, tagflow: Command, dir: &Path, n: usize) -> Result<OnceMeasure> {
    let time_file = dir.join(format!("time-{n}.txt"));
    let log_file = dir.join(format!("once-{n}.log"));
    let mut cmd = Command::new(time_bin);
    cmd.arg("-f").arg("%e %M").arg("-o").arg(&time_file);
    cmd.arg(tagflow.get_program()).args(tagflow.get_args());
    for (k, v) in tagflow.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let log = fs::File::create(&log_file).map_err(|e| format!("log file: {e}"))?;
    let log2 = log.try_clone().map_err(|e| format!("log file: {e}"))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("start {time_bin:?}: {e}"))?;
    let deadline = Instant::now() + ONCE_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| format!("wait: {e}"))? {
            break Some(s);
        }
        if Instant::now() >= deadline {
            kill_group(child.id());
            let _ = child.wait();
            break None;
        }
        thread::sleep(POLL);
    };
    let log = fs::read_to_string(&log_file).unwrap_or_default();
    let Some(status) = status else {
        return Err(format!(
            "tagflow once did not finish in {}s; log:\n{}",
            ONCE_TIMEOUT.as_secs(),
            tail(&log, 30)
        ));
    };
    let figures = fs::read_to_string(&time_file).unwrap_or_default();
    // On failure time prints "Command exited with non-zero status N" before the figures.
    let last = figures.lines().last().unwrap_or_default().to_owned();
    let mut parts = last.split_whitespace();
    let wall_secs = parts
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    let peak_rss_kb = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(OnceMeasure {
        ok: status.success(),
        wall_secs,
        peak_rss_kb,
        log,
    })
}

/// SIGKILL the process group `pgid` (a child started with `process_group(0)`).
fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .status();
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// "100 tags/list, 1000 manifest GET, ..." for a slice of the registry's access log.
fn breakdown(reqs: &[LoggedRequest]) -> String {
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for r in reqs {
        let kind = if r.uri.contains("/tags/list") {
            "tags/list"
        } else if r.uri.contains("/manifests/") {
            if r.method == "HEAD" {
                "manifest HEAD"
            } else {
                "manifest GET"
            }
        } else if r.uri.contains("/blobs/") {
            "blob GET"
        } else if r.uri.trim_end_matches('/') == "/v2" {
            "/v2/ ping"
        } else {
            "other"
        };
        *kinds.entry(kind).or_default() += 1;
    }
    if reqs.is_empty() {
        return "0".into();
    }
    let parts: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
    format!("{} = {}", reqs.len(), parts.join(" + "))
}

/// A `tagflow run` process with its log in a file; SIGTERM (then SIGKILL) on drop.
struct RunningAgent {
    child: Child,
    log: PathBuf,
}

impl RunningAgent {
    fn start(mut cmd: Command, log: &Path) -> Result<RunningAgent> {
        let file = fs::File::create(log).map_err(|e| format!("log file: {e}"))?;
        let file2 = file.try_clone().map_err(|e| format!("log file: {e}"))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(file2)
            .spawn()
            .map_err(|e| format!("start tagflow run: {e}"))?;
        Ok(RunningAgent {
            child,
            log: log.to_path_buf(),
        })
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Lines saying a cycle ended: (done, failed).
    fn cycles(&self) -> (usize, usize) {
        let log = self.log();
        (
            log.matches("cycle done").count(),
            log.matches("cycle failed").count(),
        )
    }

    /// Wait until `n` cycles are done; returns when the `n`th was seen. Fails on a failed cycle,
    /// an exit or a timeout.
    fn wait_cycles(&self, n: usize, timeout: Duration) -> Result<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            let (done, failed) = self.cycles();
            if failed > 0 {
                return Err(format!(
                    "tagflow run: a cycle failed:\n{}",
                    tail(&self.log(), 30)
                ));
            }
            if done >= n {
                return Ok(Instant::now());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "tagflow run: {done} of {n} cycles after {}s:\n{}",
                    timeout.as_secs(),
                    tail(&self.log(), 30)
                ));
            }
            thread::sleep(POLL);
        }
    }

    /// Peak resident set so far (VmHWM), in kB.
    fn peak_rss_kb(&self) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(POLL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Part 3: `tagflow run` with a webhook; push new tags one at a time and time each commit.
fn latency(bin: &Path, pushes: usize) -> Result<()> {
    let port = testbed::free_port();
    let token = format!("bench-{}-{}", std::process::id(), port);
    let registry = Registry::start(RegistryOpts {
        notify: Some((
            format!("http://127.0.0.1:{port}/webhook/registry"),
            token.clone(),
        )),
        ..RegistryOpts::default()
    });
    // One image with one tag, so tagflow's first cycle has something to settle on.
    let scenario = Scenario::new(
        bin,
        1,
        1,
        Duration::from_secs(60),
        Some(registry),
        "1h",
        Some(&token),
    )?;

    let mut cmd = scenario.tagflow(&scenario.scratch.path().join("latency-work"));
    cmd.arg("run")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"));
    let agent = RunningAgent::start(cmd, &scenario.scratch.path().join("run-latency.log"))?;
    agent.wait_cycles(1, Duration::from_secs(60))?;
    // The first push's notification was refused while tagflow was down; the registry retries it
    // (backoff 1s). Let that settle so it does not land inside a measurement.
    let settle = Instant::now() + Duration::from_secs(5);
    while Instant::now() < settle && !agent.log().contains("webhook: scanning now") {
        thread::sleep(POLL);
    }
    thread::sleep(Duration::from_millis(500));
    println!(
        "`tagflow run --listen 127.0.0.1:{port}`, interval 1h (so only the webhook triggers cycles),\n\
         registry notifications -> /webhook/registry with a bearer token; {pushes} new tags pushed one\n\
         at a time, each built later than the last; measured from push completion (manifest PUT\n\
         answered) to the commit on the bare repo's main (polled every {}ms).",
        POLL.as_millis()
    );

    let mut head = scenario.repo.head("main").ok_or("no main")?;
    let mut samples = Vec::new();
    let mut missed = 0;
    let mut wrong = 0;
    let path = image_path(0);
    for k in 1..=pushes {
        let t = tag(k);
        let log_mark = agent.log().len();
        let req_mark = scenario.registry.requests().len();
        scenario
            .registry
            .push_image(&path, &t, &created(k), Some(&t));
        let pushed = Instant::now();
        let deadline = pushed + COMMIT_TIMEOUT;
        let mut new_head = None;
        while Instant::now() < deadline {
            match scenario.repo.head("main") {
                Some(h) if h != head => {
                    new_head = Some((h, pushed.elapsed()));
                    break;
                }
                _ => thread::sleep(POLL),
            }
        }
        match new_head {
            Some((h, took)) => {
                let text = scenario.repo.read("main", VALUES).unwrap_or_default();
                // An all-digit tag is written quoted, so look for it on a `tag:` line either way.
                let carried = text
                    .lines()
                    .any(|l| l.trim_start().starts_with("tag:") && l.contains(&t));
                if !carried {
                    let subject = scenario.repo.log("main").first().map(|c| c.subject.clone());
                    println!(
                        "push {k} ({t}): commit {} says {:?}, not the pushed tag",
                        &h[..7],
                        subject.unwrap_or_default()
                    );
                    wrong += 1;
                }
                samples.push(took);
                head = h;
            }
            None => {
                missed += 1;
                let log = agent.log();
                let reqs = scenario.registry.requests();
                let reqs: Vec<String> = reqs
                    .get(req_mark..)
                    .unwrap_or_default()
                    .iter()
                    .filter(|r| !r.uri.contains("/blobs/"))
                    .map(|r| format!("{} {} {}", r.method, r.uri, r.status))
                    .collect();
                println!(
                    "push {k} ({t}): no commit within {}s\n  tagflow log since the push:\n{}\n  \
                     registry requests since the push, blobs left out (in completion order):\n    {}",
                    COMMIT_TIMEOUT.as_secs(),
                    log.get(log_mark..)
                        .unwrap_or_default()
                        .lines()
                        .map(|l| format!("    {l}"))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    reqs.join("\n    ")
                );
            }
        }
    }
    drop(agent);
    if samples.is_empty() {
        return Err(format!(
            "no push was committed within {}s",
            COMMIT_TIMEOUT.as_secs()
        ));
    }
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pct = |p: usize| samples[(samples.len() - 1) * p / 100];
    println!(
        "\ncommits {} of {pushes}   p50 {:.0} ms   p99 {:.0} ms   max {:.0} ms   min {:.0} ms",
        samples.len(),
        ms(pct(50)),
        ms(pct(99)),
        ms(samples[samples.len() - 1]),
        ms(samples[0]),
    );
    if missed > 0 || wrong > 0 {
        println!(
            "NOTE: {missed} push(es) not committed within {}s; {wrong} commit(s) did not carry the pushed tag",
            COMMIT_TIMEOUT.as_secs()
        );
    }
    Ok(())
}
