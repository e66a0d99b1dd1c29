//! The read-only status page (`/`) and its data (`/api/status`): every environment × image's
//! rollout, pending approvals with the command that approves them, the quarantine list, each
//! infra workspace's last plan, the last error of each stage, and tagflow's last commits. Rendering is pure and escapes every string it prints (tags, reasons
//! and commit subjects come from registries and git); the page has no forms, no scripts and
//! refreshes itself.

use std::fmt::Write as _;

use serde::Serialize;

/// Everything the page shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusData {
    /// When this was read (RFC 3339).
    pub generated: String,
    /// The config commit in force, when known.
    pub head: Option<String>,
    /// One row per environment × image with a recorded rollout.
    pub rollouts: Vec<RolloutRow>,
    /// Tags soaked and waiting for an approval commit.
    pub approvals: Vec<PendingApproval>,
    /// Quarantined tags.
    pub quarantine: Vec<QuarantineRow>,
    /// tagflow's last commits on the branch, newest first.
    pub commits: Vec<CommitRow>,
    /// Each infra workspace's last run.
    pub infra: Vec<InfraRow>,
    /// The last error of each stage that failed since the process started.
    pub errors: Vec<ErrorRow>,
    /// What could not be read (e.g. the state ref), shown instead of hiding it.
    pub problems: Vec<String>,
}

/// One infra workspace's last run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InfraRow {
    /// Workspace.
    pub workspace: String,
    /// `drift`, `clean`, `applied` or `failed`.
    pub state: String,
    /// The last plan's id (what an approval names).
    pub plan_id: String,
    /// What the plan would change, or why the run failed.
    pub summary: String,
    /// When the run ended (RFC 3339).
    pub at: String,
}

/// The last error of one stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorRow {
    /// Stage: config, git, scan, commit, rollout, cluster, or `infra <workspace>`.
    pub stage: String,
    /// The error (redacted).
    pub message: String,
    /// First seen in this run of failures (RFC 3339).
    pub since: String,
    /// Last seen (RFC 3339).
    pub last: String,
    /// Failures in a row.
    pub count: u32,
    /// When the stage worked again; absent while it still fails.
    pub resolved: Option<String>,
}

/// One environment × image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRow {
    /// Environment.
    pub env: String,
    /// Image.
    pub image: String,
    /// Tag.
    pub tag: String,
    /// `sha256:` and 12 hex digits, empty when unknown.
    pub digest: String,
    /// Phase in words.
    pub phase: String,
    /// When the phase was entered (RFC 3339).
    pub since: String,
    /// Why the last transition happened.
    pub reason: String,
    /// The commit that set the values.
    pub commit: String,
    /// The commit on its forge, when it is a known one.
    pub link: Option<String>,
}

/// A tag waiting for `tagflow approve`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingApproval {
    /// Environment it would go to.
    pub env: String,
    /// Image.
    pub image: String,
    /// Tag.
    pub tag: String,
    /// The exact command that approves it.
    pub command: String,
}

/// One quarantined tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QuarantineRow {
    /// Image.
    pub image: String,
    /// Tag.
    pub tag: String,
    /// Why.
    pub reason: String,
    /// When, as written.
    pub at: String,
}

/// One of tagflow's commits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitRow {
    /// Full id.
    pub id: String,
    /// Subject line.
    pub subject: String,
    /// Commit time (RFC 3339).
    pub time: String,
    /// The commit on its forge, when it is a known one.
    pub link: Option<String>,
}

/// `s` safe in HTML text and in double-quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A commit cell: the short id, linked when the forge is known (only `https:` links).
fn commit_cell(id: &str, link: Option<&str>) -> String {
    let short: String = id.chars().take(7).collect();
    match link.filter(|l| l.starts_with("https://")) {
        Some(l) => format!(
            "<a href=\"{}\"><code>{}</code></a>",
            escape(l),
            escape(&short)
        ),
        None => format!("<code>{}</code>", escape(&short)),
    }
}

fn table(out: &mut String, id: &str, head: &[&str], rows: &[Vec<String>], empty: &str) {
    if rows.is_empty() {
        let _ = write!(out, "<p id=\"{id}\" class=\"empty\">{}</p>", escape(empty));
        return;
    }
    let _ = write!(out, "<table id=\"{id}\"><thead><tr>");
    for h in head {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
}

const CSS: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}\
table{border-collapse:collapse;min-width:60%}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}\
th{background:#f3f3f3}code{font-family:ui-monospace,monospace}.empty{color:#777}\
.phase-healthy,.phase-promoted{color:#176b2c}.phase-failed,.phase-quarantined{color:#a11}\
.phase-awaiting-approval,.phase-soaking{color:#8a5a00}.problems{color:#a11}\
.infra-drift,.failing{color:#a11}.infra-failed{color:#a11;font-weight:bold}.infra-clean,.ok{color:#176b2c}\
pre{margin:0;white-space:pre-wrap}";

/// The whole page (pure). Every value printed is escaped; cells are built here only.
pub fn render_html(d: &StatusData) -> String {
    let mut out = String::from(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"refresh\" content=\"10\"><title>tagflow status</title><style>",
    );
    out.push_str(CSS);
    out.push_str("</style></head><body><h1>tagflow status</h1>");
    let _ = write!(
        out,
        "<p>Generated {} · config commit {} · refreshes every 10 s · data as JSON: <a href=\"api/status\">/api/status</a></p>",
        escape(&d.generated),
        d.head
            .as_deref()
            .map_or_else(|| "unknown".to_owned(), |h| commit_cell(h, None))
    );
    if !d.problems.is_empty() {
        out.push_str("<ul class=\"problems\" id=\"problems\">");
        for p in &d.problems {
            let _ = write!(out, "<li>{}</li>", escape(p));
        }
        out.push_str("</ul>");
    }
    out.push_str("<h2>Environments</h2>");
    let rows: Vec<Vec<String>> = d
        .rollouts
        .iter()
        .map(|r| {
            vec![
                escape(&r.env),
                escape(&r.image),
                format!("<code>{}</code>", escape(&r.tag)),
                format!("<code>{}</code>", escape(&r.digest)),
                format!(
                    "<span class=\"phase-{}\">{}</span>",
                    escape(&r.phase.replace(' ', "-")),
                    escape(&r.phase)
                ),
                escape(&r.since),
                commit_cell(&r.commit, r.link.as_deref()),
                escape(&r.reason),
            ]
        })
        .collect();
    table(
        &mut out,
        "rollouts",
        &[
            "Environment",
            "Image",
            "Tag",
            "Digest",
            "Phase",
            "Since",
            "Commit",
            "Reason",
        ],
        &rows,
        "No rollouts recorded yet.",
    );
    out.push_str("<h2>Pending approvals</h2>");
    let rows: Vec<Vec<String>> = d
        .approvals
        .iter()
        .map(|a| {
            vec![
                escape(&a.env),
                escape(&a.image),
                format!("<code>{}</code>", escape(&a.tag)),
                format!("<code>{}</code>", escape(&a.command)),
            ]
        })
        .collect();
    table(
        &mut out,
        "approvals",
        &["Environment", "Image", "Tag", "Approve with"],
        &rows,
        "Nothing is waiting for an approval.",
    );
    out.push_str("<h2>Quarantine</h2>");
    let rows: Vec<Vec<String>> = d
        .quarantine
        .iter()
        .map(|q| {
            vec![
                escape(&q.image),
                format!("<code>{}</code>", escape(&q.tag)),
                escape(&q.reason),
                escape(&q.at),
            ]
        })
        .collect();
    table(
        &mut out,
        "quarantine",
        &["Image", "Tag", "Reason", "At"],
        &rows,
        "No tag is quarantined.",
    );
    out.push_str("<h2>Infrastructure</h2>");
    let rows: Vec<Vec<String>> = d
        .infra
        .iter()
        .map(|i| {
            vec![
                escape(&i.workspace),
                format!(
                    "<span class=\"infra-{}\">{}</span>",
                    escape(&i.state),
                    escape(&i.state)
                ),
                format!("<code>{}</code>", escape(&i.plan_id)),
                escape(&i.summary),
                escape(&i.at),
            ]
        })
        .collect();
    table(
        &mut out,
        "infra",
        &["Workspace", "State", "Plan id", "Summary", "At"],
        &rows,
        "No infra workspace has run yet.",
    );
    out.push_str("<h2>Last error per stage</h2>");
    let rows: Vec<Vec<String>> = d
        .errors
        .iter()
        .map(|e| {
            let status = match &e.resolved {
                Some(at) => format!("<span class=\"ok\">resolved {}</span>", escape(at)),
                None => "<span class=\"failing\">failing</span>".to_owned(),
            };
            vec![
                escape(&e.stage),
                status,
                format!("{} ({}×)", escape(&e.since), e.count),
                format!("<pre>{}</pre>", escape(&e.message)),
            ]
        })
        .collect();
    table(
        &mut out,
        "errors",
        &["Stage", "Status", "Since", "Error"],
        &rows,
        "No stage has failed since tagflow started.",
    );
    out.push_str("<h2>Last tagflow commits</h2>");
    let rows: Vec<Vec<String>> = d
        .commits
        .iter()
        .map(|c| {
            vec![
                commit_cell(&c.id, c.link.as_deref()),
                escape(&c.time),
                escape(&c.subject),
            ]
        })
        .collect();
    table(
        &mut out,
        "commits",
        &["Commit", "Time", "Subject"],
        &rows,
        "No tagflow commits yet.",
    );
    out.push_str("</body></html>\n");
    out
}

/// `sha256:` and the first 12 hex digits (empty stays empty).
pub fn short_digest(d: &str) -> String {
    match d.strip_prefix("sha256:") {
        Some(hex) => format!("sha256:{}", hex.chars().take(12).collect::<String>()),
        None => d.chars().take(19).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "<script>alert(\"x\")</script>'&";

    #[test]
    fn escape_covers_text_and_attributes() {
        assert_eq!(
            escape(HOSTILE),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&#39;&amp;"
        );
        assert_eq!(escape("0f1e2d3"), "0f1e2d3");
    }

    #[test]
    fn hostile_tags_reasons_and_subjects_are_printed_as_text() {
        let d = StatusData {
            generated: "2024-01-01T12:00:00Z".into(),
            head: Some("0123456789abcdef".into()),
            rollouts: vec![RolloutRow {
                env: "dev".into(),
                image: "app".into(),
                tag: HOSTILE.into(),
                digest: "sha256:abc".into(),
                phase: "awaiting approval".into(),
                since: "2024-01-01T12:00:00Z".into(),
                reason: HOSTILE.into(),
                commit: "0123456789abcdef".into(),
                link: Some("javascript:alert(1)".into()),
            }],
            approvals: vec![PendingApproval {
                env: "prod".into(),
                image: "app".into(),
                tag: "0f1e2d3".into(),
                command: "tagflow approve prod 0f1e2d3".into(),
            }],
            quarantine: vec![QuarantineRow {
                image: "app".into(),
                tag: HOSTILE.into(),
                reason: HOSTILE.into(),
                at: String::new(),
            }],
            commits: vec![CommitRow {
                id: "0123456789abcdef".into(),
                subject: HOSTILE.into(),
                time: String::new(),
                link: Some("https://github.com/o/r/commit/0123456789abcdef".into()),
            }],
            infra: vec![InfraRow {
                workspace: "net".into(),
                state: "drift".into(),
                plan_id: "3f2a9c1e".into(),
                summary: HOSTILE.into(),
                at: String::new(),
            }],
            errors: vec![ErrorRow {
                stage: "scan".into(),
                message: HOSTILE.into(),
                since: "2024-01-01T12:00:00Z".into(),
                last: "2024-01-01T12:05:00Z".into(),
                count: 3,
                resolved: None,
            }],
            problems: vec![HOSTILE.into()],
        };
        let html = render_html(&d);
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("javascript:"), "only https links: {html}");
        assert_eq!(
            html.matches("&lt;script&gt;alert(&quot;x&quot;)").count(),
            8,
            "{html}"
        );
        assert!(html.contains("<code>3f2a9c1e</code>"), "{html}");
        assert!(
            html.contains("<span class=\"failing\">failing</span>"),
            "{html}"
        );
        assert!(html.contains("2024-01-01T12:00:00Z (3×)"), "{html}");
        assert!(html.contains("<meta http-equiv=\"refresh\" content=\"10\">"));
        assert!(html.contains("<code>tagflow approve prod 0f1e2d3</code>"));
        assert!(html.contains("href=\"https://github.com/o/r/commit/0123456789abcdef\""));
        assert!(!html.contains("<form") && !html.contains("method="));
    }

    #[test]
    fn empty_sections_say_so() {
        let html = render_html(&StatusData::default());
        assert!(html.contains("No rollouts recorded yet."));
        assert!(html.contains("No tag is quarantined."));
        assert!(html.contains("No infra workspace has run yet."));
        assert!(html.contains("No stage has failed since tagflow started."));
    }

    #[test]
    fn digests_are_shortened() {
        assert_eq!(
            short_digest("sha256:0123456789abcdef0123"),
            "sha256:0123456789ab"
        );
        assert_eq!(short_digest(""), "");
    }
}
