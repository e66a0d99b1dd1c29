//! Soak: `tagflow run` (the release binary) for TAGFLOW_SOAK_CYCLES cycles (default 10,000)
//! against the in-process registry stand-in and git over smart HTTP on loopback, a new tag every
//! 100 cycles. The interval is 1 s (the least a config may say); registry webhooks every 15 ms
//! trigger the cycles between ticks, so both kinds are mixed. Prints RSS, open
//! fds and threads over time, RSS growth after warm-up (the first 10 % of cycles; goal
//! ≤ 5 %), and whether every new tag was committed exactly once. Figures only: `scripts/soak`.

#[path = "../tests/common/mod.rs"]
mod common;
#[allow(dead_code)]
#[path = "../tests/faults/world.rs"]
mod world;

use std::time::{Duration, Instant};

const TOKEN: &str = "soak-webhook-token-0123456789";

struct Sample {
    cycles: u64,
    secs: f64,
    rss_kb: u64,
    fds: usize,
    threads: u64,
}

fn sample(pid: u32, cycles: u64, started: Instant) -> Sample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Sample {
        cycles,
        secs: started.elapsed().as_secs_f64(),
        rss_kb: field("VmRSS:"),
        fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count),
        threads: field("Threads:"),
    }
}

fn main() {
    let target: u64 = std::env::var("TAGFLOW_SOAK_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let mut w = world::World::with(false, "1s", |local| {
        let tok = local.file("webhook-token", TOKEN);
        format!("webhook:\n  bearerToken: {{file: {}}}\n", common::p(&tok))
    });
    w.add_tag("100");
    w.start();
    w.wait_committed("100");
    let pid = w.running().child.as_ref().expect("child").id();
    let hook = w.running().url("/webhook/registry");
    let http = reqwest::blocking::Client::new();
    let base = w.running().cycles_done();
    let started = Instant::now();
    let (mut next_tag, mut hooks, mut hook_ok) = (101u64, 0u64, 0u64);
    let mut last_hook = Instant::now();
    let mut samples = vec![sample(pid, 0, started)];
    let every = (target / 20).max(1);
    loop {
        let done = w.running().cycles_done().saturating_sub(base);
        if done >= target {
            break;
        }
        if done >= (next_tag - 100) * 100 {
            w.add_tag(&next_tag.to_string());
            next_tag += 1;
        }
        if last_hook.elapsed() >= Duration::from_millis(15) {
            last_hook = Instant::now();
            hooks += 1;
            let body = serde_json::json!({"events": [{"action": "push",
                "target": {"repository": "team/app", "tag": (next_tag - 1).to_string()}}]});
            let sent = http
                .post(&hook)
                .bearer_auth(TOKEN)
                .header("Content-Type", tagflow::server::EVENTS_MEDIA_TYPE)
                .body(body.to_string())
                .send();
            if sent.is_ok_and(|r| r.status().is_success()) {
                hook_ok += 1;
            }
        }
        if done >= samples.last().map_or(0, |s| s.cycles) + every {
            samples.push(sample(pid, done, started));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let done = w.running().cycles_done() - base;
    samples.push(sample(pid, done, started));
    let newest = (next_tag - 1).to_string();
    w.wait_committed(&newest);

    println!(
        "soak: {done} cycles in {:.0} s ({:.0} cycles/s), {} tags, {hooks} webhooks ({hook_ok} accepted)",
        started.elapsed().as_secs_f64(),
        done as f64 / started.elapsed().as_secs_f64(),
        next_tag - 100
    );
    println!(
        "{:>8} {:>8} {:>9} {:>5} {:>8}",
        "cycles", "secs", "RSS KiB", "fds", "threads"
    );
    for s in &samples {
        println!(
            "{:>8} {:>8.0} {:>9} {:>5} {:>8}",
            s.cycles, s.secs, s.rss_kb, s.fds, s.threads
        );
    }
    let warm = samples
        .iter()
        .find(|s| s.cycles >= target / 10)
        .unwrap_or(&samples[0]);
    let last = samples.last().expect("samples");
    let growth = (last.rss_kb as f64 - warm.rss_kb as f64) / warm.rss_kb.max(1) as f64 * 100.0;
    let peak_fds = samples.iter().map(|s| s.fds).max().unwrap_or(0);
    let peak_threads = samples.iter().map(|s| s.threads).max().unwrap_or(0);
    println!(
        "soak: RSS after warm-up ({} cycles) {} KiB → {} KiB at the end: {growth:+.1} % (goal ≤ 5 %)",
        warm.cycles, warm.rss_kb, last.rss_kb
    );
    println!(
        "soak: fds {} → {} (peak {peak_fds}); threads {} → {} (peak {peak_threads})",
        warm.fds, last.fds, warm.threads, last.threads
    );
    let mut wrong = Vec::new();
    for t in 100..next_tag {
        let n = w.committed(&t.to_string());
        if n != 1 {
            wrong.push(format!("{t}: {n} commits"));
        }
    }
    w.check_history();
    if wrong.is_empty() {
        println!(
            "soak: every one of the {} new tags committed exactly once",
            next_tag - 100
        );
    } else {
        println!(
            "soak: tags not committed exactly once: {}",
            wrong.join(", ")
        );
    }
}
