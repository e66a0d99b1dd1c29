//! AFL target: see `tagflow_fuzz::hosts`.
fn main() {
    afl::fuzz!(|data: &[u8]| tagflow_fuzz::hosts(data));
}
