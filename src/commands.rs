//! The one-shot commands (`once`, `plan`, `approve`, `status`, `drift`, `inventory`): each
//! builds what it needs from the stages, runs, prints what a person reads, and returns the
//! process exit code. `main` only parses the command line and calls these.

use std::path::PathBuf;
use std::time::Duration;

use crate::cycle::pipeline::{ApproveError, log_outcome};
use crate::cycle::{CycleError, Outcome, Reconciler, Scope};
use crate::gitops::{self, RepoOptions};
use crate::infra::{self, InfraError};
use crate::k8s::{ClusterError, leadership};
use crate::metrics::Metrics;
use crate::notify;

/// Exit code: done.
pub const EXIT_OK: u8 = 0;
/// Exit code: failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code of `drift`: a workspace drifted.
pub const EXIT_DRIFT: u8 = 2;

/// Why a command stopped with an error (printed by `main`).
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The cycle's stages.
    #[error(transparent)]
    Cycle(#[from] CycleError),
    /// `approve`.
    #[error(transparent)]
    Approve(#[from] Box<ApproveError>),
    /// `status`.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// `drift`, `inventory`.
    #[error(transparent)]
    Infra(#[from] InfraError),
    /// `check`.
    #[error(transparent)]
    Check(#[from] crate::check::CheckError),
    /// `import-flux`: an input could not be read.
    #[error("failed to read {path}: {source}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `status --repo`: the state document on the state ref does not parse.
    #[error("{reference} at {commit}: {file} is not a rollout state document: {source}")]
    State {
        /// The ref.
        reference: &'static str,
        /// Its commit (short).
        commit: String,
        /// The file.
        file: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// A scratch directory removed on drop, so `plan`, `check` and `approve` leave the real work
/// dir alone.
#[derive(Debug)]
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A new, not yet created, directory under the system temp dir.
    pub fn new(tag: &str) -> Self {
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

/// `tagflow once`: one cycle; 0 when everything was handled (with or without a commit), 1 when
/// anything failed — the same judgement and log line as a cycle of `run`.
pub async fn once(opts: RepoOptions) -> u8 {
    let (notifier, worker) = notify::spawn();
    let reconciler = Reconciler::new(opts, Metrics::new(), Some(notifier), None);
    reconciler.one_cycle();
    let result = reconciler.cycle(&Scope::All).await;
    drop(reconciler);
    worker.flush(Duration::from_secs(20)).await;
    log_outcome(&result);
    match result.as_ref().map(crate::cycle::Report::outcome) {
        Ok(Outcome::Committed | Outcome::Unchanged | Outcome::Following) => EXIT_OK,
        _ => EXIT_FAILED,
    }
}

fn print_checked(checked: &crate::check::Checked) -> u8 {
    for p in &checked.problems {
        println!("{p}");
    }
    if checked.problems.is_empty() {
        println!("{}", checked.summary);
        EXIT_OK
    } else {
        tracing::error!("check failed: {} problem(s)", checked.problems.len());
        EXIT_FAILED
    }
}

/// `tagflow check --dir DIR`: check a local checkout; 1 when there is any problem.
pub fn check_dir(dir: &std::path::Path, config_path: &str) -> Result<u8, CommandError> {
    Ok(print_checked(&crate::check::check_dir(dir, config_path)?))
}

/// `tagflow check`: fetch the repo into a scratch dir and check its head.
pub fn check_repo(mut opts: RepoOptions) -> Result<u8, CommandError> {
    let scratch = Scratch::new("check");
    opts.workdir = scratch.0.clone();
    Ok(print_checked(&crate::check::check_repo(&opts)?))
}

/// `tagflow plan`: print the diff and message the next cycle would push; touches nothing.
pub async fn plan(mut opts: RepoOptions) -> Result<u8, CommandError> {
    let scratch = Scratch::new("plan");
    opts.workdir = scratch.0.clone();
    let reconciler = Reconciler::new(opts, Metrics::new(), None, None);
    reconciler.one_cycle();
    let planned = reconciler.plan().await?;
    if planned.is_empty() {
        println!("# nothing to change");
        tracing::info!("plan: nothing to change");
    }
    for p in &planned {
        println!(
            "# would {}\n# commit message\n{}\n# diff\n{}",
            p.destination, p.message, p.diff
        );
    }
    if !planned.is_empty() {
        tracing::info!(
            pushes = planned.len(),
            "plan: the diffs above would be pushed (nothing was written)"
        );
    }
    Ok(EXIT_OK)
}

/// `tagflow approve ENV TAG`: commit the approval and push it.
pub async fn approve(
    mut opts: RepoOptions,
    env: &str,
    tag: &str,
    image: Option<&str>,
) -> Result<u8, CommandError> {
    let scratch = Scratch::new("approve");
    opts.workdir = scratch.0.clone();
    let reconciler = Reconciler::new(opts, Metrics::new(), None, None);
    match reconciler
        .approve(env, tag, image)
        .await
        .map_err(Box::new)?
    {
        Some(c) => println!("approved {tag} for {env} in {}", gitops::short(c)),
        None => println!("{tag} is already approved for {env}"),
    }
    Ok(EXIT_OK)
}

/// `tagflow status --lease NS/NAME`: each environment's rollout, read from the Lease.
pub async fn status(lease: &str) -> Result<u8, CommandError> {
    let (state, holder) = leadership::read_state(lease).await?;
    println!("leader: {}", holder.as_deref().unwrap_or("(none)"));
    print!(
        "{}",
        crate::rollout::status_text(&state, chrono::Utc::now())
    );
    Ok(EXIT_OK)
}

/// `tagflow status --repo URL`: each environment's rollout, read from the config repo's
/// `refs/tagflow/state` — anyone with read access to the repo can run it, no cluster needed.
pub async fn status_git(mut opts: RepoOptions) -> Result<u8, CommandError> {
    let scratch = Scratch::new("status");
    opts.workdir = scratch.0.clone();
    let repo = gitops::ConfigRepo::new(opts, Metrics::new());
    let state = match repo.read_state().await.map_err(CycleError::from)? {
        None => crate::rollout::State::default(),
        Some((commit, text)) => {
            let state = serde_json::from_slice(&text).map_err(|source| CommandError::State {
                reference: gitops::STATE_REF,
                commit: gitops::short(commit),
                file: gitops::STATE_FILE,
                source,
            })?;
            println!("state: {} at {}", gitops::STATE_REF, gitops::short(commit));
            state
        }
    };
    print!(
        "{}",
        crate::rollout::status_text(&state, chrono::Utc::now())
    );
    Ok(EXIT_OK)
}

async fn watcher(opts: RepoOptions) -> Result<std::sync::Arc<infra::Watcher>, CommandError> {
    let reconciler = Reconciler::new(opts, Metrics::new(), None, None);
    reconciler.refresh().await?;
    Ok(infra::Watcher::new(infra::Host {
        repo: reconciler.repo.clone(),
        current: reconciler.current.clone(),
        poster: reconciler.poster.clone(),
        metrics: reconciler.metrics.clone(),
        activity: reconciler.activity.clone(),
    }))
}

/// `tagflow drift [WORKSPACE]`: plan each workspace and print its summary. Uses the work dir
/// (terraform's `.terraform/` is reused) but posts nothing and remembers nothing.
/// 0 no drift, 2 drift, 1 a workspace failed.
pub async fn drift(opts: RepoOptions, only: Option<&str>) -> Result<u8, CommandError> {
    let watcher = watcher(opts).await?;
    let cfg = watcher.config().ok_or(InfraError::NoConfig)?;
    let names: Vec<String> = match only {
        Some(n) => vec![n.to_owned()],
        None => cfg.infra.iter().map(|w| w.name.clone()).collect(),
    };
    if names.is_empty() {
        println!("no infra workspaces configured");
        return Ok(EXIT_OK);
    }
    let (mut drifted, mut failed) = (false, false);
    for name in names {
        match watcher.drift(&name).await {
            Ok(p) => {
                drifted |= p.summary.has_drift();
                println!(
                    "{name}: plan {} at {}: {}",
                    p.summary.plan_id,
                    gitops::short(p.head),
                    crate::secret::redact(&p.summary.render())
                );
            }
            Err(e) => {
                failed = true;
                println!("{name}: failed: {}", crate::secret::redact(&e.to_string()));
            }
        }
    }
    Ok(if failed {
        EXIT_FAILED
    } else if drifted {
        EXIT_DRIFT
    } else {
        EXIT_OK
    })
}

/// `tagflow inventory WORKSPACE`: render and commit the inventory from the current outputs.
pub async fn inventory(opts: RepoOptions, name: &str) -> Result<u8, CommandError> {
    let watcher = watcher(opts).await?;
    match watcher.render_inventory(name).await? {
        Some(c) => println!("{name}: inventory committed in {}", gitops::short(c)),
        None => println!("{name}: inventory unchanged"),
    }
    Ok(EXIT_OK)
}

/// `tagflow import-flux PATH...`: read the Flux image-automation objects in PATHs (files, or
/// directories read recursively) and print the equivalent config on stdout; every field it
/// could not map goes to stderr as `file:line: note`. `root` is the repo root the paths in the
/// config are relative to. 1 when no Flux image-automation object was found.
pub fn import_flux(paths: &[PathBuf], root: &std::path::Path) -> Result<u8, CommandError> {
    use crate::flux_import::{self, SourceFile};
    let mut files: Vec<SourceFile> = Vec::new();
    let add = |path: &std::path::Path, files: &mut Vec<SourceFile>| -> Result<(), CommandError> {
        for file in yaml_files(path)? {
            let rel = file.strip_prefix(root).unwrap_or(&file);
            let rel = rel.to_string_lossy().trim_start_matches("./").to_owned();
            if files.iter().any(|f| f.path == rel) {
                continue;
            }
            let text = std::fs::read_to_string(&file).map_err(|source| CommandError::Read {
                path: file.clone(),
                source,
            })?;
            files.push(SourceFile { path: rel, text });
        }
        Ok(())
    };
    for p in paths {
        add(p, &mut files)?;
    }
    // The values files the automations update carry the markers that make environments.
    for dir in flux_import::update_paths(&files) {
        let dir = root.join(&dir);
        if dir.exists() {
            add(&dir, &mut files)?;
        }
    }
    let imported = flux_import::import(&files);
    for n in &imported.notes {
        eprintln!("{n}");
    }
    if imported.objects == 0 {
        eprintln!("no Flux ImageRepository, ImagePolicy or ImageUpdateAutomation found");
        return Ok(EXIT_FAILED);
    }
    print!("{}", imported.config);
    Ok(EXIT_OK)
}

/// `path` if it is a file, else every `.yaml`/`.yml` file under it, sorted.
fn yaml_files(path: &std::path::Path) -> Result<Vec<PathBuf>, CommandError> {
    let read = |source| CommandError::Read {
        path: path.to_owned(),
        source,
    };
    if !std::fs::metadata(path).map_err(read)?.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(read)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for e in entries {
        if e.is_dir() {
            out.extend(yaml_files(&e)?);
        } else if e.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(e);
        }
    }
    Ok(out)
}
