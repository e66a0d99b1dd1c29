//! Push → commit latency through the registry webhook with `tagflow run` (git over HTTP).

use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use testbed::{BareRepo, GitHttp, Registry, RegistryOpts};

use crate::Result;
use crate::procs::Agent;
use crate::setup::{VALUES, config_yaml, created, tag, tagflow, values_yaml};

/// Longest to wait for one pushed tag to be committed.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the bare repo's main is polled for the commit.
const POLL: Duration = Duration::from_millis(20);

/// `pushes` new tags, one at a time; prints p50/p99/max from push completion to commit.
pub fn latency(bin: &std::path::Path, pushes: usize) -> Result<()> {
    let port = testbed::free_port();
    let token = format!("bench-{}-{}", std::process::id(), port);
    let registry = Registry::start(RegistryOpts {
        notify: Some((
            format!("http://127.0.0.1:{port}/webhook/registry"),
            token.clone(),
        )),
        ..RegistryOpts::default()
    });
    let path = "latency/app".to_string();
    registry.push_image(&path, &tag(0), &created(0), Some(&tag(0)));
    let scratch = tempfile::Builder::new()
        .prefix("tagflow-bench-latency-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    let token_file = scratch.path().join("webhook-token");
    fs::write(&token_file, &token).map_err(|e| format!("token file: {e}"))?;
    let repos = [path.clone()];
    let config = config_yaml(&registry.host, &repos, "1h", Some(&token_file));
    let values = values_yaml(&registry.host, &repos, &tag(0));
    let repo = BareRepo::new(&[("config/tagflow.yaml", &config), (VALUES, &values)]);
    let http = GitHttp::start(&repo);
    let password_file = scratch.path().join("git-password");
    fs::write(&password_file, &http.password).map_err(|e| format!("password file: {e}"))?;

    let mut cmd = tagflow(bin, &http.url, &scratch.path().join("work"));
    cmd.arg("--git-username")
        .arg(&http.username)
        .arg("--git-password-file")
        .arg(&password_file)
        .arg("run")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"));
    let agent = Agent::start(cmd, port, &scratch.path().join("run-latency.log"))?;
    agent.cycles(0, 1, Duration::from_secs(60))?;
    // The first push's notification was refused while tagflow was down; the registry retries it
    // (backoff 1s). Let that settle so it does not land inside a measurement.
    let settle = Instant::now() + Duration::from_secs(5);
    while Instant::now() < settle && !agent.log().contains("webhook: scanning now") {
        thread::sleep(POLL);
    }
    thread::sleep(Duration::from_millis(500));
    println!(
        "`tagflow run`, interval 1h (only the webhook triggers cycles), git over HTTP (lighttpd);\n\
         {pushes} new tags pushed one at a time, each built later than the last; measured from the\n\
         manifest PUT's answer to the commit on the bare repo's main (polled every {}ms).",
        POLL.as_millis()
    );
    let mut head = repo.head("main").ok_or("no main")?;
    let mut samples = Vec::new();
    let mut missed = 0;
    for k in 1..=pushes {
        let t = tag(k);
        registry.push_image(&path, &t, &created(k), Some(&t));
        let pushed = Instant::now();
        let deadline = pushed + COMMIT_TIMEOUT;
        let mut took = None;
        while Instant::now() < deadline {
            match repo.head("main") {
                Some(h) if h != head => {
                    took = Some(pushed.elapsed());
                    head = h;
                    break;
                }
                _ => thread::sleep(POLL),
            }
        }
        match took {
            Some(d) => samples.push(d),
            None => missed += 1,
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
        "commits {} of {pushes}   p50 {:.0} ms   p99 {:.0} ms   max {:.0} ms   min {:.0} ms",
        samples.len(),
        ms(pct(50)),
        ms(pct(99)),
        ms(samples[samples.len() - 1]),
        ms(samples[0]),
    );
    if missed > 0 {
        println!(
            "NOTE: {missed} push(es) not committed within {}s",
            COMMIT_TIMEOUT.as_secs()
        );
    }
    Ok(())
}
