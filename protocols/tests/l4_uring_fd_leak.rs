//! Cancellation and leak tests for the io_uring backend, narrated in the manner of monoio's
//! `tests/fd_leak.rs`: each drops a future while the kernel still owns its operation, then
//! checks that the buffer lived until the final completion, went back to the pool, and that no
//! descriptor outlived its owner. Descriptors are counted in /proc/self/fd (the ring's own
//! anonymous inodes excluded), so the tests in this file run one at a time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::{fill_send_buffer, listening_socket, run_bounded};

use std::cell::Cell;
use std::future::Future;
use std::io::{Read, Write};
use std::net::TcpStream as StdStream;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Mutex;
use std::time::Duration;

use futures_lite::future;
use glommio::timer::sleep;
use ringway_protocols::l4::uring::{self, UringBackend};
use ringway_protocols::l4::{
    pool_stats, read_at_least, Backend, LastWriteFailed, Listener, StableBuf, Stream,
};

/// The tests count process-wide descriptors: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Open descriptors of this process that are not anonymous inodes (rings, eventfds, which
/// glommio and the driver keep per executor): sockets, pipes and files.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|target| !target.to_string_lossy().starts_with("anon_inode:"))
        .count()
}

/// Resident set size of this process.
fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Lets the driver run until this process has `want` descriptors open (bounded): a dropped
/// stream's socket is closed by an IORING_OP_CLOSE that goes in with the next submission.
async fn fds_settle_at(want: usize) -> usize {
    for _ in 0..2000 {
        if open_fds() == want {
            return want;
        }
        sleep(Duration::from_millis(1)).await;
    }
    open_fds()
}

/// Lets the driver run until no operation is in flight on this core (bounded).
async fn settle() {
    for _ in 0..2000 {
        if uring::stats().in_flight == 0 {
            return;
        }
        sleep(Duration::from_millis(1)).await;
    }
    panic!("operations still in flight: {:?}", uring::stats());
}

/// `fut` if it finishes within `dur`; otherwise it is dropped mid-flight and `None` returned.
/// The deadline is polled first: a `fut` that was never woken is not polled by the deadline's
/// wake-up and so cannot finish on it.
async fn within<T>(dur: Duration, fut: impl Future<Output = T>) -> Option<T> {
    future::or(
        async {
            sleep(dur).await;
            None
        },
        async { Some(fut.await) },
    )
    .await
}

#[test]
fn a_read_dropped_mid_flight_loses_no_bytes() {
    let _serial = serial();
    let (fd, addr) = listening_socket(16);
    // 1. A peer connects and stays silent for now.
    let mut peer = StdStream::connect(addr).unwrap();
    run_bounded(Duration::from_secs(10), move || async move {
        let listener = UringBackend::adopt_listener(fd).unwrap();
        let (mut stream, _) = listener.accept().await.unwrap();
        let pool_before = pool_stats().in_use;
        // 2. A read waits for bytes that do not come yet; a timeout drops its future.
        let r = within(Duration::from_millis(50), stream.read()).await;
        assert!(r.is_none(), "the read cannot have completed");
        // 3. The RECV was not cancelled: it belongs to the stream and stays armed. It holds no
        //    buffer: the kernel picks one from the provided-buffer ring when bytes arrive.
        let st = uring::stats();
        assert_eq!((st.in_flight, st.cancels), (1, 0), "{st:?}");
        assert_eq!(pool_stats().in_use, pool_before);
        // 4. The peer now sends; the kernel completes the orphaned RECV...
        assert!(stream.is_idle_and_open());
        peer.write_all(b"hello").unwrap();
        sleep(Duration::from_millis(20)).await;
        assert!(
            !stream.is_idle_and_open(),
            "bytes held by the orphaned RECV make the stream not idle"
        );
        // 5. ...and the next read returns those bytes: nothing was lost.
        let got = stream.read().await.unwrap().unwrap();
        assert_eq!(&got[..], b"hello");
        drop(got);
        assert_eq!(pool_stats().in_use, pool_before);
        assert_eq!(uring::stats().in_flight, 0);
        drop(stream);
        drop(listener);
    });
}

#[test]
fn a_watched_idle_stream_answers_liveness_from_its_watch_and_reads_the_reply_with_it() {
    let _serial = serial();
    let (fd, addr) = listening_socket(16);
    let mut peer = StdStream::connect(addr).unwrap();
    let peer_thread = std::thread::spawn(move || {
        // Answers one ping with a pong, then closes when told to.
        let mut b = [0u8; 4];
        peer.read_exact(&mut b).unwrap();
        peer.write_all(b"pong").unwrap();
        peer.read_exact(&mut b).unwrap();
        drop(peer);
    });
    run_bounded(Duration::from_secs(10), move || async move {
        let listener = UringBackend::adopt_listener(fd).unwrap();
        let (mut stream, _) = listener.accept().await.unwrap();
        let pool_before = pool_stats().in_use;
        // 1. The stream goes idle in a pool: a RECV watches it, waiting for readiness first and
        //    holding no buffer (the kernel picks one from the ring when bytes arrive).
        stream.watch_idle();
        sleep(Duration::from_millis(20)).await;
        assert_eq!(uring::stats().in_flight, 1);
        assert_eq!(pool_stats().in_use, pool_before);
        // 2. Liveness comes from the watch's state: still waiting, nothing flagged, so idle.
        assert!(stream.is_idle_and_open());
        // 3. The next exchange sends its request alone; the watch is the RECV of the reply.
        let before = uring::stats();
        stream.write_last(&b"ping"[..]).await.0.unwrap();
        let mut got = Vec::new();
        read_at_least(&mut stream, &mut got, 4).await.unwrap();
        assert_eq!(got, b"pong");
        let after = uring::stats();
        assert_eq!(after.cancels - before.cancels, 0, "nothing cancelled");
        assert_eq!(after.submitted - before.submitted, 1, "the SEND alone");
        assert_eq!(after.in_flight, 0, "nothing left in flight");
        assert_eq!(
            after.completions - before.completions,
            1,
            "the RECV's alone: the SEND, whole, posts none"
        );
        // 4. Idle again and watched; the peer then closes: the watch completes and the stream is
        //    no longer reusable; a read sees EOF.
        stream.watch_idle();
        let (res, _) = stream.write_all(&b"bye!"[..]).await;
        res.unwrap();
        sleep(Duration::from_millis(50)).await;
        assert!(!stream.is_idle_and_open(), "a closed peer is not reusable");
        assert!(stream.read().await.unwrap().is_none(), "EOF");
        assert_eq!(pool_stats().in_use, pool_before);
        drop(stream);
        drop(listener);
        settle().await;
        assert_eq!(uring::stats().in_flight, 0);
    });
    peer_thread.join().unwrap();
}

#[test]
fn a_stream_dropped_with_a_read_in_flight_cancels_it_and_leaks_nothing() {
    let _serial = serial();
    let (fd, addr) = listening_socket(16);
    // 1. A peer connects and stays silent.
    let mut peer = StdStream::connect(addr).unwrap();
    run_bounded(Duration::from_secs(10), move || async move {
        let listener = UringBackend::adopt_listener(fd).unwrap();
        let (mut stream, _) = listener.accept().await.unwrap();
        let fds_with_stream = open_fds();
        let pool_before = pool_stats().in_use;
        // 2. A read is abandoned by a timeout; its RECV stays armed inside the stream.
        assert!(within(Duration::from_millis(50), stream.read())
            .await
            .is_none());
        // 3. Dropping the stream queues an ASYNC_CANCEL for the RECV and an IORING_OP_CLOSE
        //    for its socket, both submitted with the driver's next turn. The RECV stays in
        //    flight until the cancellation's final completion (it holds no buffer: a ring
        //    buffer is picked only when bytes arrive).
        drop(stream);
        assert_eq!(
            fds_settle_at(fds_with_stream - 1).await,
            fds_with_stream - 1,
            "the stream's socket is closed"
        );
        // The turn that closed it also submitted the cancellation, whose final completion may
        // not be reaped yet.
        let st = uring::stats();
        assert_eq!(st.cancels, 1, "{st:?}");
        assert!(st.in_flight <= 1, "{st:?}");
        assert_eq!(pool_stats().in_use, pool_before);
        // 4. The driver reaps the RECV's -ECANCELED.
        settle().await;
        assert_eq!(pool_stats().in_use, pool_before);
        assert_eq!(pool_stats().in_use, 0);
        drop(listener);
    });
    // 5. The peer sees the close.
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 1];
    assert_eq!(
        peer.read(&mut b).unwrap(),
        0,
        "EOF after the stream was dropped"
    );
}

#[test]
fn abandoned_accept_that_won_the_race_closes_its_connection() {
    let _serial = serial();
    let (fd, addr) = listening_socket(16);
    // 1. A client is already in the accept queue.
    let mut client = StdStream::connect(addr).unwrap();
    run_bounded(Duration::from_secs(10), move || async move {
        let listener = UringBackend::adopt_listener(fd).unwrap();
        let baseline = open_fds();
        // 2. An accept is polled once (its SQE is queued, not yet submitted) and dropped.
        assert!(future::poll_once(listener.accept()).await.is_none());
        // 3. The driver's next turn submits the ACCEPT and its ASYNC_CANCEL together. The
        //    ACCEPT completes inline with the queued client before the cancel can find it, so
        //    its CQE brings a new descriptor to an abandoned slot, which closes it.
        settle().await;
        assert_eq!(open_fds(), baseline, "the late connection was closed");
        assert_eq!(uring::stats().cancels, 1);
        drop(listener);
    });
    // 4. The client sees its connection closed rather than hanging in a backlog.
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut b = [0u8; 1];
    assert_eq!(client.read(&mut b).unwrap(), 0);
}

/// A write buffer that reports when it is dropped.
struct Tracked {
    bytes: Vec<u8>,
    dropped: Rc<Cell<bool>>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.dropped.set(true);
    }
}

// SAFETY: the bytes live in a heap Vec that is never resized while owned.
unsafe impl StableBuf for Tracked {
    fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

#[test]
fn dropped_write_keeps_its_buffer_until_the_final_completion() {
    let _serial = serial();
    let (fd, addr) = listening_socket(16);
    // 1. A peer that connects and never reads: the SEND stalls once the buffers fill.
    let peer = StdStream::connect(addr).unwrap();
    run_bounded(Duration::from_secs(10), move || async move {
        let listener = UringBackend::adopt_listener(fd).unwrap();
        let (mut stream, _) = listener.accept().await.unwrap();
        let baseline = open_fds();
        let dropped = Rc::new(Cell::new(false));
        let buf = Tracked {
            bytes: vec![0x5a; 32 << 20],
            dropped: dropped.clone(),
        };
        // 2. write_all is cut short by a timeout while a SEND is in flight.
        let r = within(Duration::from_millis(100), stream.write_all(buf)).await;
        assert!(
            r.is_none(),
            "32 MiB cannot fit a non-reading peer's buffers"
        );
        // 3. The future is gone, yet the buffer is not: the kernel may still read from it.
        //    (The second operation in flight is the stream's read-ahead RECV.)
        assert!(!dropped.get(), "buffer freed under an in-flight SEND");
        assert_eq!(uring::stats().in_flight, 2);
        // 4. After the cancelled SEND's final completion the slot releases the buffer.
        for _ in 0..2000 {
            if dropped.get() {
                break;
            }
            sleep(Duration::from_millis(1)).await;
        }
        assert!(dropped.get(), "buffer released after the final completion");
        assert_eq!(uring::stats().in_flight, 1, "only the read-ahead RECV");
        // 5. The stream closes on drop, cancelling its RECV; nothing stays in flight.
        drop(stream);
        assert_eq!(fds_settle_at(baseline - 1).await, baseline - 1);
        settle().await;
        assert_eq!(pool_stats().in_use, 0);
        drop(listener);
    });
    drop(peer);
}

#[test]
fn dropped_connect_closes_its_socket() {
    let _serial = serial();
    // 1. A listener whose backlog is full drops SYNs: a connect to it stays in flight.
    let (fd, addr) = listening_socket(0);
    let mut fillers = Vec::new();
    while StdStream::connect_timeout(&addr, Duration::from_millis(200))
        .map(|s| fillers.push(s))
        .is_ok()
    {
        assert!(fillers.len() < 64, "backlog never filled");
    }
    run_bounded(Duration::from_secs(10), move || async move {
        let baseline = open_fds();
        // 2. A connect with a long linked timeout is dropped after 50 ms.
        let r = within(
            Duration::from_millis(50),
            UringBackend::connect(addr, Duration::from_secs(30)),
        )
        .await;
        assert!(r.is_none());
        // 3. Its socket stays open while the CONNECT is in flight, then closes with the final
        //    completion of the cancellation.
        settle().await;
        assert_eq!(open_fds(), baseline, "the connecting socket was closed");
    });
    drop(fillers);
    drop(fd);
}

#[test]
fn ten_thousand_connect_close_cycles_leave_the_fd_count_unchanged() {
    // `RINGWAY_URING_CYCLES=100000` runs the longer soak.
    let cycles: usize = std::env::var("RINGWAY_URING_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let _serial = serial();
    let (fd, addr) = listening_socket(1024);
    run_bounded(Duration::from_secs(120), move || async move {
        let listener = Rc::new(UringBackend::adopt_listener(fd).unwrap());
        // 1. The server side accepts and closes at once, so the server holds TIME_WAIT and
        //    the client's ephemeral ports are not exhausted.
        let l = listener.clone();
        let server = glommio::spawn_local(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                drop(s);
            }
        })
        .detach();
        // 2. One warm-up cycle creates the ring, the pools and the driver's state.
        let cycle = || async {
            let mut s = UringBackend::connect(addr, Duration::from_secs(5))
                .await
                .unwrap();
            // EOF proves the server closed its end before the client closes its own.
            assert!(s.read().await.unwrap().is_none());
        };
        cycle().await;
        // (its socket's IORING_OP_CLOSE goes in with the driver's next turn)
        sleep(Duration::from_millis(20)).await;
        let baseline = open_fds();
        let rss_before = rss_bytes();
        // 3. Ten thousand connect, read-EOF, close cycles.
        for _ in 0..cycles {
            cycle().await;
        }
        // 4. Same descriptors as before, RSS within 4 MiB, every buffer back, nothing in
        //    flight but the server's pending accept, which is cancelled with its task.
        assert_eq!(
            fds_settle_at(baseline).await,
            baseline,
            "descriptors leaked over {cycles} cycles"
        );
        let grown = rss_bytes().saturating_sub(rss_before);
        println!("{cycles} connect/close cycles: RSS grew by {grown} bytes");
        assert!(
            grown < 4 << 20,
            "RSS grew by {grown} bytes over {cycles} cycles"
        );
        assert_eq!(pool_stats().in_use, 0);
        assert_eq!(uring::stats().in_flight, 1, "only the waiting accept");
        server.cancel();
        settle().await;
        assert_eq!(fds_settle_at(baseline).await, baseline);
        drop(listener);
    });
}

#[test]
fn a_stream_dropped_with_unread_bytes_closes_and_resets() {
    let _serial = serial();
    let (fd, addr) = listening_socket(16);
    let mut peer = StdStream::connect(addr).unwrap();
    // 1. The peer sends more than the server will read.
    peer.write_all(&[1u8; 1000]).unwrap();
    run_bounded(Duration::from_secs(10), move || async move {
        let listener = UringBackend::adopt_listener(fd).unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let with_stream = open_fds();
        // 2. The stream is dropped without reading: the socket closes with the next submission.
        drop(stream);
        assert_eq!(fds_settle_at(with_stream - 1).await, with_stream - 1);
        assert_eq!(pool_stats().in_use, 0);
        drop(listener);
    });
    // 3. Closing with unread data sends a reset; the peer's read fails or sees EOF, never
    //    hangs.
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 1];
    match peer.read(&mut b) {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("read {n} bytes from a closed stream"),
    }
}

#[test]
fn idle_connections_waiting_in_read_hold_no_buffer() {
    const CONNS: usize = 1000;
    let _serial = serial();
    let (fd, addr) = listening_socket(1024);
    // 1. A thousand peers connect and stay silent, like idle keep-alive clients.
    let peers: Vec<StdStream> = (0..CONNS)
        .map(|_| StdStream::connect(addr).unwrap())
        .collect();
    run_bounded(Duration::from_secs(30), move || async move {
        let listener = UringBackend::adopt_listener(fd).unwrap();
        let mut tasks = Vec::new();
        for _ in 0..CONNS {
            let (mut s, _) = listener.accept().await.unwrap();
            tasks.push(glommio::spawn_local(async move {
                s.read().await.map(|b| b.is_none())
            }));
        }
        // 2. Every connection now waits in `read` with a RECV in the kernel...
        for _ in 0..2000 {
            if uring::stats().in_flight >= CONNS {
                break;
            }
            sleep(Duration::from_millis(1)).await;
        }
        assert!(uring::stats().in_flight >= CONNS);
        // 3. ...and none of them holds a read buffer: the kernel picks one from the per-core
        //    provided-buffer ring only when bytes arrive.
        assert_eq!(pool_stats().in_use, 0, "an idle connection held a buffer");
        drop(tasks);
        settle().await;
        drop(listener);
    });
    drop(peers);
}

#[test]
fn an_executor_that_stops_with_operations_in_flight_shuts_down_cleanly() {
    let _serial = serial();
    let (fd, addr) = listening_socket(16);
    let peers: Vec<StdStream> = (0..8).map(|_| StdStream::connect(addr).unwrap()).collect();
    // 1. Streams wait in `read` inside detached tasks, a write is stalled on a peer that does
    //    not read, and an accept waits: all in the kernel when the executor's main future
    //    returns.
    run_bounded(Duration::from_secs(10), move || async move {
        let listener = Rc::new(UringBackend::adopt_listener(fd).unwrap());
        for i in 0..8 {
            let (mut s, _) = listener.accept().await.unwrap();
            glommio::spawn_local(async move {
                if i == 0 {
                    let _ = s.write_all(vec![0u8; 32 << 20]).await;
                }
                let _ = s.read().await;
            })
            .detach();
        }
        let l = listener.clone();
        glommio::spawn_local(async move {
            let _ = l.accept().await;
        })
        .detach();
        sleep(Duration::from_millis(50)).await;
        assert!(uring::stats().in_flight >= 9);
        // 2. Returning ends the executor and the thread exits without a panic or an abort.
        //    (glommio 0.9 does not drop tasks still pending when an executor stops, for either
        //    backend: their sockets stay open. Close connections before the main future
        //    returns; the driver's own teardown runs when its task or ring is dropped.)
    });
    drop(peers);
}

#[test]
fn write_last_links_its_send_to_the_next_read_and_keeps_the_buffer_until_then() {
    let _serial = serial();
    let (fd, addr) = listening_socket(16);
    let mut peer = StdStream::connect(addr).unwrap();
    let peer_thread = std::thread::spawn(move || {
        // Echoes one 4-byte message back, then waits for the other side to close.
        let mut b = [0u8; 4];
        peer.read_exact(&mut b).unwrap();
        peer.write_all(&b).unwrap();
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).unwrap();
        rest
    });
    run_bounded(Duration::from_secs(10), move || async move {
        let listener = UringBackend::adopt_listener(fd).unwrap();
        let (mut stream, _) = listener.accept().await.unwrap();
        let dropped = Rc::new(Cell::new(false));
        let before = uring::stats();
        // 1. The last write before a read: a SEND that posts no completion on success, linked
        //    to a RECV that owns the SEND's buffer. It returns at once.
        stream
            .write_last(Tracked {
                bytes: b"ping".to_vec(),
                dropped: dropped.clone(),
            })
            .await
            .0
            .unwrap();
        // The bytes were copied into an allocation of their own size, which the RECV owns: the
        // caller's buffer (in the proxy, often a 64 KiB read buffer) is handed back at once.
        assert!(dropped.get(), "the caller's buffer is not held");
        assert_eq!(uring::stats().in_flight, 1, "one slot: the RECV");
        // 2. A second write before the read would race the linked SEND: refused.
        let (r, _) = stream.write_all(&b"no"[..]).await;
        assert!(r.is_err());
        // 3. The read collects the reply; the buffer was released with the RECV.
        let got = stream.read().await.unwrap().unwrap();
        assert_eq!(&got[..], b"ping");
        drop(got);
        let after = uring::stats();
        assert_eq!(
            after.completions - before.completions,
            1,
            "one completion for the exchange, none for the successful SEND"
        );
        // 4. Writes work again after the read.
        let (r, _) = stream.write_all(&b"more"[..]).await;
        r.unwrap();
        drop(stream);
        settle().await;
        assert_eq!(pool_stats().in_use, 0);
        drop(listener);
    });
    assert_eq!(peer_thread.join().unwrap(), b"more");
}

#[test]
fn a_stream_dropped_while_its_last_write_is_stuck_cancels_it_and_frees_the_buffer() {
    let _serial = serial();
    let (fd, addr) = listening_socket(16);
    // A peer that never reads.
    let peer = StdStream::connect(addr).unwrap();
    run_bounded(Duration::from_secs(10), move || async move {
        let listener = UringBackend::adopt_listener(fd).unwrap();
        let (mut stream, _) = listener.accept().await.unwrap();
        let fds_with_stream = open_fds();
        // 1. Fill the socket's buffers behind the ring's back, until the kernel takes no more.
        let chunk = vec![7u8; 64 << 10];
        loop {
            // SAFETY: a non-blocking send from a live buffer on the stream's own socket.
            let n = unsafe {
                libc::send(
                    stream.as_raw_fd(),
                    chunk.as_ptr().cast(),
                    chunk.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n <= 0 {
                break;
            }
        }
        // 2. The last write now stalls for buffer space; its RECV cannot start.
        stream.write_last(vec![1u8; 512]).await.0.unwrap();
        sleep(Duration::from_millis(50)).await;
        assert_eq!(
            uring::stats().in_flight,
            1,
            "the linked RECV, not yet started"
        );
        // 3. Dropping the stream shuts its socket down both ways: the SEND ends short, the hard
        //    link starts the RECV, which fails at once, its final completion releases the
        //    copied bytes, and the socket closes.
        drop(stream);
        settle().await;
        assert_eq!(
            fds_settle_at(fds_with_stream - 1).await,
            fds_with_stream - 1
        );
        drop(listener);
    });
    drop(peer);
}

#[test]
fn a_last_write_that_fails_is_reported_by_the_next_read() {
    let _serial = serial();
    // Linked to the read's RECV, then sent alone behind the RECV of an idle watch.
    for watched in [false, true] {
        let (fd, addr) = listening_socket(16);
        let peer = StdStream::connect(addr).unwrap();
        run_bounded(Duration::from_secs(10), move || async move {
            let listener = UringBackend::adopt_listener(fd).unwrap();
            let (mut stream, _) = listener.accept().await.unwrap();
            if watched {
                // Idle and watched: the RECV of the next reply waits in the kernel.
                stream.watch_idle();
                sleep(Duration::from_millis(20)).await;
            }
            // The peer resets the connection (SO_LINGER 0, then close) before the write.
            socket2::SockRef::from(&peer)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(peer);
            sleep(Duration::from_millis(20)).await;
            stream.write_last(vec![1u8; 512]).await.0.unwrap();
            // The SEND fails; the read after it says so rather than returning data or EOF
            // (behind a watch: whatever its RECV got).
            let err = stream.read().await.unwrap_err();
            assert_eq!(
                err.kind(),
                std::io::ErrorKind::BrokenPipe,
                "{watched}: {err:?}"
            );
            assert!(LastWriteFailed::is(&err), "{watched}: {err:?}");
            drop(stream);
            settle().await;
            assert_eq!(pool_stats().in_use, 0);
            drop(listener);
        });
    }
}

#[test]
fn a_stream_dropped_while_its_last_write_behind_a_watch_is_stuck_cancels_it() {
    let _serial = serial();
    let (fd, addr) = listening_socket(16);
    // A peer that never reads.
    let peer = StdStream::connect(addr).unwrap();
    run_bounded(Duration::from_secs(10), move || async move {
        let listener = UringBackend::adopt_listener(fd).unwrap();
        let (mut stream, _) = listener.accept().await.unwrap();
        let fds_with_stream = open_fds();
        // 1. Idle and watched: the RECV of the next reply waits in the kernel.
        stream.watch_idle();
        // 2. Fill the socket's buffers behind the ring's back, until the kernel takes no more.
        fill_send_buffer(stream.as_raw_fd()).await;
        // 3. The last write, unlinked behind the RECV, now stalls for buffer space, and so
        //    does the read waiting for it.
        stream.write_last(vec![1u8; 512]).await.0.unwrap();
        assert!(within(Duration::from_millis(50), stream.read())
            .await
            .is_none());
        assert_eq!(uring::stats().in_flight, 2, "the SEND and the RECV");
        assert!(!stream.is_idle_and_open(), "mid-exchange");
        // 4. Dropping the stream cancels both; the SEND's final completion frees the copied
        //    bytes, and the socket closes.
        drop(stream);
        settle().await;
        assert_eq!(
            fds_settle_at(fds_with_stream - 1).await,
            fds_with_stream - 1
        );
        assert_eq!(pool_stats().in_use, 0);
        drop(listener);
    });
    drop(peer);
}

#[test]
fn a_reply_that_arrives_before_its_request_is_sent_is_read_once_the_send_completes() {
    let _serial = serial();
    let (fd, addr) = listening_socket(16);
    let (go, wait_go) = std::sync::mpsc::channel::<()>();
    let (sent, wait_sent) = std::sync::mpsc::channel::<()>();
    let peer_thread = std::thread::spawn(move || {
        let mut peer = StdStream::connect(addr).unwrap();
        wait_go.recv().unwrap();
        // An early reply, before the request is read.
        peer.write_all(b"early").unwrap();
        sent.send(()).unwrap();
        wait_go.recv().unwrap();
        // Then read everything: the stream's filler and its request.
        let mut all = Vec::new();
        peer.read_to_end(&mut all).unwrap();
        all
    });
    let (tell_filled, filled) = std::sync::mpsc::channel::<usize>();
    run_bounded(Duration::from_secs(10), move || async move {
        let listener = UringBackend::adopt_listener(fd).unwrap();
        let (mut stream, _) = listener.accept().await.unwrap();
        // 1. Idle and watched; the peer replies early, and the RECV completes.
        stream.watch_idle();
        go.send(()).unwrap();
        wait_sent.recv().unwrap();
        sleep(Duration::from_millis(20)).await;
        // 2. The socket's send buffers filled behind the ring's back: the request's first try
        //    (MSG_DONTWAIT) is refused, a second SEND waits for buffer space, and the read
        //    waits for it although its RECV is done.
        let filled = fill_send_buffer(stream.as_raw_fd()).await;
        let short_before = uring::stats().short_sends;
        stream.write_last(vec![1u8; 512]).await.0.unwrap();
        assert!(within(Duration::from_millis(50), stream.read())
            .await
            .is_none());
        assert_eq!(uring::stats().in_flight, 1, "the second SEND");
        assert_eq!(uring::stats().short_sends, short_before + 1);
        // 3. The peer reads; the SEND completes, which must wake the read although it
        //    succeeded, and the read returns the early reply.
        go.send(()).unwrap();
        let got = within(Duration::from_secs(5), stream.read())
            .await
            .expect("the read was not woken by the SEND's completion")
            .unwrap()
            .unwrap();
        assert_eq!(&got[..], b"early");
        drop(stream);
        settle().await;
        drop(listener);
        tell_filled.send(filled).unwrap();
    });
    let all = peer_thread.join().unwrap();
    let filled = filled.recv().unwrap();
    assert_eq!(all.len(), filled + 512);
    assert!(
        all[filled..].iter().all(|&b| b == 1),
        "the request, whole, after the filler"
    );
}

#[test]
fn registered_sockets_close_when_their_streams_drop_on_both_ends() {
    let _serial = serial();
    let (fd, addr) = listening_socket(16);
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let std_addr = std_listener.local_addr().unwrap();
    // 1. A client connects to a ring listener; the ring connects to a plain listener.
    let mut client = StdStream::connect(addr).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    run_bounded(Duration::from_secs(10), move || async move {
        let before = uring::stats().registered_files;
        let listener = UringBackend::adopt_listener(fd).unwrap();
        let (mut accepted, _) = listener.accept().await.unwrap();
        let mut connected = UringBackend::connect(std_addr, Duration::from_secs(5))
            .await
            .unwrap();
        // 2. Both streams work through their slots in the ring's table of files.
        let (r, _) = accepted.write_all(b"ping".to_vec()).await;
        r.unwrap();
        let (r, _) = connected.write_all(b"pong".to_vec()).await;
        r.unwrap();
        let registered = uring::stats().registered_files - before;
        // 3. Dropping each empties its slot, then closes its descriptor.
        drop(accepted);
        drop(connected);
        settle().await;
        drop(listener);
        let _ = tx.send((registered, uring::stats().registered_file_failures));
    });
    let (registered, failures) = rx.recv().unwrap();
    assert_eq!(registered, 2, "both streams registered");
    assert_eq!(failures, 0);
    // 4. Each peer sees the bytes, then EOF: the table kept neither socket open.
    let (mut upstream, _) = std_listener.accept().unwrap();
    for (peer, want) in [(&mut client, b"ping"), (&mut upstream, b"pong")] {
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        peer.read_to_end(&mut got).expect("EOF, not a timeout");
        assert_eq!(&got, want);
    }
}
