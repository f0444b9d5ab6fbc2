//! HTTP/1.1 proxying end to end: methods, bodies of every framing and size (hashed at the
//! origin), keep-alive on both sides, hop-by-hop removal, 1xx relay, re-framing for HTTP/1.0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;

use ringway_bench::fnv1a64;
use ringway_bench::origin::OriginConfig;
use ringway_tests::*;

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[test]
fn get_keepalive_reuses_connections_on_both_sides() {
    for_each_backend(get_keepalive_reuses_connections_on_both_sides_on);
}

fn get_keepalive_reuses_connections_on_both_sides_on() {
    let o = origin();
    let gw = gateway(&gateway_config(&[o.addr()], ""));
    let mut c = Client::connect(gw.local_addrs()[0]);
    for _ in 0..20 {
        let r = c.request("GET", &get("/")).unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.body, b"xxxxxxxxxxxxx");
    }
    assert_eq!(o.stats().requests, 20);
    assert_eq!(
        o.stats().connections,
        1,
        "one pooled upstream connection served all 20"
    );
    assert!(!c.is_closed());
}

#[test]
fn head_gets_headers_only_and_the_connection_stays_usable() {
    for_each_backend(head_gets_headers_only_and_the_connection_stays_usable_on);
}

fn head_gets_headers_only_and_the_connection_stays_usable_on() {
    let origin = ScriptedOrigin::start(|mut s| {
        while let Some(head) = read_head_raw(&mut s) {
            let is_head = head.starts_with(b"HEAD");
            let body = if is_head { "" } else { "hello" };
            write!(s, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{body}").unwrap();
        }
    });
    let gw = gateway(&gateway_config(&[origin.addr()], ""));
    let mut c = Client::connect(gw.local_addrs()[0]);
    let r = c
        .request("HEAD", b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(
        (r.status(), r.header("content-length"), r.body.len()),
        (200, Some("5"), 0)
    );
    let r = c.request("GET", &get("/")).unwrap();
    assert_eq!(r.body, b"hello");
    assert_eq!(origin.connections(), 1);
}

#[test]
fn post_content_length_5mib_arrives_intact() {
    for_each_backend(post_content_length_5mib_arrives_intact_on);
}

fn post_content_length_5mib_arrives_intact_on() {
    let o = origin();
    let gw = gateway(&gateway_config(&[o.addr()], ""));
    let body = pattern(5 << 20);
    let mut c = Client::connect(gw.local_addrs()[0]);
    c.send(
        format!(
            "POST /sink HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    c.send(&body);
    let r = c.read_response("POST").unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.header("x-body-len"),
        Some(body.len().to_string().as_str())
    );
    assert_eq!(
        r.header("x-body-fnv"),
        Some(format!("{:016x}", fnv1a64(&body)).as_str())
    );
}

#[test]
fn post_chunked_3mib_arrives_intact() {
    for_each_backend(post_chunked_3mib_arrives_intact_on);
}

fn post_chunked_3mib_arrives_intact_on() {
    let o = origin();
    let gw = gateway(&gateway_config(&[o.addr()], ""));
    let body = pattern(3 << 20);
    let mut c = Client::connect(gw.local_addrs()[0]);
    c.send(b"POST /sink HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    let mut off = 0;
    let mut size = 1;
    while off < body.len() {
        let n = size.min(body.len() - off);
        let mut chunk = format!("{n:x};ext=1\r\n").into_bytes();
        chunk.extend_from_slice(&body[off..off + n]);
        chunk.extend_from_slice(b"\r\n");
        c.send(&chunk);
        off += n;
        size = size * 3 % 70_001 + 1;
    }
    c.send(b"0\r\n\r\n");
    let r = c.read_response("POST").unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.header("x-body-len"),
        Some(body.len().to_string().as_str())
    );
    assert_eq!(
        r.header("x-body-fnv"),
        Some(format!("{:016x}", fnv1a64(&body)).as_str())
    );
    // The connection is still good for another request.
    assert_eq!(c.request("GET", &get("/")).unwrap().status(), 200);
}

#[test]
fn echo_streams_2mib_both_ways() {
    for_each_backend(echo_streams_2mib_both_ways_on);
}

fn echo_streams_2mib_both_ways_on() {
    let o = origin();
    let gw = gateway(&gateway_config(&[o.addr()], ""));
    let body = pattern(2 << 20);
    let addr = gw.local_addrs()[0];
    let mut c = Client::connect(addr);
    let writer = {
        let mut w = std::net::TcpStream::connect(addr).unwrap();
        drop(w.flush());
        w
    };
    drop(writer);
    c.send(
        format!(
            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    c.send(&body);
    let r = c.read_response("POST").unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.body == body, "echoed body differs");
}

#[test]
fn chunked_response_is_reframed_for_an_http10_client() {
    for_each_backend(chunked_response_is_reframed_for_an_http10_client_on);
}

fn chunked_response_is_reframed_for_an_http10_client_on() {
    let o = origin_with(OriginConfig {
        chunked: true,
        body_size: 100_000,
        ..OriginConfig::default()
    });
    let gw = gateway(&gateway_config(&[o.addr()], ""));
    let (r, closed) = one_shot(
        gw.local_addrs()[0],
        "GET",
        b"GET / HTTP/1.0\r\nHost: t\r\n\r\n",
    );
    let r = r.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.header("transfer-encoding"),
        None,
        "HTTP/1.0 clients never get chunked"
    );
    assert_eq!(r.body.len(), 100_000);
    assert!(closed, "a close-delimited body ends with the connection");
}

#[test]
fn chunked_response_stays_chunked_for_http11_and_keeps_alive() {
    for_each_backend(chunked_response_stays_chunked_for_http11_and_keeps_alive_on);
}

fn chunked_response_stays_chunked_for_http11_and_keeps_alive_on() {
    let o = origin_with(OriginConfig {
        chunked: true,
        body_size: 70_000,
        ..OriginConfig::default()
    });
    let gw = gateway(&gateway_config(&[o.addr()], ""));
    let mut c = Client::connect(gw.local_addrs()[0]);
    for _ in 0..3 {
        let r = c.request("GET", &get("/")).unwrap();
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        assert_eq!(r.body.len(), 70_000);
    }
    assert_eq!(o.stats().connections, 1);
}

#[test]
fn hop_by_hop_headers_are_removed_and_framing_regenerated() {
    for_each_backend(hop_by_hop_headers_are_removed_and_framing_regenerated_on);
}

fn hop_by_hop_headers_are_removed_and_framing_regenerated_on() {
    let o = origin();
    let gw = gateway(&gateway_config(&[o.addr()], ""));
    let req = b"GET /headers HTTP/1.1\r\nHost: example.test\r\nConnection: keep-alive, X-Foo, Content-Length, Host\r\n\
X-Foo: secret\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nUpgrade: h2c\r\nX-Keep: yes\r\n\
X-Forwarded-For: 10.9.8.7\r\n\r\n";
    let mut c = Client::connect(gw.local_addrs()[0]);
    let r = c.request("GET", req).unwrap();
    let seen = String::from_utf8(r.body).unwrap().to_ascii_lowercase();
    for gone in [
        "x-foo",
        "keep-alive:",
        "proxy-connection",
        "\r\nte:",
        "upgrade",
        "connection:",
    ] {
        assert!(!seen.contains(gone), "{gone} reached the origin:\n{seen}");
    }
    assert!(
        seen.contains("host: example.test"),
        "Host is kept even when Connection names it:\n{seen}"
    );
    assert!(seen.contains("x-keep: yes"));
    assert!(
        seen.contains("x-forwarded-for: 10.9.8.7, 127.0.0.1"),
        "{seen}"
    );
    assert!(!c.is_closed());
}

#[test]
fn expect_100_continue_is_relayed_before_the_body() {
    for_each_backend(expect_100_continue_is_relayed_before_the_body_on);
}

fn expect_100_continue_is_relayed_before_the_body_on() {
    let origin = ScriptedOrigin::start(|mut s| {
        let head = read_head_raw(&mut s).unwrap();
        assert!(String::from_utf8_lossy(&head)
            .to_ascii_lowercase()
            .contains("expect: 100-continue"));
        s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").unwrap();
        let mut body = [0u8; 5];
        std::io::Read::read_exact(&mut s, &mut body).unwrap();
        assert_eq!(&body, b"hello");
        s.write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
            .unwrap();
    });
    let gw = gateway(&gateway_config(&[origin.addr()], ""));
    let mut c = Client::connect(gw.local_addrs()[0]);
    c.send(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    let interim = c.read_response("POST").unwrap();
    assert_eq!(
        interim.status(),
        100,
        "the origin's 100 reaches the client before it sends the body"
    );
    c.send(b"hello");
    let r = c.read_response("POST").unwrap();
    assert_eq!((r.status(), r.body.as_slice()), (201, &b"ok"[..]));
}

#[test]
fn connect_is_refused_with_405_and_reaches_no_origin() {
    for_each_backend(connect_is_refused_with_405_and_reaches_no_origin_on);
}

fn connect_is_refused_with_405_and_reaches_no_origin_on() {
    let o = origin();
    let gw = gateway(&gateway_config(&[o.addr()], ""));
    let (r, closed) = one_shot(
        gw.local_addrs()[0],
        "CONNECT",
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    );
    assert_eq!(r.unwrap().status(), 405);
    assert!(closed);
    assert_eq!(o.stats().requests, 0);
}

#[test]
fn ambiguous_framing_is_refused_with_400_and_reaches_no_origin() {
    for_each_backend(ambiguous_framing_is_refused_with_400_and_reaches_no_origin_on);
}

fn ambiguous_framing_is_refused_with_400_and_reaches_no_origin_on() {
    let o = origin();
    let gw = gateway(&gateway_config(&[o.addr()], ""));
    let req = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    let (r, closed) = one_shot(gw.local_addrs()[0], "POST", req);
    assert_eq!(r.unwrap().status(), 400);
    assert!(closed);
    assert_eq!(o.stats().requests, 0);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    for_each_backend(pipelined_requests_are_answered_in_order_on);
}

fn pipelined_requests_are_answered_in_order_on() {
    let o = origin();
    let gw = gateway(&gateway_config(&[o.addr()], ""));
    let mut c = Client::connect(gw.local_addrs()[0]);
    c.send(b"GET /status/201 HTTP/1.1\r\nHost: t\r\n\r\nGET /status/202 HTTP/1.1\r\nHost: t\r\n\r\nGET /status/203 HTTP/1.1\r\nHost: t\r\n\r\n");
    for s in [201, 202, 203] {
        assert_eq!(c.read_response("GET").unwrap().status(), s);
    }
}

#[test]
fn unrouted_requests_get_404() {
    for_each_backend(unrouted_requests_get_404_on);
}

fn unrouted_requests_get_404_on() {
    let o = origin();
    let text =
        gateway_config(&[o.addr()], "").replace("path_prefix = \"/\"", "path_prefix = \"/api\"");
    let gw = gateway(&text);
    let mut c = Client::connect(gw.local_addrs()[0]);
    assert_eq!(c.request("GET", &get("/other")).unwrap().status(), 404);
    assert_eq!(c.request("GET", &get("/api/x")).unwrap().status(), 200);
}
