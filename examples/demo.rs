//! tagflow end to end on this machine: `scripts/demo` (or `cargo run --example demo` after
//! `cargo build --bin tagflow`).
//!
//! Starts a real registry (docker-registry) and a git smart-HTTP server (lighttpd +
//! git-http-backend) on 127.0.0.1, seeds a config repo with this repo's `envs/` files, pushes
//! three images with different build times, runs the real `tagflow once` binary twice and shows
//! the commit it pushed. Every server is stopped when the demo ends (testbed handles kill their
//! process group on drop). Exits non-zero if tagflow did not commit the newest image.
//!
//! The binary is `$TAGFLOW_BIN`, else the `tagflow` next to this example's target directory.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use testbed::{BareRepo, GitHttp, Registry, RegistryOpts, git};

/// Repository path of the demo image inside the registry.
const IMAGE_PATH: &str = "team/app";

/// The tag the config repo starts at (as in envs/*/patch.yaml).
const START_TAG: &str = "a1b2c3d";

/// (tag, image build time). Pushed in this order; 0f1e2d3 is built last, so it must win.
const IMAGES: &[(&str, &str)] = &[
    ("a1b2c3d", "2024-05-01T09:00:00Z"),
    ("0f1e2d3", "2024-05-03T09:00:00Z"),
    ("b2c3d4e", "2024-05-02T09:00:00Z"),
];

/// The newest build among [`IMAGES`].
const NEWEST: &str = "0f1e2d3";

/// How long one `tagflow once` may take before the demo gives up.
const ONCE_TIMEOUT: Duration = Duration::from_secs(120);

type Result<T> = std::result::Result<T, String>;

fn main() -> ExitCode {
    match demo() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\ndemo FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn section(title: &str) {
    println!("\n== {title} ==");
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}\n"))
        .collect::<String>()
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(7)]
}

fn demo() -> Result<()> {
    let started = Instant::now();
    let bin = tagflow_bin()?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));

    section("1. Registry on 127.0.0.1");
    let registry = Registry::start(RegistryOpts::default());
    let image = registry.image(IMAGE_PATH);
    println!(
        "registry  {}  (docker-registry, pid {})",
        registry.base_url,
        registry.pid()
    );

    section(&format!("2. Images pushed to {image}"));
    println!("{:<9} {:<22} digest", "tag", "built");
    let mut newest_digest = String::new();
    for (tag, created) in IMAGES {
        let digest = registry.push_image(IMAGE_PATH, tag, created, Some(tag));
        let mark = if *tag == NEWEST {
            "   <- newest build"
        } else {
            ""
        };
        println!("{tag:<9} {created:<22} {}…{mark}", &digest[..19]);
        if *tag == NEWEST {
            newest_digest = digest;
        }
    }

    let config = config_yaml(&registry.host, &image);
    let dev = with_local_repository(root, "envs/dev/patch.yaml", &image)?;
    let prod = with_local_repository(root, "envs/prod/patch.yaml", &image)?;
    let repo = BareRepo::new(&[
        ("config/tagflow.yaml", config.as_str()),
        ("envs/dev/patch.yaml", dev.as_str()),
        ("envs/prod/patch.yaml", prod.as_str()),
    ]);
    let http = GitHttp::start(&repo);
    let before = repo.head("main").ok_or("the config repo has no main")?;

    section(&format!("3. Config repo, main at {}", short(&before)));
    println!(
        "served at {}  (lighttpd + git-http-backend, basic auth, pid {})",
        http.url,
        http.pid()
    );
    println!("\nconfig/tagflow.yaml:");
    print!("{}", indent(&config));
    println!("envs/dev/patch.yaml and envs/prod/patch.yaml are this repo's own files, with");
    println!("image.repository set to {image}; both start at tag {START_TAG}:");
    print!("{}", indent(&image_block(&dev)));

    // tagflow's own scratch: its clone (--workdir) and the git password file.
    let scratch = tempfile::Builder::new()
        .prefix("tagflow-demo-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    let password_file = scratch.path().join("git-password");
    fs::write(&password_file, format!("{}\n", http.password))
        .map_err(|e| format!("write password file: {e}"))?;
    fs::set_permissions(&password_file, fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod password file: {e}"))?;
    let workdir = scratch.path().join("work");
    let once = |title: &str| -> Result<bool> {
        section(title);
        let mut cmd = Command::new(&bin);
        cmd.arg("--repo")
            .arg(&http.url)
            .arg("--git-username")
            .arg(&http.username)
            .arg("--git-password-file")
            .arg(&password_file)
            .arg("--workdir")
            .arg(&workdir)
            .arg("once");
        // Only the flags above count: ignore TAGFLOW_* settings of the calling shell.
        for (k, _) in std::env::vars() {
            if k.starts_with("TAGFLOW_") && k != "TAGFLOW_LOG" {
                cmd.env_remove(k);
            }
        }
        cmd.env("NO_COLOR", "1");
        println!(
            "$ {} --repo {} --git-username {} --git-password-file {} --workdir {} once",
            bin.display(),
            http.url,
            http.username,
            password_file.display(),
            workdir.display()
        );
        let t = Instant::now();
        let (status, log) = run_logged(&mut cmd, &scratch.path().join("tagflow.log"))?;
        print!("{}", indent(&log));
        println!("{status} after {:.2}s", t.elapsed().as_secs_f64());
        Ok(status == "exit status 0")
    };

    let ok = once("4. tagflow once")?;
    let after = repo.head("main").ok_or("main disappeared")?;
    if !ok {
        return Err("tagflow once failed (its log is above)".into());
    }
    if after == before {
        return Err(format!(
            "tagflow did not commit: main is still at {}",
            short(&before)
        ));
    }

    section("5. The commit tagflow pushed");
    println!("$ git log -1 --stat main");
    print!(
        "{}",
        indent(&git(&repo.path, &["log", "-1", "--stat", "main"]))
    );
    println!("$ git show --format= main");
    print!(
        "{}",
        indent(&git(&repo.path, &["show", "--format=", "main"]))
    );
    for env in ["dev", "prod"] {
        let file = format!("envs/{env}/patch.yaml");
        let text = repo.read("main", &file).unwrap_or_default();
        let tag_ok = text.contains(&format!("tag: {NEWEST} #"));
        let digest_ok = text.contains(&newest_digest);
        if !tag_ok || !digest_ok {
            return Err(format!(
                "{file} on main does not carry {NEWEST}@{newest_digest}:\n{}",
                image_block(&text)
            ));
        }
    }

    let ok = once("6. tagflow once, again: nothing new in the registry")?;
    let again = repo.head("main").ok_or("main disappeared")?;
    if !ok {
        return Err("the second tagflow once failed (its log is above)".into());
    }
    if again != after {
        return Err(format!(
            "the second cycle committed again ({} -> {})",
            short(&after),
            short(&again)
        ));
    }
    println!("main is still at {}: no change, no commit", short(&again));

    section("Result");
    println!(
        "tagflow moved dev and prod from {START_TAG} to {NEWEST} (the newest build, not the last \
         pushed tag)\nand pinned its digest, in one commit ({}) pushed over HTTP; the second cycle \
         changed nothing.",
        short(&after)
    );
    println!(
        "Stopping the servers (demo took {:.1}s).",
        started.elapsed().as_secs_f64()
    );
    drop(http);
    drop(repo);
    drop(registry);
    Ok(())
}

/// `$TAGFLOW_BIN`, else `target/<profile>/tagflow` (this example lives in `target/<profile>/examples/`).
fn tagflow_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("TAGFLOW_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("TAGFLOW_BIN={} does not exist", p.display()))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("tagflow"))
        .ok_or("cannot locate the target directory")?;
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "{} is missing: run `cargo build --bin tagflow` first (scripts/demo does), or set TAGFLOW_BIN",
            bin.display()
        ))
    }
}

/// Run `cmd` with stdout and stderr into `log`; kill it after [`ONCE_TIMEOUT`]. Returns
/// ("exit status N" | "killed after timeout" | "killed by signal", the log).
fn run_logged(cmd: &mut Command, log: &Path) -> Result<(String, String)> {
    let file = fs::File::create(log).map_err(|e| format!("create {}: {e}", log.display()))?;
    let err = file.try_clone().map_err(|e| format!("dup log: {e}"))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("start {cmd:?}: {e}"))?;
    let deadline = Instant::now() + ONCE_TIMEOUT;
    let status = loop {
        match child.try_wait().map_err(|e| format!("wait: {e}"))? {
            Some(s) => {
                break s
                    .code()
                    .map_or("killed by signal".into(), |c| format!("exit status {c}"));
            }
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break format!("killed after {}s timeout", ONCE_TIMEOUT.as_secs());
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let text = fs::read_to_string(log).unwrap_or_default();
    Ok((status, text))
}

/// tagflow's config for the demo: one plain-HTTP local registry, one image, two environments.
fn config_yaml(host: &str, image: &str) -> String {
    format!(
        r#"# tagflow's config for the demo: one local registry, one image, two environments.
interval: 1m

git:
  author: {{name: tagflow, email: tagflow@example.com}}
  commitSubject: "tagflow: {{summary}}"

registries:
  - host: {host}
    insecure: true              # the demo registry speaks plain HTTP

images:
  app:
    repository: {image}
    policy:
      tags: '^[0-9a-f]{{7}}$'     # CI tags images with the short git hash
      order: built              # newest image build time wins

environments:
  dev:
    file: envs/dev/patch.yaml
  prod:
    file: envs/prod/patch.yaml
"#
    )
}

/// This repo's `file` with the `repository:` line of its `image:` block pointing at `image`.
fn with_local_repository(root: &Path, file: &str, image: &str) -> Result<String> {
    let text = fs::read_to_string(root.join(file)).map_err(|e| format!("read {file}: {e}"))?;
    let mut in_image = false;
    let mut replaced = 0;
    let mut out = String::with_capacity(text.len() + image.len());
    for line in text.split_inclusive('\n') {
        if !line.starts_with(' ') && !line.starts_with('#') && !line.trim().is_empty() {
            in_image = line.trim_end() == "image:";
        }
        let body = line.trim_start();
        if in_image && body.starts_with("repository:") {
            let pad = &line[..line.len() - body.len()];
            let eol = if line.ends_with('\n') { "\n" } else { "" };
            out.push_str(&format!("{pad}repository: {image}{eol}"));
            replaced += 1;
        } else {
            out.push_str(line);
        }
    }
    if replaced != 1 {
        return Err(format!(
            "{file}: expected one image.repository line, found {replaced}"
        ));
    }
    if !out.contains(&format!("tag: {START_TAG} #")) {
        return Err(format!("{file}: image.tag is not {START_TAG} any more"));
    }
    Ok(out)
}

/// The `image:` block of a values file (its key and indented lines), for display.
fn image_block(text: &str) -> String {
    let mut lines = text.lines().skip_while(|l| *l != "image:");
    let mut out: String = lines.next().map(|l| format!("{l}\n")).unwrap_or_default();
    for line in lines.take_while(|l| l.starts_with(' ')) {
        out.push_str(line);
        out.push('\n');
    }
    out
}
