//! Git stage (IO): fetch the config repo, read files from its tree, commit and push.
//!
//! The work dir is a bare clone: files are read from git objects (a symlink or `..` cannot lead
//! outside the repo, and nothing is ever half-written on disk) and a commit is built from the
//! fetched head's tree. A rejected push is never forced: tagflow fetches the new head, asks the
//! caller to plan again on it, and retries after a short jittered pause, for a time budget.

pub mod auth;
mod branch;
mod history;
mod push;
mod repo;
pub mod sign;
mod snapshot;
mod socket;
pub mod source;
mod state;
pub mod tls;

use std::path::{Path, PathBuf};
use std::time::Duration;

use git2::{Oid, Repository, Signature};

pub use auth::GitAuth;
pub use branch::{BranchPlan, Decision};
pub use repo::{CommitError, Committed, ConfigRepo, RepoOptions, STATE_FILE, STATE_REF};
pub use snapshot::Snapshot;

use push::{PushResult, retry_delay};

use crate::config::{Author, GitConfig};
use crate::plan::Prepared;

const MODE_BLOB: i32 = 0o100_644;
const MODE_EXEC: i32 = 0o100_755;
const MODE_LINK: i32 = 0o120_000;

/// Git failures.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The URL or credentials setup is wrong.
    #[error("bad git setup: {0}")]
    Setup(String),
    /// A libgit2 operation failed.
    #[error("failed to {action}: {source}{}", tls_hint(.source))]
    Git {
        /// What we were doing.
        action: String,
        /// libgit2's error.
        #[source]
        source: git2::Error,
    },
    /// The branch does not exist on the remote.
    #[error("branch {0} does not exist on the remote")]
    NoBranch(String),
    /// A path the config names is missing or not a regular file.
    #[error("{path}: {reason}")]
    File {
        /// Path in the repo.
        path: String,
        /// Why it cannot be read.
        reason: String,
    },
    /// The blocking git task died (a bug: reported, never retried in a loop).
    #[error("git task failed: {0}")]
    Task(String),
    /// `git.signing` is set and the commit could not be signed.
    #[error("failed to sign the commit: {0}")]
    Sign(#[from] sign::SignError),
    /// Other writers kept winning the race.
    #[error(
        "push rejected {0} times in a row (other writers kept moving the branch); will retry next cycle"
    )]
    Contended(u32),
}

/// What to do about a certificate the system roots do not trust.
fn tls_hint(e: &git2::Error) -> &'static str {
    if e.class() == git2::ErrorClass::Ssl {
        " (a server certificate from a private CA: pass that CA's PEM with --git-ca-file or \
         TAGFLOW_GIT_CA_FILE)"
    } else {
        ""
    }
}

impl GitError {
    /// A stable identity for alerts: the kind and the action's verb, never the varying text
    /// (temp pack file names, addresses).
    pub fn kind(&self) -> String {
        match self {
            Self::Setup(_) => "setup".into(),
            Self::Git { action, source } => format!(
                "{}:{:?}",
                action.split_whitespace().next().unwrap_or("git"),
                source.class()
            ),
            Self::NoBranch(b) => format!("no-branch:{b}"),
            Self::File { path, .. } => format!("file:{path}"),
            Self::Task(_) => "task".into(),
            Self::Sign(_) => "sign".into(),
            Self::Contended(_) => "contended".into(),
        }
    }

    /// Worth retrying later without a config change.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Git { source, .. } => matches!(
                source.class(),
                git2::ErrorClass::Net
                    | git2::ErrorClass::Http
                    | git2::ErrorClass::Ssh
                    | git2::ErrorClass::Os
            ),
            Self::Contended(_) => true,
            Self::Sign(e) => e.is_transient(),
            _ => false,
        }
    }
}

fn git_err(action: impl Into<String>) -> impl FnOnce(git2::Error) -> GitError {
    let action = action.into();
    move |source| GitError::Git {
        action,
        source: scrub(source),
    }
}

/// libgit2 messages may echo a URL; make sure no secret rides along.
fn scrub(e: git2::Error) -> git2::Error {
    let msg = crate::secret::redact(e.message());
    git2::Error::new(e.code(), e.class(), msg)
}

/// Result of [`Checkout::commit_and_push`].
#[derive(Debug)]
pub enum Pushed {
    /// Nothing to change on the current head.
    Unchanged {
        /// The head looked at.
        head: Oid,
    },
    /// A commit is on the remote branch.
    Committed {
        /// The new commit.
        commit: Oid,
        /// Push attempts it took.
        attempts: u32,
        /// The plan that was pushed.
        prepared: Prepared,
    },
}

/// Why [`Checkout::commit_and_push`] stopped without a commit.
#[derive(Debug, thiserror::Error)]
pub enum PushError<E: std::error::Error + 'static> {
    /// Git failed.
    #[error(transparent)]
    Git(#[from] GitError),
    /// The caller's plan failed; nothing was committed.
    #[error(transparent)]
    Plan(E),
}

/// tagflow's private bare clone of the config repo.
pub struct Checkout {
    repo: Repository,
    url: String,
    remote: auth::RemoteInfo,
    branch: String,
    auth: GitAuth,
    /// Where the bare repo lives.
    pub dir: PathBuf,
}

impl std::fmt::Debug for Checkout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Checkout({} {} at {})",
            crate::secret::display_url(&self.url),
            self.branch,
            self.dir.display()
        )
    }
}

impl Checkout {
    /// Open (or create) the bare clone in `dir` for `url` and `branch`.
    pub fn open(url: &str, branch: &str, dir: &Path, auth: GitAuth) -> Result<Self, GitError> {
        init_http(true, true);
        let remote = auth::remote_info(url).map_err(GitError::Setup)?;
        if tls::may_use_tls(url) {
            tls::load_bundle();
        }
        if git2::Branch::name_is_valid(branch).ok() != Some(true) {
            return Err(GitError::Setup(format!(
                "{branch:?} is not a valid branch name"
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| {
            GitError::Setup(format!("failed to create work dir {}: {e}", dir.display()))
        })?;
        let repo = match Repository::open_bare(dir) {
            Ok(r) => r,
            Err(_) => {
                Repository::init_bare(dir).map_err(git_err("create the work dir's bare repo"))?
            }
        };
        match repo.find_remote("origin") {
            Ok(r) if r.url().ok() == Some(url) => {}
            Ok(_) => repo
                .remote_set_url("origin", url)
                .map_err(git_err("set the origin URL"))?,
            Err(_) => {
                repo.remote("origin", url)
                    .map_err(git_err("add the origin remote"))?;
            }
        }
        Ok(Self {
            repo,
            url: url.to_owned(),
            remote,
            branch: branch.to_owned(),
            auth,
            dir: dir.to_owned(),
        })
    }

    fn tracking_ref(&self) -> String {
        format!("refs/remotes/origin/{}", self.branch)
    }

    /// Options for every fetch: this remote's credentials, no tags.
    fn fetch_options(&self) -> git2::FetchOptions<'_> {
        let mut opts = git2::FetchOptions::new();
        opts.remote_callbacks(self.auth.callbacks(&self.remote));
        opts.download_tags(git2::AutotagOption::None);
        // Nothing reads FETCH_HEAD; writing it is a file per fetch in the retry loop.
        opts.update_fetchhead(false);
        opts
    }

    /// Fetch the branch; returns the remote head.
    pub fn fetch(&self) -> Result<Oid, GitError> {
        let mut remote = self
            .repo
            .find_remote("origin")
            .map_err(git_err("find origin"))?;
        let mut opts = self.fetch_options();
        let spec = format!("+refs/heads/{0}:refs/remotes/origin/{0}", self.branch);
        remote
            .fetch(&[&spec], Some(&mut opts), None)
            .map_err(git_err(format!(
                "fetch {} from {}",
                self.branch,
                crate::secret::display_url(&self.url)
            )))?;
        self.head()
    }

    /// The last fetched remote head.
    pub fn head(&self) -> Result<Oid, GitError> {
        match self.repo.refname_to_id(&self.tracking_ref()) {
            Ok(id) => Ok(id),
            Err(e) if e.code() == git2::ErrorCode::NotFound => {
                Err(GitError::NoBranch(self.branch.clone()))
            }
            Err(e) => Err(git_err("read the fetched head")(e)),
        }
    }

    /// A view of `commit`'s tree.
    pub fn snapshot(&self, commit: Oid) -> Result<Snapshot<'_>, GitError> {
        let c = self
            .repo
            .find_commit(commit)
            .map_err(git_err("find the head commit"))?;
        let tree = c.tree().map_err(git_err("read the head tree"))?;
        Ok(Snapshot {
            repo: &self.repo,
            tree,
            commit,
        })
    }

    /// Fetch, let `plan` decide the edits on the fresh head, commit them and push — never forced.
    /// On a rejected push the whole thing repeats on the new head, so another writer's commit is
    /// kept and tagflow's intended values are applied on top of it; after a short jittered pause,
    /// for up to 15 s (`push::retry_delay`).
    ///
    /// `known`: a head fetched a moment ago (the cycle's own fetch), planned on without fetching
    /// again, so an idle cycle costs one fetch, not two. Had the branch moved since, the push is
    /// rejected and the next attempt fetches, as after any other race.
    ///
    /// The retry loop is fetch (the branch alone, no tags), plan and commit in memory on the
    /// fetched tree (a bare repo: no checkout), push: the window in which another writer's push
    /// makes tagflow's lose is the fetch's round trips plus the push's. See
    /// tests/race_writer.rs for where that time goes.
    pub fn commit_and_push<E: std::error::Error + 'static>(
        &self,
        git: &GitConfig,
        known: Option<Oid>,
        mut plan: impl FnMut(&Snapshot<'_>) -> Result<Option<Prepared>, E>,
    ) -> Result<Pushed, PushError<E>> {
        let started = std::time::Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let round = std::time::Instant::now();
            let head = match known.filter(|_| attempt == 1) {
                Some(head) => head,
                None => self.fetch()?,
            };
            let fetched = round.elapsed();
            let snap = self.snapshot(head)?;
            let Some(prepared) = plan(&snap).map_err(PushError::Plan)? else {
                return Ok(Pushed::Unchanged { head });
            };
            let Some(commit) = self.build_commit(&snap, git, &prepared)? else {
                return Ok(Pushed::Unchanged { head });
            };
            let planned = round.elapsed();
            let result = self.push(
                &format!("refs/heads/{}", self.branch),
                commit,
                Some(snap.commit),
            )?;
            tracing::debug!(
                attempt,
                fetch_ms = ms(fetched),
                plan_ms = ms(planned - fetched),
                push_ms = ms(round.elapsed() - planned),
                accepted = matches!(result, PushResult::Accepted),
                "commit attempt"
            );
            match result {
                PushResult::Accepted => {
                    self.repo
                        .reference(&self.tracking_ref(), commit, true, "tagflow push")
                        .map_err(git_err("record the pushed head"))?;
                    return Ok(Pushed::Committed {
                        commit,
                        attempts: attempt,
                        prepared,
                    });
                }
                PushResult::Rejected(why) => {
                    let Some(pause) = retry_delay(attempt, started.elapsed(), fastrand::f64())
                    else {
                        return Err(GitError::Contended(attempt).into());
                    };
                    // Up to 100 rounds in a sustained race: the first and every tenth at info.
                    if attempt % 10 == 1 {
                        tracing::info!(attempt, reason = %why, "push rejected: the branch moved; re-applying on the new head");
                    } else {
                        tracing::debug!(attempt, reason = %why, "push rejected: the branch moved; re-applying on the new head");
                    }
                    std::thread::sleep(pause);
                }
            }
        }
    }

    fn build_commit(
        &self,
        snap: &Snapshot<'_>,
        git: &GitConfig,
        p: &Prepared,
    ) -> Result<Option<Oid>, GitError> {
        let mut builder = git2::build::TreeUpdateBuilder::new();
        for e in &p.edits {
            let blob = self
                .repo
                .blob(&e.content)
                .map_err(git_err(format!("store {}", e.path)))?;
            builder.upsert(e.path.as_str(), blob, snap.mode_of(&e.path));
        }
        let tree_id = builder
            .create_updated(&self.repo, &snap.tree)
            .map_err(git_err("build the new tree"))?;
        if tree_id == snap.tree.id() {
            return Ok(None);
        }
        let tree = self
            .repo
            .find_tree(tree_id)
            .map_err(git_err("find the new tree"))?;
        let parent = self
            .repo
            .find_commit(snap.commit)
            .map_err(git_err("find the parent commit"))?;
        self.create_commit(git, &p.message, &tree, &[&parent])
            .map(Some)
    }

    /// Write a commit object (on no ref) by `git.author`, signed when `git.signing` is set.
    fn create_commit(
        &self,
        git: &GitConfig,
        message: &str,
        tree: &git2::Tree<'_>,
        parents: &[&git2::Commit<'_>],
    ) -> Result<Oid, GitError> {
        let sig = signature(&git.author)?;
        let Some(signing) = &git.signing else {
            return self
                .repo
                .commit(None, &sig, &sig, message, tree, parents)
                .map_err(git_err("create the commit"));
        };
        let buffer = self
            .repo
            .commit_create_buffer(&sig, &sig, message, tree, parents)
            .map_err(git_err("create the commit buffer"))?;
        let signature = sign::sign(signing, &buffer)?;
        let content = std::str::from_utf8(&buffer)
            .map_err(|e| GitError::Setup(format!("the commit buffer is not UTF-8: {e}")))?;
        self.repo
            .commit_signed(content, &signature, Some("gpgsig"))
            .map_err(git_err("create the signed commit"))
    }

    /// Whether `rev` (a full or abbreviated sha another system reports, e.g. Flux) names
    /// `commit` or a descendant of it in the fetched history. Unknown revisions are `false`.
    pub fn contains(&self, rev: &str, commit: &str) -> bool {
        let (Ok(rev), Ok(commit)) = (
            self.repo
                .revparse_single(rev)
                .and_then(|o| o.peel_to_commit()),
            Oid::from_str(commit),
        ) else {
            return false;
        };
        rev.id() == commit
            || self
                .repo
                .graph_descendant_of(rev.id(), commit)
                .unwrap_or(false)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn signature(author: &Author) -> Result<Signature<'static>, GitError> {
    Signature::now(&author.name, &author.email).map_err(git_err("make the commit signature"))
}

/// First 7 hex digits of a commit id.
pub fn short(id: Oid) -> String {
    id.to_string()[..7].to_owned()
}

/// Why `--git-ca-file` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    /// Unreadable.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No certificate in it (a key, a DER file, an empty file).
    #[error("{0} holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)")]
    NoCertificate(String),
    /// libgit2 refused it.
    #[error("libgit2 cannot load {path}: {message}")]
    Load {
        /// The file.
        path: String,
        /// libgit2's message.
        message: String,
    },
}

/// Trust the CA certificates in the PEM file `path` for https:// remotes, besides the system
/// roots. libgit2 keeps one TLS context per process, so this is global: call it once at
/// startup, before any transfer.
#[allow(unsafe_code)]
pub fn trust_ca_file(path: &std::path::Path) -> Result<(), CaFileError> {
    let shown = path.display().to_string();
    let pem = std::fs::read(path).map_err(|source| CaFileError::Read {
        path: shown.clone(),
        source,
    })?;
    let has_cert = pem
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
        && reqwest::Certificate::from_pem_bundle(&pem).is_ok_and(|c| !c.is_empty());
    if !has_cert {
        return Err(CaFileError::NoCertificate(shown));
    }
    // SAFETY: this stores a path in libgit2's global TLS settings; main calls it once at startup
    // before any git operation, so no transfer reads the settings concurrently.
    unsafe { git2::opts::set_ssl_cert_file(path) }.map_err(|e| CaFileError::Load {
        path: shown,
        message: e.message().to_owned(),
    })?;
    *EXTRA_ROOTS.write().unwrap_or_else(|e| e.into_inner()) = pem;
    Ok(())
}

/// The PEM of `--git-ca-file`, for the HTTP clients that talk to the same hosts (the forge API
/// of a self-hosted GitLab or Gitea sits behind the same private CA as its git remotes).
static EXTRA_ROOTS: std::sync::RwLock<Vec<u8>> = std::sync::RwLock::new(Vec::new());

/// The certificates [`trust_ca_file`] added, for a reqwest client (none without the flag).
pub fn extra_roots() -> Vec<reqwest::Certificate> {
    let pem = EXTRA_ROOTS.read().unwrap_or_else(|e| e.into_inner());
    if pem.is_empty() {
        return Vec::new();
    }
    // trust_ca_file checked that the bundle parses.
    reqwest::Certificate::from_pem_bundle(&pem).unwrap_or_default()
}

/// Whether libgit2 sends `Expect: 100-continue` on git's smart-HTTP POSTs; the first call wins
/// (`main` may call it before any work, [`Checkout::open`] calls it with `true`).
///
/// libgit2 writes a POST's headers and its body in two `send`s on a socket without
/// `TCP_NODELAY`, so Nagle holds the body until the headers are acknowledged, and a server with
/// nothing to say yet delays that acknowledgement (40 ms on Linux): every fetch round and every
/// push paid ~40–55 ms doing nothing, which alone made tagflow's fetch-to-push window longer
/// than the period of a writer pushing flat out (tests/race_writer.rs). With the header the
/// server answers `100 Continue` first, that answer acknowledges the headers and the body goes
/// out at once: one round trip instead of a delayed-ACK timer. HTTP/1.1 servers and proxies
/// must answer it (git's own client sends it for large pushes); a proxy that ignored it would
/// stall each POST until the I/O timeout.
///
/// `nodelay`: libgit2 opens its sockets with tagflow's stream, which sets `TCP_NODELAY`, so the
/// small writes inside a POST's chunked body (a push's pack) do not wait for delayed ACKs
/// either (`gitops::socket`).
#[allow(unsafe_code)]
pub fn init_http(expect_continue: bool, nodelay: bool) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if nodelay && let Err(e) = socket::register() {
            tracing::warn!(error = %e, "git sockets stay libgit2's own (without TCP_NODELAY)");
        }
        // SAFETY: this stores an integer in libgit2's global settings. The `Once` runs it before
        // the first `Checkout` exists, and every transfer goes through a `Checkout`, so no
        // transfer reads the setting concurrently.
        unsafe {
            libgit2_sys::git_libgit2_opts(
                libgit2_sys::GIT_OPT_ENABLE_HTTP_EXPECT_CONTINUE as std::ffi::c_int,
                std::ffi::c_int::from(expect_continue),
            );
        }
    });
}

/// Set libgit2's network timeouts once, before any transfer.
#[allow(unsafe_code)]
pub fn init_timeouts(connect: Duration, io: Duration) {
    let ms = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
    socket::set_timeouts(connect, io);
    // SAFETY: these only store an integer in libgit2's global settings; callers run this once at
    // startup before any git operation, so no transfer reads them concurrently.
    unsafe {
        let _ = git2::opts::set_server_connect_timeout_in_milliseconds(ms(connect));
        let _ = git2::opts::set_server_timeout_in_milliseconds(ms(io));
    }
}
