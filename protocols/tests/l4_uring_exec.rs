//! The lean per-core executor (`uring::exec`): tasks, timers, panics, sleeping and teardown,
//! over real loopback sockets where the ring is involved.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::{fill_send_buffer, listening_socket};

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::net::TcpStream as StdStream;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ringway_protocols::l4::uring::{self, exec, UringBackend};
use ringway_protocols::l4::{read_at_least, Backend, Listener, Stream};
use ringway_protocols::rt;

/// Runs `f` on a fresh thread inside the lean executor.
fn on_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f).join().unwrap()
}

#[test]
fn spawned_tasks_and_timers_run_in_deadline_order() {
    let order = on_thread(|| {
        exec::block_on(async {
            let order = Rc::new(RefCell::new(Vec::new()));
            let mut handles = Vec::new();
            for (name, ms) in [("c", 60u64), ("a", 20), ("b", 40)] {
                let order = Rc::clone(&order);
                handles.push(rt::spawn_local(async move {
                    let t = Instant::now();
                    rt::sleep(Duration::from_millis(ms)).await;
                    assert!(t.elapsed() >= Duration::from_millis(ms), "woke early");
                    order.borrow_mut().push(name);
                    ms
                }));
            }
            let mut total = 0;
            for h in handles {
                total += h.await.unwrap();
            }
            assert_eq!(total, 120);
            let v = order.borrow().clone();
            v
        })
        .unwrap()
    });
    assert_eq!(order, ["a", "b", "c"]);
}

#[test]
fn a_timeout_fires_and_a_ready_future_never_arms_its_timer() {
    on_thread(|| {
        exec::block_on(async {
            let r: std::io::Result<()> =
                rt::timeout(Duration::from_millis(30), std::future::pending()).await;
            assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
            let r = rt::timeout(Duration::from_secs(5), async { Ok(7) }).await;
            assert_eq!(r.unwrap(), 7);
            assert_eq!(exec::stats().timers, 0, "no timer left behind");
        })
        .unwrap();
    });
}

#[test]
fn a_panicking_task_is_dropped_and_the_others_go_on() {
    on_thread(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let r = exec::block_on(async {
            let survivor = rt::spawn_local(async {
                rt::sleep(Duration::from_millis(20)).await;
                "alive"
            });
            let doomed = rt::spawn_local(async {
                rt::sleep(Duration::from_millis(5)).await;
                panic!("boom");
            });
            // The joiner of a panicked task learns it ended without an output.
            let d: Option<()> = doomed.await;
            (d.is_none(), survivor.await)
        });
        std::panic::set_hook(prev);
        assert_eq!(r.unwrap(), (true, Some("alive")));
    });
}

#[test]
fn tasks_alive_at_the_end_are_dropped_and_their_sockets_closed() {
    let (fd, addr) = listening_socket(16);
    let mut peer = StdStream::connect(addr).unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let in_flight_after = on_thread(move || {
        exec::block_on(async move {
            let listener = UringBackend::adopt_listener(fd).unwrap();
            let (mut stream, _) = listener.accept().await.unwrap();
            // A task waits forever in a read on the accepted stream.
            rt::spawn_local(async move {
                let _ = stream.read().await;
                unreachable!("the peer never sends");
            })
            .detach();
            rt::sleep(Duration::from_millis(20)).await;
            assert_eq!(exec::stats().tasks, 1);
            assert_eq!(uring::stats().in_flight, 1, "its RECV is in the kernel");
        })
        .unwrap();
        // The executor dropped the task (closing the stream) and reaped the RECV's cancellation.
        uring::stats().in_flight
    });
    assert_eq!(in_flight_after, 0);
    let mut b = [0u8; 1];
    assert_eq!(peer.read(&mut b).unwrap(), 0, "the peer sees EOF");
}

#[test]
fn an_idle_executor_sleeps_in_the_ring_instead_of_spinning() {
    let (enters, parks) = on_thread(|| {
        exec::block_on(async {
            let before = uring::stats();
            rt::sleep(Duration::from_millis(200)).await;
            let after = uring::stats();
            (after.enters - before.enters, after.parks - before.parks)
        })
        .unwrap()
    });
    // One wait for the timer's deadline (a spurious early return may add one or two).
    assert!(enters <= 3, "{enters} enters while idle for 200 ms");
    assert!(parks >= 1);
}

/// Sends a ping and reads the pong.
async fn ping(stream: &mut impl Stream) {
    stream.write_all(&b"ping"[..]).await.0.unwrap();
    let mut got = Vec::new();
    read_at_least(stream, &mut got, 4).await.unwrap();
    assert_eq!(got, b"pong");
}

/// A peer thread that connects to `addr` and answers each 4-byte ping with a pong until EOF.
fn pong_peer(addr: std::net::SocketAddr) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut s = StdStream::connect(addr).unwrap();
        let mut b = [0u8; 4];
        while s.read_exact(&mut b).is_ok() {
            s.write_all(b"pong").unwrap();
        }
    })
}

#[test]
fn sleeps_share_one_alarm_and_an_earlier_timer_moves_it() {
    let (fd, addr) = listening_socket(16);
    let peer = pong_peer(addr);
    let (alarms, parks, early) = on_thread(move || {
        exec::block_on(async move {
            let listener = UringBackend::adopt_listener(fd).unwrap();
            let (mut stream, _) = listener.accept().await.unwrap();
            // 1. A timer far off, then exchanges: every one sleeps in the ring until the pong,
            //    and the alarm armed by the first sleep serves them all.
            let far = rt::spawn_local(rt::sleep(Duration::from_secs(30)));
            ping(&mut stream).await;
            let before = uring::stats();
            for _ in 0..20 {
                ping(&mut stream).await;
            }
            let after = uring::stats();
            // 2. A timer earlier than the alarm moves it: it fires on time, not with the alarm
            //    set for the far one (or for the loop's one-second look-around).
            let t = Instant::now();
            rt::sleep(Duration::from_millis(30)).await;
            let early = t.elapsed() < Duration::from_millis(900);
            drop(far);
            drop(stream);
            (
                after.alarms - before.alarms,
                after.parks - before.parks,
                early,
            )
        })
        .unwrap()
    });
    peer.join().unwrap();
    assert!(parks >= 20, "{parks} sleeps for 20 exchanges");
    assert_eq!(alarms, 0, "no timer armed or moved by {parks} sleeps");
    assert!(early, "the 30 ms timer waited for a later alarm");
}

#[test]
fn a_last_write_the_socket_cannot_take_at_once_is_finished_by_a_second_send() {
    let (fd, addr) = listening_socket(16);
    let (tell_filled, filled) = std::sync::mpsc::channel::<usize>();
    // A peer that reads nothing until the stream has filled its buffers, then reads the filler
    // and the request and answers.
    let peer = std::thread::spawn(move || {
        let mut s = StdStream::connect(addr).unwrap();
        let filled = filled.recv().unwrap();
        let mut all = vec![0u8; filled + 512];
        s.read_exact(&mut all).unwrap();
        s.write_all(b"pong").unwrap();
        all[filled..].iter().all(|&b| b == 1)
    });
    let short_sends = on_thread(move || {
        exec::block_on(async move {
            let listener = UringBackend::adopt_listener(fd).unwrap();
            let (mut stream, _) = listener.accept().await.unwrap();
            // 1. Idle and watched: the reply's RECV waits in the kernel.
            stream.watch_idle();
            let before = uring::stats().short_sends;
            // 2. The socket's buffers filled behind the ring's back: the request's first try
            //    (MSG_DONTWAIT, silent only when whole) is refused at once and posts its
            //    completion: a second SEND waits for room. The peer is told to drain only once
            //    the refusal is counted: told earlier, it can make room before the first try
            //    (it did, on a busy two-core CI machine), and the first try goes whole.
            let filled = fill_send_buffer(stream.as_raw_fd()).await;
            let teller = rt::spawn_local(async move {
                // Bounded: should the first try ever go whole, the count below says so.
                for _ in 0..5_000 {
                    if uring::stats().short_sends != before {
                        break;
                    }
                    rt::sleep(Duration::from_millis(1)).await;
                }
                tell_filled.send(filled).unwrap();
            });
            stream.write_last(vec![1u8; 512]).await.0.unwrap();
            // 3. The read finds the first try refused (the count the teller waits for) and
            //    queues the second SEND; the peer drains; the SEND completes and the pong is
            //    read, promptly: a wait that still counted on the refused first try's
            //    completion would sleep on until the loop's next timer, here this read's own
            //    timeout (the teller's last sleep ended before the peer was told).
            let mut got = Vec::new();
            rt::timeout(
                Duration::from_secs(2),
                read_at_least(&mut stream, &mut got, 4),
            )
            .await
            .expect("the loop slept on after the first try came back refused");
            assert_eq!(got, b"pong");
            teller.await.unwrap();
            uring::stats().short_sends - before
        })
        .unwrap()
    });
    assert!(peer.join().unwrap(), "the request, whole, after the filler");
    assert_eq!(short_sends, 1);
}

#[test]
fn wakes_from_other_tasks_and_io_interleave() {
    let (fd, addr) = listening_socket(16);
    let peer = std::thread::spawn(move || {
        let mut s = StdStream::connect(addr).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got
    });
    let count = on_thread(move || {
        exec::block_on(async move {
            let listener = UringBackend::adopt_listener(fd).unwrap();
            let (mut stream, _) = listener.accept().await.unwrap();
            let ticks = Rc::new(Cell::new(0u32));
            let t2 = Rc::clone(&ticks);
            let ticker = rt::spawn_local(async move {
                for _ in 0..10 {
                    rt::sleep(Duration::from_millis(2)).await;
                    t2.set(t2.get() + 1);
                }
            });
            for i in 0..100u32 {
                let (r, _) = stream.write_all(format!("{i};").into_bytes()).await;
                r.unwrap();
            }
            ticker.await.unwrap();
            drop(stream);
            ticks.get()
        })
        .unwrap()
    });
    assert_eq!(count, 10);
    let got = String::from_utf8(peer.join().unwrap()).unwrap();
    assert_eq!(got.split(';').filter(|s| !s.is_empty()).count(), 100);
}

#[test]
fn block_on_does_not_nest() {
    on_thread(|| {
        exec::block_on(async {
            assert!(exec::block_on(async {}).is_err());
        })
        .unwrap();
    });
}

#[test]
fn an_exchange_on_a_watched_stream_costs_one_wait() {
    const ROUNDS: u64 = 50;
    let (fd, addr) = listening_socket(16);
    let peer = pong_peer(addr);
    let (enters, cancels, completions, submitted) = on_thread(move || {
        exec::block_on(async move {
            let listener = UringBackend::adopt_listener(fd).unwrap();
            let (mut stream, _) = listener.accept().await.unwrap();
            let (mut enters, mut cancels, mut completions, mut submitted) = (0, 0, 0, 0);
            for _ in 0..ROUNDS {
                // Idle in a pool, watched; checked out; one exchange.
                stream.watch_idle();
                rt::sleep(Duration::from_millis(1)).await;
                assert!(stream.is_idle_and_open());
                let before = uring::stats();
                stream.write_last(&b"ping"[..]).await.0.unwrap();
                let mut got = Vec::new();
                read_at_least(&mut stream, &mut got, 4).await.unwrap();
                assert_eq!(got, b"pong");
                let after = uring::stats();
                enters += after.enters - before.enters;
                cancels += after.cancels - before.cancels;
                completions += after.completions - before.completions;
                // The loop's alarm (an IORING_OP_TIMEOUT armed with a wait) is not the
                // exchange's.
                submitted += (after.submitted - before.submitted) - (after.alarms - before.alarms);
            }
            drop(stream);
            (enters, cancels, completions, submitted)
        })
        .unwrap()
    });
    peer.join().unwrap();
    // The watch is the RECV of the next reply (queued at idle, waiting with POLL_FIRST), so
    // each exchange is one io_uring_enter that submits the request's SEND alone and returns
    // with the reply; the SEND, whole, posts no completion (CQE_SKIP_SUCCESS, settled when the
    // enter returns). Nothing is cancelled.
    assert_eq!(cancels, 0);
    assert_eq!(submitted, ROUNDS, "the SEND alone: its RECV waited already");
    assert_eq!(completions, ROUNDS, "the reply's alone");
    assert!(
        enters <= ROUNDS + ROUNDS / 10,
        "{enters} io_uring_enter calls for {ROUNDS} exchanges"
    );
}

#[test]
fn a_task_spawned_for_an_accepted_connection_submits_with_the_next_accept() {
    // Connections already waiting in the backlog, each with its request sent: every accept
    // completes as soon as it is submitted, and so does the RECV of the task it spawns.
    const CONNS: u64 = 8;
    let (fd, addr) = listening_socket(16);
    let clients: Vec<StdStream> = (0..CONNS)
        .map(|_| {
            use std::io::Write;
            let mut c = StdStream::connect(addr).unwrap();
            c.write_all(b"ping").unwrap();
            c
        })
        .collect();
    let enters = on_thread(move || {
        exec::block_on(async move {
            let listener = UringBackend::adopt_listener(fd).unwrap();
            let before = uring::stats();
            // An accept loop is a task of its own, as the server's is.
            let acceptor = rt::spawn_local(async move {
                let mut tasks = Vec::new();
                for _ in 0..CONNS {
                    let (mut stream, _) = listener.accept().await.unwrap();
                    tasks.push(rt::spawn_local(async move {
                        let got = stream.read().await.unwrap().unwrap();
                        assert_eq!(&got[..], b"ping");
                    }));
                }
                tasks
            });
            for t in acceptor.await.unwrap() {
                t.await.unwrap();
            }
            uring::stats().enters - before.enters
        })
        .unwrap()
    });
    drop(clients);
    // The pass that spawns a task holds its submissions (the next ACCEPT) for the task's (its
    // RECV), so one io_uring_enter carries both: 9 calls for 8 connections here, 11 when the
    // ACCEPT was submitted on its own first.
    assert!(
        enters <= CONNS + 1,
        "{enters} io_uring_enter calls for {CONNS} accepted connections"
    );
}

#[test]
fn a_stream_that_will_not_be_read_again_queues_no_read_with_its_writes() {
    let (fd, addr) = listening_socket(16);
    let peer = std::thread::spawn(move || {
        let mut a = StdStream::connect(addr).unwrap();
        let mut b = StdStream::connect(addr).unwrap();
        let (mut x, mut y) = (Vec::new(), Vec::new());
        a.read_to_end(&mut x).unwrap();
        b.read_to_end(&mut y).unwrap();
        (x, y)
    });
    let (read_ahead, no_read) = on_thread(move || {
        exec::block_on(async move {
            let listener = UringBackend::adopt_listener(fd).unwrap();
            let mut submitted = Vec::new();
            for quiet in [false, true] {
                let registered_before = uring::stats().registered_files;
                let (mut stream, _) = listener.accept().await.unwrap();
                if quiet {
                    stream.no_more_reads();
                }
                let before = uring::stats();
                stream.write_all(&b"bye"[..]).await.0.unwrap();
                // The socket's registration in the ring's table of files, queued at the
                // accept, goes in with the first batch: not counted here.
                let registration = before.registered_files - registered_before;
                submitted.push(uring::stats().submitted - before.submitted - registration);
                drop(stream);
            }
            (submitted[0], submitted[1])
        })
        .unwrap()
    });
    let (x, y) = peer.join().unwrap();
    assert_eq!((&x[..], &y[..]), (&b"bye"[..], &b"bye"[..]));
    // A write queues the next read with it (one batch for an exchange), unless told that no
    // read follows: then the SEND goes alone, and the close cancels nothing.
    assert_eq!(read_ahead, 2, "SEND and the RECV read ahead");
    assert_eq!(no_read, 1, "the SEND alone");
}

#[test]
fn a_recently_idle_check_makes_no_system_call_and_the_full_one_runs_the_ring() {
    let (fd, addr) = listening_socket(16);
    let (go, wait_go) = std::sync::mpsc::channel::<()>();
    let (sent, wait_sent) = std::sync::mpsc::channel::<()>();
    let peer = std::thread::spawn(move || {
        use std::io::Write;
        let mut s = StdStream::connect(addr).unwrap();
        wait_go.recv().unwrap();
        s.write_all(b"unasked").unwrap();
        sent.send(()).unwrap();
        // Held open until the executor is done with the stream.
        wait_go.recv().ok();
    });
    let (recent, recent_enters, full, full_enters) = on_thread(move || {
        exec::block_on(async move {
            let listener = UringBackend::adopt_listener(fd).unwrap();
            let (mut stream, _) = listener.accept().await.unwrap();
            // Idle in a pool: watched, and the watch is in the kernel.
            stream.watch_idle();
            rt::sleep(Duration::from_millis(5)).await;
            assert!(stream.is_recently_idle_and_open());
            // The peer sends bytes nobody asked for; the watch completes in the kernel, which
            // (deferred task running) posts its completion only at the next io_uring_enter.
            go.send(()).unwrap();
            wait_sent.recv().unwrap();
            std::thread::sleep(Duration::from_millis(20));
            let before = uring::stats().enters;
            let recent = stream.is_recently_idle_and_open();
            let recent_enters = uring::stats().enters - before;
            let before = uring::stats().enters;
            let full = stream.is_idle_and_open();
            let full_enters = uring::stats().enters - before;
            drop(go);
            drop(stream);
            (recent, recent_enters, full, full_enters)
        })
        .unwrap()
    });
    peer.join().unwrap();
    // The recent check answers from what was posted: no system call, and the deferred
    // completion unseen. The full check runs the ring and sees the bytes.
    assert_eq!(recent_enters, 0);
    assert!(
        recent,
        "the deferred completion is not seen without an enter"
    );
    assert_eq!(full_enters, 1);
    assert!(!full, "bytes nobody asked for: not reusable");
}

#[test]
fn a_write_after_a_silent_last_write_whose_reply_came_early_does_not_sleep() {
    let (fd, addr) = listening_socket(16);
    let (go, wait_go) = std::sync::mpsc::channel::<()>();
    let peer = std::thread::spawn(move || {
        let mut s = StdStream::connect(addr).unwrap();
        // A reply before the request: the stream's RECV completes at once.
        s.write_all(b"early").unwrap();
        wait_go.recv().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got
    });
    let waited = on_thread(move || {
        exec::block_on(async move {
            let listener = UringBackend::adopt_listener(fd).unwrap();
            let (mut stream, _) = listener.accept().await.unwrap();
            // 1. Watched: the RECV takes the early reply and is done, leaving no operation
            //    in the kernel.
            stream.watch_idle();
            rt::sleep(Duration::from_millis(50)).await;
            assert!(
                !stream.is_idle_and_open(),
                "the RECV completed with the early bytes"
            );
            // 2. The request goes silent behind that RECV (it posts nothing when whole), and a
            //    write after it waits for it: the only operation left, and one whose success
            //    no completion reports. The loop must submit it and settle it, not sleep for a
            //    completion (it slept until its next timer, here the bound below).
            stream.write_last(&b"ping"[..]).await.0.unwrap();
            let t = Instant::now();
            rt::timeout(Duration::from_secs(2), async {
                stream.write_all(&b"more"[..]).await.0
            })
            .await
            .unwrap_or_else(|e| panic!("the write after the silent SEND: {e}"));
            let waited = t.elapsed();
            go.send(()).unwrap();
            drop(stream);
            waited
        })
        .unwrap()
    });
    assert_eq!(peer.join().unwrap(), b"pingmore");
    assert!(waited < Duration::from_secs(1), "waited {waited:?}");
}
