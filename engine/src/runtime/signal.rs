//! Core-local signals: a one-shot flag many tasks wait for (shutdown, drain) and a repeating
//! notification (a connection slot freed). No atomics; every waiting future holds a slot in a
//! waker table that it updates in place when polled again and frees when dropped, so a poll is
//! O(1) and nothing accumulates however many futures come and go.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Wakers of the futures waiting on one signal: a slab with a free list.
#[derive(Default)]
struct Waiters {
    slots: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl Waiters {
    /// Stores `waker` in `key`'s slot (taking a slot if `key` is `None`) and returns the key.
    fn register(&mut self, key: Option<usize>, waker: &Waker) -> usize {
        match key {
            Some(k) => {
                match &mut self.slots[k] {
                    Some(w) if w.will_wake(waker) => {}
                    slot => *slot = Some(waker.clone()),
                }
                k
            }
            None => {
                let k = self.free.pop().unwrap_or_else(|| {
                    self.slots.push(None);
                    self.slots.len() - 1
                });
                self.slots[k] = Some(waker.clone());
                k
            }
        }
    }

    /// Frees `key`'s slot.
    fn remove(&mut self, key: usize) {
        if let Some(slot) = self.slots.get_mut(key) {
            if slot.take().is_some() {
                self.free.push(key);
            }
        }
    }

    /// Wakes every waiter and empties the table.
    fn wake_all(&mut self) {
        let slots = std::mem::take(&mut self.slots);
        self.free.clear();
        for w in slots.into_iter().flatten() {
            w.wake();
        }
    }

    /// Waiters registered now.
    fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

#[derive(Default)]
struct Inner {
    set: Cell<bool>,
    /// Bumped by every wake-up, so a future knows its slot was emptied.
    epoch: Cell<u64>,
    waiters: RefCell<Waiters>,
}

impl Inner {
    fn poll_wait(
        &self,
        key: &mut Option<(usize, u64)>,
        ready: bool,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        if ready {
            self.forget(key);
            return Poll::Ready(());
        }
        // A slot from before the last wake-up was emptied by it: take a new one.
        let current = key
            .filter(|&(_, epoch)| epoch == self.epoch.get())
            .map(|(k, _)| k);
        let k = self.waiters.borrow_mut().register(current, cx.waker());
        *key = Some((k, self.epoch.get()));
        Poll::Pending
    }

    fn forget(&self, key: &mut Option<(usize, u64)>) {
        if let Some((k, epoch)) = key.take() {
            if epoch == self.epoch.get() {
                self.waiters.borrow_mut().remove(k);
            }
        }
    }

    fn wake_all(&self) {
        self.epoch.set(self.epoch.get().wrapping_add(1));
        // Taken out first: a woken task may register again while this runs.
        let mut all = std::mem::take(&mut *self.waiters.borrow_mut());
        all.wake_all();
    }
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
            self.inner.wake_all();
        }
    }

    /// Whether the signal is set.
    pub fn is_set(&self) -> bool {
        self.inner.set.get()
    }

    /// Resolves once the signal is set.
    ///
    /// # Cancellation
    /// Dropping the future frees its waker slot.
    pub fn wait(&self) -> Wait<'_> {
        Wait {
            inner: &self.inner,
            key: None,
        }
    }

    /// Futures waiting now (for tests and metrics).
    pub fn waiters(&self) -> usize {
        self.inner.waiters.borrow().len()
    }

    /// [`LocalSignal::wait`] for hand-written futures that own the signal: `slot` is the
    /// caller's waker slot, to be released with [`LocalSignal::forget`] when it stops waiting.
    pub fn poll_wait(&self, slot: &mut WaitSlot, cx: &mut Context<'_>) -> Poll<()> {
        self.inner.poll_wait(&mut slot.0, self.inner.set.get(), cx)
    }

    /// As [`LocalSignal::poll_wait`], for the root future of a spawned task, whose waker is the
    /// same at every poll (the task's): the waker is stored at the first poll, and later polls
    /// only read the flag. (A set signal starts a new epoch and wakes every stored waker, so a
    /// registered slot can only have gone stale by the signal being set, which is read first.)
    pub fn poll_wait_stable(&self, slot: &mut WaitSlot, cx: &mut Context<'_>) -> Poll<()> {
        if slot.0.is_some() && !self.inner.set.get() {
            return Poll::Pending;
        }
        self.poll_wait(slot, cx)
    }

    /// Releases a slot taken by [`LocalSignal::poll_wait`].
    pub fn forget(&self, slot: &mut WaitSlot) {
        self.inner.forget(&mut slot.0);
    }
}

/// A waiter's place in a [`LocalSignal`]'s waker table, for [`LocalSignal::poll_wait`].
#[derive(Debug, Default)]
pub struct WaitSlot(Option<(usize, u64)>);

/// The future of [`LocalSignal::wait`].
pub struct Wait<'a> {
    inner: &'a Inner,
    key: Option<(usize, u64)>,
}

impl Future for Wait<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        this.inner
            .poll_wait(&mut this.key, this.inner.set.get(), cx)
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        self.inner.forget(&mut self.key);
    }
}

/// A core-local notification: `notified()` resolves after the next `notify()`. No atomics.
#[derive(Clone, Default)]
pub struct LocalNotify {
    inner: Rc<Inner>,
}

impl LocalNotify {
    /// A notifier nobody waits on yet.
    pub fn new() -> LocalNotify {
        LocalNotify::default()
    }

    /// Wakes every task waiting in `notified()`.
    pub fn notify(&self) {
        self.inner.wake_all();
    }

    /// Resolves after the next `notify()`.
    ///
    /// # Cancellation
    /// Dropping the future frees its waker slot.
    pub fn notified(&self) -> Notified<'_> {
        Notified {
            inner: &self.inner,
            since: self.inner.epoch.get(),
            key: None,
        }
    }

    /// Futures waiting now (for tests and metrics).
    pub fn waiters(&self) -> usize {
        self.inner.waiters.borrow().len()
    }
}

/// The future of [`LocalNotify::notified`].
pub struct Notified<'a> {
    inner: &'a Inner,
    since: u64,
    key: Option<(usize, u64)>,
}

impl Future for Notified<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let ready = this.inner.epoch.get() != this.since;
        this.inner.poll_wait(&mut this.key, ready, cx)
    }
}

impl Drop for Notified<'_> {
    fn drop(&mut self) {
        self.inner.forget(&mut self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    struct Count(std::sync::atomic::AtomicUsize);
    impl Wake for Count {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn poll_once<F: Future>(f: Pin<&mut F>, waker: &Waker) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn dropped_waiters_leave_nothing_behind() {
        let s = LocalSignal::new();
        let count = std::sync::Arc::new(Count(Default::default()));
        let waker = Waker::from(count.clone());
        for _ in 0..10_000 {
            let mut w = Box::pin(s.wait());
            assert!(poll_once(w.as_mut(), &waker).is_pending());
            assert!(
                poll_once(w.as_mut(), &waker).is_pending(),
                "a re-poll reuses its slot"
            );
        }
        assert_eq!(s.waiters(), 0, "every dropped Wait freed its slot");
        let mut kept = Box::pin(s.wait());
        assert!(poll_once(kept.as_mut(), &waker).is_pending());
        assert_eq!(s.waiters(), 1);
        s.set();
        assert_eq!(count.0.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert!(poll_once(kept.as_mut(), &waker).is_ready());
        assert_eq!(s.waiters(), 0);
    }

    #[test]
    fn a_stable_waiter_registers_once_and_is_woken_and_released_by_the_set() {
        let s = LocalSignal::new();
        let count = std::sync::Arc::new(Count(Default::default()));
        let waker = Waker::from(count.clone());
        let mut slot = WaitSlot::default();
        for _ in 0..3 {
            assert!(s
                .poll_wait_stable(&mut slot, &mut Context::from_waker(&waker))
                .is_pending());
        }
        assert_eq!(s.waiters(), 1, "one slot, taken at the first poll");
        s.set();
        assert_eq!(count.0.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert!(s
            .poll_wait_stable(&mut slot, &mut Context::from_waker(&waker))
            .is_ready());
        assert_eq!(s.waiters(), 0);
    }

    #[test]
    fn notify_wakes_current_waiters_and_later_ones_wait_again() {
        let n = LocalNotify::new();
        let count = std::sync::Arc::new(Count(Default::default()));
        let waker = Waker::from(count.clone());
        let mut a = Box::pin(n.notified());
        assert!(poll_once(a.as_mut(), &waker).is_pending());
        n.notify();
        assert!(poll_once(a.as_mut(), &waker).is_ready());
        let mut b = Box::pin(n.notified());
        assert!(
            poll_once(b.as_mut(), &waker).is_pending(),
            "a notification before it does not count"
        );
        drop(b);
        assert_eq!(n.waiters(), 0);
    }
}
