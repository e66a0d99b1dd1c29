//! What this binary is: its version and the git revision it was built from (build.rs).

/// The crate version (`Cargo.toml`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The short git revision the binary was built from, or "unknown" when built without git.
pub const REVISION: &str = env!("TAGFLOW_GIT_REVISION");

/// `tagflow --version`'s text after the name: "0.1.0 (rev 0123abc)".
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (rev ",
    env!("TAGFLOW_GIT_REVISION"),
    ")"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_is_a_short_hash_or_unknown() {
        assert!(
            REVISION == "unknown"
                || (REVISION.len() >= 4 && REVISION.chars().all(|c| c.is_ascii_hexdigit())),
            "{REVISION}"
        );
        assert_eq!(LONG_VERSION, format!("{VERSION} (rev {REVISION})"));
    }
}
