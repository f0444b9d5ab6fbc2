//! Upgrade (WebSocket-style) tunnels: opened only after the origin's 101; bytes the client sent
//! after its Upgrade request are not forwarded before that; both directions relay; an idle
//! tunnel is closed; a refused upgrade is an ordinary response.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::Duration;

use ringway_tests::*;

const UPGRADE: &[u8] =
    b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";

#[test]
fn the_tunnel_opens_only_after_101_and_relays_both_ways() {
    for_each_backend(the_tunnel_opens_only_after_101_and_relays_both_ways_on);
}

fn the_tunnel_opens_only_after_101_and_relays_both_ways_on() {
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let o = ScriptedOrigin::start(move |mut s: TcpStream| {
        let head = read_head_raw(&mut s).unwrap();
        let head_text = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(
            head_text.contains("upgrade: websocket") && head_text.contains("connection: upgrade"),
            "{head_text}"
        );
        // Nothing after the head may have arrived yet: wait and check.
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut early = [0u8; 64];
        let before = s.read(&mut early).map_or(0, |n| n);
        tx.send(early[..before].to_vec()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n").unwrap();
        // Echo, upper-cased, until EOF.
        let mut buf = [0u8; 1024];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n].to_ascii_uppercase()).unwrap();
        }
    });
    let gw = gateway(&gateway_config(&[o.addr()], ""));
    let mut c = TcpStream::connect(gw.local_addrs()[0]).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut first = UPGRADE.to_vec();
    first.extend_from_slice(b"early-frame");
    c.write_all(&first).unwrap();
    assert_eq!(
        rx.recv().unwrap(),
        b"",
        "bytes after the Upgrade head went upstream before the 101"
    );
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        c.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 101"), "{text}");
    assert!(text.contains("upgrade: websocket"), "{text}");
    // The early bytes, then more, come back through the tunnel.
    let mut got = vec![0u8; 11];
    c.read_exact(&mut got).unwrap();
    assert_eq!(got, b"EARLY-FRAME");
    c.write_all(b"ping").unwrap();
    let mut got = [0u8; 4];
    c.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"PING");
}

#[test]
fn a_refused_upgrade_is_an_ordinary_response() {
    for_each_backend(a_refused_upgrade_is_an_ordinary_response_on);
}

fn a_refused_upgrade_is_an_ordinary_response_on() {
    let o = ScriptedOrigin::start(|mut s: TcpStream| {
        while read_head_raw(&mut s).is_some() {
            s.write_all(b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 2\r\n\r\nno")
                .unwrap();
        }
    });
    let gw = gateway(&gateway_config(&[o.addr()], ""));
    let mut c = Client::connect(gw.local_addrs()[0]);
    let r = c.request("GET", UPGRADE).unwrap();
    assert_eq!((r.status(), r.body.as_slice()), (426, &b"no"[..]));
}

#[test]
fn an_idle_tunnel_is_closed() {
    for_each_backend(an_idle_tunnel_is_closed_on);
}

fn an_idle_tunnel_is_closed_on() {
    let o = ScriptedOrigin::start(|mut s: TcpStream| {
        read_head_raw(&mut s).unwrap();
        s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n").unwrap();
        let mut buf = [0u8; 16];
        let _ = s.read(&mut buf); // until the proxy closes
    });
    let gw = gateway(&gateway_config(
        &[o.addr()],
        "[http]\ntunnel_idle_timeout = \"500ms\"\n",
    ));
    let mut c = TcpStream::connect(gw.local_addrs()[0]).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(UPGRADE).unwrap();
    let mut all = Vec::new();
    let start = std::time::Instant::now();
    let _ = c.read_to_end(&mut all);
    assert!(String::from_utf8_lossy(&all).starts_with("HTTP/1.1 101"));
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "closed after the idle timeout"
    );
}
