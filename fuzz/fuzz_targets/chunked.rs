//! Fuzz target: the chunked decoder: whole, byte by byte and split at every offset must agree.
//! The checks live in `ringway_protocols::http::v1::fuzz_checks`, shared with the corpus replay test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringway_protocols::http::v1::fuzz_checks::check_chunked(data);
});
