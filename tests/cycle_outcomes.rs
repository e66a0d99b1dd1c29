//! How a cycle that could not scan an image is reported — by `run` and `once` alike — and how
//! long `run` waits after it: a refused connection is retried soon, a 401 waits for the interval.

mod common;

use std::time::Duration;

use common::*;
use testbed::{BareRepo, Registry, RegistryOpts};

const BUILT: &str = "{tags: '^[0-9a-f]{7}$', order: built}";

/// `tagflow_cycles_total{result="…"}` as `/metrics` serves it (0 when absent).
fn cycles(run: &Running, result: &str) -> u64 {
    let Ok(r) = reqwest::blocking::get(run.url("/metrics")) else {
        return 0;
    };
    let text = r.text().unwrap_or_default();
    let want = format!("tagflow_cycles_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&want))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// The "next cycle" delays `run` logged, in order.
fn delays(run: &Running) -> Vec<String> {
    run.logs()
        .lines()
        .filter(|l| l.contains("next cycle"))
        .filter_map(|l| l.split("delay=").nth(1))
        .map(|d| d.split_whitespace().next().unwrap_or_default().to_owned())
        .collect()
}

/// A registry that stopped answering: `once` exits 1 and says `cycle partial`, `run` counts each
/// such cycle as `partial` (never `unchanged`) and retries within seconds.
#[test]
#[ignore = "real servers: run by scripts/test"]
fn an_unreachable_registry_is_a_partial_cycle_in_run_and_once() {
    let reg = Registry::start(RegistryOpts::default());
    push_three(&reg);
    let local = Local::new();
    let cfg = config(&reg, &local, BUILT, "").replace("interval: 1s", "interval: 1h");
    let repo = BareRepo::new(&[
        ("config/tagflow.yaml", &cfg),
        (
            "envs/dev/patch.yaml",
            &dev_values(&format!("{}/team/app", reg.host)),
        ),
    ]);
    ok(&once(&file_url(&repo), &local, &[]));
    drop(reg); // the registry process is killed: its port now refuses connections

    let out = once(&file_url(&repo), &local, &[]);
    let text = logs(&out);
    assert!(!out.status.success(), "once must fail:\n{text}");
    assert!(text.contains("cycle partial"), "{text}");
    assert!(text.contains("failed to reach registry"), "{text}");
    assert!(!text.contains("cycle done"), "{text}");

    let run = Running::start(&file_url(&repo), &local, &[]);
    let partial = eventually(Duration::from_secs(60), || {
        (cycles(&run, "partial") >= 2).then_some(())
    });
    assert!(partial.is_some(), "{}", run.logs());
    assert_eq!(cycles(&run, "unchanged"), 0, "{}", run.logs());
    let logs = run.logs();
    assert!(logs.contains("cycle partial"), "{logs}");
    assert!(!logs.contains("cycle done: no change"), "{logs}");
    // Transient: retried after 5 s, not after the 1 h interval.
    assert_eq!(
        delays(&run).first().map(String::as_str),
        Some("5s"),
        "{logs}"
    );
    // Ready all the same: the process works, the metric says how the cycles went.
    run.wait_ready();
}

/// A 401 is terminal: `run` waits for the interval (here 20 s), not the 5 s transient backoff,
/// so a wrong password costs one scan per interval, not a retry storm.
#[test]
#[ignore = "real servers: run by scripts/test"]
fn a_401_waits_for_the_interval() {
    let reg = Registry::start(RegistryOpts {
        auth: true,
        ..RegistryOpts::default()
    });
    let local = Local::new();
    let cfg = config(&reg, &local, BUILT, "").replace("interval: 1s", "interval: 20s");
    // The mounted docker config holds a wrong password.
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode("tagflow:not-the-password");
    local.file(
        "docker-config.json",
        &format!("{{\"auths\":{{\"{}\":{{\"auth\":\"{auth}\"}}}}}}", reg.host),
    );
    let repo = BareRepo::new(&[
        ("config/tagflow.yaml", &cfg),
        (
            "envs/dev/patch.yaml",
            &dev_values(&format!("{}/team/app", reg.host)),
        ),
    ]);
    let run = Running::start(&file_url(&repo), &local, &[]);
    let first = eventually(Duration::from_secs(60), || {
        (!delays(&run).is_empty()).then_some(())
    });
    assert!(first.is_some(), "{}", run.logs());
    assert_eq!(cycles(&run, "partial"), 1, "{}", run.logs());
    assert_eq!(delays(&run)[0], "20s", "{}", run.logs());
    assert!(
        run.logs().contains("refused our credentials"),
        "{}",
        run.logs()
    );
    let tags_requests = reg
        .requests()
        .iter()
        .filter(|r| r.uri.contains("/tags/list"))
        .count();
    assert!(
        tags_requests <= 2,
        "one scan (and one retry with re-read credentials): {tags_requests}"
    );
}
