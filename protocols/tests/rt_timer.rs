//! `rt::Timer`, the timer a task reuses from one timed wait to the next, on both executors:
//! each wait times out at its own deadline (not at an earlier wait's, which it moved, nor early),
//! a wait that finishes leaves the timer for the next one, a shorter timeout after a longer one
//! still fires on time, and a timer dropped while armed leaves nothing to wake the loop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::io;
use std::time::{Duration, Instant};

use glommio::LocalExecutorBuilder;
use ringway_protocols::l4::uring::exec;
use ringway_protocols::rt::{self, Timer};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A wait that finishes after `after` (a timer of its own), with `value`.
async fn ready_after(after: Duration, value: u32) -> io::Result<u32> {
    rt::sleep(after).await;
    Ok(value)
}

/// A wait that never finishes.
async fn never() -> io::Result<u32> {
    std::future::pending().await
}

/// The cases, run on whichever executor runs this future.
async fn cases() {
    let mut timer = Timer::new();
    // Waits that finish in time, one after another on the same timer: the deadline of each
    // (200 ms) is pushed back by the next, and none of them fires.
    let t = Instant::now();
    for i in 0..5 {
        let v = timer.timeout(ms(200), ready_after(ms(60), i)).await;
        assert_eq!(v.unwrap(), i);
    }
    assert!(t.elapsed() >= ms(300), "{:?}", t.elapsed());
    // A wait that does not finish times out at its own deadline, counted from its start.
    let t = Instant::now();
    let e = timer.timeout(ms(150), never()).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    let took = t.elapsed();
    assert!(took >= ms(150), "timed out early: {took:?}");
    assert!(took < ms(1_500), "timed out late: {took:?}");
    // The timer serves again after firing.
    assert_eq!(
        timer
            .timeout(ms(500), ready_after(ms(10), 7))
            .await
            .unwrap(),
        7
    );
    // A long deadline, then a short one: the short one fires on time.
    assert_eq!(
        timer
            .timeout(ms(60_000), ready_after(ms(10), 8))
            .await
            .unwrap(),
        8
    );
    let t = Instant::now();
    let e = timer.timeout(ms(100), never()).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    let took = t.elapsed();
    assert!(took >= ms(100) && took < ms(1_500), "{took:?}");
    // A wait ready at once never arms anything.
    let mut fresh = Timer::new();
    assert_eq!(
        fresh
            .timeout(ms(1), async { Ok::<_, io::Error>(9) })
            .await
            .unwrap(),
        9
    );
    // A wait that finished leaves the timer armed at its deadline: the task may be woken once
    // then (nobody waits), which must not disturb what it does meanwhile.
    assert_eq!(
        timer.timeout(ms(50), ready_after(ms(5), 10)).await.unwrap(),
        10
    );
    rt::sleep(ms(120)).await;
    assert_eq!(
        timer
            .timeout(ms(500), ready_after(ms(5), 11))
            .await
            .unwrap(),
        11
    );
}

fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(f());
    });
    result
        .recv_timeout(Duration::from_secs(30))
        .expect("the cases did not finish: a timer was lost")
}

fn on_lean<F: Future<Output = ()> + 'static>(make: impl FnOnce() -> F + Send + 'static) {
    bounded(move || exec::block_on(make()).unwrap());
}

#[test]
fn a_reused_timer_bounds_each_wait_on_the_lean_loop() {
    on_lean(cases);
}

#[test]
fn a_reused_timer_bounds_each_wait_on_glommio() {
    bounded(|| {
        LocalExecutorBuilder::default()
            .spawn(|| async { cases().await })
            .unwrap()
            .join()
            .unwrap()
    });
}

/// A timer dropped while armed (a connection closed with a read's deadline pushed far out)
/// takes its entry with it: the loop then has no deadline to wake for.
#[test]
fn a_dropped_timer_leaves_the_lean_loop_no_deadline() {
    on_lean(|| async {
        let mut timer = Timer::new();
        for i in 0..3 {
            let v = timer.timeout(ms(60_000), ready_after(ms(5), i)).await;
            assert_eq!(v.unwrap(), i);
        }
        assert!(
            exec::stats().timers >= 1,
            "the finished wait's timer stays armed"
        );
        drop(timer);
        assert_eq!(exec::stats().timers, 0, "the dropped timer's entry is gone");
    });
}
