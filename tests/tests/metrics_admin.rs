//! The admin endpoint over real sockets: per-core counters merged on scrape.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;

use ringway_tests::*;

fn scrape(addr: std::net::SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn metrics_count_requests_and_responses_per_core() {
    for_each_backend(metrics_count_requests_and_responses_per_core_on);
}

fn metrics_count_requests_and_responses_per_core_on() {
    let o = origin();
    let text = gateway_config(&[o.addr()], "")
        .replace("[server]\n", "[server]\nadmin = \"127.0.0.1:0\"\n");
    let gw = gateway(&text);
    let admin = gw.admin_addr().expect("admin endpoint configured");
    let mut c = Client::connect(gw.local_addrs()[0]);
    for _ in 0..7 {
        assert_eq!(c.request("GET", &get("/")).unwrap().status(), 200);
    }
    assert_eq!(c.request("GET", &get("/status/503")).unwrap().status(), 503);
    assert!(
        eventually(|| scrape(admin).contains("ringway_requests_total{core=\"0\"} 8")),
        "{}",
        scrape(admin)
    );
    let m = scrape(admin);
    assert!(
        m.contains("ringway_responses_total{core=\"0\",class=\"2xx\"} 7"),
        "{m}"
    );
    assert!(
        m.contains("ringway_responses_total{core=\"0\",class=\"5xx\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("ringway_upstream_connects_total{core=\"0\"} 1"),
        "{m}"
    );
    // The ring's counters come with the io_uring backend only.
    let value = |name: &str| -> Option<u64> {
        let key = format!("{name}{{core=\"0\"}} ");
        m.lines()
            .find_map(|l| l.strip_prefix(key.as_str()))
            .map(|v| v.parse().unwrap())
    };
    if io_backend() == ringway::IoBackend::Glommio {
        assert!(!m.contains("ringway_uring_"), "{m}");
    } else {
        assert!(value("ringway_uring_enters_total").unwrap() > 0, "{m}");
        assert!(
            value("ringway_uring_completions_total").unwrap() >= 8,
            "{m}"
        );
        assert_eq!(
            value("ringway_uring_recv_buffer_fallbacks_total"),
            Some(0),
            "{m}"
        );
        assert_eq!(
            value("ringway_uring_stale_completions_total"),
            Some(0),
            "{m}"
        );
        // One client and one upstream connection: a few buffers lent, not the ring's 64 (the
        // bound counts every operation in the kernel, the listener's accepts too).
        let lent = value("ringway_uring_ring_buffers_lent").unwrap();
        assert!((1..=16).contains(&lent), "{m}");
        // The client's connection and the upstream one, each in the ring's table of files (the
        // admin listener's connections are not on the ring).
        assert!(
            value("ringway_uring_registered_files_total").unwrap() >= 2,
            "{m}"
        );
        assert_eq!(
            value("ringway_uring_registered_file_failures_total"),
            Some(0),
            "{m}"
        );
    }
}
