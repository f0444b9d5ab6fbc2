//! The `ringway` command line.
fn main() {}
