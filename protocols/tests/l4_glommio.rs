//! The glommio backend over real loopback sockets: accept (queued and waited-for), owned-buffer
//! reads and writes, peer addresses, EOF, and the idle-connection probe.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::os::fd::OwnedFd;
use std::time::Duration;

use glommio::LocalExecutorBuilder;
use ringway_protocols::l4::glommio::GlommioBackend;
use ringway_protocols::l4::{pool_stats, read_at_least, Backend, Listener, Stream};

fn listening_socket() -> (OwnedFd, SocketAddr) {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_reuse_port(true).unwrap();
    s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    s.listen(128).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    (OwnedFd::from(s), addr)
}

#[test]
fn accept_read_write_both_when_queued_and_when_waiting() {
    let (fd, addr) = listening_socket();
    // 1. One client connects before the executor accepts (queued: the accept4 fast path).
    let mut early = StdStream::connect(addr).unwrap();
    // 2. Another connects 200 ms later, while accept waits in io_uring (the fallback path).
    let late = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        let mut s = StdStream::connect(addr).unwrap();
        s.write_all(b"late").unwrap();
        let mut got = [0u8; 4];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"LATE");
    });
    early.write_all(b"early").unwrap();
    let early_local = early.local_addr().unwrap();
    LocalExecutorBuilder::default()
        .spawn(move || async move {
            let listener = GlommioBackend::adopt_listener(fd).unwrap();
            for _ in 0..2 {
                let (mut s, peer) = listener.accept().await.unwrap();
                assert_eq!(s.peer_addr(), Some(peer));
                let buf = s.read().await.unwrap().unwrap();
                let upper = buf.to_ascii_uppercase();
                if &buf[..] == b"early" {
                    assert_eq!(peer, early_local);
                }
                drop(buf);
                let (res, _) = s.write_all(upper).await;
                res.unwrap();
            }
            assert_eq!(
                pool_stats().in_use,
                0,
                "no read buffer held after the reads"
            );
        })
        .unwrap()
        .join()
        .unwrap();
    let mut got = [0u8; 5];
    early.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"EARLY");
    late.join().unwrap();
}

#[test]
fn connect_eof_and_idle_probe() {
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = server.accept().unwrap();
        let mut b = [0u8; 3];
        s.read_exact(&mut b).unwrap();
        s.write_all(b"pong").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        drop(s); // closes: the client sees EOF and the idle probe turns false
    });
    LocalExecutorBuilder::default()
        .spawn(move || async move {
            let mut s = GlommioBackend::connect(addr, Duration::from_secs(2))
                .await
                .unwrap();
            assert!(s.is_idle_and_open(), "fresh connection is idle and open");
            let (res, _) = s.write_all(&b"pin"[..]).await;
            res.unwrap();
            let mut got = Vec::new();
            read_at_least(&mut s, &mut got, 4).await.unwrap();
            assert_eq!(got, b"pong");
            assert!(
                s.read().await.unwrap().is_none(),
                "EOF after the peer closed"
            );
            assert!(!s.is_idle_and_open(), "a closed connection is not reusable");
        })
        .unwrap()
        .join()
        .unwrap();
    t.join().unwrap();
}

#[test]
fn connect_refused_is_an_error() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    LocalExecutorBuilder::default()
        .spawn(move || async move {
            let err = GlommioBackend::connect(addr, Duration::from_secs(2))
                .await
                .unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
        })
        .unwrap()
        .join()
        .unwrap();
}
