//! AFL target: see `tagflow_fuzz::config`.
fn main() {
    afl::fuzz!(|data: &[u8]| tagflow_fuzz::config(data));
}
