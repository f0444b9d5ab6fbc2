//! The io_uring backend under volume: multi-MiB writes that the kernel can only take in pieces
//! (short sends resubmitted), and hundreds of concurrent connections echoing through one ring
//! per core. Every test is bounded in time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::{listening_socket, run_bounded, settled_stats};

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::TcpStream as StdStream;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use ringway_protocols::l4::uring::{self, UringBackend};
use ringway_protocols::l4::{pool_stats, read_at_least, Backend, Listener, Stream};

/// A deterministic, position-dependent byte pattern, so a dropped or repeated chunk shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn multi_mib_write_to_a_slow_reader_arrives_intact() {
    const LEN: usize = 8 << 20;
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    // 1. A reader with a small receive buffer that sleeps between reads: the sender's socket
    //    buffer fills, so SENDs return short and the remainder must be resubmitted.
    let reader = std::thread::spawn(move || {
        let (s, _) = server.accept().unwrap();
        socket2::SockRef::from(&s)
            .set_recv_buffer_size(32 * 1024)
            .unwrap();
        let mut s = s;
        let mut got = Vec::with_capacity(LEN);
        let mut chunk = vec![0u8; 64 * 1024];
        let mut reads = 0;
        while got.len() < LEN {
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0, "early EOF at {}", got.len());
            got.extend_from_slice(&chunk[..n]);
            reads += 1;
            if reads % 16 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        s.write_all(b"ok").unwrap();
        got
    });
    run_bounded(Duration::from_secs(30), move || async move {
        let mut s = UringBackend::connect(addr, Duration::from_secs(2))
            .await
            .unwrap();
        socket2::SockRef::from(&s)
            .set_send_buffer_size(64 * 1024)
            .unwrap();
        // 2. One write_all of the whole body; the buffer comes back intact.
        let body = pattern(LEN);
        let (res, back) = s.write_all(body).await;
        res.unwrap();
        assert_eq!(back.len(), LEN, "the caller gets its buffer back");
        let mut ack = Vec::new();
        read_at_least(&mut s, &mut ack, 2).await.unwrap();
        assert_eq!(ack, b"ok");
        let st = uring::stats();
        assert!(
            st.short_sends > 0,
            "the kernel took the body in pieces: {st:?}"
        );
        assert_eq!(st.in_flight, 0);
    });
    // 3. Every byte arrived, in order.
    assert!(reader.join().unwrap() == pattern(LEN), "payload corrupted");
}

#[test]
fn uring_to_uring_large_echo_both_directions() {
    const LEN: usize = 4 << 20;
    let (fd, addr) = listening_socket(16);
    run_bounded(Duration::from_secs(30), move || async move {
        let listener = UringBackend::adopt_listener(fd).unwrap();
        // The server echoes every chunk back as it arrives, concurrently with the client's
        // write: both directions are in flight on one ring at once.
        let server = glommio::spawn_local(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut total = 0;
            while let Some(buf) = s.read().await.unwrap() {
                total += buf.len();
                let (res, _) = s.write_all(buf).await;
                res.unwrap();
            }
            total
        });
        let mut client = UringBackend::connect(addr, Duration::from_secs(2))
            .await
            .unwrap();
        let body = pattern(LEN);
        // Write in 256 KiB steps and drain the echo after each, so neither side's socket
        // buffers have to hold the whole body.
        let mut sent = 0;
        let mut received = Vec::with_capacity(LEN);
        while sent < LEN {
            let step = (LEN - sent).min(256 * 1024);
            let (res, _) = client.write_all(body[sent..sent + step].to_vec()).await;
            res.unwrap();
            sent += step;
            let want = sent - received.len();
            read_at_least(&mut client, &mut received, want)
                .await
                .unwrap();
        }
        client.shutdown_write().await.unwrap();
        assert!(client.read().await.unwrap().is_none());
        assert_eq!(server.await, LEN);
        assert!(received == body, "echo corrupted");
        assert_eq!(pool_stats().in_use, 0);
        assert_eq!(settled_stats().await.in_flight, 0);
    });
}

#[test]
fn five_hundred_concurrent_connections_echo() {
    const CONNS: usize = 500;
    const ROUNDS: usize = 5;
    let (fd, addr) = listening_socket(1024);
    // 1. A server executor: one task per accepted connection, echoing until EOF.
    let (done_tx, done_rx) = mpsc::channel::<usize>();
    let server = std::thread::spawn(move || {
        run_bounded(Duration::from_secs(60), move || async move {
            let listener = UringBackend::adopt_listener(fd).unwrap();
            let served = Rc::new(Cell::new(0usize));
            let mut tasks = Vec::new();
            for _ in 0..CONNS {
                let (mut s, _) = listener.accept().await.unwrap();
                let served = served.clone();
                tasks.push(glommio::spawn_local(async move {
                    while let Some(buf) = s.read().await.unwrap() {
                        let (res, _) = s.write_all(buf).await;
                        res.unwrap();
                    }
                    served.set(served.get() + 1);
                }));
            }
            for t in tasks {
                t.await;
            }
            assert_eq!(pool_stats().in_use, 0);
            assert_eq!(settled_stats().await.in_flight, 0);
            done_tx.send(served.get()).unwrap();
        });
    });
    // 2. A client executor on another thread (its own ring): 500 connections at once, each
    //    sending ROUNDS numbered messages and checking every echo.
    run_bounded(Duration::from_secs(60), move || async move {
        let mut tasks = Vec::new();
        for i in 0..CONNS {
            tasks.push(glommio::spawn_local(async move {
                let mut s = UringBackend::connect(addr, Duration::from_secs(5))
                    .await
                    .unwrap();
                for r in 0..ROUNDS {
                    let msg = format!("conn {i} round {r};").into_bytes();
                    let (res, msg) = s.write_all(msg).await;
                    res.unwrap();
                    let mut got = Vec::new();
                    read_at_least(&mut s, &mut got, msg.len()).await.unwrap();
                    assert_eq!(got, msg);
                }
            }));
        }
        for t in tasks {
            t.await;
        }
        assert_eq!(settled_stats().await.in_flight, 0);
    });
    assert_eq!(
        done_rx.recv_timeout(Duration::from_secs(30)).unwrap(),
        CONNS
    );
    server.join().unwrap();
    // A plain blocking client still gets served by nothing: the listener is gone.
    assert!(StdStream::connect_timeout(&addr, Duration::from_millis(200)).is_err());
}

#[test]
fn reads_completing_all_at_once_are_all_woken() {
    const CONNS: usize = 200;
    const ROUNDS: usize = 10;
    for round in 0..ROUNDS {
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        // 1. A peer accepts every connection, waits until all readers are parked, then closes
        //    them all at once: hundreds of RECVs complete in one burst of deferred work.
        let peer = std::thread::spawn(move || {
            let conns: Vec<_> = (0..CONNS).map(|_| server.accept().unwrap().0).collect();
            go_rx.recv().unwrap();
            std::thread::sleep(Duration::from_millis(50));
            drop(conns);
        });
        run_bounded(Duration::from_secs(20), move || async move {
            let mut streams = Vec::new();
            for _ in 0..CONNS {
                streams.push(
                    UringBackend::connect(addr, Duration::from_secs(5))
                        .await
                        .unwrap(),
                );
            }
            let mut tasks = Vec::new();
            for mut s in streams {
                tasks.push(glommio::spawn_local(async move {
                    assert!(s.read().await.unwrap().is_none());
                }));
            }
            go_tx.send(()).unwrap();
            // 2. Every reader must see EOF: none may be left behind by a lost wake-up.
            for t in tasks {
                t.await;
            }
            let st = settled_stats().await;
            assert_eq!(st.in_flight, 0, "round {round}: {st:?}");
        });
        peer.join().unwrap();
    }
}

#[test]
fn a_burst_larger_than_the_buffer_ring_falls_back_to_own_buffers() {
    const CONNS: usize = 200;
    let (fd, addr) = listening_socket(1024);
    // 1. Every peer has sent its message before any read is submitted.
    let mut peers = Vec::new();
    for i in 0..CONNS {
        let mut p = StdStream::connect(addr).unwrap();
        p.write_all(format!("message {i}").as_bytes()).unwrap();
        peers.push(p);
    }
    run_bounded(Duration::from_secs(30), move || async move {
        let listener = UringBackend::adopt_listener(fd).unwrap();
        let mut streams = Vec::new();
        for _ in 0..CONNS {
            streams.push(listener.accept().await.unwrap().0);
        }
        // 2. All reads start in one executor turn, so their RECVs reach the kernel in one
        //    batch: more RECVs find data at once than the ring lends buffers, and the rest fail
        //    with ENOBUFS and retry with buffers of their own.
        let tasks: Vec<_> = streams
            .into_iter()
            .map(|mut s| {
                glommio::spawn_local(async move {
                    let buf = s.read().await.unwrap().unwrap();
                    (buf.to_vec(), s)
                })
            })
            .collect();
        let mut got = Vec::new();
        for t in tasks {
            got.push(t.await);
        }
        // 3. Every message arrived intact, whichever buffer carried it.
        let mut texts: Vec<String> = got
            .iter()
            .map(|(b, _)| String::from_utf8(b.clone()).unwrap())
            .collect();
        texts.sort();
        let mut want: Vec<String> = (0..CONNS).map(|i| format!("message {i}")).collect();
        want.sort();
        assert_eq!(texts, want);
        let st = uring::stats();
        assert!(
            st.recv_buffer_fallbacks > 0,
            "the ring was never exhausted: {st:?}"
        );
        drop(got);
        settled_stats().await;
        assert_eq!(pool_stats().in_use, 0);
    });
    drop(peers);
}

#[test]
fn a_quiet_connection_reads_into_a_few_warm_buffers() {
    const ROUNDS: usize = 200;
    let (fd, addr) = listening_socket(16);
    // 1. A peer sends a message, waits for its echo, and sends the next: one read at a time.
    let peer = std::thread::spawn(move || {
        let mut p = StdStream::connect(addr).unwrap();
        let mut echo = [0u8; 16];
        for i in 0..ROUNDS {
            let msg = format!("ping {i:011}");
            p.write_all(msg.as_bytes()).unwrap();
            p.read_exact(&mut echo).unwrap();
            assert_eq!(&echo[..], msg.as_bytes());
        }
    });
    run_bounded(Duration::from_secs(30), move || async move {
        let listener = UringBackend::adopt_listener(fd).unwrap();
        let (mut s, _) = listener.accept().await.unwrap();
        let mut addrs = std::collections::BTreeSet::new();
        let mut most_lent = 0;
        for _ in 0..ROUNDS {
            let mut msg = Vec::new();
            while msg.len() < 16 {
                let buf = s.read().await.unwrap().unwrap();
                addrs.insert(buf.as_ptr() as usize);
                msg.extend_from_slice(&buf);
            }
            most_lent = most_lent.max(uring::stats().ring_buffers_lent);
            let (res, _) = s.write_all(msg).await;
            res.unwrap();
        }
        // 2. The ring lent only what one read in flight could pick, so the 200 reads cycled
        //    through a few buffers (the ones the pool hands back warm), not through all 64.
        assert!(most_lent <= 4, "lent {most_lent} buffers for one read");
        assert!(
            addrs.len() <= 6,
            "200 reads landed in {} distinct buffers",
            addrs.len()
        );
        assert_eq!(uring::stats().recv_buffer_fallbacks, 0);
    });
    peer.join().unwrap();
}

#[test]
fn a_burst_after_a_quiet_spell_finds_enough_buffers_lent() {
    const CONNS: usize = 60;
    let (fd, addr) = listening_socket(256);
    let (sent_tx, sent_rx) = mpsc::channel::<()>();
    let (quiet_tx, quiet_rx) = mpsc::channel::<()>();
    let peer = std::thread::spawn(move || {
        // 1. One connection, one message: the ring settles at a handful of buffers.
        let mut first = StdStream::connect(addr).unwrap();
        first.write_all(b"quiet").unwrap();
        quiet_rx.recv().unwrap();
        // 2. Then 60 peers send at once, before any of their reads is submitted.
        let mut peers = Vec::new();
        for i in 0..CONNS {
            let mut p = StdStream::connect(addr).unwrap();
            p.write_all(format!("message {i}").as_bytes()).unwrap();
            peers.push(p);
        }
        sent_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_secs(1));
        drop((first, peers));
    });
    run_bounded(Duration::from_secs(30), move || async move {
        let listener = UringBackend::adopt_listener(fd).unwrap();
        let (mut s, _) = listener.accept().await.unwrap();
        assert_eq!(&s.read().await.unwrap().unwrap()[..], b"quiet");
        let quiet = uring::stats().ring_buffers_lent;
        assert!(quiet <= 4, "a quiet ring lent {quiet} buffers");
        quiet_tx.send(()).unwrap();
        let mut streams = Vec::new();
        for _ in 0..CONNS {
            streams.push(listener.accept().await.unwrap().0);
        }
        sent_rx.recv().unwrap();
        // 3. All reads start in one executor turn and find their bytes at once: the enter that
        //    submits them lends first, so none finds the ring empty.
        let tasks: Vec<_> = streams
            .into_iter()
            .map(|mut s| {
                glommio::spawn_local(async move {
                    let buf = s.read().await.unwrap().unwrap();
                    String::from_utf8(buf.to_vec()).unwrap()
                })
            })
            .collect();
        let mut got = Vec::new();
        for t in tasks {
            got.push(t.await);
        }
        got.sort();
        let mut want: Vec<String> = (0..CONNS).map(|i| format!("message {i}")).collect();
        want.sort();
        assert_eq!(got, want);
        let st = uring::stats();
        assert_eq!(st.recv_buffer_fallbacks, 0, "{st:?}");
        drop(s);
    });
    peer.join().unwrap();
}
