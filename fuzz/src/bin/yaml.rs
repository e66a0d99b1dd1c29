//! AFL target: see `tagflow_fuzz::yaml`.
fn main() {
    afl::fuzz!(|data: &[u8]| tagflow_fuzz::yaml(data));
}
