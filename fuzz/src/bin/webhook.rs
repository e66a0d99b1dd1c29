//! AFL target: see `tagflow_fuzz::webhook`.
fn main() {
    afl::fuzz!(|data: &[u8]| tagflow_fuzz::webhook(data));
}
