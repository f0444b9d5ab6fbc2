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

/// A core-local notification: `notified()` resolves after the next `notify()`. No atomics.
#[derive(Clone, Default)]
pub struct LocalNotify {
    inner: Rc<NotifyInner>,
}

#[derive(Default)]
struct NotifyInner {
    generation: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl LocalNotify {
    /// A notifier nobody waits on yet.
    pub fn new() -> LocalNotify {
        LocalNotify::default()
    }

    /// Wakes every task waiting in `notified()`.
    pub fn notify(&self) {
        self.inner
            .generation
            .set(self.inner.generation.get().wrapping_add(1));
        for w in self.inner.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// Resolves after the next `notify()`.
    pub fn notified(&self) -> Notified<'_> {
        Notified {
            notify: self,
            generation: self.inner.generation.get(),
        }
    }
}

/// The future of [`LocalNotify::notified`].
pub struct Notified<'a> {
    notify: &'a LocalNotify,
    generation: u64,
}

impl Future for Notified<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.inner.generation.get() != self.generation {
            return Poll::Ready(());
        }
        let mut waiters = self.notify.inner.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
