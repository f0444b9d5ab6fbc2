//! A one-shot, core-local signal (shutdown, drain): set once, awaited by many tasks, no atomics.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
struct Inner {
    set: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

/// A flag tasks on one core can wait for.
#[derive(Clone, Default)]
pub struct LocalSignal {
    inner: Rc<Inner>,
}

impl LocalSignal {
    /// A signal not yet set.
    pub fn new() -> LocalSignal {
        LocalSignal::default()
    }

    /// Sets the signal and wakes every waiter.
    pub fn set(&self) {
        if !self.inner.set.replace(true) {
            for w in self.inner.waiters.borrow_mut().drain(..) {
                w.wake();
            }
        }
    }

    /// Whether the signal is set.
    pub fn is_set(&self) -> bool {
        self.inner.set.get()
    }

    /// Resolves once the signal is set.
    pub fn wait(&self) -> Wait<'_> {
        Wait { signal: self }
    }
}

/// The future of [`LocalSignal::wait`].
pub struct Wait<'a> {
    signal: &'a LocalSignal,
}

impl Future for Wait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.is_set() {
            return Poll::Ready(());
        }
        let mut waiters = self.signal.inner.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
