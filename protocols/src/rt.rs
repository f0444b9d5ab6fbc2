//! Spawning and timers for code that runs under either executor: the lean io_uring loop
//! ([`crate::l4::uring::exec`]) when one runs on this thread, glommio's executor otherwise.
//!
//! The engine's data path calls these instead of glommio's, so that under `io = "uring"` its
//! tasks and timers live in the lean loop (no glommio park, no glommio timer per read) and under
//! `io = "glommio"` nothing changes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::l4::uring::exec;

mod doorbell;
pub use doorbell::Doorbell;

/// A spawned task's handle: await it for the output, or [`JoinHandle::detach`] it.
pub enum JoinHandle<T> {
    /// A glommio task (dropping it cancels the task).
    Glommio(glommio::Task<T>),
    /// A lean-executor task (dropping it detaches the task).
    Lean(exec::JoinHandle<T>),
}

impl<T: 'static> JoinHandle<T> {
    /// Lets the task run on without anyone awaiting it.
    pub fn detach(self) {
        match self {
            JoinHandle::Glommio(t) => {
                t.detach();
            }
            JoinHandle::Lean(h) => drop(h),
        }
    }
}

impl<T: 'static> Future for JoinHandle<T> {
    /// `None` when the task panicked or its executor dropped it before it finished.
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        // SAFETY: structural pinning; neither variant's field is moved out of the pin.
        match unsafe { self.get_unchecked_mut() } {
            JoinHandle::Glommio(t) => {
                // SAFETY: as above.
                unsafe { Pin::new_unchecked(t) }.poll(cx).map(Some)
            }
            JoinHandle::Lean(h) => Pin::new(h).poll(cx),
        }
    }
}

/// Spawns `fut` on this thread's executor: the lean loop when it runs here, else glommio's.
///
/// # Panics
/// Outside both (as `glommio::spawn_local`).
pub fn spawn_local<T: 'static>(fut: impl Future<Output = T> + 'static) -> JoinHandle<T> {
    if exec::is_running() {
        JoinHandle::Lean(exec::spawn_local(fut))
    } else {
        JoinHandle::Glommio(glommio::spawn_local(fut))
    }
}

/// The current time as this thread's executor sees it: the lean loop's per-pass clock reading
/// (see [`exec::now`]), or `Instant::now()` elsewhere. For timestamps on the request path, where
/// a reading per pass is precise enough and a `clock_gettime` per use is not free.
pub fn now() -> Instant {
    exec::now().unwrap_or_else(Instant::now)
}

/// A timer on this thread's executor; see [`sleep`].
#[derive(Debug)]
pub enum Sleep {
    /// On the lean loop: a map entry, no allocation of its own.
    Lean(exec::Sleep),
    /// On glommio's reactor.
    Glommio(glommio::timer::Timer),
}

/// Spawns `fut` on this thread's executor with nobody to await it (on the lean loop this
/// allocates no join state).
///
/// # Panics
/// Outside both executors (as `glommio::spawn_local`).
pub fn spawn_detached(fut: impl Future<Output = ()> + 'static) {
    if exec::is_running() {
        exec::spawn_detached(fut);
    } else {
        glommio::spawn_local(fut).detach();
    }
}

/// Sleeps for `dur` on this thread's executor's timers.
pub fn sleep(dur: Duration) -> Sleep {
    if exec::is_running() {
        Sleep::Lean(exec::sleep(dur))
    } else {
        Sleep::Glommio(glommio::timer::Timer::new(dur))
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.get_mut() {
            Sleep::Lean(s) => Pin::new(s).poll(cx),
            Sleep::Glommio(t) => Pin::new(t).poll(cx).map(|_| ()),
        }
    }
}

impl Sleep {
    /// Moves the deadline to `deadline`, earlier or later. On the lean loop the timer keeps its
    /// entry (a later deadline costs a few stores; see [`Timer`]); on glommio it is reset.
    pub fn reset(&mut self, deadline: Instant) {
        match self {
            Sleep::Lean(s) => s.reset(deadline),
            Sleep::Glommio(t) => t.reset(deadline.saturating_duration_since(Instant::now())),
        }
    }
}

/// A timer one task reuses for one timed wait after another: a connection's reads. Where
/// [`timeout`] arms a timer for each wait and cancels it when the wait ends, a wait through
/// [`Timer::timeout`] moves the deadline of the timer the last one left armed. On the lean
/// loop that is a few stores when the deadline is later (nearly always: the same timeouts,
/// counted from later instants), instead of linking an entry into the timing wheel and
/// unlinking it again. The timer may then wake the task once when a deadline nobody waits for
/// any more comes round: a spurious wake of whatever the task awaits then, which every future
/// tolerates. Dropping the `Timer` cancels it.
#[derive(Debug, Default)]
pub struct Timer {
    sleep: Option<Sleep>,
}

impl Timer {
    /// A timer not armed yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `fut` with a deadline; `TimedOut` if it does not finish within `dur`, counted from
    /// the first poll that finds it pending. One wait at a time (it borrows the timer).
    ///
    /// # Cancellation
    /// On timeout `fut` is dropped (with the returned future), cancelling whatever it was
    /// waiting for.
    pub fn timeout<T, F: Future<Output = io::Result<T>>>(
        &mut self,
        dur: Duration,
        fut: F,
    ) -> Timed<'_, F> {
        Timed {
            fut,
            dur,
            timer: self,
            started: false,
        }
    }
}

/// `fut` bounded by a reused [`Timer`]; see [`Timer::timeout`].
#[derive(Debug)]
pub struct Timed<'t, F> {
    fut: F,
    dur: Duration,
    timer: &'t mut Timer,
    /// The deadline is set (at the first pending poll).
    started: bool,
}

impl<T, F: Future<Output = io::Result<T>>> Future for Timed<'_, F> {
    type Output = io::Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        // SAFETY: `fut` is structurally pinned (never moved out of the pinned struct); the
        // other fields are not (they are Unpin and only used through `&mut`).
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: as above; `fut` stays where it is for as long as the `Timed` lives.
        let fut = unsafe { Pin::new_unchecked(&mut this.fut) };
        poll_bounded(fut, cx, this.dur, &mut this.started, &mut this.timer.sleep)
    }
}

/// Polls `fut`, and while it is pending the timer in `sleep`: set to `dur` from now at the first
/// pending poll (`started`), reusing a timer already there. `TimedOut` once the timer fires.
fn poll_bounded<T>(
    fut: Pin<&mut impl Future<Output = io::Result<T>>>,
    cx: &mut Context<'_>,
    dur: Duration,
    started: &mut bool,
    sleep: &mut Option<Sleep>,
) -> Poll<io::Result<T>> {
    if let Poll::Ready(v) = fut.poll(cx) {
        return Poll::Ready(v);
    }
    if !*started {
        *started = true;
        match sleep {
            Some(s) => s.reset(now() + dur),
            None => *sleep = Some(self::sleep(dur)),
        }
    }
    match sleep {
        Some(s) => match Pin::new(s).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::from(io::ErrorKind::TimedOut))),
            Poll::Pending => Poll::Pending,
        },
        None => Poll::Pending,
    }
}

/// `fut` bounded by a timer; see [`timeout`]. A plain struct rather than an `async` block, so
/// that the many futures holding one (a read with its deadline, in every idle connection) stay
/// small: the operation, the timer, nothing else.
#[derive(Debug)]
pub struct Timeout<F> {
    fut: F,
    /// Armed lazily: a future that is ready at its first poll never touches the timers.
    dur: Duration,
    sleep: Option<Sleep>,
}

/// Runs `fut` with a deadline; `TimedOut` if it does not finish within `dur`. The deadline is
/// counted from the first poll.
///
/// # Cancellation
/// On timeout `fut` is dropped (with the `Timeout`), cancelling whatever it was waiting for.
pub fn timeout<T, F: Future<Output = io::Result<T>>>(dur: Duration, fut: F) -> Timeout<F> {
    Timeout {
        fut,
        dur,
        sleep: None,
    }
}

impl<T, F: Future<Output = io::Result<T>>> Future for Timeout<F> {
    type Output = io::Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        // SAFETY: `fut` is structurally pinned (never moved out of the pinned struct); `dur`
        // and `sleep` are not (both are Unpin and only used through `&mut`).
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: as above; `fut` stays where it is for as long as the Timeout lives.
        let fut = unsafe { Pin::new_unchecked(&mut this.fut) };
        // Its own timer, made at the first pending poll.
        let mut started = this.sleep.is_some();
        poll_bounded(fut, cx, this.dur, &mut started, &mut this.sleep)
    }
}
