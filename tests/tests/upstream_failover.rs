//! Upstream failures end to end: dead origins, retries to another peer, timeouts, and pooled
//! connections the origin closed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::time::Duration;

use ringway_bench::origin::OriginConfig;
use ringway_tests::*;

#[test]
fn a_dead_origin_answers_502() {
    for_each_backend(a_dead_origin_answers_502_on);
}

fn a_dead_origin_answers_502_on() {
    let gw = gateway(&gateway_config(&[dead_addr()], ""));
    let mut c = Client::connect(gw.local_addrs()[0]);
    let r = c.request("GET", &get("/")).unwrap();
    assert_eq!(r.status(), 502);
}

#[test]
fn connect_failures_are_retried_on_the_other_peer() {
    for_each_backend(connect_failures_are_retried_on_the_other_peer_on);
}

fn connect_failures_are_retried_on_the_other_peer_on() {
    let o = origin();
    let gw = gateway(&gateway_config(&[dead_addr(), o.addr()], ""));
    let mut c = Client::connect(gw.local_addrs()[0]);
    for i in 0..10 {
        let r = c.request("GET", &get("/")).unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        // Non-idempotent requests are retried too: a refused connect proves nothing was sent.
        let r = c
            .request(
                "POST",
                b"POST /sink HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc",
            )
            .unwrap();
        assert_eq!(
            (r.status(), r.header("x-body-len")),
            (200, Some("3")),
            "post {i}"
        );
    }
    assert_eq!(o.stats().requests, 20);
    // The dead peer cost a retry until passive health ejected it on this core (max_fails).
    assert!(
        eventually(|| gw.stats().total(|c| c.retries) >= 1),
        "{:?}",
        gw.stats()
    );
}

#[test]
fn a_slow_origin_answers_504_after_read_timeout() {
    for_each_backend(a_slow_origin_answers_504_after_read_timeout_on);
}

fn a_slow_origin_answers_504_after_read_timeout_on() {
    let o = origin_with(OriginConfig {
        delay: Duration::from_secs(3),
        ..OriginConfig::default()
    });
    let text = gateway_config(&[o.addr()], "")
        .replace("read_timeout = \"5s\"", "read_timeout = \"300ms\"");
    let gw = gateway(&text);
    let mut c = Client::connect(gw.local_addrs()[0]);
    let r = c.request("GET", &get("/")).unwrap();
    assert_eq!(r.status(), 504);
}

#[test]
fn a_pooled_connection_closed_by_the_origin_is_not_used() {
    for_each_backend(a_pooled_connection_closed_by_the_origin_is_not_used_on);
}

fn a_pooled_connection_closed_by_the_origin_is_not_used_on() {
    // The origin answers every request and closes right after: the pooled connection is dead
    // by the next request, and the liveness check at checkout must skip it.
    let origin = ScriptedOrigin::start(|mut s| {
        if read_head_raw(&mut s).is_some() {
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
        }
    });
    let gw = gateway(&gateway_config(&[origin.addr()], ""));
    let mut c = Client::connect(gw.local_addrs()[0]);
    for i in 0..5 {
        let r = c.request("GET", &get("/")).unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        std::thread::sleep(Duration::from_millis(30));
    }
    assert_eq!(origin.connections(), 5);
}

#[test]
fn an_origin_reset_before_the_head_is_502_for_a_post_and_retried_for_a_get() {
    for_each_backend(an_origin_reset_before_the_head_is_502_for_a_post_and_retried_for_a_get_on);
}

fn an_origin_reset_before_the_head_is_502_for_a_post_and_retried_for_a_get_on() {
    // The first connection to this origin reads the request and closes without answering;
    // later ones answer. GET is idempotent: retried. POST is not: 502.
    let origin = ScriptedOrigin::start({
        let n = std::sync::atomic::AtomicUsize::new(0);
        move |mut s| {
            if read_head_raw(&mut s).is_none() {
                return;
            }
            if n.fetch_add(1, std::sync::atomic::Ordering::AcqRel)
                .is_multiple_of(2)
            {
                return; // close without a response
            }
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                .unwrap();
        }
    });
    let gw = gateway(&gateway_config(&[origin.addr()], ""));
    let mut c = Client::connect(gw.local_addrs()[0]);
    assert_eq!(c.request("GET", &get("/")).unwrap().status(), 200);
    let mut c = Client::connect(gw.local_addrs()[0]);
    let r = c
        .request(
            "POST",
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
    assert_eq!(r.status(), 502);
}
