//! A stand-in forge: the GitHub, GitLab and Gitea pull-request endpoints tagflow uses, served
//! in-process with their documented request and answer shapes, keeping the PRs in memory.
//! The only stand-in of the harness (no forge runs on this machine); every request is recorded
//! so tests assert on what tagflow sent.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::http::{Request, Response, Scripted};

/// Which forge's API the stand-in speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// GitHub REST v3 (`/repos/O/R/pulls`, `Authorization: Bearer`).
    Github,
    /// GitLab REST v4 (`/projects/ID/merge_requests`, `PRIVATE-TOKEN`).
    Gitlab,
    /// Gitea REST v1 (`/repos/O/R/pulls`, `Authorization: token`, label ids).
    Gitea,
}

/// One pull/merge request as the stand-in keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pr {
    /// Number (GitLab: iid).
    pub number: u64,
    /// Source branch.
    pub head: String,
    /// Target branch.
    pub base: String,
    /// Title.
    pub title: String,
    /// Body (GitLab: description).
    pub body: String,
    /// `open`, `closed` or `merged`.
    pub state: String,
    /// Label names.
    pub labels: Vec<String>,
}

/// Labels the Gitea stand-in knows, by id.
pub const GITEA_LABELS: &[(i64, &str)] = &[(11, "tagflow"), (12, "prod")];

/// The stand-in forge; stops on drop.
pub struct Forge {
    /// The HTTP server (its base URL is the API base).
    pub server: Scripted,
    /// The flavour.
    pub flavor: Flavor,
    prs: Arc<Mutex<Vec<Pr>>>,
}

impl Forge {
    /// Serve `flavor`'s API for project `project` (`owner/repo`), accepting only `token`.
    pub fn start(flavor: Flavor, project: &str, token: &str) -> Forge {
        let prs: Arc<Mutex<Vec<Pr>>> = Arc::default();
        let state = prs.clone();
        let project = project.to_owned();
        let token = token.to_owned();
        let server = Scripted::start(move |req| {
            let mut prs = state.lock().unwrap();
            handle(flavor, &project, &token, req, &mut prs)
        });
        Forge {
            server,
            flavor,
            prs,
        }
    }

    /// The API base URL to configure as `apiUrl`.
    pub fn api_url(&self) -> String {
        self.server.base_url.clone()
    }

    /// Every PR, in creation order.
    pub fn prs(&self) -> Vec<Pr> {
        self.prs.lock().unwrap().clone()
    }

    /// The open PRs.
    pub fn open(&self) -> Vec<Pr> {
        self.prs()
            .into_iter()
            .filter(|p| p.state == "open")
            .collect()
    }

    /// Mark PR `number` merged (the test moves the target branch itself).
    pub fn mark_merged(&self, number: u64) {
        for p in self.prs.lock().unwrap().iter_mut() {
            if p.number == number {
                p.state = "merged".into();
            }
        }
    }

    /// Close PR `number` without merging, as a person does in the forge's UI.
    pub fn close_by_hand(&self, number: u64) {
        for p in self.prs.lock().unwrap().iter_mut() {
            if p.number == number {
                p.state = "closed".into();
            }
        }
    }

    /// Requests received, as `METHOD path?query`.
    pub fn calls(&self) -> Vec<String> {
        self.server
            .requests()
            .iter()
            .map(|r| format!("{} {}", r.method, r.uri()))
            .collect()
    }

    /// Requests that change something (not GET).
    pub fn writes(&self) -> Vec<Request> {
        self.server
            .requests()
            .into_iter()
            .filter(|r| r.method != "GET")
            .collect()
    }
}

fn authorized(flavor: Flavor, token: &str, req: &Request) -> bool {
    match flavor {
        Flavor::Github => req.header("authorization") == Some(&format!("Bearer {token}")),
        Flavor::Gitlab => req.header("private-token") == Some(token),
        Flavor::Gitea => req.header("authorization") == Some(&format!("token {token}")),
    }
}

fn view(flavor: Flavor, p: &Pr, base_url: &str) -> Value {
    match flavor {
        Flavor::Gitlab => json!({
            "iid": p.number, "id": 1000 + p.number,
            "web_url": format!("{base_url}/-/merge_requests/{}", p.number),
            "title": p.title, "description": p.body,
            "source_branch": p.head, "target_branch": p.base,
            "state": if p.state == "open" { "opened" } else { p.state.as_str() },
            "labels": p.labels,
        }),
        _ => json!({
            "number": p.number,
            "html_url": format!("{base_url}/pull/{}", p.number),
            "title": p.title, "body": p.body,
            "head": {"ref": p.head}, "base": {"ref": p.base},
            "state": if p.state == "merged" { "closed" } else { p.state.as_str() },
            "merged": p.state == "merged",
            "merged_at": (p.state == "merged").then_some("2026-01-01T00:00:00Z"),
            "labels": p.labels.iter().map(|l| json!({"name": l})).collect::<Vec<_>>(),
        }),
    }
}

fn handle(
    flavor: Flavor,
    project: &str,
    token: &str,
    req: &Request,
    prs: &mut Vec<Pr>,
) -> Response {
    if !authorized(flavor, token, req) {
        return Response::json(401, &json!({"message": "Bad credentials"}));
    }
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let s = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let host = req.header("host").unwrap_or("forge");
    let base_url = format!("http://{host}/{project}");
    let root = match flavor {
        Flavor::Gitlab => format!("/projects/{}", project.replace('/', "%2F")),
        _ => format!("/repos/{project}"),
    };
    // Also served under /api, where a TLS proxy in front of it puts the API (GitHttp).
    let path = req.path.strip_prefix("/api").unwrap_or(&req.path);
    let Some(rest) = path.strip_prefix(&root) else {
        return Response::json(404, &json!({"message": "Not Found"}));
    };
    let coll = if flavor == Flavor::Gitlab {
        "/merge_requests"
    } else {
        "/pulls"
    };
    let number = rest
        .strip_prefix(&format!("{coll}/"))
        .and_then(|n| n.parse::<u64>().ok());
    match (req.method.as_str(), rest, number) {
        ("GET", r, None) if r == coll => {
            let q = |k: &str| req.query_param(k);
            // As documented: GitHub and Gitea list open ones unless asked (closed includes
            // merged); GitLab lists all unless asked (opened, closed, merged).
            let state = q("state");
            let open: Vec<&Pr> = prs
                .iter()
                .filter(|p| match (flavor, state.as_deref()) {
                    (Flavor::Gitlab, None) | (_, Some("all")) => true,
                    (Flavor::Gitlab, Some("opened")) => p.state == "open",
                    (Flavor::Gitlab, Some(s)) => p.state == s,
                    (_, None | Some("open")) => p.state == "open",
                    (_, Some("closed")) => p.state != "open",
                    _ => false,
                })
                .collect();
            let list: Vec<Value> = match flavor {
                Flavor::Github => {
                    let head = q("head").unwrap_or_default();
                    open.iter()
                        .filter(|p| head.is_empty() || head.ends_with(&format!(":{}", p.head)))
                        .filter(|p| q("base").is_none_or(|b| b == p.base))
                        .map(|p| view(flavor, p, &base_url))
                        .collect()
                }
                Flavor::Gitlab => open
                    .iter()
                    .filter(|p| q("source_branch").is_none_or(|b| b == p.head))
                    .filter(|p| q("target_branch").is_none_or(|b| b == p.base))
                    .map(|p| view(flavor, p, &base_url))
                    .collect(),
                Flavor::Gitea => {
                    let limit: usize = q("limit").and_then(|l| l.parse().ok()).unwrap_or(30);
                    let page: usize = q("page").and_then(|l| l.parse().ok()).unwrap_or(1);
                    open.iter()
                        .skip((page.max(1) - 1) * limit)
                        .take(limit)
                        .map(|p| view(flavor, p, &base_url))
                        .collect()
                }
            };
            Response::json(200, &Value::Array(list))
        }
        ("GET", "/labels", None) if flavor == Flavor::Gitea => Response::json(
            200,
            &Value::Array(
                GITEA_LABELS
                    .iter()
                    .map(|(id, n)| json!({"id": id, "name": n}))
                    .collect(),
            ),
        ),
        ("POST", r, None) if r == coll => {
            let (head, base, text) = match flavor {
                Flavor::Gitlab => (s("source_branch"), s("target_branch"), s("description")),
                _ => (s("head"), s("base"), s("body")),
            };
            if prs
                .iter()
                .any(|p| p.state == "open" && p.head == head && p.base == base)
            {
                let status = if flavor == Flavor::Gitlab { 409 } else { 422 };
                return Response::json(
                    status,
                    &json!({"message": "A pull request already exists"}),
                );
            }
            let labels = match flavor {
                Flavor::Gitlab => s("labels")
                    .split(',')
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect(),
                Flavor::Gitea => body["labels"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|id| GITEA_LABELS.iter().find(|(i, _)| Some(*i) == id.as_i64()))
                    .map(|(_, n)| (*n).to_owned())
                    .collect(),
                Flavor::Github => Vec::new(),
            };
            let pr = Pr {
                number: prs.len() as u64 + 1,
                head,
                base,
                title: s("title"),
                body: text,
                state: "open".into(),
                labels,
            };
            let v = view(flavor, &pr, &base_url);
            prs.push(pr);
            Response::json(201, &v)
        }
        ("PATCH" | "PUT", _, Some(n)) => {
            let Some(p) = prs.iter_mut().find(|p| p.number == n) else {
                return Response::json(404, &json!({"message": "Not Found"}));
            };
            if body.get("title").is_some() {
                p.title = s("title");
            }
            let text_key = if flavor == Flavor::Gitlab {
                "description"
            } else {
                "body"
            };
            if body.get(text_key).is_some() {
                p.body = s(text_key);
            }
            if s("state") == "closed" || s("state_event") == "close" {
                p.state = "closed".into();
            }
            Response::json(200, &view(flavor, p, &base_url))
        }
        ("POST", r, None)
            if flavor == Flavor::Github && r.starts_with("/issues/") && r.ends_with("/labels") =>
        {
            let n: Option<u64> = r
                .trim_start_matches("/issues/")
                .trim_end_matches("/labels")
                .parse()
                .ok();
            let Some(p) = prs.iter_mut().find(|p| Some(p.number) == n) else {
                return Response::json(404, &json!({"message": "Not Found"}));
            };
            for l in body["labels"].as_array().into_iter().flatten() {
                if let Some(l) = l.as_str() {
                    p.labels.push(l.to_owned());
                }
            }
            let names: Vec<Value> = p.labels.iter().map(|l| json!({"name": l})).collect();
            Response::json(200, &Value::Array(names))
        }
        _ => Response::json(404, &json!({"message": "Not Found"})),
    }
}
