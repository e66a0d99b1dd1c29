//! The deployer stand-in for rollouts without a cluster: one small app per environment that
//! answers `app version=TAG` with the tag its values file names on the config repo's branch,
//! as it would once Flux or Argo CD deployed that commit.
//!
//! A thread follows the branch head; whenever it moves, each environment's app "runs" the
//! `image.tag` of `envs/<env>/patch.yaml`. An environment or a tag can be made to answer 503.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::{BareRepo, Response, Scripted};

/// What each environment's app runs and which answer 503.
#[derive(Debug, Default)]
struct Running {
    tags: Mutex<BTreeMap<String, String>>,
    broken_envs: Mutex<BTreeSet<String>>,
    broken_tags: Mutex<BTreeSet<String>>,
}

impl Running {
    fn answer(&self, env: &str) -> Response {
        let Some(tag) = self.tags.lock().unwrap().get(env).cloned() else {
            return Response::text(404, "no such environment\n");
        };
        if self.broken_envs.lock().unwrap().contains(env)
            || self.broken_tags.lock().unwrap().contains(&tag)
        {
            return Response::text(503, &format!("app version={tag}: unavailable\n"));
        }
        Response::text(200, &format!("app version={tag}\n"))
    }
}

/// The apps of some environments, deployed from a branch of a config repo. Stopped on drop.
pub struct DeployedApps {
    running: Arc<Running>,
    server: Scripted,
    envs: Vec<String>,
    stop: Arc<AtomicBool>,
    follower: Option<JoinHandle<()>>,
}

impl DeployedApps {
    /// Serve one app per environment of `envs` at `/<env>` (404 until deployed). The URLs are
    /// known now, so they can go into the config the repo is made with; then [`Self::follow`].
    pub fn start(envs: &[&str]) -> DeployedApps {
        let running = Arc::new(Running::default());
        let server = {
            let running = running.clone();
            Scripted::start(move |req| running.answer(req.path.trim_start_matches('/')))
        };
        DeployedApps {
            running,
            server,
            envs: envs.iter().map(|e| (*e).to_owned()).collect(),
            stop: Arc::new(AtomicBool::new(false)),
            follower: None,
        }
    }

    /// Deploy what `branch` of `repo` names, now and at every move of its head.
    pub fn follow(&mut self, repo: Arc<BareRepo>, branch: &str) {
        let (running, stop) = (self.running.clone(), self.stop.clone());
        let (branch, envs) = (branch.to_owned(), self.envs.clone());
        self.follower = Some(std::thread::spawn(move || {
            follow(&repo, &branch, &envs, &running, &stop)
        }));
    }

    /// The URL of `env`'s app.
    pub fn url(&self, env: &str) -> String {
        self.server.url(&format!("/{env}"))
    }

    /// The tag `env`'s app runs now, if deployed.
    pub fn running(&self, env: &str) -> Option<String> {
        self.running.tags.lock().unwrap().get(env).cloned()
    }

    /// Make `env`'s app answer 503 (`broken`) or answer again.
    pub fn set_env_broken(&self, env: &str, broken: bool) {
        let mut set = self.running.broken_envs.lock().unwrap();
        if broken {
            set.insert(env.to_owned());
        } else {
            set.remove(env);
        }
    }

    /// Make every app that runs `tag` answer 503 (a build that crashes on start).
    pub fn break_tag(&self, tag: &str) {
        self.running
            .broken_tags
            .lock()
            .unwrap()
            .insert(tag.to_owned());
    }
}

impl Drop for DeployedApps {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(f) = self.follower.take() {
            let _ = f.join();
        }
    }
}

fn follow(repo: &BareRepo, branch: &str, envs: &[String], running: &Running, stop: &AtomicBool) {
    let mut seen = String::new();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
        let Some(head) = repo.head(branch) else {
            continue;
        };
        if head == seen {
            continue;
        }
        for env in envs {
            if let Some(text) = repo.read(branch, &format!("envs/{env}/patch.yaml")) {
                running
                    .tags
                    .lock()
                    .unwrap()
                    .insert(env.clone(), tag_in(&text));
            }
        }
        seen = head;
    }
}

/// The `image.tag` value of a values file (quotes and a trailing marker comment removed).
pub fn tag_in(values: &str) -> String {
    values
        .lines()
        .find_map(|l| l.trim().strip_prefix("tag: "))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_default()
        .trim_matches('"')
        .to_owned()
}
