//! The app's source repo, for `order: git`: where each short-hash tag sits on a branch.

use std::collections::BTreeMap;
use std::path::Path;

use git2::Sort;

use super::{Checkout, GitAuth, GitError, git_err};

/// Most commits walked from the branch head; older tags count as not on the branch.
const MAX_WALK: usize = 200_000;

/// For each key (a commit hash prefix), its distance from the branch head in topological order
/// (0 = head), or why it has none. Fetches `branch` of `url` into `dir` first.
pub fn commit_ranks(
    url: &str,
    branch: &str,
    dir: &Path,
    auth: GitAuth,
    keys: &[String],
) -> Result<BTreeMap<String, Result<usize, String>>, GitError> {
    let checkout = Checkout::open(url, branch, dir, auth)?;
    let head = checkout.fetch()?;
    let repo = &checkout.repo;
    let mut walk = repo.revwalk().map_err(git_err("walk the source branch"))?;
    walk.set_sorting(Sort::TOPOLOGICAL | Sort::TIME)
        .map_err(git_err("sort the walk"))?;
    walk.push(head).map_err(git_err("start the walk"))?;

    let mut out: BTreeMap<String, Result<usize, String>> = BTreeMap::new();
    let mut wanted: Vec<String> = Vec::new();
    for k in keys {
        let lower = k.to_ascii_lowercase();
        if lower.len() < 4 || !lower.chars().all(|c| c.is_ascii_hexdigit()) {
            out.insert(k.clone(), Err("not a commit hash (4+ hex digits)".into()));
        } else {
            wanted.push(k.clone());
        }
    }
    for (rank, oid) in walk.take(MAX_WALK).enumerate() {
        let oid = oid.map_err(git_err("walk the source branch"))?;
        let hex = oid.to_string();
        for k in &wanted {
            if hex.starts_with(&k.to_ascii_lowercase()) {
                match out.get(k) {
                    Some(Ok(_)) => {
                        out.insert(
                            k.clone(),
                            Err(format!("ambiguous: matches several commits on {branch}")),
                        );
                    }
                    Some(Err(_)) => {}
                    None => {
                        out.insert(k.clone(), Ok(rank));
                    }
                }
            }
        }
    }
    for k in wanted {
        out.entry(k)
            .or_insert_with(|| Err(format!("commit not on branch {branch}")));
    }
    Ok(out)
}
