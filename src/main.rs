//! The `tagflow` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use tagflow::commands;
use tagflow::gitops::{GitAuth, RepoOptions};
use tagflow::run::{LeaseOptions, RunOptions, StateStore};

/// tagflow keeps a GitOps config repo pointing at the newest image of each app.
///
/// It lists a registry's tags, picks the newest per policy, rewrites only the image fields of
/// each environment's values file, and pushes one commit (never forced). Everything but the
/// bootstrap flags below lives in the config repo (`config/tagflow.yaml`) and is re-read every
/// cycle. Every flag can also be set by its TAGFLOW_* environment variable.
#[derive(Debug, Parser)]
#[command(
    name = "tagflow",
    version = tagflow::build_info::LONG_VERSION,
    about,
    long_about
)]
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
    /// Hosts that may receive tagflow's secrets, comma-separated: `host`, `host:port`,
    /// `*.domain`, or `*` for any. A config naming a registry with a password, or a Slack API
    /// URL with a bot token, on any other host is refused (file:line), and git credentials go
    /// to no other host than the config repo's. Set it here, outside the config repo, so that
    /// pushing to the config repo does not mean reading tagflow's secrets. Registry
    /// credentials from a docker config.json stay bound to the hosts that file names.
    #[arg(
        long,
        env = "TAGFLOW_SECRET_HOSTS",
        global = true,
        default_value = tagflow::egress::DEFAULT
    )]
    secret_hosts: String,
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
    /// PEM file of CA certificates trusted for https:// git remotes besides the system roots
    /// (a self-hosted GitLab or Gitea behind a private CA); the config repo and app sources.
    #[arg(long, env = "TAGFLOW_GIT_CA_FILE", global = true)]
    git_ca_file: Option<PathBuf>,
    /// Send `Expect: 100-continue` on smart-HTTP git POSTs (saves ~40 ms a request); `false`
    /// only behind a proxy that does not answer it.
    #[arg(
        long,
        env = "TAGFLOW_GIT_HTTP_EXPECT_CONTINUE",
        default_value_t = true,
        action = clap::ArgAction::Set,
        global = true
    )]
    git_http_expect_continue: bool,
    /// Open git's sockets (smart HTTP, HTTPS, SSH) with `TCP_NODELAY`, so a push's small writes
    /// do not wait for delayed ACKs (~40 ms each); `false` keeps libgit2's own sockets.
    #[arg(
        long,
        env = "TAGFLOW_GIT_TCP_NODELAY",
        default_value_t = true,
        action = clap::ArgAction::Set,
        global = true
    )]
    git_tcp_nodelay: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run cycles forever: every `interval`, and at once when a registry webhook names an image.
    /// Serves /healthz, /readyz, /metrics and POST /webhook/registry. SIGTERM cancels a
    /// registry scan in progress at once, lets a commit being pushed finish, then exits.
    Run {
        /// Address for the HTTP server.
        #[arg(long, env = "TAGFLOW_LISTEN", default_value = "0.0.0.0:8080")]
        listen: SocketAddr,
        /// File holding the bearer token the status page (`/`, `/api/status`) requires; the
        /// page is open (read-only) without it.
        #[arg(long, env = "TAGFLOW_STATUS_TOKEN_FILE")]
        status_token_file: Option<PathBuf>,
        #[command(flatten)]
        lease: LeaseArgs,
    },
    /// Print each environment's rollout: tag, phase and since when. Read from the config repo
    /// (`--repo`, the state on refs/tagflow/state) or, with --lease, from the Lease.
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
    /// Dry run: print the diff and commit message of each push the next cycle would make (the
    /// commit to the branch, and each pull-request branch). Touches nothing: no commit, no push,
    /// no forge call, no Slack, and the work dir is left as it was.
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
    /// Print a config/tagflow.yaml equivalent to the Flux image automation in PATHs.
    ///
    /// Reads ImageRepository, ImagePolicy and ImageUpdateAutomation objects
    /// (image.toolkit.fluxcd.io v1beta2 and v1) from YAML files or directories (read
    /// recursively; several `---` documents per file; other kinds are ignored), and the values
    /// files under each automation's update.path whose $imagepolicy markers become
    /// environments. The config goes to stdout; every field that could not be mapped goes to
    /// stderr as file:line. Exit 1 when no such object was found.
    ImportFlux {
        /// Files or directories holding the Flux objects.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Repo root: the config's paths (environments.*.file, update.path) are relative to it.
        #[arg(long, default_value = ".")]
        root: PathBuf,
    },
    /// Print a shell completion script: `source <(tagflow completions bash)`; for zsh save it as
    /// `_tagflow` in a directory of `$fpath`, for fish as
    /// `~/.config/fish/completions/tagflow.fish`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: tagflow::completions::Shell,
    },
    /// Print the JSON Schema of config/tagflow.yaml (the committed copy is
    /// config/tagflow.schema.json): `tagflow schema > config/tagflow.schema.json` and start the
    /// config with `# yaml-language-server: $schema=./tagflow.schema.json` so editors check
    /// names, types and enums as you type. `tagflow check` still does the whole-config checks.
    Schema,
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
    /// Where the rollout state lives: `git` (ref refs/tagflow/state of the config repo) or
    /// `lease` (an annotation on the Lease) [default: lease with --lease, else git].
    #[arg(long, env = "TAGFLOW_STATE", value_enum)]
    state: Option<StateStore>,
}

impl LeaseArgs {
    fn store(&self) -> Result<StateStore> {
        StateStore::choose(self.state, self.lease.is_some()).map_err(anyhow::Error::msg)
    }
}

fn repo_options(args: &RepoArgs, workdir: Option<PathBuf>) -> Result<RepoOptions> {
    let url = args
        .repo
        .clone()
        .context("--repo (or TAGFLOW_REPO) is required")?;
    let password = GitAuth::read_password(args.git_password_file.as_deref())
        .context("reading --git-password-file")?;
    let auth = GitAuth {
        ssh_key_file: args.git_ssh_key_file.clone(),
        known_hosts_file: args.git_known_hosts_file.clone(),
        username: args.git_username.clone(),
        password,
    };
    let workdir = workdir.or_else(|| args.workdir.clone());
    let (branch, path) = (args.branch.clone(), args.config_path.clone());
    Ok(RepoOptions::new(url, branch, path, workdir, auth))
}

fn main() -> ExitCode {
    tagflow::memory::tune_allocator();
    let cli = Cli::parse();
    tagflow::logging::init(matches!(cli.log_format, LogFormat::Json));
    // Before any thread: libgit2 starts without reading the CA bundle (gitops::tls says why).
    tagflow::gitops::tls::init_deferred(|| {
        tagflow::gitops::init_timeouts(Duration::from_secs(15), Duration::from_secs(120));
        tagflow::gitops::init_http(cli.repo.git_http_expect_continue, cli.repo.git_tcp_nodelay);
    });
    if let Err(e) = tagflow::egress::set(Some(&cli.secret_hosts)) {
        eprintln!("tagflow: --secret-hosts: {e}");
        return ExitCode::from(2);
    }
    if let Some(ca) = &cli.repo.git_ca_file
        && let Err(e) = tagflow::gitops::trust_ca_file(ca)
    {
        eprintln!("tagflow: --git-ca-file: {e}");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tagflow: failed to start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            tracing::error!("{}", tagflow::secret::redact(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> Result<u8> {
    let args = &cli.repo;
    Ok(match cli.command {
        Command::Once => commands::once(repo_options(args, None)?).await,
        Command::Plan => commands::plan(repo_options(args, None)?).await?,
        Command::Check { dir: Some(d) } => commands::check_dir(&d, &args.config_path)?,
        Command::Check { dir: None } => commands::check_repo(repo_options(args, None)?)?,
        Command::Drift { workspace } => {
            commands::drift(repo_options(args, None)?, workspace.as_deref()).await?
        }
        Command::Inventory { workspace } => {
            commands::inventory(repo_options(args, None)?, &workspace).await?
        }
        Command::ImportFlux { paths, root } => commands::import_flux(&paths, &root)?,
        Command::Schema => {
            print!("{}", tagflow::config::config_schema_json());
            commands::EXIT_OK
        }
        Command::Completions { shell } => {
            print!("{}", tagflow::completions::generate(shell, &Cli::command()));
            commands::EXIT_OK
        }
        Command::Run {
            listen,
            status_token_file,
            lease,
        } => run(args, listen, status_token_file, &lease).await?,
        Command::Status { lease } => match (lease.store()?, lease.lease) {
            (StateStore::Lease, Some(name)) => commands::status(&name).await?,
            _ => commands::status_git(repo_options(args, None)?).await?,
        },
        Command::Approve { env, tag, image } => {
            commands::approve(repo_options(args, None)?, &env, &tag, image.as_deref()).await?
        }
    })
}

async fn run(
    args: &RepoArgs,
    listen: SocketAddr,
    status_token_file: Option<PathBuf>,
    lease: &LeaseArgs,
) -> Result<u8> {
    let state = lease.store()?;
    let lease = lease.lease.clone().map(|name| LeaseOptions {
        name,
        identity: lease
            .identity
            .clone()
            .unwrap_or_else(tagflow::k8s::leadership::default_identity),
        duration: lease.lease_duration,
        state,
    });
    let opts = RunOptions {
        repo: repo_options(args, None)?,
        lease,
        flush: Duration::from_secs(10),
        status_token: status_token_file
            .map(|p| tagflow::secret::SecretRef::file(p.to_string_lossy().into_owned())),
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tagflow::run::run(opts, listener, tagflow::run::wait_for_signal()).await?;
    Ok(commands::EXIT_OK)
}
