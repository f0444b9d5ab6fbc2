//! Error classification against misbehaving origins written here with std::net: a refused port,
//! an origin that closes without answering, one that never answers, one that answers garbage or
//! badly framed bodies, and error statuses. Every failed request is counted once, by kind, and the run goes on.

// Test helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::time::Duration;

use common::{read_request_head, refused_addr, TestServer};
use ringway_bench::load::{self, ErrorCounts, LoadConfig};
use ringway_bench::origin::{self, OriginConfig};

fn bounded(url: String, max: u64) -> LoadConfig {
    LoadConfig {
        urls: vec![url],
        connections: 4,
        duration: Duration::from_secs(60),
        max_requests: Some(max),
        ..LoadConfig::default()
    }
}

#[test]
fn a_refused_port_counts_connect_errors() {
    let url = format!("http://{}/", refused_addr());
    let report = load::run(&bounded(url, 50), None).unwrap();
    assert_eq!(report.requests, 0);
    assert_eq!(
        report.errors,
        ErrorCounts {
            connect: 50,
            ..ErrorCounts::default()
        }
    );
    assert!(report.to_json().contains("\"connect\":50"));
}

#[test]
fn an_origin_closing_without_answering_counts_read_errors() {
    // 1. Each connection reads one request head, then closes without a byte of response.
    let server = TestServer::start(|mut s, _| {
        let _ = read_request_head(&mut s, &mut Vec::new());
    });
    // 2. Every request fails with a read error, and the generator reconnects for the next one.
    let report = load::run(&bounded(server.url("/"), 40), None).unwrap();
    assert_eq!(report.requests, 0);
    assert_eq!(
        report.errors,
        ErrorCounts {
            read: 40,
            ..ErrorCounts::default()
        }
    );
    assert_eq!(
        server.accepted.load(std::sync::atomic::Ordering::SeqCst),
        40
    );
}

#[test]
fn an_origin_that_never_answers_counts_timeouts() {
    let server = TestServer::start(|mut s, _| {
        let mut buf = Vec::new();
        while read_request_head(&mut s, &mut buf).is_some() {}
    });
    let cfg = LoadConfig {
        timeout: Duration::from_millis(200),
        ..bounded(server.url("/"), 8)
    };
    let report = load::run(&cfg, None).unwrap();
    assert_eq!(report.requests, 0);
    assert_eq!(
        report.errors,
        ErrorCounts {
            timeout: 8,
            ..ErrorCounts::default()
        }
    );
}

#[test]
fn garbage_responses_count_parse_errors() {
    let server = TestServer::start(|mut s, _| {
        let mut buf = Vec::new();
        while read_request_head(&mut s, &mut buf).is_some() {
            if s.write_all(b"SMTP ready\r\n\r\n").is_err() {
                break;
            }
        }
    });
    let report = load::run(&bounded(server.url("/"), 30), None).unwrap();
    assert_eq!(
        report.errors,
        ErrorCounts {
            parse: 30,
            ..ErrorCounts::default()
        }
    );
}

#[test]
fn badly_framed_chunked_bodies_count_parse_errors() {
    // Data longer than its chunk-size, then a chunk-size line ended by a bare LF: both are
    // refused by the codec's strict chunked decoder (RFC 9112 section 7.1).
    for body in [&b"5\r\nhelloX\r\n0\r\n\r\n"[..], b"5\nhello\r\n0\r\n\r\n"] {
        let server = TestServer::start(move |mut s, _| {
            let mut buf = Vec::new();
            while read_request_head(&mut s, &mut buf).is_some() {
                let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
                if s.write_all(&[&head[..], body].concat()).is_err() {
                    break;
                }
            }
        });
        let report = load::run(&bounded(server.url("/"), 10), None).unwrap();
        assert_eq!(
            report.errors,
            ErrorCounts {
                parse: 10,
                ..ErrorCounts::default()
            },
            "{body:?}"
        );
    }
}

#[test]
fn a_body_cut_short_counts_a_read_error() {
    let server = TestServer::start(|mut s, _| {
        if read_request_head(&mut s, &mut Vec::new()).is_some() {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this");
        }
    });
    let report = load::run(&bounded(server.url("/"), 10), None).unwrap();
    assert_eq!(
        report.errors,
        ErrorCounts {
            read: 10,
            ..ErrorCounts::default()
        }
    );
}

#[test]
fn error_statuses_are_requests_and_status_errors() {
    let o = origin::start(OriginConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..OriginConfig::default()
    })
    .unwrap();
    let report = load::run(
        &bounded(format!("http://{}/status/500", o.addr()), 200),
        None,
    )
    .unwrap();
    assert_eq!(report.requests, 200);
    assert_eq!(
        report.errors,
        ErrorCounts {
            status: 200,
            ..ErrorCounts::default()
        }
    );
    let report = load::run(
        &bounded(format!("http://{}/status/301", o.addr()), 50),
        None,
    )
    .unwrap();
    assert_eq!(report.errors.total(), 0, "3xx is not an error");
}
