//! Request smuggling and framing, raw bytes in: every Content-Length / Transfer-Encoding row of
//! the policy, every chunk-line rule, every head-syntax rule. Each case is sent alone and
//! pipelined behind a valid request; each must answer its status, close, and reach no origin.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ringway_tests::{assert_accepted, for_each_backend, rejects};

/// A POST /sink head with these extra header lines, then `body`.
fn post(headers: &str, body: &str) -> Vec<u8> {
    format!("POST /sink HTTP/1.1\r\nHost: t\r\n{headers}\r\n{body}").into_bytes()
}

fn chunked(body: &str) -> Vec<u8> {
    post("Transfer-Encoding: chunked\r\n", body)
}

rejects! {
    // RFC 9112 section 6.1: CL with TE is refused, in either order.
    cl_with_te: post("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n") => 400;
    te_with_cl: post("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", "5\r\nhello\r\n0\r\n\r\n") => 400;
    // RFC 9112 section 6.3 item 5: duplicate or list Content-Length, even equal.
    two_content_lengths_equal: post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello") => 400;
    two_content_lengths_different: post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!") => 400;
    content_length_list: post("Content-Length: 5, 5\r\n", "hello") => 400;
    content_length_plus: post("Content-Length: +5\r\n", "hello") => 400;
    content_length_minus: post("Content-Length: -5\r\n", "hello") => 400;
    content_length_hex: post("Content-Length: 0x5\r\n", "hello") => 400;
    content_length_suffix: post("Content-Length: 5Z\r\n", "hello") => 400;
    content_length_empty: post("Content-Length: \r\n", "") => 400;
    content_length_inner_space: post("Content-Length: 5 5\r\n", "hello") => 400;
    content_length_overflow: post("Content-Length: 184467440737095516160\r\n", "") => 400;
    // Transfer-Encoding rows.
    te_on_http10: b"POST /sink HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" => 400;
    te_final_not_chunked: post("Transfer-Encoding: gzip\r\n", "") => 400;
    te_chunked_then_gzip: post("Transfer-Encoding: chunked, gzip\r\n", "") => 400;
    te_identity: post("Transfer-Encoding: identity\r\n", "") => 400;
    te_unknown_coding: post("Transfer-Encoding: chunk\r\n", "") => 400;
    te_gzip_then_chunked_is_not_implemented: post("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n") => 501;
    te_leading_comma: post("Transfer-Encoding: ,chunked\r\n", "0\r\n\r\n") => 400;
    te_chunked_twice: post("Transfer-Encoding: chunked, chunked\r\n", "0\r\n\r\n") => 400;
    te_two_headers: post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n") => 400;
    te_quoted: post("Transfer-Encoding: \"chunked\"\r\n", "0\r\n\r\n") => 400;
    te_control_byte: post("Transfer-Encoding: chunked\x0b\r\n", "0\r\n\r\n") => 400;
    // Chunk lines (the body is validated before any upstream sees the request).
    chunk_size_empty: chunked("\r\nhello\r\n0\r\n\r\n") => 400;
    chunk_size_not_hex: chunked("g\r\nhello\r\n0\r\n\r\n") => 400;
    chunk_size_plus: chunked("+5\r\nhello\r\n0\r\n\r\n") => 400;
    chunk_size_minus: chunked("-5\r\nhello\r\n0\r\n\r\n") => 400;
    chunk_size_0x: chunked("0x5\r\nhello\r\n0\r\n\r\n") => 400;
    chunk_size_leading_space: chunked(" 5\r\nhello\r\n0\r\n\r\n") => 400;
    chunk_size_17_digits: chunked("00000000000000005\r\nhello\r\n0\r\n\r\n") => 400;
    chunk_extension_cr: chunked("5;a=b\rc\r\nhello\r\n0\r\n\r\n") => 400;
    chunk_extension_lf: chunked("5;a\nb\r\nhello\r\n0\r\n\r\n") => 400;
    chunk_extension_control_byte: chunked("5;a=\x01\r\nhello\r\n0\r\n\r\n") => 400;
    chunk_missing_crlf_after_data: chunked("5\r\nhelloXX0\r\n\r\n") => 400;
    chunk_bare_lf_line_ending: chunked("5\nhello\r\n0\r\n\r\n") => 400;
    chunk_last_bad_trailer: chunked("0\r\nno colon here\r\n\r\n") => 400;
    chunk_line_too_long: chunked(&format!("5;{}\r\nhello\r\n0\r\n\r\n", "a".repeat(5000))) => 400;
    // Field syntax (RFC 9112 section 5).
    obs_fold: post("X-A: one\r\n two\r\n", "") => 400;
    space_before_colon: b"GET / HTTP/1.1\r\nHost : t\r\n\r\n" => 400;
    tab_before_colon: b"GET / HTTP/1.1\r\nHost\t: t\r\n\r\n" => 400;
    empty_field_name: post(": v\r\n", "") => 400;
    nul_in_value: post("X-A: a\0b\r\n", "") => 400;
    cr_in_value: post("X-A: a\rb\r\n", "") => 400;
    parenthesis_in_name: post("X(A): v\r\n", "") => 400;
    space_in_name: post("X A: v\r\n", "") => 400;
    bare_lf_in_head: b"GET / HTTP/1.1\nHost: t\n\n" => 400;
    // Host (RFC 9112 section 3.2).
    http11_without_host: b"GET / HTTP/1.1\r\nX: y\r\n\r\n" => 400;
    two_hosts: b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" => 400;
    absolute_form_disagrees_with_host: b"GET http://a.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n" => 400;
    invalid_host: b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n" => 400;
    // Request line and versions.
    http_1_2_is_unsupported: b"GET / HTTP/1.2\r\nHost: t\r\n\r\n" => 505;
    http_2_0_is_unsupported: b"GET / HTTP/2.0\r\nHost: t\r\n\r\n" => 505;
    http_3_0_is_unsupported: b"GET / HTTP/3.0\r\nHost: t\r\n\r\n" => 505;
    version_trailing_garbage: b"GET / HTTP/1.1x\r\nHost: t\r\n\r\n" => 400;
    version_without_dot: b"GET / HTTP/11\r\nHost: t\r\n\r\n" => 400;
    version_lowercase: b"GET / http/1.1\r\nHost: t\r\n\r\n" => 400;
    http_0_9_request_line: b"GET /\r\n\r\n" => 400;
    space_in_target: b"GET /a b HTTP/1.1\r\nHost: t\r\n\r\n" => 400;
    method_with_bad_byte: b"G(T / HTTP/1.1\r\nHost: t\r\n\r\n" => 400;
    // CONNECT is never proxied unless a listener enables it.
    connect_is_refused: b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n" => 405;
}

// Controls: what must still pass.

#[test]
fn chunk_extensions_with_whitespace_around_separators_are_accepted() {
    for_each_backend(chunk_extensions_with_whitespace_around_separators_are_accepted_on);
}

fn chunk_extensions_with_whitespace_around_separators_are_accepted_on() {
    assert_accepted(
        &chunked("5 ; name = value ;flag\r\nhello\r\n3\t;\tq=\"x y\"\r\nabc\r\n0\r\n\r\n"),
        8,
    );
}

#[test]
fn trailers_are_accepted_and_dropped() {
    for_each_backend(trailers_are_accepted_and_dropped_on);
}

fn trailers_are_accepted_and_dropped_on() {
    assert_accepted(&chunked("5\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n"), 5);
}

#[test]
fn sixteen_hex_digit_chunk_size_is_accepted() {
    for_each_backend(sixteen_hex_digit_chunk_size_is_accepted_on);
}

fn sixteen_hex_digit_chunk_size_is_accepted_on() {
    assert_accepted(&chunked("0000000000000005\r\nhello\r\n0\r\n\r\n"), 5);
}

#[test]
fn connection_naming_framing_headers_does_not_strip_them() {
    for_each_backend(connection_naming_framing_headers_does_not_strip_them_on);
}

fn connection_naming_framing_headers_does_not_strip_them_on() {
    assert_accepted(
        &post(
            "Connection: Content-Length, Host\r\nContent-Length: 5\r\n",
            "hello",
        ),
        5,
    );
}

#[test]
fn upper_case_chunked_is_accepted() {
    for_each_backend(upper_case_chunked_is_accepted_on);
}

fn upper_case_chunked_is_accepted_on() {
    assert_accepted(
        &post("Transfer-Encoding: CHUNKED\r\n", "5\r\nhello\r\n0\r\n\r\n"),
        5,
    );
}

#[test]
fn content_length_zero_is_accepted() {
    for_each_backend(content_length_zero_is_accepted_on);
}

fn content_length_zero_is_accepted_on() {
    assert_accepted(&post("Content-Length: 0\r\n", ""), 0);
}
