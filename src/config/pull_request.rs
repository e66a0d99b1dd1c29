//! Pull-request mode of an environment: `push.branch` sends tagflow's change to a branch of its
//! own instead of the target branch, `pullRequest` opens one PR/MR per such branch on a forge,
//! and `gate.approval: pullRequest` makes merging the promotion PR the approval. Types, the
//! branch template, and the checks (every problem with its line).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Config, Report};

/// `environments.<env>.push`: where tagflow's change for the environment goes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PushConfig {
    /// Branch template: `{env}` and `{image}` are replaced (`tagflow/{env}-{image}`). Without
    /// `{image}`, one branch carries all of the environment's images.
    pub branch: String,
}

/// `environments.<env>.pullRequest`: the forge that gets one PR/MR per pushed branch.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PullRequestConfig {
    /// Which forge API speaks.
    pub provider: ForgeProvider,
    /// Path of the mounted API token (read on the agent's machine, never from the repo).
    pub token_file: String,
    /// Labels put on every PR tagflow opens.
    #[serde(default)]
    pub labels: Vec<String>,
    /// API base URL: default `https://api.github.com` for GitHub; required for GitLab
    /// (`https://gitlab.example.com/api/v4`) and Gitea (`https://gitea.example.com/api/v1`).
    pub api_url: Option<String>,
    /// `owner/repo` (GitLab: the project's full path); default the config repo URL's path.
    pub project: Option<String>,
}

/// Forges whose PR/MR API tagflow speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ForgeProvider {
    /// GitHub (and GitHub Enterprise Server): REST v3 pulls.
    Github,
    /// GitLab: REST v4 merge requests.
    Gitlab,
    /// Gitea and Forgejo: REST v1 pulls.
    Gitea,
}

impl ForgeProvider {
    /// As written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Github => "github",
            Self::Gitlab => "gitlab",
            Self::Gitea => "gitea",
        }
    }
}

impl PullRequestConfig {
    /// The API base URL in force (the default for GitHub), without a trailing `/`.
    pub fn api_base(&self) -> Option<String> {
        let raw = match (&self.api_url, self.provider) {
            (Some(u), _) => u.clone(),
            (None, ForgeProvider::Github) => "https://api.github.com".to_owned(),
            (None, _) => return None,
        };
        Some(raw.trim_end_matches('/').to_owned())
    }
}

/// `gate.approval`: what lets a soaked tag into the environment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ApprovalMode {
    /// No approval (`false`, the default).
    #[default]
    None,
    /// An entry in `approvals.yaml` (`true`; `tagflow approve` writes one).
    List,
    /// Merging the promotion PR tagflow opens (`pullRequest`).
    PullRequest,
}

impl ApprovalMode {
    /// Whether a person must approve.
    pub fn required(self) -> bool {
        self != Self::None
    }
}

impl<'de> Deserialize<'de> for ApprovalMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Word(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(false) => Ok(Self::None),
            Raw::Bool(true) => Ok(Self::List),
            Raw::Word(w) if w == "pullRequest" => Ok(Self::PullRequest),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "{w:?} is not an approval: use true (approvals.yaml), false or pullRequest"
            ))),
        }
    }
}

impl schemars::JsonSchema for ApprovalMode {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ApprovalMode".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "`false`: no approval; `true`: an entry in config/approvals.yaml \
                            (`tagflow approve` writes it); `pullRequest`: merging the promotion PR.",
            "anyOf": [{"type": "boolean"}, {"const": "pullRequest"}]
        })
    }
}

/// Placeholders a branch template may use.
const PLACEHOLDERS: &[&str] = &["{env}", "{image}"];

/// The branch `template` names for (`env`, `image`).
pub fn branch_name(template: &str, env: &str, image: &str) -> String {
    template.replace("{env}", env).replace("{image}", image)
}

/// What is wrong with a branch template, before any name is put in: an unknown `{…}`.
fn template_problem(template: &str) -> Option<String> {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open..];
        let Some(close) = after.find('}') else {
            return Some(format!("unclosed `{{` in {template:?}"));
        };
        let word = &after[..=close];
        if !PLACEHOLDERS.contains(&word) {
            return Some(format!(
                "unknown placeholder {word} in {template:?} (known: {{env}}, {{image}})"
            ));
        }
        rest = &after[close + 1..];
    }
    rest.contains('}')
        .then(|| format!("stray `}}` in {template:?}"))
}

/// Whether `name` is a branch name git accepts.
fn valid_branch(name: &str) -> bool {
    git2::Reference::is_valid_name(&format!("refs/heads/{name}"))
        && !name.starts_with('-')
        && !name.contains(char::is_whitespace)
}

/// Checks of `push`, `pullRequest` and `gate.approval: pullRequest` for every environment.
pub(super) fn validate(c: &Config, r: &mut Report<'_>) {
    // Rendered branch → the environment that first claimed it.
    let mut owners: BTreeMap<String, String> = BTreeMap::new();
    for (name, env) in &c.environments {
        let at = |f: &'static str| vec!["environments", name.as_str(), f];
        if let Some(push) = &env.push {
            let path = ["environments", name, "push", "branch"];
            if let Some(why) = template_problem(&push.branch) {
                r.at(&path, format!("environments.{name}.push.branch: {why}"));
            } else {
                let mut bad = None;
                let mut claimed = None;
                for (image, _) in c.targets(env) {
                    let b = branch_name(&push.branch, name, image);
                    if !valid_branch(&b) {
                        bad.get_or_insert(b);
                        continue;
                    }
                    match owners.get(&b) {
                        Some(o) if o != name => {
                            claimed.get_or_insert((b, o.clone()));
                        }
                        _ => {
                            owners.insert(b, name.clone());
                        }
                    }
                }
                if let Some(b) = bad {
                    r.at(
                        &path,
                        format!(
                            "environments.{name}.push.branch: {:?} gives {b:?}, which is not a valid branch name",
                            push.branch
                        ),
                    );
                }
                if let Some((b, other)) = claimed {
                    r.at(
                        &path,
                        format!(
                            "environments.{name}.push.branch: {b:?} is also {other}'s branch; put {{env}} in the template"
                        ),
                    );
                }
            }
        }
        if let Some(pr) = &env.pull_request {
            pull_request(c, name, env.push.is_some(), pr, r);
        }
        let by_pr = env
            .gate
            .as_ref()
            .is_some_and(|g| g.approval == ApprovalMode::PullRequest);
        if by_pr && (env.push.is_none() || env.pull_request.is_none()) {
            r.at(
                &["environments", name, "gate", "approval"],
                format!(
                    "environments.{name}.gate.approval: pullRequest needs environments.{name}.push and environments.{name}.pullRequest (the promotion is proposed as a PR; merging it approves)"
                ),
            );
        }
        let _ = at;
    }
}

fn pull_request(
    c: &Config,
    name: &str,
    has_push: bool,
    pr: &PullRequestConfig,
    r: &mut Report<'_>,
) {
    let at = |f: &'static str| vec!["environments", name, "pullRequest", f];
    if !has_push {
        r.at(
            &["environments", name, "pullRequest"],
            format!(
                "environments.{name}.pullRequest: needs environments.{name}.push.branch (the branch the PR is opened from)"
            ),
        );
    }
    if !pr.token_file.starts_with('/') {
        r.at(
            &at("tokenFile"),
            format!(
                "environments.{name}.pullRequest.tokenFile: {:?} must be an absolute path to the mounted token (it is read on the agent's machine, never from the repo)",
                pr.token_file
            ),
        );
    }
    for (i, l) in pr.labels.iter().enumerate() {
        if l.trim().is_empty() || l.contains(',') || l.contains('\n') {
            r.at(
                &["environments", name, "pullRequest", "labels", &i.to_string()],
                format!(
                    "environments.{name}.pullRequest.labels[{i}]: {l:?} is not a label name (non-empty, no comma)"
                ),
            );
        }
    }
    if let Some(p) = &pr.project
        && (p.split('/').count() < 2 || p.split('/').any(str::is_empty))
    {
        r.at(
            &at("project"),
            format!("environments.{name}.pullRequest.project: {p:?} must be owner/repo"),
        );
    }
    let Some(base) = pr.api_base() else {
        r.at(
            &["environments", name, "pullRequest"],
            format!(
                "environments.{name}.pullRequest.apiUrl: needed for {} (e.g. https://{}.example.com/api/{})",
                pr.provider.as_str(),
                pr.provider.as_str(),
                if pr.provider == ForgeProvider::Gitlab { "v4" } else { "v1" }
            ),
        );
        return;
    };
    let place = if pr.api_url.is_some() {
        at("apiUrl")
    } else {
        at("provider")
    };
    match url::Url::parse(&base) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.query().is_none() => {}
        _ => {
            r.at(
                &place,
                format!("environments.{name}.pullRequest.apiUrl: {base:?} is not an http(s) URL"),
            );
            return;
        }
    }
    let egress = crate::egress::current();
    if let Some(host) = crate::egress::authority(&base)
        && !egress.allows(&host)
    {
        r.at(
            &place,
            format!(
                "environments.{name}.pullRequest: sending the forge token to {host} is not allowed: the operator allows secrets only to {} (--secret-hosts / TAGFLOW_SECRET_HOSTS, set outside the config repo)",
                egress.describe()
            ),
        );
    }
    let _ = c;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    const BASE: &str = "images:\n  app: {repository: r.example.com/team/app, policy: {tags: '.*', order: built}}\n  web: {repository: r.example.com/team/web, policy: {tags: '.*', order: built}}\nenvironments:\n";

    fn problems(envs: &str) -> Vec<String> {
        match parse("c.yaml", &format!("{BASE}{envs}")) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn parses_push_pull_request_and_the_merge_gate() {
        let _g = crate::egress::test_lock("api.github.com");
        let c = parse(
            "c.yaml",
            &format!(
                "{BASE}  dev: {{file: d.yaml}}\n  prod:\n    file: p.yaml\n    promoteFrom: dev\n    gate: {{approval: pullRequest}}\n    push: {{branch: 'tagflow/{{env}}-{{image}}'}}\n    pullRequest: {{provider: github, tokenFile: /etc/tagflow/forge/token, labels: [tagflow, prod]}}\n"
            ),
        )
        .expect("valid");
        let prod = &c.environments["prod"];
        assert_eq!(
            prod.gate.as_ref().map(|g| g.approval),
            Some(ApprovalMode::PullRequest)
        );
        let pr = prod.pull_request.as_ref().expect("pr");
        assert_eq!(pr.api_base().as_deref(), Some("https://api.github.com"));
        assert_eq!(pr.labels, ["tagflow", "prod"]);
        assert_eq!(
            branch_name(&prod.push.as_ref().expect("push").branch, "prod", "app"),
            "tagflow/prod-app"
        );
    }

    #[test]
    fn pull_request_problems_have_lines() {
        let _g = crate::egress::test_lock("api.github.com,gitlab.example.com");
        let table: &[(&str, &str)] = &[
            (
                "  dev:\n    file: d.yaml\n    push: {branch: 'tagflow/{environment}'}\n",
                "c.yaml:7: environments.dev.push.branch: unknown placeholder {environment} in \"tagflow/{environment}\" (known: {env}, {image})",
            ),
            (
                "  dev:\n    file: d.yaml\n    push: {branch: 'tagflow/{env}..{image}'}\n",
                "c.yaml:7: environments.dev.push.branch: \"tagflow/{env}..{image}\" gives \"tagflow/dev..app\", which is not a valid branch name",
            ),
            (
                "  dev:\n    file: d.yaml\n    push: {branch: 'tagflow/update'}\n  prod:\n    file: p.yaml\n    push: {branch: 'tagflow/update'}\n",
                "c.yaml:10: environments.prod.push.branch: \"tagflow/update\" is also dev's branch; put {env} in the template",
            ),
            (
                "  dev:\n    file: d.yaml\n    pullRequest: {provider: github, tokenFile: /t}\n",
                "c.yaml:7: environments.dev.pullRequest: needs environments.dev.push.branch (the branch the PR is opened from)",
            ),
            (
                "  dev:\n    file: d.yaml\n    push: {branch: 'tagflow/{env}'}\n    pullRequest: {provider: github, tokenFile: token}\n",
                "c.yaml:8: environments.dev.pullRequest.tokenFile: \"token\" must be an absolute path to the mounted token (it is read on the agent's machine, never from the repo)",
            ),
            (
                "  dev:\n    file: d.yaml\n    push: {branch: 'tagflow/{env}'}\n    pullRequest: {provider: gitlab, tokenFile: /t}\n",
                "c.yaml:8: environments.dev.pullRequest.apiUrl: needed for gitlab (e.g. https://gitlab.example.com/api/v4)",
            ),
            (
                "  dev:\n    file: d.yaml\n    push: {branch: 'tagflow/{env}'}\n    pullRequest:\n      provider: gitea\n      tokenFile: /t\n      apiUrl: https://evil.example.net/api/v1\n",
                "c.yaml:11: environments.dev.pullRequest: sending the forge token to evil.example.net is not allowed: the operator allows secrets only to slack.com,api.github.com,gitlab.example.com (--secret-hosts / TAGFLOW_SECRET_HOSTS, set outside the config repo)",
            ),
            (
                "  dev: {file: d.yaml}\n  prod:\n    file: p.yaml\n    promoteFrom: dev\n    gate: {approval: pullRequest}\n",
                "c.yaml:9: environments.prod.gate.approval: pullRequest needs environments.prod.push and environments.prod.pullRequest (the promotion is proposed as a PR; merging it approves)",
            ),
            (
                "  dev: {file: d.yaml}\n  prod:\n    file: p.yaml\n    promoteFrom: dev\n    gate: {approval: merged}\n",
                "c.yaml:9: environments.prod.gate.approval: \"merged\" is not an approval: use true (approvals.yaml), false or pullRequest",
            ),
        ];
        for (envs, want) in table {
            let got = problems(envs);
            assert!(
                got.iter().any(|p| p == want),
                "{envs}\nwant {want}\ngot {got:#?}"
            );
        }
    }

    #[test]
    fn without_image_one_branch_per_environment_is_fine() {
        let _g = crate::egress::test_lock("api.github.com");
        assert_eq!(
            problems(
                "  dev:\n    file: d.yaml\n    push: {branch: 'tagflow/{env}'}\n  prod:\n    file: p.yaml\n    push: {branch: 'tagflow/{env}'}\n"
            ),
            Vec::<String>::new()
        );
    }
}
