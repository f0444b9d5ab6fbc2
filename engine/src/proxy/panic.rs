//! Panic isolation: every phase future (and, as a backstop, every connection task) is polled
//! under `catch_unwind`, so a panic ends one request instead of the executor thread and every
//! connection on that core (glommio does not catch task panics).
//!
//! The process-wide hook Ringway installs is quiet for panics caught here: one log line, at most
//! [`PANIC_LOG_PER_SECOND`] per second per core, no backtrace (the default hook spends ~240 µs
//! capturing one when `RUST_BACKTRACE=1`). Panics outside Ringway's guards go to the hook that
//! was installed before, untouched; with [`PanicHookMode::Chain`] caught panics go there too,
//! after Ringway's line, for embedders whose hook reports to an error tracker.

use std::any::Any;
use std::cell::Cell;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Once, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

/// Caught panics logged per second per core; the rest are counted and summarized.
pub const PANIC_LOG_PER_SECOND: u32 = 5;

/// What the hook does with a panic caught by a Ringway guard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PanicHookMode {
    /// One rate-limited log line; the previous hook is not called. The default.
    #[default]
    Quiet,
    /// The log line, then the hook installed before Ringway's.
    Chain,
}

thread_local! {
    static GUARD_DEPTH: Cell<u32> = const { Cell::new(0) };
    static PANICS: Cell<u64> = const { Cell::new(0) };
    static WINDOW: Cell<(Option<Instant>, u32, u64)> = const { Cell::new((None, 0, 0)) };
}

static MODE: OnceLock<PanicHookMode> = OnceLock::new();
static INSTALL: Once = Once::new();

/// Installs Ringway's hook once per process, keeping the previous hook for chaining. The first
/// call's `mode` wins.
pub fn install_hook(mode: PanicHookMode) {
    let _ = MODE.set(mode);
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if GUARD_DEPTH.with(Cell::get) == 0 {
                previous(info);
                return;
            }
            log_caught(info);
            if MODE.get().copied().unwrap_or_default() == PanicHookMode::Chain {
                previous(info);
            }
        }));
    });
}

fn log_caught(info: &std::panic::PanicHookInfo<'_>) {
    let now = Instant::now();
    WINDOW.with(|w| {
        let (start, logged, suppressed) = w.get();
        let fresh = start.is_none_or(|s| now.duration_since(s).as_secs() >= 1);
        let (start, logged, suppressed) = if fresh {
            if suppressed > 0 {
                log::warn!("{suppressed} more caught panics not logged");
            }
            (Some(now), 0, 0)
        } else {
            (start, logged, suppressed)
        };
        if logged < PANIC_LOG_PER_SECOND {
            let loc = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            log::error!(
                "caught panic in a request phase at {loc}: {}",
                payload_str(info.payload())
            );
            w.set((start, logged + 1, suppressed));
        } else {
            w.set((start, logged, suppressed + 1));
        }
    });
}

/// The panic message, when the payload is a string.
pub fn payload_str(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}

/// Panics caught on this core since it started.
pub fn caught_panics() -> u64 {
    PANICS.with(Cell::get)
}

/// A future polled under `catch_unwind`; resolves to `Err(payload)` if a poll panicked.
pub struct Guarded<F> {
    inner: F,
}

/// Wraps `fut` so a panic in any of its polls is caught.
pub fn guard<F: Future>(fut: F) -> Guarded<F> {
    Guarded { inner: fut }
}

impl<F: Future> Future for Guarded<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: structural pinning of the only field; `inner` is never moved out.
        let inner = unsafe { self.map_unchecked_mut(|s| &mut s.inner) };
        GUARD_DEPTH.with(|d| d.set(d.get() + 1));
        let r = catch_unwind(AssertUnwindSafe(|| inner.poll(cx)));
        GUARD_DEPTH.with(|d| d.set(d.get() - 1));
        match r {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(payload) => {
                PANICS.with(|p| p.set(p.get() + 1));
                Poll::Ready(Err(payload))
            }
        }
    }
}

/// Runs a synchronous phase under `catch_unwind`, counting a caught panic.
pub fn guard_sync<T>(f: impl FnOnce() -> T) -> Result<T, Box<dyn Any + Send>> {
    GUARD_DEPTH.with(|d| d.set(d.get() + 1));
    let r = catch_unwind(AssertUnwindSafe(f));
    GUARD_DEPTH.with(|d| d.set(d.get() - 1));
    if r.is_err() {
        PANICS.with(|p| p.set(p.get() + 1));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_future_is_caught_and_counted() {
        install_hook(PanicHookMode::Quiet);
        let before = caught_panics();
        let r = futures_lite::future::block_on(guard(async { panic!("boom") }));
        let payload = r.err().map(|p| payload_str(&*p).to_owned());
        assert_eq!(payload.as_deref(), Some("boom"));
        assert_eq!(caught_panics(), before + 1);
        let ok = futures_lite::future::block_on(guard(async { 7 }));
        assert_eq!(ok.ok(), Some(7));
        assert!(guard_sync(|| panic!("sync")).is_err());
        assert_eq!(caught_panics(), before + 2);
    }
}
