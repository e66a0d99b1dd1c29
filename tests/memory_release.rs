//! A cycle that commits to a 10 MB values file gives back what it loaded (issue 11 §3): the
//! RSS of a `tagflow run` child is read from /proc after the commit.
//!
//! Nothing of tagflow's holds the file after the cycle; glibc kept the freed YAML tree (a
//! 10 MB file peaks at ~130 MB) in its arenas: 163–172 MiB after the commit without
//! `memory::give_back`, ~50 MiB with it (debug build; ~39 MiB with a tiny file). The bound
//! sits between, generously.

mod common;

use std::time::Duration;

use common::{Local, Running, file_url, scripted_registry};
use testbed::BareRepo;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A values file of about `mb` MB: the image block first, then filler keys.
fn big_values(repository: &str, mb: usize) -> String {
    let mut s = format!(
        "image:\n  repository: {repository}\n  tag: a1b2c3d # {{\"$imagepolicy\": \"flux-system:app:tag\"}}\nfiller:\n"
    );
    let mut i = 0;
    while s.len() < mb * 1024 * 1024 {
        s.push_str(&format!(
            "  key{i:07}: \"some value that pads the file out {i}\"\n"
        ));
        i += 1;
    }
    s
}

#[test]
fn a_ten_megabyte_values_file_is_released_after_its_commit() {
    let (server, _) = scripted_registry(serde_json::json!(["b2c3d4e"]), Duration::ZERO);
    let host = server.base_url.trim_start_matches("http://").to_owned();
    let cfg = format!(
        "interval: 1h\nregistries:\n  - {{host: \"{host}\", insecure: true}}\nimages:\n  app:\n    repository: {host}/team/app\n    policy: {{tags: '.*', order: alphabetical}}\nenvironments:\n  dev:\n    file: envs/dev/patch.yaml\n"
    );
    let mb = std::env::var("MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let values = big_values(&format!("{host}/team/app"), mb);
    let repo = BareRepo::new(&[
        ("config/tagflow.yaml", &cfg),
        ("envs/dev/patch.yaml", &values),
    ]);
    let local = Local::new();
    let run = Running::start(&file_url(&repo), &local, &[]);
    run.wait_cycles(1);
    let pid = run.child.as_ref().expect("running").id();
    // The cycle is counted a moment before the loop gives memory back: poll (10 s to settle).
    let bound = 80 * 1024;
    let settled = common::eventually(Duration::from_secs(10), || {
        let rss = rss_kib(pid);
        (rss < bound).then_some(rss)
    });
    let after = settled.unwrap_or_else(|| rss_kib(pid));
    eprintln!("RSS after the commit: {} MiB", after / 1024);
    assert!(
        repo.read("main", "envs/dev/patch.yaml")
            .expect("file")
            .contains("tag: b2c3d4e #"),
        "{}",
        run.logs()
    );
    assert!(
        after < 60 * 1024,
        "RSS {} MiB after the commit",
        after / 1024
    );
}
