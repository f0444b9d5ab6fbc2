//! Fuzz target: parse_request on arbitrary bytes: policy statuses only, prefixes partial, re-encoding round-trips.
//! The checks live in `ringway_protocols::http::v1::fuzz_checks`, shared with the corpus replay test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringway_protocols::http::v1::fuzz_checks::check_request_head(data);
});
