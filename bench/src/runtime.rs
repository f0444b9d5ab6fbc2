//! The bench tools' own executors: one glommio `LocalExecutor` per requested CPU
//! (`Placement::Fixed`), or a single unpinned one, plus a core-local stop signal that cancels
//! every task waiting on it.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

/// io_uring registered memory per executor: networking does not use it, so keep it small (every
/// executor owns 3 rings, each registering this much against RLIMIT_MEMLOCK).
pub(crate) const IO_MEMORY: usize = 256 * 1024;

/// Spawns an executor thread named `name`, pinned to `cpu` when given, running `fut_gen()`.
pub(crate) fn spawn_executor<G, F, T>(
    name: &str,
    cpu: Option<usize>,
    fut_gen: G,
) -> io::Result<ExecutorJoinHandle<T>>
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let placement = match cpu {
        Some(cpu) => Placement::Fixed(cpu),
        None => Placement::Unbound,
    };
    LocalExecutorBuilder::new(placement)
        .name(name)
        .io_memory(IO_MEMORY)
        .spawn(fut_gen)
        .map_err(io::Error::from)
}

/// The executors to start: one per listed CPU, or one unpinned when the list is empty.
pub(crate) fn placements(cpus: &[usize]) -> Vec<Option<usize>> {
    if cpus.is_empty() {
        vec![None]
    } else {
        cpus.iter().map(|&c| Some(c)).collect()
    }
}

/// A core-local, one-shot stop signal: [`StopSignal::wait`] futures complete once
/// [`StopSignal::fire`] was called. Not `Send`: each executor has its own.
#[derive(Default)]
pub(crate) struct StopSignal {
    fired: Cell<bool>,
    wakers: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

impl StopSignal {
    /// Whether the signal has fired.
    pub(crate) fn is_fired(&self) -> bool {
        self.fired.get()
    }

    /// Fires the signal, waking every waiter.
    pub(crate) fn fire(&self) {
        self.fired.set(true);
        let wakers: Vec<Waker> = self
            .wakers
            .borrow_mut()
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        for w in wakers {
            w.wake();
        }
    }

    /// A future that completes when the signal fires.
    pub(crate) fn wait(self: &Rc<Self>) -> StopWait {
        StopWait {
            signal: self.clone(),
            slot: None,
        }
    }
}

/// Completes when its [`StopSignal`] fires. Registers its waker once, in a slot it frees on drop.
pub(crate) struct StopWait {
    signal: Rc<StopSignal>,
    slot: Option<usize>,
}

impl Future for StopWait {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.fired.get() {
            return Poll::Ready(());
        }
        match self.slot {
            Some(i) => {
                let mut wakers = self.signal.wakers.borrow_mut();
                if let Some(w) = wakers.get_mut(i) {
                    match w {
                        Some(old) if old.will_wake(cx.waker()) => {}
                        _ => *w = Some(cx.waker().clone()),
                    }
                }
            }
            None => {
                let i = {
                    let mut wakers = self.signal.wakers.borrow_mut();
                    match self.signal.free.borrow_mut().pop() {
                        Some(i) => {
                            wakers[i] = Some(cx.waker().clone());
                            i
                        }
                        None => {
                            wakers.push(Some(cx.waker().clone()));
                            wakers.len() - 1
                        }
                    }
                };
                self.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Drop for StopWait {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            if let Some(w) = self.signal.wakers.borrow_mut().get_mut(i) {
                *w = None;
            }
            self.signal.free.borrow_mut().push(i);
        }
    }
}

/// Blocks SIGINT and SIGTERM on the calling (executor) thread, so they reach the thread that
/// waits for them (or take their default action on the process) instead of interrupting a ring.
pub(crate) fn block_stop_signals() {
    // SAFETY: plain signal-mask manipulation on the current thread with a local, initialized set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}
