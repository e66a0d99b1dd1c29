//! Paths inside the config repo, as config files name them.

/// A path the repo controls must stay inside the checkout: relative, no `..`, no empty parts.
pub fn check_repo_path(p: &str) -> Result<(), &'static str> {
    if p.is_empty() {
        return Err("is empty");
    }
    if p.starts_with('/') || p.contains('\\') {
        return Err("must be relative to the repo root");
    }
    if p.split('/').any(|c| c == ".." || c.is_empty()) {
        return Err("must not contain `..` or empty components");
    }
    Ok(())
}
