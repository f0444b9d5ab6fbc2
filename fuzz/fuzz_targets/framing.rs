//! Fuzz target: a head then its body: framing decisions and body decoding agree however the body is split.
//! The checks live in `ringway_protocols::http::v1::fuzz_checks`, shared with the corpus replay test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringway_protocols::http::v1::fuzz_checks::check_framing(data);
});
