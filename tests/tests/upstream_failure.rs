//! Failing origins: nothing sent yet means 502/504; once the response started, the client's
//! connection is cut (never a silently truncated response that looks complete); a connection
//! that misbehaved is never pooled.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ringway_tests::*;

/// An origin that reads one head and answers `reply` verbatim, then closes; counts connections.
fn replying(reply: &'static [u8]) -> ScriptedOrigin {
    ScriptedOrigin::start(move |mut s: TcpStream| {
        if read_head_raw(&mut s).is_some() {
            let _ = s.write_all(reply);
        }
    })
}

/// One GET through a gateway in front of `origin`: (response, closed).
fn through(origin: &ScriptedOrigin) -> (Option<Response>, bool) {
    let gw = gateway(&gateway_config(&[origin.addr()], ""));
    let mut c = Client::connect(gw.local_addrs()[0]);
    c.send(&get("/"));
    // A truncated body makes the test client's strict decoder panic; read the raw outcome.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.read_response("GET")))
        .ok()
        .flatten();
    let closed = c.is_closed();
    (r, closed)
}

fn status_of(reply: &'static [u8]) -> (Option<u16>, bool) {
    let o = replying(reply);
    let (r, closed) = through(&o);
    (r.map(|r| r.status()), closed)
}

#[test]
fn reset_before_the_head_is_502() {
    for_each_backend(reset_before_the_head_is_502_on);
}

fn reset_before_the_head_is_502_on() {
    let o = ScriptedOrigin::start(|s: TcpStream| {
        // SO_LINGER with a zero timeout: close sends RST.
        let s = socket2::Socket::from(s);
        s.set_linger(Some(Duration::ZERO)).unwrap();
        drop(s);
    });
    let (r, _) = through(&o);
    assert_eq!(r.map(|r| r.status()), Some(502));
}

#[test]
fn a_head_that_never_arrives_is_504() {
    for_each_backend(a_head_that_never_arrives_is_504_on);
}

fn a_head_that_never_arrives_is_504_on() {
    let o = ScriptedOrigin::start(|mut s: TcpStream| {
        let _ = read_head_raw(&mut s);
        std::thread::sleep(Duration::from_secs(3));
    });
    let text = gateway_config(&[o.addr()], "")
        .replace("read_timeout = \"5s\"", "read_timeout = \"500ms\"");
    let gw = gateway(&text);
    let mut c = Client::connect(gw.local_addrs()[0]);
    assert_eq!(c.request("GET", &get("/")).unwrap().status(), 504);
}

#[test]
fn an_unparsable_head_is_502() {
    for_each_backend(an_unparsable_head_is_502_on);
}

fn an_unparsable_head_is_502_on() {
    assert_eq!(status_of(b"HTTP/1.1 2000 Nope\r\n\r\n").0, Some(502));
    assert_eq!(status_of(b"garbage\r\n\r\n").0, Some(502));
}

#[test]
fn content_length_with_transfer_encoding_in_a_response_is_502() {
    for_each_backend(content_length_with_transfer_encoding_in_a_response_is_502_on);
}

fn content_length_with_transfer_encoding_in_a_response_is_502_on() {
    assert_eq!(status_of(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n").0, Some(502));
}

#[test]
fn a_response_head_over_the_limits_is_502() {
    for_each_backend(a_response_head_over_the_limits_is_502_on);
}

fn a_response_head_over_the_limits_is_502_on() {
    let big: &'static [u8] = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\nX: {}\r\nContent-Length: 0\r\n\r\n",
            "v".repeat(40_000)
        )
        .into_bytes()
        .into_boxed_slice(),
    );
    assert_eq!(status_of(big).0, Some(502));
    let mut many = String::from("HTTP/1.1 200 OK\r\n");
    for i in 0..101 {
        many.push_str(&format!("X-{i}: v\r\n"));
    }
    many.push_str("Content-Length: 0\r\n\r\n");
    let many: &'static [u8] = Box::leak(many.into_bytes().into_boxed_slice());
    assert_eq!(status_of(many).0, Some(502));
}

#[test]
fn a_body_shorter_than_its_content_length_cuts_the_client() {
    for_each_backend(a_body_shorter_than_its_content_length_cuts_the_client_on);
}

fn a_body_shorter_than_its_content_length_cuts_the_client_on() {
    let (r, closed) = {
        let o = replying(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly twenty bytes...");
        through(&o)
    };
    assert!(r.is_none(), "never a complete-looking response");
    assert!(closed);
}

#[test]
fn broken_chunking_before_anything_was_sent_is_502() {
    for_each_backend(broken_chunking_before_anything_was_sent_is_502_on);
}

fn broken_chunking_before_anything_was_sent_is_502_on() {
    assert_eq!(
        status_of(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
            .0,
        Some(502)
    );
}

#[test]
fn broken_chunking_after_the_head_went_out_cuts_the_client() {
    for_each_backend(broken_chunking_after_the_head_went_out_cuts_the_client_on);
}

fn broken_chunking_after_the_head_went_out_cuts_the_client_on() {
    let o = ScriptedOrigin::start(|mut s: TcpStream| {
        if read_head_raw(&mut s).is_some() {
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
            std::thread::sleep(Duration::from_millis(200));
            let _ = s.write_all(b"zz\r\n");
        }
    });
    let (r, closed) = through(&o);
    assert!(r.is_none(), "the client must see an incomplete response");
    assert!(closed);
}

#[test]
fn close_mid_body_cuts_the_client() {
    for_each_backend(close_mid_body_cuts_the_client_on);
}

fn close_mid_body_cuts_the_client_on() {
    let o = ScriptedOrigin::start(|mut s: TcpStream| {
        if read_head_raw(&mut s).is_some() {
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let (r, closed) = through(&o);
    assert!(r.is_none());
    assert!(closed);
}

#[test]
fn a_body_longer_than_its_content_length_is_never_pooled() {
    for_each_backend(a_body_longer_than_its_content_length_is_never_pooled_on);
}

fn a_body_longer_than_its_content_length_is_never_pooled_on() {
    // Every connection answers with 2 extra bytes after a 5-byte body.
    let conns = Arc::new(AtomicUsize::new(0));
    let c2 = Arc::clone(&conns);
    let o = ScriptedOrigin::start(move |mut s: TcpStream| {
        c2.fetch_add(1, Ordering::AcqRel);
        while read_head_raw(&mut s).is_some() {
            if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloXX")
                .is_err()
            {
                return;
            }
        }
    });
    let gw = gateway(&gateway_config(&[o.addr()], ""));
    for _ in 0..3 {
        let mut c = Client::connect(gw.local_addrs()[0]);
        let r = c.request("GET", &get("/")).unwrap();
        assert_eq!(
            r.body, b"hello",
            "exactly Content-Length bytes, never the excess"
        );
    }
    assert_eq!(
        conns.load(Ordering::Acquire),
        3,
        "a connection that sent excess bytes is not reused"
    );
}

#[test]
fn an_unsolicited_101_is_502() {
    for_each_backend(an_unsolicited_101_is_502_on);
}

fn an_unsolicited_101_is_502_on() {
    assert_eq!(status_of(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n").0, Some(502));
}

#[test]
fn a_response_coded_with_anything_but_chunked_is_502() {
    for_each_backend(a_response_coded_with_anything_but_chunked_is_502_on);
}

fn a_response_coded_with_anything_but_chunked_is_502_on() {
    // gzip-coded bytes, close-delimited: forwarding them without their label would corrupt them.
    assert_eq!(
        status_of(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\n\x1f\x8b..."
        )
        .0,
        Some(502)
    );
}
