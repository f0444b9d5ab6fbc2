//! A wake-up that crosses threads: any thread rings it, one task on one core waits for it. The
//! control plane's way to reach a core that is asleep, without the core polling on a timer.

use std::future::poll_fn;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::l4::uring::{self, exec, EventfdWatch};

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
        // SAFETY: plain eventfd creation; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        Ok(Doorbell {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
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
        if self.consume() {
            return Ok(());
        }
        if exec::is_running() {
            uring::readable(self.fd.as_raw_fd()).await?;
            self.consume();
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
        self.consume()
    }

    /// Reads (and so resets) the counter; true when the bell had rung.
    fn consume(&self) -> bool {
        let mut value = 0u64;
        // SAFETY: an 8-byte read into a u64 on the stack from our non-blocking eventfd.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut value as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        n == std::mem::size_of::<u64>() as isize
    }
}

impl AsFd for Doorbell {
    /// The eventfd: readable while the bell has rung unheard.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
