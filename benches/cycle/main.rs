//! tagflow's cycle against a real registry on 127.0.0.1, beside curl floors measured in the
//! same run: `cargo bench --bench cycle` (or `scripts/bench`, which installs the servers and
//! builds the release binary first). Prints figures and asserts nothing about time.
//!
//! 1. Scenarios (repos × tags) on one Debian docker-registry, git on a `file://` bare repo:
//!    cold `once` (empty work dir), idle `once` (work dir warm, registry unchanged) and the
//!    idle cycle inside `run` (read from `/metrics`, no process start), each beside its floor:
//!    the same requests done by curl over keep-alive, sequential (one connection) and
//!    N-parallel (N = the configured concurrency), with the ratio, request counts and peak RSS.
//! 2. 1 image × 10 tags `once` (lookup + rewrite + commit + push, file:// remote): median of
//!    several fresh runs.
//! 3. Push → commit latency through the registry webhook with `run` (git over HTTP).
//!
//! Knobs (environment): `TAGFLOW_BENCH_SCENARIOS` (default `1x10,100x100,1000x10,10000x1`),
//! `TAGFLOW_BENCH_REPEAT` (runs per idle figure, median; default 3), `TAGFLOW_BENCH_RUNS`
//! (runs of part 2; default 7), `TAGFLOW_BENCH_PUSH_THREADS` (default 8),
//! `TAGFLOW_BENCH_PUSHES` (part 3 samples, default 50; 0 skips part 3), `TAGFLOW_BIN`,
//! `TAGFLOW_BENCH_HOLD` (wait after each cold `once`, for profiling: [`hold`]).

mod floors;
mod latency;
mod procs;
mod push;
mod setup;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use testbed::{BareRepo, Registry, RegistryOpts};

use floors::{Floor, cold_urls, curl, curl_median, tags_urls};
use procs::{Agent, Once, timed};
use setup::{CONCURRENCY, VALUES, config_yaml, created, file_url, tag, tagflow, values_yaml};

type Result<T> = std::result::Result<T, String>;

/// Longest a single `tagflow once` may run before it is killed.
const ONCE_TIMEOUT: Duration = Duration::from_secs(900);
/// `run`'s interval in the idle-cycle measurement.
const RUN_INTERVAL: &str = "1s";

fn main() -> ExitCode {
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

/// `TAGFLOW_BENCH_SCENARIOS` as (repos, tags) pairs.
fn scenarios() -> Result<Vec<(usize, usize)>> {
    let text = std::env::var("TAGFLOW_BENCH_SCENARIOS")
        .unwrap_or_else(|_| "1x10,100x100,1000x10,10000x1".into());
    text.split(',')
        .map(|s| {
            let (r, t) = s
                .trim()
                .split_once('x')
                .ok_or(format!("{s:?}: want REPOSxTAGS"))?;
            let r: usize = r.parse().map_err(|_| format!("{s:?}: repos"))?;
            let t: usize = t.parse().map_err(|_| format!("{s:?}: tags"))?;
            if r == 0 || t == 0 || r > 100_000 || t > 1000 {
                return Err(format!("{s:?}: 1..=100000 repos x 1..=1000 tags"));
            }
            Ok((r, t))
        })
        .collect()
}

/// One printed row.
struct Row {
    scenario: String,
    cycle: &'static str,
    took: Duration,
    seq: Option<Floor>,
    par: Floor,
    requests: u64,
    rss_kb: u64,
}

fn secs(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{:.0} ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

fn ratio(a: Duration, b: Duration) -> String {
    format!("{:.2}×", a.as_secs_f64() / b.as_secs_f64().max(1e-9))
}

fn median<T: Clone>(mut v: Vec<T>, key: impl Fn(&T) -> Duration) -> T {
    v.sort_by_key(|x| key(x));
    v[v.len() / 2].clone()
}

fn bench() -> Result<()> {
    let bin = std::env::var_os("TAGFLOW_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_tagflow")),
        PathBuf::from,
    );
    if !bin.is_file() {
        return Err(format!("{} does not exist", bin.display()));
    }
    if !Path::new("/usr/bin/time").is_file() {
        return Err("/usr/bin/time is missing: apt-get install time (scripts/bench does)".into());
    }
    let plan = scenarios()?;
    let repeat = env_num("TAGFLOW_BENCH_REPEAT", 3).clamp(1, 50);
    let runs = env_num("TAGFLOW_BENCH_RUNS", 7).clamp(1, 100);
    let threads = env_num("TAGFLOW_BENCH_PUSH_THREADS", 8).clamp(1, 64);
    let pushes = env_num("TAGFLOW_BENCH_PUSHES", 50).min(1000);

    println!("tagflow cycle benchmark: figures only, nothing here asserts a time");
    println!("binary      {}", bin.display());
    println!(
        "machine     {} cores; one Debian docker-registry on 127.0.0.1; config repo on file://",
        thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "config      rateLimit {}/s, concurrency {CONCURRENCY}; tags '^[0-9a-f]{{7}}$', order: built",
        setup::RATE_LIMIT
    );
    println!(
        "floors      curl 7.x -K over the same URLs: seq = one process, one keep-alive connection;\n            \
         par = --parallel --parallel-max {CONCURRENCY}; idle = one tags/list per repo; cold = + manifest\n            \
         per tag + config blob per unique digest. Idle figures: median of {repeat}."
    );
    let registry = Registry::start(RegistryOpts::default());
    let scratch = tempfile::Builder::new()
        .prefix("tagflow-bench-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    let mut rows = Vec::new();
    let mut setup_total = Duration::ZERO;
    section("1. Scenarios (setup, then measurements)");
    for &(nrepos, ntags) in &plan {
        let (r, setup) = match scenario(&bin, &registry, &scratch, nrepos, ntags, threads, repeat) {
            Ok(done) => done,
            Err(e) => {
                // What was measured before the failure is still worth its table.
                section("Table (scenarios before the failure)");
                print_table(&rows);
                return Err(format!("{nrepos} × {ntags}: {e}"));
            }
        };
        setup_total += setup;
        rows.extend(r);
    }
    println!(
        "setup (pushing images, making repos) took {:.1}s in all",
        setup_total.as_secs_f64()
    );
    section("Table");
    print_table(&rows);

    section("2. 1 image × 10 tags `once`: lookup + rewrite + commit + push, file:// remote");
    small_once(&bin, &registry, &scratch, runs)?;

    if pushes > 0 {
        section("3. Push -> commit latency through the registry webhook (`tagflow run`)");
        latency::latency(&bin, pushes)?;
    }
    println!("\nAll servers and tagflow processes stopped.");
    Ok(())
}

fn section(title: &str) {
    println!("\n== {title} ==");
}

fn print_table(rows: &[Row]) {
    println!(
        "| repos × tags | cycle | tagflow | floor seq | tagflow / seq | floor par {CONCURRENCY} | tagflow / par | requests (tagflow / floor) | peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let (seq, seq_ratio) = r.seq.map_or(("—".into(), "—".into()), |f| {
            (secs(f.took), ratio(r.took, f.took))
        });
        println!(
            "| {} | {} | {} | {seq} | {seq_ratio} | {} | {} | {} / {} | {:.1} MB |",
            r.scenario,
            r.cycle,
            secs(r.took),
            secs(r.par.took),
            ratio(r.took, r.par.took),
            r.requests,
            r.par.requests,
            r.rss_kb as f64 / 1024.0
        );
    }
}

/// Registry reads (GET and HEAD) logged so far: what a cycle and the floors ask. The pushes of
/// setup are POST and PUT only, so their log lines, still being flushed when a measurement
/// starts after 10,000 pushes, are not counted as the cycle's (1,000 x 10 once showed 600 extra).
fn logged(registry: &Registry) -> u64 {
    registry
        .requests()
        .iter()
        .filter(|r| r.method == "GET" || r.method == "HEAD")
        .count() as u64
}

fn scenario(
    bin: &Path,
    registry: &Registry,
    scratch: &TempDir,
    nrepos: usize,
    ntags: usize,
    threads: usize,
    repeat: usize,
) -> Result<(Vec<Row>, Duration)> {
    let label = format!("{nrepos} × {ntags}");
    let dir = scratch.path().join(format!("s{nrepos}x{ntags}"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{e}"))?;
    let t = Instant::now();
    let repos: Vec<String> = (0..nrepos)
        .map(|i| format!("s{nrepos}x{ntags}/{}", setup::image_name(i)))
        .collect();
    let tags: Vec<(String, String)> = (0..ntags).map(|j| (tag(j), created(j))).collect();
    let pushed = push::push_all(&registry.base_url, &repos, &tags, threads)?;
    let push_took = t.elapsed();
    let config = config_yaml(&registry.host, &repos, RUN_INTERVAL, None);
    let values = values_yaml(&registry.host, &repos, &tag(0));
    let repo = BareRepo::new(&[("config/tagflow.yaml", &config), (VALUES, &values)]);
    let url = file_url(&repo.path);
    let setup = t.elapsed();
    println!(
        "{label}: pushed {} images in {:.1}s ({:.0}/s, {threads} threads), setup {:.1}s",
        pushed.len(),
        push_took.as_secs_f64(),
        pushed.len() as f64 / push_took.as_secs_f64().max(1e-9),
        setup.as_secs_f64()
    );

    let base = &registry.base_url;
    let idle_urls = tags_urls(base, &repos);
    let cold = cold_urls(base, &repos, &pushed);
    let work = dir.join("work");
    let mut rows = Vec::new();

    // Cold once, then its floor (one each: they are the long ones).
    let before = logged(registry);
    let head = repo.head("main");
    let once = timed(
        tagflow(bin, &url, &work).arg("once"),
        &dir.join("cold.log"),
        ONCE_TIMEOUT,
    )?;
    let requests = logged(registry) - before;
    if repo.head("main") == head {
        return Err(format!("{label}: the cold once made no commit"));
    }
    let par = curl(&dir, &cold, Some(CONCURRENCY))?;
    println!(
        "  cold once {}  floor par {}",
        secs(once.took),
        secs(par.took)
    );
    hold(bin, &url, &work, &dir)?;
    rows.push(Row {
        scenario: label.clone(),
        cycle: "cold `once`",
        took: once.took,
        seq: None,
        par,
        requests,
        rss_kb: once.rss_kb,
    });

    // Idle once, `repeat` times, beside both idle floors.
    let mut onces: Vec<(Once, u64)> = Vec::new();
    for k in 0..repeat {
        let before = logged(registry);
        let o = timed(
            tagflow(bin, &url, &work).arg("once"),
            &dir.join(format!("idle-{k}.log")),
            ONCE_TIMEOUT,
        )?;
        onces.push((o, logged(registry) - before));
    }
    if repo.log("main").len() != 2 {
        return Err(format!("{label}: an idle once committed"));
    }
    let seq = curl_median(&dir, &idle_urls, None, repeat)?;
    let par = curl_median(&dir, &idle_urls, Some(CONCURRENCY), repeat)?;
    let rss_kb = onces.iter().map(|(o, _)| o.rss_kb).max().unwrap_or(0);
    let (idle, requests) = median(onces.into_iter().map(|(o, n)| (o.took, n)).collect(), |x| {
        x.0
    });
    println!(
        "  idle once {}  floor seq {}  par {}",
        secs(idle),
        secs(seq.took),
        secs(par.took)
    );
    rows.push(Row {
        scenario: label.clone(),
        cycle: "idle `once`",
        took: idle,
        seq: Some(seq),
        par,
        requests,
        rss_kb,
    });

    // The idle cycle inside `run`: the warm work dir, interval 1s; the first cycle is skipped.
    let port = testbed::free_port();
    let mut cmd = tagflow(bin, &url, &work);
    cmd.arg("run")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"));
    let agent = Agent::start(cmd, port, &dir.join("run.log"))?;
    let samples = agent.cycles(1, repeat, ONCE_TIMEOUT)?;
    let rss_kb = agent.peak_rss_kb().unwrap_or(0);
    drop(agent);
    let s = median(samples, |s| s.took);
    let seq = curl_median(&dir, &idle_urls, None, repeat)?;
    let par = curl_median(&dir, &idle_urls, Some(CONCURRENCY), repeat)?;
    println!(
        "  run idle cycle {}  floor seq {}  par {}",
        secs(s.took),
        secs(seq.took),
        secs(par.took)
    );
    rows.push(Row {
        scenario: label,
        cycle: "idle cycle in `run`",
        took: s.took,
        seq: Some(seq),
        par,
        requests: s.requests,
        rss_kb,
    });
    Ok((rows, setup))
}

/// With `TAGFLOW_BENCH_HOLD` set, keep the scenario's servers and warm work dir up after its
/// cold `once` and wait until `DIR/go` exists, so a profiler can be pointed at idle cycles
/// (`perf`, `heaptrack`, `strace`) against the very setup the figures come from.
fn hold(bin: &Path, url: &str, work: &Path, dir: &Path) -> Result<()> {
    if std::env::var_os("TAGFLOW_BENCH_HOLD").is_none() {
        return Ok(());
    }
    let go = dir.join("go");
    println!(
        "  hold: {} --repo {url} --workdir {} once\n  hold: touch {} to go on",
        bin.display(),
        work.display(),
        go.display()
    );
    while !go.exists() {
        thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// Part 2: `runs` fresh cold `once`s of 1 image × 10 tags, each with its own bare repo.
fn small_once(bin: &Path, registry: &Registry, scratch: &TempDir, runs: usize) -> Result<()> {
    let repos = vec!["small/app".to_string()];
    let tags: Vec<(String, String)> = (0..10).map(|j| (tag(j), created(j))).collect();
    push::push_all(&registry.base_url, &repos, &tags, 1)?;
    let config = config_yaml(&registry.host, &repos, "1h", None);
    let values = values_yaml(&registry.host, &repos, &tag(0));
    let mut all = Vec::new();
    // One more than counted: the first warms the page cache and is thrown away.
    for k in 0..=runs {
        let repo = BareRepo::new(&[("config/tagflow.yaml", &config), (VALUES, &values)]);
        let work = scratch.path().join(format!("small-{k}"));
        let o = timed(
            tagflow(bin, &file_url(&repo.path), &work).arg("once"),
            &scratch.path().join(format!("small-{k}.log")),
            ONCE_TIMEOUT,
        )?;
        if repo.log("main").len() != 2 {
            return Err("1 × 10: the once did not commit".into());
        }
        if k > 0 {
            all.push((o.took, o.rss_kb));
        }
    }
    all.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{runs} runs (after one warm-up), each a fresh bare repo and empty work dir:\n\
         median {:.0} ms   min {:.0} ms   max {:.0} ms   peak RSS {:.1} MB (largest)",
        ms(all[all.len() / 2].0),
        ms(all[0].0),
        ms(all[all.len() - 1].0),
        all.iter().map(|x| x.1).max().unwrap_or(0) as f64 / 1024.0
    );
    Ok(())
}
