//! AFL target: see `tagflow_fuzz::wire`.
fn main() {
    afl::fuzz!(|data: &[u8]| tagflow_fuzz::wire(data));
}
