//! The documented PR/MR endpoints of each forge, as requests and answers (pure: no IO).
//!
//! | what | GitHub (REST v3) | GitLab (REST v4) | Gitea (REST v1) |
//! |---|---|---|---|
//! | find the open one | `GET /repos/O/R/pulls?state=open&head=O:B&base=T` | `GET /projects/P/merge_requests?state=opened&source_branch=B&target_branch=T` | `GET /repos/O/R/pulls?state=open&limit=50&page=N`, matched on `head.ref`/`base.ref` |
//! | find one closed unmerged | the same with `state=closed`, `merged_at: null` | `state=closed` (merged ones are `merged`) | `state=closed`, `merged: false` |
//! | open | `POST /repos/O/R/pulls` `{title, head, base, body}` | `POST /projects/P/merge_requests` `{source_branch, target_branch, title, description, labels}` | `POST /repos/O/R/pulls` `{title, head, base, body, labels: [ids]}` |
//! | labels | `POST /repos/O/R/issues/N/labels` `{labels}` | in the create call (comma list) | ids from `GET /repos/O/R/labels` |
//! | update | `PATCH /repos/O/R/pulls/N` `{title, body}` | `PUT /projects/P/merge_requests/N` `{title, description}` | `PATCH /repos/O/R/pulls/N` `{title, body}` |
//! | close | `PATCH …/pulls/N` `{state: closed}` | `PUT …/merge_requests/N` `{state_event: close}` | `PATCH …/pulls/N` `{state: closed}` |

use serde_json::{Value, json};

use crate::config::ForgeProvider;

/// HTTP methods the forges need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PATCH.
    Patch,
    /// PUT.
    Put,
}

/// One request: method, path (with query) under the API base, JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// Method.
    pub method: Method,
    /// Path and query, starting with `/`.
    pub path: String,
    /// JSON body, if any.
    pub body: Option<Value>,
}

/// An open PR/MR as a list answer shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Number (GitLab: `iid`).
    pub number: u64,
    /// Web page, for people.
    pub url: String,
    /// Title.
    pub title: String,
    /// Body (GitLab: `description`).
    pub body: String,
}

/// Gitea's list page size.
pub const PAGE: usize = 50;
/// Gitea pages read at most when looking for a branch's PR (250 open PRs).
pub const MAX_PAGES: usize = 5;

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Each `/`-separated segment percent-encoded, for `owner/repo` in a path.
fn enc_path(s: &str) -> String {
    s.split('/').map(enc).collect::<Vec<_>>().join("/")
}

/// Where a provider's PR endpoints live for `project`.
fn root(p: ForgeProvider, project: &str) -> String {
    match p {
        ForgeProvider::Github | ForgeProvider::Gitea => format!("/repos/{}", enc_path(project)),
        // GitLab takes the full path as one URL-encoded id.
        ForgeProvider::Gitlab => format!("/projects/{}", enc(project)),
    }
}

/// Which PRs a list asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listed {
    /// Open ones.
    Open,
    /// Closed ones (GitHub and Gitea include merged ones; [`parse_list`] leaves them out).
    Closed,
}

/// The request listing `state` PRs from `branch` into `base` (Gitea: page `page`, 1-based).
pub fn list(
    p: ForgeProvider,
    project: &str,
    (branch, base): (&str, &str),
    state: Listed,
    page: usize,
) -> Call {
    let r = root(p, project);
    let state = match (p, state) {
        (_, Listed::Closed) => "closed",
        (ForgeProvider::Gitlab, Listed::Open) => "opened",
        (_, Listed::Open) => "open",
    };
    let path = match p {
        ForgeProvider::Github => {
            let owner = project.split('/').next().unwrap_or(project);
            format!(
                "{r}/pulls?state={state}&head={}&base={}",
                enc(&format!("{owner}:{branch}")),
                enc(base)
            )
        }
        ForgeProvider::Gitlab => format!(
            "{r}/merge_requests?state={state}&source_branch={}&target_branch={}",
            enc(branch),
            enc(base)
        ),
        ForgeProvider::Gitea => format!("{r}/pulls?state={state}&limit={PAGE}&page={page}"),
    };
    Call {
        method: Method::Get,
        path,
        body: None,
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

/// Whether a list entry was merged (GitHub lists `merged_at`, Gitea `merged`; GitLab lists a
/// merged MR as `state: merged`, never among closed ones).
fn merged(it: &Value) -> bool {
    it.get("merged").and_then(Value::as_bool) == Some(true)
        || it.get("merged_at").is_some_and(|m| !m.is_null())
        || str_at(it, &["state"]) == Some("merged")
}

/// The PRs from `branch` into `base` in a list answer that were not merged (all of an open
/// list; the ones closed without merging of a closed list), and how many entries the page had.
pub fn parse_list(
    p: ForgeProvider,
    answer: &Value,
    branch: &str,
    base: &str,
) -> (Vec<Found>, usize) {
    let items = answer.as_array().map(Vec::as_slice).unwrap_or_default();
    let found = items.iter().filter(|it| !merged(it)).filter_map(|it| {
        let (head, target) = match p {
            ForgeProvider::Gitlab => (
                str_at(it, &["source_branch"]),
                str_at(it, &["target_branch"]),
            ),
            _ => (str_at(it, &["head", "ref"]), str_at(it, &["base", "ref"])),
        };
        // GitHub filters server-side; checking again costs nothing and guards a stand-in.
        if head != Some(branch) || target != Some(base) {
            return None;
        }
        created(p, it)
    });
    (found.collect(), items.len())
}

/// The PR a create (or list) answer describes.
pub fn created(p: ForgeProvider, it: &Value) -> Option<Found> {
    let (num, url, body) = match p {
        ForgeProvider::Gitlab => ("iid", "web_url", "description"),
        _ => ("number", "html_url", "body"),
    };
    Some(Found {
        number: it.get(num)?.as_u64()?,
        url: str_at(it, &[url]).unwrap_or_default().to_owned(),
        title: str_at(it, &["title"]).unwrap_or_default().to_owned(),
        body: str_at(it, &[body]).unwrap_or_default().to_owned(),
    })
}

/// The request opening a PR from `branch` into `base`. `labels`: names (GitHub, GitLab) —
/// GitHub's are added by [`add_labels`] after — or, for Gitea, the ids from [`label_ids`].
pub fn create(
    p: ForgeProvider,
    project: &str,
    (branch, base): (&str, &str),
    (title, body): (&str, &str),
    labels: &[String],
    gitea_ids: &[i64],
) -> Call {
    let r = root(p, project);
    let (path, body) = match p {
        ForgeProvider::Github => (
            format!("{r}/pulls"),
            json!({"title": title, "head": branch, "base": base, "body": body}),
        ),
        ForgeProvider::Gitlab => {
            let mut b = json!({"source_branch": branch, "target_branch": base, "title": title, "description": body});
            if !labels.is_empty() {
                b["labels"] = Value::String(labels.join(","));
            }
            (format!("{r}/merge_requests"), b)
        }
        ForgeProvider::Gitea => {
            let mut b = json!({"title": title, "head": branch, "base": base, "body": body});
            if !gitea_ids.is_empty() {
                b["labels"] = json!(gitea_ids);
            }
            (format!("{r}/pulls"), b)
        }
    };
    Call {
        method: Method::Post,
        path,
        body: Some(body),
    }
}

/// GitHub only: the request putting `labels` on PR `number` (PRs are issues there).
pub fn add_labels(p: ForgeProvider, project: &str, number: u64, labels: &[String]) -> Option<Call> {
    (p == ForgeProvider::Github && !labels.is_empty()).then(|| Call {
        method: Method::Post,
        path: format!("{}/issues/{number}/labels", root(p, project)),
        body: Some(json!({"labels": labels})),
    })
}

/// Gitea only: the request listing the repository's labels (to turn names into ids).
pub fn list_labels(p: ForgeProvider, project: &str) -> Option<Call> {
    (p == ForgeProvider::Gitea).then(|| Call {
        method: Method::Get,
        path: format!("{}/labels?limit={PAGE}", root(p, project)),
        body: None,
    })
}

/// Gitea label ids for `names` in a labels answer, and the names it does not have.
pub fn label_ids(answer: &Value, names: &[String]) -> (Vec<i64>, Vec<String>) {
    let items = answer.as_array().map(Vec::as_slice).unwrap_or_default();
    let mut ids = Vec::new();
    let mut missing = Vec::new();
    for n in names {
        match items
            .iter()
            .find(|l| str_at(l, &["name"]) == Some(n.as_str()))
            .and_then(|l| l.get("id")?.as_i64())
        {
            Some(id) => ids.push(id),
            None => missing.push(n.clone()),
        }
    }
    (ids, missing)
}

fn edit(p: ForgeProvider, project: &str, number: u64, body: Value) -> Call {
    let r = root(p, project);
    match p {
        ForgeProvider::Gitlab => Call {
            method: Method::Put,
            path: format!("{r}/merge_requests/{number}"),
            body: Some(body),
        },
        _ => Call {
            method: Method::Patch,
            path: format!("{r}/pulls/{number}"),
            body: Some(body),
        },
    }
}

fn text_body(p: ForgeProvider, title: &str, body: &str) -> Value {
    match p {
        ForgeProvider::Gitlab => json!({"title": title, "description": body}),
        _ => json!({"title": title, "body": body}),
    }
}

/// The request setting PR `number`'s title and body.
pub fn update(p: ForgeProvider, project: &str, number: u64, title: &str, body: &str) -> Call {
    edit(p, project, number, text_body(p, title, body))
}

/// The request closing PR `number`, its body replaced by `body` (saying why).
pub fn close(p: ForgeProvider, project: &str, number: u64, title: &str, body: &str) -> Call {
    let mut b = text_body(p, title, body);
    match p {
        ForgeProvider::Gitlab => b["state_event"] = Value::String("close".into()),
        _ => b["state"] = Value::String("closed".into()),
    }
    edit(p, project, number, b)
}

/// `owner/repo` from the config repo's clone URL (`https://host/org/config.git`,
/// `ssh://git@host/org/config.git`, `git@host:org/config.git`).
pub fn project_of(repo_url: &str) -> Option<String> {
    let path = match url::Url::parse(repo_url) {
        Ok(u) if u.has_host() => u.path().to_owned(),
        _ => repo_url.split_once(':')?.1.to_owned(),
    };
    let p = path.trim_matches('/');
    let p = p.strip_suffix(".git").unwrap_or(p);
    (p.contains('/') && !p.split('/').any(str::is_empty)).then(|| p.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ForgeProvider::{Gitea, Github, Gitlab};

    #[test]
    fn requests_follow_each_forges_documented_endpoints() {
        let b = "tagflow/prod-app";
        assert_eq!(
            list(Github, "org/config", (b, "main"), Listed::Open, 1).path,
            "/repos/org/config/pulls?state=open&head=org%3Atagflow%2Fprod-app&base=main"
        );
        assert_eq!(
            list(Gitlab, "group/sub/config", (b, "main"), Listed::Open, 1).path,
            "/projects/group%2Fsub%2Fconfig/merge_requests?state=opened&source_branch=tagflow%2Fprod-app&target_branch=main"
        );
        assert_eq!(
            list(Gitea, "org/config", (b, "main"), Listed::Open, 2).path,
            "/repos/org/config/pulls?state=open&limit=50&page=2"
        );
        let labels = vec!["tagflow".to_owned(), "prod".to_owned()];
        let c = create(
            Gitlab,
            "org/config",
            (b, "main"),
            ("t", "body"),
            &labels,
            &[],
        );
        assert_eq!(
            (c.method, c.path.as_str()),
            (Method::Post, "/projects/org%2Fconfig/merge_requests")
        );
        assert_eq!(c.body.expect("body")["labels"], "tagflow,prod");
        let c = create(
            Gitea,
            "org/config",
            (b, "main"),
            ("t", "body"),
            &labels,
            &[3, 4],
        );
        assert_eq!(c.body.expect("body")["labels"], json!([3, 4]));
        let c = create(
            Github,
            "org/config",
            (b, "main"),
            ("t", "body"),
            &labels,
            &[],
        );
        assert!(c.body.expect("body").get("labels").is_none(), "added after");
        assert_eq!(
            add_labels(Github, "org/config", 7, &labels)
                .expect("github")
                .path,
            "/repos/org/config/issues/7/labels"
        );
        assert_eq!(add_labels(Gitlab, "org/config", 7, &labels), None);
        let c = close(Gitlab, "org/config", 7, "t", "superseded");
        assert_eq!(
            (c.method, c.path.as_str()),
            (Method::Put, "/projects/org%2Fconfig/merge_requests/7")
        );
        assert_eq!(c.body.expect("body")["state_event"], "close");
        let c = close(Github, "org/config", 7, "t", "superseded");
        assert_eq!(
            (c.method, c.path.as_str()),
            (Method::Patch, "/repos/org/config/pulls/7")
        );
        assert_eq!(c.body.expect("body")["state"], "closed");
    }

    #[test]
    fn answers_are_read_per_forge() {
        let gh = json!([{"number": 5, "html_url": "https://github.com/org/config/pull/5", "title": "t", "body": "b", "head": {"ref": "x"}, "base": {"ref": "main"}}]);
        let numbers = |v: Vec<Found>| v.into_iter().map(|f| f.number).collect::<Vec<_>>();
        assert_eq!(numbers(parse_list(Github, &gh, "x", "main").0), [5]);
        assert_eq!(parse_list(Github, &gh, "y", "main").0, []);
        let gl = json!([{"iid": 9, "web_url": "u", "title": "t", "description": "d", "source_branch": "x", "target_branch": "main"}]);
        let f = parse_list(Gitlab, &gl, "x", "main").0.remove(0);
        assert_eq!((f.number, f.body.as_str()), (9, "d"));
        // A closed list holds merged ones too: each forge marks them its own way.
        let closed = json!([
            {"number": 1, "head": {"ref": "x"}, "base": {"ref": "main"}, "merged_at": "2026-01-01T00:00:00Z"},
            {"number": 2, "head": {"ref": "x"}, "base": {"ref": "main"}, "merged": true},
            {"number": 3, "head": {"ref": "x"}, "base": {"ref": "main"}, "merged_at": null, "merged": false},
        ]);
        assert_eq!(numbers(parse_list(Github, &closed, "x", "main").0), [3]);
        let gl =
            json!([{"iid": 4, "state": "merged", "source_branch": "x", "target_branch": "main"}]);
        assert_eq!(parse_list(Gitlab, &gl, "x", "main").0, []);
        let (ids, missing) = label_ids(
            &json!([{"id": 3, "name": "tagflow"}]),
            &["tagflow".into(), "nope".into()],
        );
        assert_eq!((ids, missing), (vec![3], vec!["nope".to_owned()]));
    }

    #[test]
    fn the_project_comes_from_the_clone_url() {
        for (url, want) in [
            ("https://github.com/org/config.git", Some("org/config")),
            (
                "ssh://git@gitlab.example.com/group/sub/config.git",
                Some("group/sub/config"),
            ),
            ("git@github.com:org/config.git", Some("org/config")),
            ("https://host/config.git", None),
        ] {
            assert_eq!(project_of(url).as_deref(), want, "{url}");
        }
    }
}
