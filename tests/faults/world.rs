//! The fault suite's world: `tagflow run` (the binary) committing over git smart HTTP (real
//! lighttpd + git-http-backend) from a registry — a real docker-registry, or an in-process
//! stand-in switched into the answers no real server gives (5xx, 429, garbage, a stall) — and
//! an in-process Slack stand-in that counts what it accepted.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::Digest as _;
use testbed::{BareRepo, GitHttp, Registry, RegistryOpts, Response, Scripted};

use crate::common::{self, Local, Running};

/// How the stand-in registry answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Like a registry.
    Up,
    /// Every request answers this status.
    Status(u16),
    /// 429 with `Retry-After: 1`.
    TooMany,
    /// 200 with a body that is no JSON.
    Garbage,
    /// 200 whose body stops short of its Content-Length.
    Truncated,
    /// Answers after 8 s; the config's registry timeout is 2 s.
    Stall,
}

/// The in-process registry: `tags` of `team/app`, each its own tiny image.
pub struct Stand {
    pub server: Scripted,
    pub tags: Arc<Mutex<Vec<String>>>,
    pub mode: Arc<Mutex<Mode>>,
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

fn config_blob(tag: &str) -> String {
    format!(
        r#"{{"created":"2024-01-01T00:00:00Z","architecture":"amd64","os":"linux","config":{{"Labels":{{"tag":"{tag}"}}}}}}"#
    )
}

impl Stand {
    fn start() -> Stand {
        let tags = Arc::new(Mutex::new(Vec::<String>::new()));
        let mode = Arc::new(Mutex::new(Mode::Up));
        let (t, m) = (tags.clone(), mode.clone());
        let server = Scripted::start(move |req| {
            let tags = t.lock().expect("tags").clone();
            match *m.lock().expect("mode") {
                Mode::Up => {}
                Mode::Status(s) => return Response::text(s, "internal error"),
                Mode::TooMany => {
                    return Response::text(429, "slow down").header("Retry-After", "1");
                }
                Mode::Garbage => return Response::text(200, "<html>not json at all"),
                Mode::Truncated => {
                    return Response::json(
                        200,
                        &serde_json::json!({"name": "team/app", "tags": tags}),
                    )
                    .truncated();
                }
                Mode::Stall => {
                    return Response::json(200, &serde_json::json!({"tags": tags}))
                        .delayed(Duration::from_secs(8));
                }
            }
            if req.path.ends_with("/tags/list") {
                Response::json(200, &serde_json::json!({"name": "team/app", "tags": tags}))
            } else if let Some((_, tag)) = req.path.split_once("/manifests/") {
                let config = config_blob(tag);
                let body = serde_json::json!({
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config.as_bytes()), "size": config.len()},
                    "layers": []
                })
                .to_string();
                Response::text(200, &body)
                    .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                    .header("Docker-Content-Digest", &sha256(body.as_bytes()))
            } else if let Some((_, digest)) = req.path.split_once("/blobs/") {
                match tags
                    .iter()
                    .map(|t| config_blob(t))
                    .find(|c| sha256(c.as_bytes()) == digest)
                {
                    Some(c) => Response::text(200, &c),
                    None => Response::new(404),
                }
            } else {
                Response::new(404)
            }
        });
        Stand { server, tags, mode }
    }
}

/// Where the images come from.
#[allow(
    clippy::large_enum_variant,
    reason = "one per test world, never moved in a loop"
)]
pub enum Images {
    Stand(Stand),
    Real(Registry),
}

/// The Slack stand-in: answers 503 while `down`; keeps the bodies it accepted.
pub struct Slack {
    pub server: Scripted,
    pub down: Arc<AtomicBool>,
    accepted: Arc<Mutex<Vec<String>>>,
}

impl Slack {
    fn start() -> Slack {
        let down = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let (d, a) = (down.clone(), accepted.clone());
        let server = Scripted::start(move |req| {
            if d.load(Ordering::SeqCst) {
                return Response::text(503, "down");
            }
            a.lock().expect("accepted").push(req.body_text());
            Response::text(200, "ok")
        });
        Slack {
            server,
            down,
            accepted,
        }
    }

    /// Accepted posts containing `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.accepted
            .lock()
            .expect("accepted")
            .iter()
            .filter(|b| b.contains(needle))
            .count()
    }

    /// First-failure alerts accepted.
    pub fn alerts(&self) -> usize {
        self.count("a cycle failed")
    }

    /// "cycles succeed again" posts accepted.
    pub fn recoveries(&self) -> usize {
        self.count("cycles succeed again")
    }

    /// Everything accepted, for failure messages.
    pub fn all(&self) -> Vec<String> {
        self.accepted.lock().expect("accepted").clone()
    }
}

/// One config repo served over smart HTTP, its registry, Slack, and `tagflow run`.
pub struct World {
    pub local: Local,
    pub repo: BareRepo,
    pub git: GitHttp,
    pub images: Images,
    pub slack: Slack,
    pub run: Option<Running>,
    password_file: PathBuf,
}

/// The policy: numerical tags, the greatest wins.
const POLICY: &str = "{tags: '^[0-9]+$', order: numerical}";

impl World {
    /// A world whose registry is the stand-in (`real` false) or docker-registry.
    pub fn new(real: bool) -> World {
        Self::with(real, "1s", |_| String::new())
    }

    /// Like [`World::new`] with the cycle `interval` and `extra` config (made with the
    /// world's [`Local`]) appended.
    pub fn with(real: bool, interval: &str, extra: impl FnOnce(&Local) -> String) -> World {
        let local = Local::new();
        let slack = Slack::start();
        let (images, host, block) = if real {
            let reg = Registry::start(RegistryOpts::default());
            let block = common::registry_block(&reg, &local).replace("timeout: 10s", "timeout: 2s");
            let host = reg.host.clone();
            (Images::Real(reg), host, block)
        } else {
            let s = Stand::start();
            let host = s.server.base_url.trim_start_matches("http://").to_owned();
            let block =
                format!("registries:\n  - {{host: \"{host}\", insecure: true, timeout: 2s}}\n");
            (Images::Stand(s), host, block)
        };
        let hook = local.file("slack-url", &slack.server.url("/hook"));
        let extra = extra(&local);
        let cfg = format!(
            "interval: {interval}\n{block}images:\n  app:\n    repository: {host}/team/app\n    policy: {POLICY}\nenvironments:\n  dev:\n    file: envs/dev/patch.yaml\nnotify:\n  slack: {{webhookUrl: {{file: {}}}}}\n{extra}",
            hook.display()
        );
        let repo = BareRepo::new(&[
            ("config/tagflow.yaml", &cfg),
            (
                "envs/dev/patch.yaml",
                &common::dev_values(&format!("{host}/team/app")),
            ),
        ]);
        let git = GitHttp::start(&repo);
        let password_file = local.file("git-password", &format!("{}\n", git.password));
        World {
            local,
            repo,
            git,
            images,
            slack,
            run: None,
            password_file,
        }
    }

    /// Start `tagflow run` (over smart HTTP, password from a file) and wait until it is ready.
    pub fn start(&mut self) {
        let pw = common::p(&self.password_file);
        let run = Running::start(
            &self.git.url,
            &self.local,
            &[
                "--git-username",
                &self.git.username,
                "--git-password-file",
                &pw,
            ],
        );
        run.wait_ready();
        self.run = Some(run);
    }

    /// `kill -9` the running process, without a chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut r) = self.run.take()
            && let Some(mut c) = r.child.take()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn running(&self) -> &Running {
        self.run.as_ref().expect("tagflow run is running")
    }

    /// Logs of the running process.
    pub fn logs(&self) -> String {
        self.run.as_ref().map(Running::logs).unwrap_or_default()
    }

    /// A new tag of `team/app` appears in the registry.
    pub fn add_tag(&self, tag: &str) {
        match &self.images {
            Images::Stand(s) => s.tags.lock().expect("tags").push(tag.to_owned()),
            Images::Real(r) => {
                r.push_image("team/app", tag, common::T1, None);
            }
        }
    }

    /// Switch the stand-in registry's answers.
    pub fn set_mode(&self, mode: Mode) {
        match &self.images {
            Images::Stand(s) => *s.mode.lock().expect("mode") = mode,
            Images::Real(_) => panic!("the real registry has no modes"),
        }
    }

    pub fn real_registry(&mut self) -> &mut Registry {
        match &mut self.images {
            Images::Real(r) => r,
            Images::Stand(_) => panic!("not a real registry"),
        }
    }

    /// Cycles that ended `partial` or `failed`.
    pub fn bad_cycles(&self) -> u64 {
        cycles(self.running(), "partial") + cycles(self.running(), "failed")
    }

    /// Wait until `n` more cycles went bad than `from`.
    pub fn wait_bad_cycles(&self, from: u64, n: u64) {
        let done = common::eventually(Duration::from_secs(60), || {
            (self.bad_cycles() >= from + n).then_some(())
        });
        assert!(
            done.is_some(),
            "no {n} failed cycles; logs:\n{}",
            self.logs()
        );
    }

    /// tagflow commits setting dev to `tag`.
    pub fn committed(&self, tag: &str) -> usize {
        common::commits_setting(&self.repo, "dev", tag).len()
    }

    /// Wait until a commit sets `tag`.
    pub fn wait_committed(&self, tag: &str) {
        let done = common::eventually(Duration::from_secs(60), || {
            (self.committed(tag) > 0).then_some(())
        });
        assert!(
            done.is_some(),
            "{tag} never committed; logs:\n{}",
            self.logs()
        );
    }

    /// Wait until Slack accepted `n` posts containing `needle`.
    pub fn wait_slack(&self, needle: &str, n: usize) {
        let done = common::eventually(Duration::from_secs(60), || {
            (self.slack.count(needle) >= n).then_some(())
        });
        assert!(
            done.is_some(),
            "Slack never got {n} × {needle:?}: {:#?}\nlogs:\n{}",
            self.slack.all(),
            self.logs()
        );
    }

    /// No bad and no duplicate commit: every commit's values file parses with a valid tag, and
    /// no tag was set by two commits.
    pub fn check_history(&self) {
        let mut seen = std::collections::BTreeSet::new();
        for c in self.repo.log("main") {
            let text = testbed::git(
                &self.repo.path,
                &["show", &format!("{}:envs/dev/patch.yaml", c.sha)],
            );
            let doc = tagflow::yamlspan::parse(&text)
                .unwrap_or_else(|e| panic!("commit {} has a bad values file: {e}\n{text}", c.sha));
            let tag = doc
                .get(&["image", "tag"])
                .and_then(|n| n.as_str())
                .unwrap_or_default()
                .to_owned();
            assert!(
                tag == "a1b2c3d" || (!tag.is_empty() && tag.bytes().all(|b| b.is_ascii_digit())),
                "commit {} wrote tag {tag:?}",
                c.sha
            );
            for line in c
                .message
                .lines()
                .filter(|l| l.starts_with("Tagflow-Set: dev app "))
            {
                assert!(seen.insert(line.to_owned()), "set twice: {line}");
            }
        }
    }
}

/// `tagflow_cycles_total{result="…"}` (0 when absent).
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
