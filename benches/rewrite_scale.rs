//! How the rewriter scales with the number of images in one values file (a config with
//! thousands of images writing into one file): the time per image at N and at 16·N, side by
//! side, and their ratio. Linear code keeps the ratio near 1; the quadratic duplicate-key scan
//! and per-marker line count this replaced made it ~4× at 1,000 → 16,000 images. Figures only:
//! nothing is asserted. `cargo bench --bench rewrite_scale`.

use std::time::{Duration, Instant};

use tagflow::rewrite::{ImageUpdate, rewrite};

fn file(n: usize) -> (String, Vec<ImageUpdate>) {
    let mut src = String::new();
    let mut updates = Vec::new();
    for i in 0..n {
        src.push_str(&format!(
            "img{i}:\n  image:\n    repository: reg.example.com/r{i}\n    tag: a1b2c3d # {{\"$imagepolicy\": \"flux-system:img{i}:tag\"}}\n    digest: \"\" # {{\"$imagepolicy\": \"flux-system:img{i}:digest\"}}\n"
        ));
        updates.push(ImageUpdate {
            image: format!("img{i}"),
            setter: Some(format!("flux-system:img{i}")),
            paths: Default::default(),
            repository: format!("reg.example.com/r{i}"),
            tag: "0f1e2d3".into(),
            digest: Some(format!("sha256:{}", "0".repeat(64))),
        });
    }
    (src, updates)
}

/// Median of `runs` timings of `f`.
fn median(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut t: Vec<Duration> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed()
        })
        .collect();
    t.sort();
    t[runs / 2]
}

fn main() {
    println!(
        "{:>7} | {:>12} {:>10} | {:>12} {:>10}",
        "images", "change all", "per image", "idle", "per image"
    );
    let mut per = Vec::new();
    for n in [1_000usize, 4_000, 16_000] {
        let (src, updates) = file(n);
        let changed = rewrite("v.yaml", src.as_bytes(), &updates).expect("rewrite");
        assert_eq!(changed.changes.len(), 2 * n);
        let idle_src = changed.output.clone();
        let runs = if n > 4_000 { 3 } else { 7 };
        let all = median(runs, || {
            rewrite("v.yaml", src.as_bytes(), &updates).expect("rewrite");
        });
        let idle = median(runs, || {
            rewrite("v.yaml", &idle_src, &updates).expect("rewrite");
        });
        let pa = all.as_secs_f64() * 1e6 / n as f64;
        let pi = idle.as_secs_f64() * 1e6 / n as f64;
        per.push((n, pa, pi));
        println!(
            "{n:>7} | {:>10.1}ms {pa:>8.1}µs | {:>10.1}ms {pi:>8.1}µs",
            all.as_secs_f64() * 1e3,
            idle.as_secs_f64() * 1e3
        );
    }
    let (first, last) = (per[0], per[per.len() - 1]);
    println!(
        "per-image cost at {} ÷ at {} images: change all {:.2}×, idle {:.2}× (1.00× = linear)",
        last.0,
        first.0,
        last.1 / first.1,
        last.2 / first.2
    );
}
