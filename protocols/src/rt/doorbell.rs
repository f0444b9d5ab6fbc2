//! A wake-up that crosses threads: any thread rings it, one task on one core waits for it. The
//! control plane's way to reach a core that is asleep, without the core polling on a timer.

use std::future::poll_fn;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use crate::l4::uring::{self, consume_eventfd, exec, new_eventfd, EventfdWatch};

/// An eventfd that a core's task waits on through its executor: the lean loop's ring (an
/// IORING_OP_POLL_ADD) or glommio's reactor. Rings coalesce: a waiter learns that the bell
/// rang at least once since it last looked, and then checks whatever state the ringer changed.
#[derive(Debug)]
pub struct Doorbell {
    fd: OwnedFd,
}

impl Doorbell {
    /// A bell nobody has rung.
    ///
    /// # Errors
    /// When no eventfd can be created (out of descriptors or memory).
    pub fn new() -> io::Result<Doorbell> {
        Ok(Doorbell { fd: new_eventfd()? })
    }

    /// Rings the bell: the waiting task (or the next to wait) wakes. From any thread; one
    /// `write` system call.
    pub fn ring(&self) {
        let one = 1u64;
        // SAFETY: an 8-byte write from a u64 on the stack to our eventfd. It fails only when
        // the counter is about to overflow, that is when the bell has rung unheard 2^64 - 2
        // times: rung already.
        unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            );
        }
    }

    /// Resolves once the bell has rung since the last time this resolved (at once if it has),
    /// or, rarely, spuriously: callers re-check their state either way.
    ///
    /// # Errors
    /// When the executor cannot watch the eventfd (no ring, or no descriptor left for
    /// glommio's watch).
    ///
    /// # Cancellation
    /// Dropping the future cancels the watch; a ring meanwhile is kept for the next wait.
    ///
    /// # Panics
    /// Polled outside both executors (as glommio's streams do), unless the bell had rung.
    pub async fn rung(&self) -> io::Result<()> {
        if self.take() {
            return Ok(());
        }
        if exec::is_running() {
            uring::readable(self.fd.as_raw_fd()).await?;
            self.take();
            return Ok(());
        }
        let mut watch = EventfdWatch::new(self.fd.as_raw_fd());
        let mut first = true;
        poll_fn(|cx| {
            let woken = !first;
            first = false;
            watch.poll_fired(cx, woken)
        })
        .await
    }

    /// Whether the bell rang since the last look (which this is), without waiting: for a
    /// thread that waits for the descriptor itself, say in `poll` with others.
    pub fn take(&self) -> bool {
        consume_eventfd(self.fd.as_raw_fd())
    }
}

impl AsFd for Doorbell {
    /// The eventfd: readable while the bell has rung unheard.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
