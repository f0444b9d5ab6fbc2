//! Slow and silent clients: slowloris meets the total head deadline, a silent new connection
//! gets 408, an idle keep-alive connection closes quietly, a stalled body closes, and a client
//! that does not read a large response is cut at send_timeout while the proxy holds only a
//! bounded number of read buffers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ringway_bench::origin::OriginConfig;
use ringway_tests::*;

const FAST: &str = "[http]\nheader_timeout = \"1s\"\nkeepalive_timeout = \"1s\"\nbody_timeout = \"1s\"\nsend_timeout = \"1s\"\n";

#[test]
fn slowloris_meets_the_total_header_deadline() {
    for_each_backend(slowloris_meets_the_total_header_deadline_on);
}

fn slowloris_meets_the_total_header_deadline_on() {
    let o = origin();
    let gw = gateway(&gateway_config(&[o.addr()], FAST));
    let mut s = TcpStream::connect(gw.local_addrs()[0]).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let start = Instant::now();
    let head = b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut answer = Vec::new();
    // One byte every 100 ms: each read makes progress, but the head as a whole is too slow.
    for b in head {
        if s.write_all(&[*b]).is_err() {
            break;
        }
        let mut buf = [0u8; 256];
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if !answer.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
    assert_eq!(o.stats().requests, 0);
}

#[test]
fn a_silent_new_connection_gets_408() {
    for_each_backend(a_silent_new_connection_gets_408_on);
}

fn a_silent_new_connection_gets_408_on() {
    let gw = gateway(&gateway_config(&[dead_addr()], FAST));
    let mut c = Client::connect(gw.local_addrs()[0]);
    let r = c.read_response("GET").expect("a 408 after header_timeout");
    assert_eq!(r.status(), 408);
    assert!(c.is_closed());
}

#[test]
fn an_idle_keepalive_connection_closes_without_a_response() {
    for_each_backend(an_idle_keepalive_connection_closes_without_a_response_on);
}

fn an_idle_keepalive_connection_closes_without_a_response_on() {
    let o = origin();
    let gw = gateway(&gateway_config(&[o.addr()], FAST));
    let mut c = Client::connect(gw.local_addrs()[0]);
    assert_eq!(c.request("GET", &get("/")).unwrap().status(), 200);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        c.read_response("GET").is_none(),
        "no response, just a close"
    );
}

#[test]
fn a_stalled_request_body_is_cut_and_reaches_no_origin() {
    for_each_backend(a_stalled_request_body_is_cut_and_reaches_no_origin_on);
}

fn a_stalled_request_body_is_cut_and_reaches_no_origin_on() {
    let o = origin();
    let gw = gateway(&gateway_config(&[o.addr()], FAST));
    let mut c = Client::connect(gw.local_addrs()[0]);
    c.send(b"POST /sink HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly part");
    let start = Instant::now();
    let _ = c.read_response("POST");
    assert!(c.is_closed());
    assert!(start.elapsed() < Duration::from_secs(4));
    assert_eq!(
        o.stats().requests,
        0,
        "an incomplete small body never reaches the origin"
    );
}

#[test]
fn a_client_that_does_not_read_is_cut_and_the_proxy_buffers_little() {
    for_each_backend(a_client_that_does_not_read_is_cut_and_the_proxy_buffers_little_on);
}

fn a_client_that_does_not_read_is_cut_and_the_proxy_buffers_little_on() {
    // 64 MiB response; the client reads its head and then nothing.
    let o = origin_with(OriginConfig {
        body_size: 64 << 20,
        ..OriginConfig::default()
    });
    let gw = gateway(&gateway_config(&[o.addr()], FAST));
    let mut s = TcpStream::connect(gw.local_addrs()[0]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&get("/")).unwrap();
    let mut head = [0u8; 64];
    s.read_exact(&mut head).unwrap();
    assert!(head.starts_with(b"HTTP/1.1 200"));
    // While the client stalls, the proxy holds at most a couple of 16 KiB read buffers.
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut cut = false;
    while Instant::now() < deadline {
        most = most.max(
            gw.stats()
                .cores
                .iter()
                .map(|c| c.read_buffers_in_use)
                .max()
                .unwrap_or(0),
        );
        if gw.stats().total(|c| c.active) == 0 && gw.stats().total(|c| c.accepted) > 0 {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(cut, "the connection was cut at send_timeout");
    assert!(
        most <= 2,
        "read buffers held while the client stalled: {most}"
    );
    // Draining what the kernel buffered ends in EOF or reset, far short of 64 MiB.
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        total += n;
    }
    assert!(total < 32 << 20, "received {total} bytes of a 64 MiB body");
}
