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
use std::time::Duration;

use crate::l4::uring::exec;

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

/// Sleeps for `dur` on this thread's executor's timers.
pub async fn sleep(dur: Duration) {
    if exec::is_running() {
        exec::sleep(dur).await;
    } else {
        glommio::timer::sleep(dur).await;
    }
}

/// Runs `fut` with a deadline; `TimedOut` if it does not finish within `dur`.
///
/// # Cancellation
/// On timeout `fut` is dropped, cancelling whatever it was waiting for.
pub async fn timeout<T>(dur: Duration, fut: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    futures_lite::future::or(fut, async {
        sleep(dur).await;
        Err(io::Error::from(io::ErrorKind::TimedOut))
    })
    .await
}
