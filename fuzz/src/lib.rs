//! Fuzz targets for the parsers that read outside input, one function per AFL binary.
//!
//! Each function takes the fuzzer's bytes, runs a parser and asserts its properties; a panic
//! is a finding. The same functions replay a crash file when a binary reads it on stdin.

mod hosts;
mod rewrite;
mod webhook;
mod wire;
mod yaml;

pub use hosts::hosts;
pub use rewrite::rewrite;
pub use webhook::webhook;
pub use wire::wire;
pub use yaml::yaml;

/// The config loader: `config/tagflow.yaml`, the approval and quarantine lists read against it,
/// and a terraform plan approval. Anything may fail; nothing may panic.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // One input holds up to three files: config, approvals, quarantine.
    let mut parts = text.splitn(3, "\n#--\n");
    let (cfg, approvals, quarantine) = (parts.next().unwrap_or(""), parts.next(), parts.next());
    let _ = tagflow::config::plan_approval(cfg, "aws");
    let Ok(config) = tagflow::config::parse("config/tagflow.yaml", cfg) else {
        return;
    };
    for env in config.environments.values() {
        let _ = config.targets(env);
    }
    for image in config.images.values() {
        let _ = config.registry_for(&image.repository);
    }
    let _ = tagflow::config::parse_gates(
        &config,
        ("config/approvals.yaml", approvals),
        ("config/quarantine.yaml", quarantine),
    );
}

/// Splits `data` into its first byte (the mode) and the rest.
fn mode(data: &[u8]) -> Option<(u8, &[u8])> {
    data.split_first().map(|(m, rest)| (*m, rest))
}
