//! The `tagflow` command line.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use tagflow::cycle::{Agent, RepoOptions, Scope};
use tagflow::gitops::GitAuth;
use tagflow::{metrics::Metrics, notify, server};

/// tagflow keeps a GitOps config repo pointing at the newest image of each app.
///
/// It lists a registry's tags, picks the newest per policy, rewrites only the image fields of
/// each environment's values file, and pushes one commit (never forced). Everything but the
/// bootstrap flags below lives in the config repo (`config/tagflow.yaml`) and is re-read every
/// cycle. Every flag can also be set by its TAGFLOW_* environment variable.
#[derive(Debug, Parser)]
#[command(name = "tagflow", version, about, long_about)]
struct Cli {
    #[command(flatten)]
    repo: RepoArgs,
    /// Log format.
    #[arg(
        long,
        value_enum,
        default_value = "text",
        env = "TAGFLOW_LOG_FORMAT",
        global = true
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
struct RepoArgs {
    /// Config repo URL: file://, https://, http:// or ssh:// (no password in it).
    #[arg(long, env = "TAGFLOW_REPO", global = true)]
    repo: Option<String>,
    /// Branch tagflow reads config from and pushes to.
    #[arg(long, env = "TAGFLOW_BRANCH", default_value = "main", global = true)]
    branch: String,
    /// Path of tagflow's config file inside the repo.
    #[arg(
        long,
        env = "TAGFLOW_CONFIG_PATH",
        default_value = "config/tagflow.yaml",
        global = true
    )]
    config_path: String,
    /// Directory for tagflow's clones [default: <tmp>/tagflow/<hash of repo and branch>].
    #[arg(long, env = "TAGFLOW_WORKDIR", global = true)]
    workdir: Option<PathBuf>,
    /// SSH private key (deploy key) for ssh:// repos.
    #[arg(long, env = "TAGFLOW_GIT_SSH_KEY_FILE", global = true)]
    git_ssh_key_file: Option<PathBuf>,
    /// known_hosts for ssh:// repos; unknown host keys are refused.
    #[arg(long, env = "TAGFLOW_GIT_KNOWN_HOSTS_FILE", global = true)]
    git_known_hosts_file: Option<PathBuf>,
    /// Username for http(s):// repos.
    #[arg(long, env = "TAGFLOW_GIT_USERNAME", global = true)]
    git_username: Option<String>,
    /// File holding the password or token for http(s):// repos (or set TAGFLOW_GIT_PASSWORD).
    #[arg(long, env = "TAGFLOW_GIT_PASSWORD_FILE", global = true)]
    git_password_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run cycles forever: every `interval`, and at once when a registry webhook names an image.
    /// Serves /healthz, /readyz, /metrics and POST /webhook/registry. SIGTERM finishes the
    /// cycle in progress (a commit is never cut in half), then exits.
    Run {
        /// Address for the HTTP server.
        #[arg(long, env = "TAGFLOW_LISTEN", default_value = "0.0.0.0:8080")]
        listen: SocketAddr,
        #[command(flatten)]
        lease: LeaseArgs,
    },
    /// Print each environment's rollout: tag, phase and since when (read from the Lease).
    Status {
        #[command(flatten)]
        lease: LeaseArgs,
    },
    /// Approve promoting TAG into ENV: append it to config/approvals.yaml, commit and push.
    Approve {
        /// Environment receiving the tag (one with `gate: {approval: true}`).
        env: String,
        /// The tag.
        tag: String,
        /// Image, when the environment carries several.
        #[arg(long)]
        image: Option<String>,
    },
    /// Run one cycle and exit: 0 when it finished (with or without a commit), 1 when it failed.
    Once,
    /// Dry run: print the diff and commit message the next cycle would push. Touches nothing:
    /// no commit, no push, no Slack, and the work dir is left as it was.
    Plan,
    /// Validate the config and every target in every values file; print each problem as
    /// file:line and exit 1 if there is any.
    Check {
        /// Check a local checkout instead of fetching --repo.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Run `terraform plan` now for one infra workspace (or all) and print the drift summary and
    /// plan id. No Slack, no apply. Exit 0 no drift, 2 drift, 1 error.
    Drift {
        /// Workspace name from `infra:`; all when omitted.
        workspace: Option<String>,
    },
    /// Render an infra workspace's inventory from its current terraform outputs and commit it
    /// if it changed (plans and applies nothing).
    Inventory {
        /// Workspace name from `infra:`.
        workspace: String,
    },
}

/// Leader election and rollout state (`run`, `status`).
#[derive(Debug, Clone, clap::Args)]
struct LeaseArgs {
    /// Lease NAMESPACE/NAME for leader election and the rollout state; turns rollouts on.
    #[arg(long, env = "TAGFLOW_LEASE")]
    lease: Option<String>,
    /// This replica's name in the Lease [default: $POD_NAME, else <hostname>-<pid>].
    #[arg(long, env = "TAGFLOW_IDENTITY")]
    identity: Option<String>,
    /// Lease duration; a follower takes over at most 4/3 of it after the leader's last renewal.
    #[arg(long, env = "TAGFLOW_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    lease_duration: Duration,
}

/// Log lines go through the secret redactor before reaching stderr.
struct RedactingStderr;

impl Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(tagflow::secret::redact(&text).as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TAGFLOW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| RedactingStderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn repo_options(args: &RepoArgs, workdir_override: Option<PathBuf>) -> Result<RepoOptions> {
    let url = args
        .repo
        .clone()
        .context("--repo (or TAGFLOW_REPO) is required")?;
    let password = match (
        &args.git_password_file,
        std::env::var("TAGFLOW_GIT_PASSWORD"),
    ) {
        (Some(f), _) => Some(
            tagflow::secret::SecretRef::file(f.to_string_lossy())
                .read()
                .context("reading --git-password-file")?,
        ),
        (None, Ok(p)) if !p.is_empty() => {
            tagflow::secret::register(&p);
            Some(p)
        }
        _ => None,
    };
    let workdir = workdir_override
        .or_else(|| args.workdir.clone())
        .unwrap_or_else(|| {
            let id = hex::encode(Sha256::digest(format!("{url}#{}", args.branch)));
            std::env::temp_dir().join("tagflow").join(&id[..16])
        });
    Ok(RepoOptions {
        url,
        branch: args.branch.clone(),
        config_path: args.config_path.clone(),
        workdir,
        auth: GitAuth {
            ssh_key_file: args.git_ssh_key_file.clone(),
            known_hosts_file: args.git_known_hosts_file.clone(),
            username: args.git_username.clone(),
            password,
        },
    })
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    tagflow::gitops::init_timeouts(Duration::from_secs(15), Duration::from_secs(120));
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tagflow: failed to start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{}", tagflow::secret::redact(&format!("{e:#}")));
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> Result<std::process::ExitCode> {
    match cli.command {
        Command::Once => once(&cli.repo).await,
        Command::Plan => plan(&cli.repo).await,
        Command::Check { dir } => check(&cli.repo, dir.as_deref()).await,
        Command::Drift { workspace } => drift(&cli.repo, workspace.as_deref()).await,
        Command::Inventory { workspace } => inventory(&cli.repo, &workspace).await,
        Command::Run { listen, lease } => run(&cli.repo, listen, &lease).await,
        Command::Status { lease } => status(&lease).await,
        Command::Approve { env, tag, image } => {
            approve(&cli.repo, &env, &tag, image.as_deref()).await
        }
    }
}

async fn once(args: &RepoArgs) -> Result<std::process::ExitCode> {
    let metrics = Metrics::new();
    let (notifier, worker) = notify::spawn();
    let agent = Agent::new(repo_options(args, None)?, metrics, Some(notifier));
    let result = agent.cycle(&Scope::All).await;
    drop(agent);
    worker.flush(Duration::from_secs(20)).await;
    Ok(match result {
        Ok(r) if !r.image_errors.is_empty() => {
            let e = tagflow::cycle::CycleError::Images(r.image_errors);
            tracing::error!(commit = ?r.commit.map(tagflow::gitops::short), "cycle failed: {e}");
            std::process::ExitCode::FAILURE
        }
        Ok(r) => {
            match r.commit {
                Some(c) => {
                    tracing::info!(commit = %tagflow::gitops::short(c), changes = r.changes.len(), "cycle done: committed")
                }
                None => {
                    tracing::info!(head = %tagflow::gitops::short(r.head), "cycle done: no change")
                }
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("cycle failed: {e}");
            std::process::ExitCode::FAILURE
        }
    })
}

/// A scratch directory removed on drop, so `plan` leaves the real work dir alone.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Self(std::env::temp_dir().join(format!("tagflow-{tag}-{}-{nanos}", std::process::id())))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn plan(args: &RepoArgs) -> Result<std::process::ExitCode> {
    let scratch = Scratch::new("plan");
    let agent = Agent::new(
        repo_options(args, Some(scratch.0.clone()))?,
        Metrics::new(),
        None,
    );
    match agent.plan().await? {
        None => {
            println!("# nothing to change");
            tracing::info!("plan: nothing to change");
        }
        Some((diff, message)) => {
            println!("# commit message\n{message}\n# diff\n{diff}");
            tracing::info!("plan: the diff above would be committed (nothing was written)");
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Reads a file of the repo being checked.
type Reader = Box<dyn Fn(&str) -> Option<Vec<u8>>>;

async fn check(args: &RepoArgs, dir: Option<&Path>) -> Result<std::process::ExitCode> {
    let config_path = args.config_path.clone();
    let (text, read): (Vec<u8>, Reader) = match dir {
        Some(d) => {
            let d = d.to_owned();
            let text = std::fs::read(d.join(&config_path))
                .with_context(|| format!("reading {}", d.join(&config_path).display()))?;
            (text, Box::new(move |p: &str| std::fs::read(d.join(p)).ok()))
        }
        None => {
            let scratch = Scratch::new("check");
            let opts = repo_options(args, Some(scratch.0.clone()))?;
            let files = tokio::task::spawn_blocking(move || fetch_all(&opts)).await??;
            drop(scratch);
            let text = files
                .get(&config_path)
                .cloned()
                .with_context(|| format!("{config_path} does not exist at the repo head"))?;
            (text, Box::new(move |p: &str| files.get(p).cloned()))
        }
    };
    let text = String::from_utf8(text).map_err(|_| anyhow::anyhow!("{config_path}: not UTF-8"))?;
    let config = match tagflow::config::parse(&config_path, &text) {
        Ok(c) => c,
        Err(e) => {
            for p in &e.problems {
                println!("{p}");
            }
            tracing::error!(
                "check failed: {} problem(s) in {config_path}",
                e.problems.len()
            );
            return Ok(std::process::ExitCode::FAILURE);
        }
    };
    let mut problems = tagflow::plan::check_targets(&config, |p| read(p));
    let lists = [tagflow::config::APPROVALS, tagflow::config::QUARANTINE]
        .map(|name| tagflow::config::sibling(&config_path, name));
    let texts = lists
        .clone()
        .map(|f| read(&f).map(|b| String::from_utf8_lossy(&b).into_owned()));
    if let Err(e) = tagflow::config::parse_gates(
        &config,
        (&lists[0], texts[0].as_deref()),
        (&lists[1], texts[1].as_deref()),
    ) {
        problems.extend(e.problems.iter().map(ToString::to_string));
    }
    for p in &problems {
        println!("{p}");
    }
    if problems.is_empty() {
        println!(
            "ok: {} image(s), {} environment(s)",
            config.images.len(),
            config.environments.len()
        );
        Ok(std::process::ExitCode::SUCCESS)
    } else {
        tracing::error!(
            "check failed: {} problem(s) in values files",
            problems.len()
        );
        Ok(std::process::ExitCode::FAILURE)
    }
}

/// Fetch the repo and read the config plus every file it may name (small repos; check only).
fn fetch_all(opts: &RepoOptions) -> Result<std::collections::BTreeMap<String, Vec<u8>>> {
    let c = tagflow::gitops::Checkout::open(
        &opts.url,
        &opts.branch,
        &opts.workdir.join("config.git"),
        opts.auth.clone(),
    )?;
    let head = c.fetch()?;
    let snap = c.snapshot(head)?;
    let mut out = std::collections::BTreeMap::new();
    if let Some(t) = snap.read(&opts.config_path)? {
        if let Ok(cfg) = tagflow::config::parse(&opts.config_path, &String::from_utf8_lossy(&t)) {
            for env in cfg.environments.values() {
                if let Some(b) = snap.read(&env.file)? {
                    out.insert(env.file.clone(), b);
                }
            }
        }
        out.insert(opts.config_path.clone(), t);
        for name in [tagflow::config::APPROVALS, tagflow::config::QUARANTINE] {
            let path = tagflow::config::sibling(&opts.config_path, name);
            if let Some(b) = snap.read(&path)? {
                out.insert(path, b);
            }
        }
    }
    Ok(out)
}

async fn status(lease: &LeaseArgs) -> Result<std::process::ExitCode> {
    let name = lease
        .lease
        .as_deref()
        .context("--lease (or TAGFLOW_LEASE) is required")?;
    let (state, holder) = tagflow::control::read_state(name)
        .await
        .map_err(anyhow::Error::msg)?;
    println!("leader: {}", holder.as_deref().unwrap_or("(none)"));
    print!(
        "{}",
        tagflow::rollout::status_text(&state, chrono::Utc::now())
    );
    Ok(std::process::ExitCode::SUCCESS)
}

async fn approve(
    args: &RepoArgs,
    env: &str,
    tag: &str,
    image: Option<&str>,
) -> Result<std::process::ExitCode> {
    let scratch = Scratch::new("approve");
    let agent = Agent::new(
        repo_options(args, Some(scratch.0.clone()))?,
        Metrics::new(),
        None,
    );
    match agent.approve(env, tag, image).await? {
        Some(c) => println!("approved {tag} for {env} in {}", tagflow::gitops::short(c)),
        None => println!("{tag} is already approved for {env}"),
    }
    Ok(std::process::ExitCode::SUCCESS)
}

async fn run(
    args: &RepoArgs,
    listen: SocketAddr,
    lease: &LeaseArgs,
) -> Result<std::process::ExitCode> {
    let metrics = Metrics::new();
    let (notifier, worker) = notify::spawn();
    let agent = Agent::new(repo_options(args, None)?, metrics.clone(), Some(notifier));
    let election_stop = CancellationToken::new();
    let election = match &lease.lease {
        Some(name) => {
            let identity = lease
                .identity
                .clone()
                .unwrap_or_else(tagflow::control::default_identity);
            let (deploy, task) = tagflow::control::start(
                name,
                &identity,
                lease.lease_duration,
                election_stop.clone(),
            )
            .await
            .map_err(anyhow::Error::msg)?;
            agent.set_deploy(deploy);
            Some(task)
        }
        None => None,
    };
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let shared = Arc::new(server::Shared {
        metrics,
        ready: AtomicBool::new(false),
        config: std::sync::RwLock::new(None),
        trigger: tx,
    });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tracing::info!(addr = %listener.local_addr()?, "serving /healthz /readyz /metrics /webhook/registry");
    let shutdown = CancellationToken::new();
    let http_stop = shutdown.clone();
    let app = server::router(shared.clone());
    let http = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { http_stop.cancelled().await })
            .await
    });
    let signals = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received: finishing the cycle in progress, then exiting");
        signals.cancel();
    });
    let watcher = tokio::spawn(tagflow::infra::Watcher::new(agent.clone()).run(shutdown.clone()));
    tagflow::runner::run_loop(agent.clone(), shared, rx, shutdown.clone()).await;
    shutdown.cancel();
    // After the last cycle: release the Lease so another replica takes over at once.
    election_stop.cancel();
    if let Some(task) = election {
        let _ = task.await;
    }
    // Terraform runs in progress finish (each within its own timeout): an apply is never cut.
    let _ = watcher.await;
    drop(agent);
    worker.flush(Duration::from_secs(10)).await;
    match http.await {
        Ok(Ok(())) => Ok(std::process::ExitCode::SUCCESS),
        Ok(Err(e)) => bail!("HTTP server failed: {e}"),
        Err(e) => bail!("HTTP server task failed: {e}"),
    }
}

/// `tagflow drift`: plan each workspace and print its summary. Uses the work dir (terraform's
/// `.terraform/` is reused) but posts nothing and remembers nothing.
async fn drift(args: &RepoArgs, only: Option<&str>) -> Result<std::process::ExitCode> {
    let agent = Agent::new(repo_options(args, None)?, Metrics::new(), None);
    let (_, cfg) = agent.refresh().await?;
    let names: Vec<String> = match only {
        Some(n) => vec![n.to_owned()],
        None => cfg.infra.iter().map(|w| w.name.clone()).collect(),
    };
    if names.is_empty() {
        println!("no infra workspaces configured");
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let watcher = tagflow::infra::Watcher::new(agent);
    let (mut drifted, mut failed) = (false, false);
    for name in names {
        match watcher.drift(&name).await {
            Ok(p) => {
                drifted |= p.summary.has_drift();
                println!(
                    "{name}: plan {} at {}: {}",
                    p.summary.plan_id,
                    tagflow::gitops::short(p.head),
                    tagflow::secret::redact(&p.summary.render())
                );
            }
            Err(e) => {
                failed = true;
                println!(
                    "{name}: failed: {}",
                    tagflow::secret::redact(&e.to_string())
                );
            }
        }
    }
    Ok(if failed {
        std::process::ExitCode::FAILURE
    } else if drifted {
        std::process::ExitCode::from(2)
    } else {
        std::process::ExitCode::SUCCESS
    })
}

/// `tagflow inventory WORKSPACE`: render and commit the inventory from the current outputs.
async fn inventory(args: &RepoArgs, name: &str) -> Result<std::process::ExitCode> {
    let agent = Agent::new(repo_options(args, None)?, Metrics::new(), None);
    let watcher = tagflow::infra::Watcher::new(agent);
    match watcher.render_inventory(name).await? {
        Some(c) => println!(
            "{name}: inventory committed in {}",
            tagflow::gitops::short(c)
        ),
        None => println!("{name}: inventory unchanged"),
    }
    Ok(std::process::ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
