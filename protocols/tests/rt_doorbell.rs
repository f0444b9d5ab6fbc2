//! `rt::Doorbell`: a ring from another thread wakes a task asleep on either executor (the lean
//! io_uring loop with no timer set, glommio's reactor), a ring before the wait is kept, and a
//! wait given up on leaves nothing in flight.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::LocalExecutorBuilder;
use ringway_protocols::l4::uring::{self, exec};
use ringway_protocols::rt::{self, Doorbell};

const RING_AFTER: Duration = Duration::from_millis(100);

/// Runs `case` on a fresh thread, rings its bell from this one `RING_AFTER` after the case
/// says it is about to sleep, and returns what the case reports. Bounded: a wake-up lost
/// would otherwise hang the test.
fn with_ringer<T: Send + 'static>(
    case: impl FnOnce(Arc<Doorbell>, mpsc::Sender<()>) -> T + Send + 'static,
) -> T {
    let bell = Arc::new(Doorbell::new().unwrap());
    let (sleeping, about_to_sleep) = mpsc::channel();
    let (done, result) = mpsc::channel();
    let b = Arc::clone(&bell);
    std::thread::spawn(move || {
        let _ = done.send(case(b, sleeping));
    });
    about_to_sleep
        .recv_timeout(Duration::from_secs(10))
        .unwrap();
    std::thread::sleep(RING_AFTER);
    bell.ring();
    result
        .recv_timeout(Duration::from_secs(10))
        .expect("the ring did not wake the sleeping task")
}

#[test]
fn a_ring_from_another_thread_wakes_the_lean_loop_asleep_without_timers() {
    let (waited, parks, in_flight) = with_ringer(|bell, sleeping| {
        exec::block_on(async move {
            // A ring before the wait is kept: the wait returns at once.
            bell.ring();
            bell.rung().await.unwrap();
            // Nothing else on this thread: no timer, so the loop sleeps in the ring until the
            // bell's poll completes.
            let parks = uring::stats().parks;
            sleeping.send(()).unwrap();
            let t = Instant::now();
            bell.rung().await.unwrap();
            let waited = t.elapsed();
            let parks = uring::stats().parks - parks;
            // A wait given up on cancels its poll.
            let r = rt::timeout(Duration::from_millis(20), async {
                bell.rung().await.map(|()| "rung")
            })
            .await;
            assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
            rt::sleep(Duration::from_millis(20)).await;
            (waited, parks, uring::stats().in_flight)
        })
        .unwrap()
    });
    assert!(waited >= RING_AFTER / 2, "woke after {waited:?}");
    assert!(parks <= 2, "{parks} sleeps for one wait: it spun");
    assert_eq!(in_flight, 0, "the cancelled wait left its poll in the ring");
}

#[test]
fn a_ring_from_another_thread_wakes_a_glommio_task() {
    let waited = with_ringer(|bell, sleeping| {
        LocalExecutorBuilder::default()
            .spawn(move || async move {
                bell.ring();
                bell.rung().await.unwrap();
                sleeping.send(()).unwrap();
                let t = Instant::now();
                bell.rung().await.unwrap();
                t.elapsed()
            })
            .unwrap()
            .join()
            .unwrap()
    });
    assert!(waited >= RING_AFTER / 2, "woke after {waited:?}");
}
