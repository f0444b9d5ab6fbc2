//! Open-loop mode against an origin that stalls: latency is measured from each request's
//! intended send time, so one 300 ms stall is charged to every request it held back
//! (coordinated omission corrected), not only to the request that hit it.

// Test helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{read_request_head, TestServer};
use ringway_bench::load::{self, LoadConfig};

/// The origin stalls once every this many requests.
const STALL_EVERY: u64 = 500;
const STALL: Duration = Duration::from_millis(300);

#[test]
fn a_stall_shows_in_the_tail_of_every_request_it_delayed() {
    // 1. A thread-per-connection origin answering at once, except every 500th request, which
    //    waits 300 ms first. Only its own connection stalls.
    let served = Arc::new(AtomicU64::new(0));
    let counter = served.clone();
    let server = TestServer::start(move |mut s, _| {
        let mut buf = Vec::new();
        while read_request_head(&mut s, &mut buf).is_some() {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            if n.is_multiple_of(STALL_EVERY) {
                std::thread::sleep(STALL);
            }
            if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .is_err()
            {
                break;
            }
        }
    });
    // 2. 1000 requests/s over 10 connections: each connection is due every 10 ms, so a 300 ms
    //    stall holds back about 30 scheduled requests on its connection.
    let cfg = LoadConfig {
        urls: vec![server.url("/")],
        connections: 10,
        rate: Some(1000.0),
        max_requests: Some(1500),
        duration: Duration::from_secs(60),
        ..LoadConfig::default()
    };
    let report = load::run(&cfg, None).unwrap();
    assert_eq!(report.requests, 1500);
    assert_eq!(report.errors.total(), 0, "{:?}", report.errors);
    // 3. The stalled requests themselves waited at least 300 ms...
    let p = report.percentiles();
    assert!(p.max >= 250_000, "max {} µs misses the stall", p.max);
    assert!(p.p999 >= 250_000, "p99.9 {} µs misses the stall", p.p999);
    // 4. ...and so did, partly, every request scheduled on that connection during the stall:
    //    those intended in the stall's first 200 ms record at least 100 ms each. A closed-loop
    //    generator would record one slow request per stall.
    let elevated = report.latency.count_between(100_000, u64::MAX);
    eprintln!("{}elevated (>= 100 ms): {elevated}", report.to_text());
    assert!(
        elevated >= 10,
        "only {elevated} requests recorded >= 100 ms"
    );
}
