//! The io_uring backend over real loopback sockets: the glommio backend's cases (accept queued
//! and waited-for, owned-buffer reads and writes, peer addresses, EOF, the idle probe, a refused
//! connect) plus a connect timeout against a listener whose backlog is full, and a check that
//! a parked driver sleeps instead of spinning. Every test is bounded in time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::{listening_socket, run_bounded, settled_stats};

use std::io::{Read, Write};
use std::net::TcpStream as StdStream;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use ringway_protocols::l4::uring::UringBackend;
use ringway_protocols::l4::{pool_stats, read_at_least, Backend, Listener, Stream};

/// CPU time this thread has used.
fn thread_cpu() -> Duration {
    // SAFETY: zeroed rusage is a valid out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_THREAD with a valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[test]
fn accept_read_write_both_when_queued_and_when_waiting() {
    let (fd, addr) = listening_socket(128);
    // 1. One client connects before the executor accepts (queued: ACCEPT completes inline).
    let mut early = StdStream::connect(addr).unwrap();
    // 2. Another connects 200 ms later, while the ACCEPT waits and the driver is parked.
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
    run_bounded(Duration::from_secs(10), move || async move {
        let listener = UringBackend::adopt_listener(fd).unwrap();
        assert_eq!(listener.local_addr().unwrap(), addr);
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
        let st = settled_stats().await;
        assert_eq!(
            pool_stats().in_use,
            0,
            "no read buffer held once the streams are gone"
        );
        assert_eq!(st.in_flight, 0);
        assert!(st.parks > 0, "the driver parked while waiting: {st:?}");
        assert!(st.eventfd_wakeups > 0, "the eventfd woke it: {st:?}");
    });
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
    run_bounded(Duration::from_secs(10), move || async move {
        let mut s = UringBackend::connect(addr, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(s.peer_addr(), Some(addr));
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
        // Writing to a closed peer is an error, not a SIGPIPE.
        let mut last = Ok(());
        for _ in 0..3 {
            let (res, _) = s.write_all(vec![0u8; 64 * 1024]).await;
            last = res;
            if last.is_err() {
                break;
            }
        }
        assert!(last.is_err(), "writes to a closed peer fail");
        s.shutdown_write().await.ok();
    });
    t.join().unwrap();
}

#[test]
fn connect_refused_is_an_error() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    run_bounded(Duration::from_secs(10), move || async move {
        let err = UringBackend::connect(addr, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
        assert_eq!(settled_stats().await.in_flight, 0);
    });
}

#[test]
fn connect_times_out_against_a_full_backlog() {
    // 1. A listener that never accepts, with the smallest backlog.
    let (fd, addr) = listening_socket(0);
    // 2. Fill its accept queue: once it is full the kernel drops further SYNs, so a connect
    //    neither succeeds nor is refused. Stop at the first client connect that times out.
    let mut fillers = Vec::new();
    loop {
        match StdStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => fillers.push(s),
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
                break;
            }
        }
        assert!(fillers.len() < 64, "backlog never filled");
    }
    // 3. The backend's connect must give up after its linked timeout, reported as TimedOut.
    run_bounded(Duration::from_secs(10), move || async move {
        let start = Instant::now();
        let err = UringBackend::connect(addr, Duration::from_millis(150))
            .await
            .unwrap_err();
        let took = start.elapsed();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
        assert!(took >= Duration::from_millis(140), "fired early: {took:?}");
        assert!(took < Duration::from_secs(2), "fired late: {took:?}");
        assert_eq!(settled_stats().await.in_flight, 0);
    });
    drop(fd);
}

#[test]
fn a_parked_driver_sleeps_instead_of_spinning() {
    let (fd, addr) = listening_socket(16);
    let client = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        StdStream::connect(addr).unwrap()
    });
    run_bounded(Duration::from_secs(10), move || async move {
        let listener = UringBackend::adopt_listener(fd).unwrap();
        let cpu = thread_cpu();
        let wall = Instant::now();
        let (_s, _) = listener.accept().await.unwrap();
        let (cpu, wall) = (thread_cpu() - cpu, wall.elapsed());
        assert!(wall >= Duration::from_millis(250));
        assert!(
            cpu < Duration::from_millis(50),
            "waiting {wall:?} for a connection cost {cpu:?} of CPU"
        );
    });
    client.join().unwrap();
}

#[test]
fn adopt_listener_rejects_a_socket_that_is_not_listening() {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let err = UringBackend::adopt_listener(OwnedFd::from(s)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}
