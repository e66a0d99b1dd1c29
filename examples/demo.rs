//! tagflow's whole flow on this machine, without a cluster: `scripts/demo` (or
//! `cargo run --example demo` after `cargo build --bin tagflow`).
//!
//! Starts a real registry (docker-registry), a git smart-HTTP server (lighttpd +
//! git-http-backend), a Slack capture server and one small app per environment on 127.0.0.1,
//! then runs the real `tagflow run` (no `--lease`: the rollout state lives in the config repo on
//! `refs/tagflow/state`). The demo plays the deployer (`testbed::DeployedApps`) — the one
//! stand-in: whenever the config repo's main moves, each environment's app starts answering with
//! the tag its values file names, as Flux or Argo CD would make it. What it shows, and checks:
//!
//! 1. tagflow commits the newest build to dev; dev's smoke check passes; dev soaks;
//! 2. prod waits for `tagflow approve prod TAG`; then gets the very same tag and digest, and
//!    its smoke check passes;
//! 3. a newer, broken image: dev's smoke check fails, tagflow reverts dev and quarantines the
//!    tag, one alert;
//! 4. the Slack thread as a person reads it, and `tagflow status` from git.
//!
//! Every server is stopped when the demo ends. Exits non-zero if any step did not happen.
//! The binary is `$TAGFLOW_BIN`, else the `tagflow` next to this example's target directory.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use testbed::{BareRepo, DeployedApps, GitHttp, Registry, RegistryOpts, SlackCapture, git, tag_in};

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

/// A later build whose app answers 503: pushed once prod runs [`NEWEST`].
const BROKEN: (&str, &str) = ("c3d4e5f", "2024-05-04T09:00:00Z");

/// How long any one step may take before the demo gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one `tagflow` command (`approve`, `status`) may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

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

/// `tagflow run`, killed when dropped.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn logs(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    /// SIGTERM first, as Kubernetes stops a Pod (tagflow finishes a push in progress), then
    /// SIGKILL after 10 s.
    fn drop(&mut self) {
        testbed::terminate(&mut self.child, Duration::from_secs(10));
    }
}

/// Follows `refs/tagflow/state` and prints each rollout step the first time it shows up.
struct Watch<'a> {
    repo: &'a BareRepo,
    started: Instant,
    seen: BTreeSet<(String, String, String)>,
}

impl Watch<'_> {
    /// `env/image` → (tag, phase, reason) from the state document.
    fn rollouts(&self) -> BTreeMap<String, (String, String, String)> {
        let Ok(text) = testbed::try_git(
            &self.repo.path,
            &["show", "refs/tagflow/state:state.json"],
            &[],
        ) else {
            return BTreeMap::new();
        };
        let Ok(state) = serde_json::from_str::<Value>(&text) else {
            return BTreeMap::new();
        };
        let field = |r: &Value, k: &str| r[k].as_str().unwrap_or_default().to_owned();
        state["rollouts"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, r)| {
                        let tag = r["pinned"]["tag"].as_str().unwrap_or_default().to_owned();
                        (k.clone(), (tag, field(r, "phase"), field(r, "reason")))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn poll(&mut self) -> BTreeMap<String, (String, String, String)> {
        let now = self.rollouts();
        for (key, (tag, phase, reason)) in &now {
            if self.seen.insert((key.clone(), tag.clone(), phase.clone())) {
                let why = if reason.is_empty() {
                    String::new()
                } else {
                    format!("  ({reason})")
                };
                println!(
                    "  {:>5.1}s  {key:<8} {tag}  {phase}{why}",
                    self.started.elapsed().as_secs_f64()
                );
            }
        }
        now
    }

    /// Wait until `key` shows `tag` in `phase`.
    fn until(&mut self, key: &str, tag: &str, phase: &str, agent: &Agent) -> Result<()> {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let now = self.poll();
            if now.get(key).is_some_and(|(t, p, _)| t == tag && p == phase) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{key} never reached {tag} {phase} within {}s (now {:?}); tagflow's log:\n{}",
                    STEP_TIMEOUT.as_secs(),
                    now.get(key),
                    indent(&agent.logs())
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
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
    println!("\nimages pushed to {image}:");
    println!("    {:<9} {:<22} digest", "tag", "built");
    for (tag, created) in IMAGES {
        let digest = registry.push_image(IMAGE_PATH, tag, created, Some(tag));
        let mark = if *tag == NEWEST {
            "   <- newest build"
        } else {
            ""
        };
        println!("    {tag:<9} {created:<22} {}…{mark}", &digest[..19]);
    }

    section("2. The apps, Slack and the config repo");
    let mut apps = DeployedApps::start(&["dev", "prod"]);
    println!(
        "apps      {}  (dev and prod: each answers `app version=TAG` for the tag it was deployed with)",
        apps.url("{dev,prod}")
    );
    let slack = SlackCapture::start();
    println!(
        "slack     {}  (stand-in for Slack's Web API)",
        slack.api_url
    );

    let scratch = tempfile::Builder::new()
        .prefix("tagflow-demo-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    let secret = |name: &str, value: &str| -> Result<PathBuf> {
        let path = scratch.path().join(name);
        fs::write(&path, format!("{value}\n")).map_err(|e| format!("write {name}: {e}"))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("chmod {name}: {e}"))?;
        Ok(path)
    };
    let bot_token = secret("slack-bot-token", "xoxb-demo-token")?;
    let config = config_yaml(
        &registry.host,
        &image,
        &apps.url(""),
        &slack.api_url,
        &bot_token,
    );
    let dev = with_local_repository(root, "envs/dev/patch.yaml", &image)?;
    let prod = with_local_repository(root, "envs/prod/patch.yaml", &image)?;
    let repo = Arc::new(BareRepo::new(&[
        ("config/tagflow.yaml", config.as_str()),
        ("envs/dev/patch.yaml", dev.as_str()),
        ("envs/prod/patch.yaml", prod.as_str()),
    ]));
    let http = GitHttp::start(&repo);
    println!(
        "git       {}  (lighttpd + git-http-backend, basic auth, pid {})",
        http.url,
        http.pid()
    );
    println!("\nconfig/tagflow.yaml:");
    print!("{}", indent(&config));
    println!("envs/dev/patch.yaml and envs/prod/patch.yaml are this repo's own files, with");
    println!("image.repository set to {image}; both start at tag {START_TAG}:");
    print!("{}", indent(&image_block(&dev)));

    apps.follow(repo.clone(), "main");

    let password_file = secret("git-password", &http.password)?;
    let repo_args: Vec<String> = vec![
        "--repo".into(),
        http.url.clone(),
        "--git-username".into(),
        http.username.clone(),
        "--git-password-file".into(),
        password_file.display().to_string(),
        // The operator's allowlist: the bot token may go to the local Slack stand-in.
        "--secret-hosts".into(),
        "127.0.0.1".into(),
    ];
    let command = |args: &[&str]| -> Command {
        let mut cmd = Command::new(&bin);
        cmd.args(&repo_args).args(args);
        // Only the flags above count: ignore TAGFLOW_* settings of the calling shell.
        for (k, _) in std::env::vars() {
            if k.starts_with("TAGFLOW_") && k != "TAGFLOW_LOG" {
                cmd.env_remove(k);
            }
        }
        cmd.env_remove("KUBECONFIG").env("NO_COLOR", "1");
        cmd
    };

    section("3. tagflow run (no --lease: rollout state in the config repo)");
    let workdir = scratch.path().join("work");
    let listen = format!("127.0.0.1:{}", testbed::free_port());
    println!(
        "$ tagflow --repo {} --git-username {} --git-password-file {} --secret-hosts 127.0.0.1 run --listen {listen}",
        http.url,
        http.username,
        password_file.display()
    );
    let log = scratch.path().join("tagflow-run.log");
    let child = command(&[
        "--workdir",
        &workdir.display().to_string(),
        "run",
        "--listen",
        &listen,
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(fs::File::create(&log).map_err(|e| format!("create log: {e}"))?)
    .spawn()
    .map_err(|e| format!("start tagflow run: {e}"))?;
    let agent = Agent { child, log };
    println!("\nrollout steps as they land on refs/tagflow/state (seconds since start):");
    let mut watch = Watch {
        repo: &repo,
        started: Instant::now(),
        seen: BTreeSet::new(),
    };
    watch.until("dev/app", NEWEST, "awaitingApproval", &agent)?;
    if repo
        .read("main", "envs/prod/patch.yaml")
        .map(|t| tag_in(&t))
        != Some(START_TAG.into())
    {
        return Err("prod moved before it was approved".into());
    }

    section(&format!("4. tagflow approve prod {NEWEST}"));
    println!("$ tagflow --repo … approve prod {NEWEST}");
    let (status, out) = run_logged(
        &mut command(&["approve", "prod", NEWEST]),
        &scratch.path().join("approve.log"),
    )?;
    print!("{}", indent(&out));
    if status != "exit status 0" {
        return Err(format!("tagflow approve: {status}"));
    }
    watch.until("prod/app", NEWEST, "healthy", &agent)?;
    let (dev_now, prod_now) = (
        image_block(&repo.read("main", "envs/dev/patch.yaml").unwrap_or_default()),
        image_block(
            &repo
                .read("main", "envs/prod/patch.yaml")
                .unwrap_or_default(),
        ),
    );
    if dev_now != prod_now || !prod_now.contains(&format!("tag: {NEWEST} ")) {
        return Err(format!(
            "prod does not run what dev ran:\ndev:\n{dev_now}prod:\n{prod_now}"
        ));
    }
    println!("\nprod runs the very tag and digest dev ran:");
    print!("{}", indent(&prod_now));

    let (broken, built) = BROKEN;
    section(&format!("5. A newer, broken build: {broken}"));
    apps.break_tag(broken);
    registry.push_image(IMAGE_PATH, broken, built, Some(broken));
    println!("pushed {image}:{broken} (built {built}); its app answers 503\n");
    watch.until("dev/app", broken, "quarantined", &agent)?;
    let log = repo.log("main");
    let revert = format!("tagflow: revert dev app {broken} → {NEWEST}");
    if !log.iter().any(|c| c.subject.starts_with(&revert)) {
        return Err(format!("no commit `{revert}` on main"));
    }
    let quarantine = repo
        .read("main", "config/quarantine.yaml")
        .unwrap_or_default();
    if !quarantine.contains(broken) {
        return Err(format!(
            "{broken} is not in config/quarantine.yaml:\n{quarantine}"
        ));
    }
    println!("\nconfig/quarantine.yaml:");
    print!("{}", indent(&quarantine));

    section("6. The Slack threads, as a person reads them");
    let threads = slack_threads(&slack);
    print!("{threads}");
    let alerts = threads.matches("FAILED").count();
    if alerts != 1 {
        return Err(format!("expected one FAILED alert in Slack, saw {alerts}"));
    }
    if threads.contains("xoxb-demo-token") {
        return Err("the Slack token appears in a message".into());
    }

    section("7. tagflow status (read from the config repo: no cluster)");
    println!("$ tagflow --repo … status");
    let (status, out) = run_logged(
        &mut command(&["status"]),
        &scratch.path().join("status.log"),
    )?;
    print!("{}", indent(&out));
    if status != "exit status 0" {
        return Err(format!("tagflow status: {status}"));
    }

    section("8. What tagflow committed");
    println!("$ git log --format='%h %s' main");
    print!(
        "{}",
        indent(&git(&repo.path, &["log", "--format=%h %s", "main"]))
    );

    section("Result");
    println!(
        "dev got {NEWEST} (the newest build), passed its smoke check and soak; prod got the same tag \
         and digest\nafter `tagflow approve` and passed its smoke check; {broken} failed dev's smoke \
         check and was\nreverted and quarantined, with one alert. Stopping the servers (demo took {:.1}s).",
        started.elapsed().as_secs_f64()
    );
    drop(agent);
    drop(apps);
    drop(http);
    drop(repo);
    drop(registry);
    Ok(())
}

/// Every thread tagflow started in the Slack capture: the parent's latest status line, then
/// its replies in order. (The capture numbers message ts values 1700000000.000001, … in the
/// order it answers Web API calls.)
fn slack_threads(slack: &SlackCapture) -> String {
    let mut parents: Vec<(String, String)> = Vec::new();
    let mut replies: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut flat = Vec::new();
    let mut n = 0;
    for m in slack.delivered() {
        let text = m.body["text"].as_str().unwrap_or_default().to_owned();
        if !m.path.starts_with("/api/") {
            flat.push(text);
            continue;
        }
        n += 1;
        let ts = format!("1700000000.{n:06}");
        if m.path.ends_with("/chat.update") {
            let at = m.body["ts"].as_str().unwrap_or_default();
            if let Some(p) = parents.iter_mut().find(|(t, _)| t == at) {
                p.1 = text;
            }
        } else if let Some(parent) = m.body["thread_ts"].as_str() {
            replies.entry(parent.to_owned()).or_default().push(text);
        } else {
            parents.push((ts, text));
        }
    }
    let mut out = String::new();
    for (ts, status) in &parents {
        out.push_str(&format!("#deploys  {status}\n"));
        for r in replies.get(ts).into_iter().flatten() {
            out.push_str(&format!("    └ {r}\n"));
        }
    }
    for t in flat {
        out.push_str(&format!("(webhook) {t}\n"));
    }
    out
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

/// Run `cmd` with stdout and stderr into `log`; kill it after [`COMMAND_TIMEOUT`]. Returns
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
    let deadline = Instant::now() + COMMAND_TIMEOUT;
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
                break format!("killed after {}s timeout", COMMAND_TIMEOUT.as_secs());
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let text = fs::read_to_string(log).unwrap_or_default();
    Ok((status, text))
}

/// tagflow's config for the demo: one plain-HTTP local registry, one image, dev then prod.
fn config_yaml(host: &str, image: &str, apps: &str, slack_api: &str, bot_token: &Path) -> String {
    format!(
        r#"# tagflow's config for the demo: one local registry, one image, dev then prod.
interval: 2s

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
    smoke:                      # the "curl check" once the new tag is deployed
      url: {apps}dev
      expect: {{status: 200, bodyContains: 'version={{tag}}'}}
      retries: 3
      interval: 1s
      deadline: 20s
  prod:
    file: envs/prod/patch.yaml
    promoteFrom: dev            # prod only ever gets what dev ran, tag and digest
    gate: {{soak: 3s, approval: true}}
    smoke:
      url: {apps}prod
      expect: {{status: 200, bodyContains: 'version={{tag}}'}}
      retries: 3
      interval: 1s
      deadline: 20s

notify:
  slack:
    botToken: {{file: {token}}}
    channel: '#deploys'
    apiUrl: {slack_api}
"#,
        token = bot_token.display()
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
