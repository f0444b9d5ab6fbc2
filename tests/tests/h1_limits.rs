//! Limits at N-1, N and N+1: header count, head size, request-line length, body size (known
//! from Content-Length and discovered while reading chunks).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ringway_protocols::http::v1::{MAX_HEADERS, MAX_HEAD_BYTES, MAX_REQUEST_LINE_BYTES};
use ringway_tests::*;

/// A GET whose head has `n` header fields (Host included).
fn with_headers(n: usize) -> Vec<u8> {
    let mut raw = b"GET / HTTP/1.1\r\nHost: t\r\n".to_vec();
    for i in 1..n {
        raw.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    raw
}

/// A GET whose whole head (final CRLF CRLF included) is exactly `n` bytes.
fn head_of_size(n: usize) -> Vec<u8> {
    let start = b"GET / HTTP/1.1\r\nHost: t\r\nX-Pad: ";
    let mut raw = start.to_vec();
    raw.resize(n - 4, b'p');
    raw.extend_from_slice(b"\r\n\r\n");
    assert_eq!(raw.len(), n);
    raw
}

/// A GET whose request line (CRLF excluded) is exactly `n` bytes.
fn request_line_of(n: usize) -> Vec<u8> {
    let mut raw = b"GET /".to_vec();
    raw.resize(n - b" HTTP/1.1".len(), b'a');
    raw.extend_from_slice(b" HTTP/1.1\r\nHost: t\r\n\r\n");
    raw
}

/// Sends `raw` to a gateway in front of an origin that answers any head; returns the status
/// and whether the connection closed, and how many connections the origin saw.
fn through_any_head_origin(raw: &[u8]) -> (Option<u16>, bool, usize) {
    let o = any_head_origin();
    let gw = gateway(&gateway_config(&[o.addr()], ""));
    let (r, closed) = one_shot(gw.local_addrs()[0], "GET", raw);
    (r.map(|r| r.status()), closed, o.connections())
}

#[test]
fn header_count_boundary() {
    for_each_backend(header_count_boundary_on);
}

fn header_count_boundary_on() {
    assert_eq!(MAX_HEADERS, 100);
    for n in [MAX_HEADERS - 1, MAX_HEADERS] {
        let (status, closed, seen) = through_any_head_origin(&with_headers(n));
        assert_eq!((status, closed, seen), (Some(200), false, 1), "{n} headers");
    }
    assert_rejected(&with_headers(MAX_HEADERS + 1), 431);
}

#[test]
fn head_size_boundary() {
    for_each_backend(head_size_boundary_on);
}

fn head_size_boundary_on() {
    for n in [MAX_HEAD_BYTES - 1, MAX_HEAD_BYTES] {
        let (status, closed, seen) = through_any_head_origin(&head_of_size(n));
        assert_eq!((status, closed, seen), (Some(200), false, 1), "{n} bytes");
    }
    assert_rejected(&head_of_size(MAX_HEAD_BYTES + 1), 431);
}

#[test]
fn request_line_boundary() {
    for_each_backend(request_line_boundary_on);
}

fn request_line_boundary_on() {
    for n in [MAX_REQUEST_LINE_BYTES - 1, MAX_REQUEST_LINE_BYTES] {
        let (status, closed, seen) = through_any_head_origin(&request_line_of(n));
        assert_eq!((status, closed, seen), (Some(200), false, 1), "{n} bytes");
    }
    assert_rejected(&request_line_of(MAX_REQUEST_LINE_BYTES + 1), 414);
}

#[test]
fn head_limits_follow_the_config() {
    for_each_backend(head_limits_follow_the_config_on);
}

fn head_limits_follow_the_config_on() {
    let extra = "[http]\nmax_headers = 10\nmax_head_bytes = 1000\nmax_request_line_bytes = 100\n";
    assert_accepted_with(&with_headers_post(10), 0, extra);
    assert_rejected_with(&with_headers(11), 431, extra);
    assert_rejected_with(&head_of_size(1001), 431, extra);
    assert_rejected_with(&request_line_of(101), 414, extra);
}

fn with_headers_post(n: usize) -> Vec<u8> {
    let mut raw = b"POST /sink HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n".to_vec();
    for i in 2..n {
        raw.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    raw
}

const LIMIT_1000: &str = "[http]\nmax_body_bytes = 1000\n";

fn post_cl(n: usize) -> Vec<u8> {
    let mut raw =
        format!("POST /sink HTTP/1.1\r\nHost: t\r\nContent-Length: {n}\r\n\r\n").into_bytes();
    raw.resize(raw.len() + n, b'b');
    raw
}

fn post_chunked(n: usize) -> Vec<u8> {
    let mut raw = b"POST /sink HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    // In 100-byte chunks, so the limit is crossed mid-stream.
    let mut left = n;
    while left > 0 {
        let k = left.min(100);
        raw.extend_from_slice(format!("{k:x}\r\n").as_bytes());
        raw.resize(raw.len() + k, b'c');
        raw.extend_from_slice(b"\r\n");
        left -= k;
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    raw
}

#[test]
fn content_length_body_boundary() {
    for_each_backend(content_length_body_boundary_on);
}

fn content_length_body_boundary_on() {
    for n in [999, 1000] {
        assert_accepted_with(&post_cl(n), n, LIMIT_1000);
    }
    assert_rejected_with(&post_cl(1001), 413, LIMIT_1000);
}

#[test]
fn chunked_body_boundary() {
    for_each_backend(chunked_body_boundary_on);
}

fn chunked_body_boundary_on() {
    for n in [999, 1000] {
        assert_accepted_with(&post_chunked(n), n, LIMIT_1000);
    }
    assert_rejected_with(&post_chunked(1001), 413, LIMIT_1000);
}
