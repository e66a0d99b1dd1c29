//! AFL target: see `tagflow_fuzz::rewrite`.
fn main() {
    afl::fuzz!(|data: &[u8]| tagflow_fuzz::rewrite(data));
}
