//! The completion-based io_uring backend of the transport seam: every socket operation is an
//! SQE on this core's private ring (RECV into a buffer the kernel picks from a per-core
//! provided-buffer ring, SEND from the caller's owned buffer, single-shot ACCEPT with the peer
//! address, CONNECT with a linked timeout), driven by one glommio task per core.
//!
//! The ring is created lazily, on the executor thread that first uses the backend
//! (SINGLE_ISSUER | DEFER_TASKRUN | TASKRUN_FLAG, COOP_TASKRUN where accepted). `driver.rs`
//! holds the submit/reap/park loop, `slots.rs` the generation-tagged table that routes
//! completions, `bufring.rs` the provided-buffer ring. `docs/internals.md` records why the
//! driver is shaped as it is and what it costs.
//!
//! # Cancellation
//! A dropped `read` leaves its RECV in flight, owned by the stream, and the next `read` returns
//! what it received: reads are cancel-safe. Dropping any other future mid-flight (write,
//! accept, connect), or a stream with a RECV or a last write's SEND in flight, queues an
//! ASYNC_CANCEL and moves the operation's memory (read buffer, caller's write buffer or its
//! copy, address storage) into its slot, where it stays until the kernel's final completion.
//! A connection accepted by an abandoned accept is closed when that completion arrives; a ring
//! buffer the kernel picked for an abandoned RECV goes back to the ring. Nothing leaks a
//! descriptor or a buffer.

mod bufring;
mod driver;
pub mod exec;
mod slots;
mod timers;

use std::io;
use std::mem::ManuallyDrop;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use futures_lite::future::poll_fn;

use io_uring::{opcode, squeue, types};

pub(crate) use self::driver::{consume_eventfd, new_eventfd, EventfdWatch};
use self::driver::{Abandoned, InFlight, NoResources};
use self::slots::{Key, IGNORED_USER_DATA};
use super::buf::{IoBuf, READ_BUF_SIZE};
use super::{Backend, LastWriteFailed, Listener, StableBuf, Stream};

/// The shortest connect timeout honoured; shorter ones are raised to it.
const MIN_CONNECT_TIMEOUT: Duration = Duration::from_millis(1);

/// Queue a RECV together with each write when none is in flight, so that a request/response
/// exchange costs one submission batch instead of two (the reply is read by the next `read`).
const READ_AHEAD: bool = true;

/// The largest [`Stream::write_last`] sent linked to the next read (its bytes are copied and held
/// until that read completes, which on an idle keep-alive connection may be long); larger last
/// writes are plain writes.
pub const LAST_WRITE_COPY_MAX: usize = 1024;

/// Flags of every SEND: no SIGPIPE when the peer has gone.
const SEND_FLAGS: i32 = libc::MSG_NOSIGNAL;

/// `IORING_RECVSEND_POLL_FIRST` (`include/uapi/linux/io_uring.h`, Linux 5.19), in a RECV's
/// `ioprio`: arm the readiness poll before trying to receive. The `io-uring` crate keeps its
/// copy of the constant private.
const RECVSEND_POLL_FIRST: u16 = 1;

/// The io_uring completion backend.
///
/// Every operation must run inside a glommio executor: the first one on a thread creates that
/// thread's ring and spawns its driver task onto the current executor.
#[derive(Debug, Clone, Copy, Default)]
pub struct UringBackend;

/// Counters of this core's ring, for tests, benchmarks and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UringStats {
    /// `io_uring_enter` calls made.
    pub enters: u64,
    /// SQEs handed to the kernel.
    pub submitted: u64,
    /// CQEs reaped.
    pub completions: u64,
    /// Times the driver parked on the ring's eventfd.
    pub parks: u64,
    /// Times the eventfd actually fired (a park ended by the kernel, not by new work).
    pub eventfd_wakeups: u64,
    /// Operations submitted and not yet completed, abandoned ones included.
    pub in_flight: usize,
    /// Operations whose futures were dropped before completion (ASYNC_CANCEL queued).
    pub cancels: u64,
    /// RECVs that found the provided-buffer ring empty (ENOBUFS) and retried with a buffer of
    /// their own.
    pub recv_buffer_fallbacks: u64,
    /// Buffers lent to the provided-buffer ring and not picked yet, as of the last
    /// `io_uring_enter`: about the reads that could be in flight then, plus a margin.
    pub ring_buffers_lent: usize,
    /// Sends that returned fewer bytes than asked and were resubmitted for the rest.
    pub short_sends: u64,
    /// Completions whose slot had been recycled, dropped by the generation check.
    pub stale_completions: u64,
    /// Times the lean loop armed or moved its alarm (the IORING_OP_TIMEOUT its sleeps end by).
    pub alarms: u64,
    /// Sockets registered in the ring's table of files (each stream's, when the table exists
    /// and its descriptor fits): their operations skip the kernel's descriptor lookup.
    pub registered_files: u64,
    /// Registrations the kernel refused (their streams' operations then fail and they close).
    pub registered_file_failures: u64,
}

/// This core's ring counters; zeroes when the backend has not been used on this thread.
pub fn stats() -> UringStats {
    driver::stats()
}

/// Memory the kernel may touch until an operation's final completion; released (dropped) then.
struct Keep<T: 'static>(T);

impl<T: 'static> Abandoned for Keep<T> {}

/// What a RECV in flight owns: its own pooled buffer, or nothing when the kernel picks one
/// from the provided-buffer ring as bytes arrive (the driver recycles a picked buffer whose
/// RECV was abandoned).
enum RecvKeep {
    /// Boxed: this fallback is rare, and every stream holds a `RecvKeep` while it waits.
    Pool(Box<IoBuf>),
    Ring,
    /// A ring RECV hard-linked behind a SEND posted without a success completion
    /// ([`Stream::write_last`]): it owns the SEND's buffer, which the kernel is done with once
    /// this RECV completes (a hard link starts its next operation only after the previous one
    /// ended, whatever its outcome; a failed SEND is reported separately, see
    /// `Driver::submit_send_then_recv`).
    RingAfterSend(#[allow(dead_code)] Box<[u8]>),
    /// Not a RECV: the POLL_ADD (POLLIN) of [`Stream::watch_idle`] on a core without a
    /// provided-buffer ring, which completes when the peer sends bytes or closes, and holds
    /// nothing while it waits.
    Watch,
}

impl Abandoned for RecvKeep {}

/// A TCP stream driven by this core's ring. Closing happens on drop.
pub struct UringStream {
    /// The RECV in flight, owned by the stream rather than by a `read` future so that a
    /// dropped read loses no bytes. Cancelled first when the stream is dropped.
    read_op: Option<InFlight<RecvKeep>>,
    /// `read_op` is linked behind a SEND from [`Stream::write_last`] that reports only failure.
    linked_send: bool,
    /// The SEND of a [`Stream::write_last`] queued while a RECV was already waiting (the RECV
    /// of an idle watch): not linked, so the driver settles it (see
    /// `Driver::submit_send_silent`). Its slot owns the copy of the bytes (the stream stays
    /// small: it moves in and out of the pool at every request). The next `read` waits for it
    /// and reports its failure.
    unlinked_send: Option<UnlinkedSend>,
    /// No read follows ([`Stream::no_more_reads`]): writes queue no RECV ahead.
    no_read_ahead: bool,
    /// Registered in the ring's table of files, at the slot of the descriptor's own number
    /// (see `Driver::register_file`): its operations name the slot ([`UringStream::sqe_fd`]).
    registered: bool,
    /// Closed by `Drop` through the ring (IORING_OP_CLOSE), or with close(2) when this thread
    /// has no ring.
    fd: ManuallyDrop<OwnedFd>,
    peer: Option<SocketAddr>,
}

/// A [`Stream::write_last`] SEND in flight behind a RECV (see `UringStream::unlinked_send`).
#[derive(Clone, Copy, Debug)]
struct UnlinkedSend {
    key: Key,
    /// The bytes it was asked to send (the last `len` of those its slot keeps).
    len: u32,
    /// Its first try, with MSG_DONTWAIT: it completes as it is submitted, and what the socket
    /// could not take then is sent by a second SEND that waits for room (see
    /// [`poll_unlinked_send`]).
    first: bool,
}

impl UringStream {
    /// A stream on `fd`, registered in `driver`'s table of files when it can be.
    fn new(fd: OwnedFd, peer: Option<SocketAddr>, driver: &driver::Driver) -> UringStream {
        UringStream {
            read_op: None,
            linked_send: false,
            unlinked_send: None,
            no_read_ahead: false,
            registered: driver.register_file(fd.as_raw_fd()),
            fd: ManuallyDrop::new(fd),
            peer,
        }
    }

    /// What an SQE on this stream names, and the flag to add to it: the stream's slot in the
    /// ring's table of files when it is registered (the slot has the descriptor's number), else
    /// the descriptor.
    fn sqe_fd(&self) -> (types::Fd, squeue::Flags) {
        let flags = if self.registered {
            squeue::Flags::FIXED_FILE
        } else {
            squeue::Flags::empty()
        };
        (types::Fd(self.fd.as_raw_fd()), flags)
    }

    /// Queues a RECV and keeps it in the stream: with the kernel picking the buffer from the
    /// ring when `from_ring` and the ring exists, else into a buffer from the pool. With
    /// `poll_first` (a ring RECV only), the kernel waits for readiness before its first attempt,
    /// for a read that cannot find bytes yet.
    fn arm_read(
        &mut self,
        driver: Rc<driver::Driver>,
        from_ring: bool,
        poll_first: bool,
    ) -> io::Result<()> {
        let (fd, fixed) = self.sqe_fd();
        if from_ring && driver.has_buf_ring() {
            let ioprio = if poll_first { RECVSEND_POLL_FIRST } else { 0 };
            let mut sqe = [
                opcode::Recv::new(fd, std::ptr::null_mut(), READ_BUF_SIZE as u32)
                    .buf_group(bufring::BUF_GROUP)
                    .ioprio(ioprio)
                    .build()
                    .flags(squeue::Flags::BUFFER_SELECT | fixed),
            ];
            // SAFETY: no pointer of ours: the kernel writes into a ring buffer it picks, which
            // the ring keeps allocated while it is lent.
            let key = unsafe { driver.submit(&mut sqe) }?;
            self.read_op = Some(InFlight::new(driver, key, RecvKeep::Ring));
            return Ok(());
        }
        let mut buf = Box::new(IoBuf::for_read());
        let (ptr, len) = buf.read_target();
        let mut sqe = [opcode::Recv::new(fd, ptr, len as u32).build().flags(fixed)];
        // SAFETY: `ptr..ptr+len` is the heap storage of `buf`, which moves into the InFlight
        // below (or is dropped on error before anything was queued) and stays allocated until
        // the final completion: moving an IoBuf does not move its bytes.
        let key = unsafe { driver.submit(&mut sqe) }?;
        self.read_op = Some(InFlight::new(driver, key, RecvKeep::Pool(buf)));
        Ok(())
    }

    /// The idle check of [`Stream::is_idle_and_open`] and its quicker variant: the state of the
    /// watch or RECV in flight, once `collect` has routed what it routes (when the operation
    /// is not known to be complete yet); with neither in flight, a non-blocking peek.
    fn watch_says_idle(&self, collect: impl FnOnce(&driver::Driver)) -> bool {
        if self.linked_send || self.unlinked_send.is_some() {
            // Mid-exchange: a request is on its way.
            return false;
        }
        let Some(op) = &self.read_op else {
            return super::glommio::peek_idle(self.fd.as_raw_fd());
        };
        if !op.has_completed() {
            collect(op.driver());
        }
        !op.has_completed()
    }

    /// Waits for the SEND of a [`Stream::write_last`] that went unlinked, if any, and reports
    /// its failure.
    async fn finish_unlinked_send(&mut self) -> io::Result<()> {
        if self.unlinked_send.is_none() {
            return Ok(());
        }
        let target = self.sqe_fd();
        poll_fn(|cx| {
            let Self {
                read_op,
                unlinked_send,
                ..
            } = self;
            poll_unlinked_send(unlinked_send, read_op.as_ref(), target, cx, false)
        })
        .await
    }

    /// Ready when the next `read` can collect: the RECV has completed and so has an unlinked
    /// SEND before it, or that SEND failed (its RECV may then wait for a reply that will not
    /// come). Registers the waker with both; while the RECV waits, the SEND's success wakes
    /// nobody, since the reply follows it (a wake for it alone would poll the whole exchange
    /// once more per request). Cancel-safe: what completed stays with the stream.
    fn poll_exchange(&mut self, cx: &mut std::task::Context<'_>) -> Poll<io::Result<()>> {
        let recv_done = match self.read_op.as_mut() {
            Some(op) => op.poll_done(cx).is_ready(),
            None => true,
        };
        let target = self.sqe_fd();
        let Self {
            read_op,
            unlinked_send,
            ..
        } = self;
        match poll_unlinked_send(unlinked_send, read_op.as_ref(), target, cx, !recv_done) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) if recv_done => Poll::Ready(Ok(())),
            _ => Poll::Pending,
        }
    }

    /// Ends the idle watch before the stream is used. One still waiting is cancelled with its
    /// completion counted as due: it comes within the next `io_uring_enter`, which then still
    /// waits for the exchange's own completion. (Left to complete with the reply instead, its
    /// completion often came one loop pass after the reply's, costing a system call.)
    fn end_watch(&mut self) {
        if matches!(self.read_op.as_ref(), Some(op) if matches!(op.resources(), RecvKeep::Watch)) {
            if let Some(op) = self.read_op.take() {
                op.cancel_due();
            }
        }
    }
}

impl Drop for UringStream {
    /// Cancels the RECV in flight (its memory lives on until the final completion), then
    /// closes the socket with an IORING_OP_CLOSE queued on this thread's ring: no system call
    /// of its own, submitted with the next batch (one `close(2)` per connection was a quarter
    /// of the syscalls under connection churn).
    fn drop(&mut self) {
        if self.linked_send && self.read_op.is_some() {
            // The linked RECV may not have started: its SEND may still wait for buffer space (a
            // client that stopped reading), and a cancellation by the RECV's key cannot find a
            // RECV that has not started. So: submit what is queued (the SEND may not have gone
            // in yet, and must not be overtaken by the shutdown), then shut the socket down both
            // ways. A SEND still waiting ends with a short count, the hard link then starts the
            // RECV, which fails at once, and its final completion releases the SEND's buffer; a
            // RECV already waiting sees EOF.
            if let Ok(driver) = driver::current() {
                driver.turn();
            }
            // SAFETY: shutdown(2) on the socket this stream still owns.
            unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_RDWR) };
        }
        if let (Some(send), Some(op)) = (self.unlinked_send.take(), &self.read_op) {
            // Cancelled unless complete; its slot keeps the bytes until the final completion.
            // A SEND still queued goes to the kernel ahead of its cancellation, in one batch.
            op.driver().abandon(send.key, Box::new(NoResources), false);
        }
        drop(self.read_op.take());
        // SAFETY: `fd` is taken exactly once, here, and not used afterwards.
        let fd = unsafe { ManuallyDrop::take(&mut self.fd) };
        driver::close(fd, self.registered);
    }
}

impl std::fmt::Debug for UringStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringStream")
            .field("fd", &self.fd.as_raw_fd())
            .field("peer", &self.peer)
            .finish()
    }
}

impl AsRawFd for UringStream {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for UringStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Stream for UringStream {
    /// One RECV. The kernel picks its buffer from this core's provided-buffer ring when bytes
    /// arrive, so a waiting read holds no buffer; when the ring is empty (or was refused at
    /// start) the RECV brings a buffer of its own from the pool.
    ///
    /// # Cancellation
    /// Cancel-safe: the RECV belongs to the stream, not to the future. A dropped `read` leaves
    /// it in flight, and the next `read` returns what it received, so no byte is lost. Dropping
    /// the stream cancels it; the buffer returns to the pool with its final completion.
    async fn read(&mut self) -> io::Result<Option<IoBuf>> {
        // The ring of the RECV in flight, if any (its buffers are that ring's), without a
        // lookup of this thread's driver.
        let driver = match &self.read_op {
            Some(op) => op.driver_rc(),
            None => driver::current()?,
        };
        self.end_watch();
        let mut from_ring = true;
        loop {
            if self.read_op.is_none() {
                self.arm_read(driver.clone(), from_ring, false)?;
            }
            poll_fn(|cx| self.poll_exchange(cx)).await?;
            let key = self.read_op.as_ref().map(InFlight::key);
            let (res, flags, keep) = self
                .read_op
                .take()
                .and_then(InFlight::into_result)
                .ok_or_else(|| io::Error::other("io_uring: read state lost"))?;
            let picked = driver.take_selected(res, flags);
            let linked = std::mem::take(&mut self.linked_send);
            if linked && key.is_some_and(|k| driver.take_send_failure(k)) {
                // The write before this read failed or came up short: whatever the read got,
                // the peer did not get the whole message.
                return Err(last_write_failed());
            }
            return match (res, keep) {
                (_, RecvKeep::Watch) => Err(io::Error::other("io_uring: read found a watch")),
                (n, RecvKeep::Ring | RecvKeep::RingAfterSend(_)) if n == -libc::ENOBUFS => {
                    // Every ring buffer is out: this read brings its own.
                    driver.count_buffer_fallback();
                    from_ring = false;
                    continue;
                }
                (n, _) if n < 0 => Err(io::Error::from_raw_os_error(-n)),
                (0, _) => Ok(None),
                (n, RecvKeep::Pool(mut buf)) => {
                    // SAFETY: the RECV wrote `n` bytes (at most the length it was given) at the
                    // buffer's read target.
                    unsafe { buf.filled(n as usize) };
                    Ok(Some(*buf))
                }
                (_, RecvKeep::Ring | RecvKeep::RingAfterSend(_)) => picked
                    .map(Some)
                    .ok_or_else(|| io::Error::other("io_uring: RECV completed without a buffer")),
            };
        }
    }

    /// SENDs until every byte is out, resubmitting the remainder after a short send. When no
    /// RECV is in flight, one is queued in the same batch as the first SEND (read-ahead): the
    /// next `read` collects it.
    ///
    /// # Cancellation
    /// Dropping the future cancels the SEND in flight; `buf` is dropped only after the final
    /// completion. How much was sent is then unknown: close the stream.
    async fn write_all<B: StableBuf>(&mut self, buf: B) -> (io::Result<()>, B) {
        let total = buf.bytes().len();
        if total == 0 {
            return (Ok(()), buf);
        }
        if self.linked_send {
            // Its bytes could overtake the linked SEND still in progress.
            return (Err(write_after_write_last()), buf);
        }
        if let Err(e) = self.finish_unlinked_send().await {
            return (Err(e), buf);
        }
        let driver = match driver::current() {
            Ok(d) => d,
            Err(e) => return (Err(e), buf),
        };
        self.end_watch();
        let mut buf = buf;
        let mut sent = 0usize;
        while sent < total {
            let rest = &buf.bytes()[sent..];
            let len = rest.len().min(u32::MAX as usize) as u32;
            let (fd, fixed) = self.sqe_fd();
            let mut sqe = [opcode::Send::new(fd, rest.as_ptr(), len)
                .flags(SEND_FLAGS)
                .build()
                .flags(fixed)];
            // SAFETY: the bytes belong to `buf`, a StableBuf (its bytes do not move when it
            // moves), which the InFlight below owns until the final completion.
            let key = match unsafe { driver.submit(&mut sqe) } {
                Ok(k) => k,
                Err(e) => return (Err(e), buf),
            };
            if READ_AHEAD && !self.no_read_ahead && self.read_op.is_none() {
                // Best effort: on failure the next `read` queues its RECV itself.
                // The peer answers what is being sent: nothing to read before it has it.
                let _ = self.arm_read(driver.clone(), true, true);
            }
            let (res, _, Keep(back)) = InFlight::new(driver.clone(), key, Keep(buf))
                .complete()
                .await;
            buf = back;
            match res {
                n if n == -libc::EINTR || n == -libc::EAGAIN => continue,
                n if n < 0 => return (Err(io::Error::from_raw_os_error(-n)), buf),
                0 => return (Err(io::ErrorKind::WriteZero.into()), buf),
                n => {
                    sent += n as usize;
                    if sent < total {
                        driver.count_short_send();
                    }
                }
            }
        }
        (Ok(()), buf)
    }

    /// One batch: a SEND with MSG_WAITALL and CQE_SKIP_SUCCESS (the kernel posts a completion
    /// only for a failed or short send, which the next `read` reports as `BrokenPipe`),
    /// hard-linked to a RECV from the provided-buffer ring. Returns at once; the next `read`
    /// collects the RECV.
    ///
    /// The RECV must own the bytes being sent until it completes, which on a keep-alive
    /// connection is when the next request arrives: so they are copied into an allocation of
    /// their exact size and the caller's buffer (often a 64 KiB read buffer) is handed back at
    /// once. Only writes of at most [`LAST_WRITE_COPY_MAX`] bytes go this way; larger ones, and
    /// writes when there is no buffer ring, use [`Stream::write_all`].
    ///
    /// When a RECV already waits (the idle watch of [`Stream::watch_idle`], or a read ahead),
    /// the SEND goes alone, unlinked, with MSG_DONTWAIT: it is done when the `io_uring_enter`
    /// that takes it in returns, posts a completion only when short of whole, and its slot owns
    /// the copy until the driver settles it. The next `read` waits for both and reports the
    /// SEND's failure as above. A POLL_ADD watch is cancelled first, in the same batch.
    async fn write_last<B: StableBuf>(&mut self, buf: B) -> (io::Result<()>, Option<B>) {
        let len = buf.bytes().len();
        if len == 0 {
            return (Ok(()), Some(buf));
        }
        self.end_watch();
        if self.linked_send || self.unlinked_send.is_some() || len > LAST_WRITE_COPY_MAX {
            let (r, b) = self.write_all(buf).await;
            return (r, Some(b));
        }
        // Behind a RECV already waiting, on its ring (no lookup of this thread's driver).
        let driver = match &self.read_op {
            Some(recv) => recv.driver_rc(),
            None => match driver::current() {
                Ok(d) => d,
                Err(e) => return (Err(e), Some(buf)),
            },
        };
        if !driver.has_buf_ring() {
            let (r, b) = self.write_all(buf).await;
            return (r, Some(b));
        }
        let copy: Box<[u8]> = buf.bytes().into();
        let (ptr, len) = (copy.as_ptr(), len as u32);
        let (fd, fixed) = self.sqe_fd();
        if self.read_op.is_some() {
            // Silent when whole (see `Driver::submit_send_silent`): MSG_DONTWAIT, so the kernel
            // never parks it waiting for room and it is done when the enter that takes it in
            // returns; MSG_WAITALL and CQE_SKIP_SUCCESS, so only a send short of whole posts a
            // CQE (a request this small almost always fits the socket's buffer; the rest of one
            // that does not is sent by a second SEND, see `poll_unlinked_send`).
            let sqe = opcode::Send::new(fd, ptr, len)
                .flags(SEND_FLAGS | libc::MSG_DONTWAIT | libc::MSG_WAITALL)
                .build()
                .flags(squeue::Flags::SKIP_SUCCESS | fixed);
            let whole = i32::try_from(len).unwrap_or(i32::MAX);
            // SAFETY: the SEND reads `copy`'s bytes and nothing else.
            let key = match unsafe { driver.submit_send_silent(sqe, copy, whole) } {
                Ok(k) => k,
                Err(e) => return (Err(e), Some(buf)),
            };
            self.unlinked_send = Some(UnlinkedSend {
                key,
                len,
                first: true,
            });
            return (Ok(()), Some(buf));
        }
        let mut sqes = [
            opcode::Send::new(fd, ptr, len)
                .flags(SEND_FLAGS | libc::MSG_WAITALL)
                .build()
                .flags(squeue::Flags::IO_HARDLINK | squeue::Flags::SKIP_SUCCESS | fixed),
            // POLL_FIRST: the peer answers what is being sent, so a first try finds nothing.
            opcode::Recv::new(fd, std::ptr::null_mut(), READ_BUF_SIZE as u32)
                .buf_group(bufring::BUF_GROUP)
                .ioprio(RECVSEND_POLL_FIRST)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT | fixed),
        ];
        // SAFETY: the SEND reads `copy`'s bytes (a boxed slice: they do not move with it), and
        // the box goes into the RECV's resources below, which live until the RECV's final
        // completion, which comes after the SEND's end (see RecvKeep::RingAfterSend). The RECV
        // writes into a ring buffer the kernel picks.
        let key = match unsafe { driver.submit_send_then_recv(&mut sqes) } {
            Ok(k) => k,
            Err(e) => return (Err(e), Some(buf)),
        };
        self.read_op = Some(InFlight::new(driver, key, RecvKeep::RingAfterSend(copy)));
        self.linked_send = true;
        (Ok(()), Some(buf))
    }

    async fn shutdown_write(&mut self) -> io::Result<()> {
        if self.linked_send {
            // The FIN could overtake the linked SEND still in progress.
            return Err(write_after_write_last());
        }
        self.finish_unlinked_send().await?;
        // SAFETY: shutdown(2) on the socket this stream owns.
        if unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_WR) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// A watch (queued by [`Stream::watch_idle`]) or a RECV (left by a dropped `read`) in flight
    /// that has completed means bytes (or EOF) arrived: not idle. One still waiting, once every
    /// completion the kernel holds for this ring has been routed, means nothing arrived: idle.
    /// When the kernel has flagged deferred completions, the driver's turn is run here (one
    /// `io_uring_enter` that submits and reaps for every operation on the core, which the
    /// driver would otherwise make a moment later) rather than a peek. With neither in flight
    /// a non-blocking `recv(MSG_PEEK)` decides.
    fn is_idle_and_open(&self) -> bool {
        self.watch_says_idle(|driver| {
            if driver.may_have_unreaped_completions() {
                driver.turn();
            }
        })
    }

    fn no_more_reads(&mut self) {
        self.no_read_ahead = true;
    }

    /// Routes the completions already in the CQ (no system call), then reads the watch's
    /// state; see the trait's documentation for what this leaves unseen.
    fn is_recently_idle_and_open(&self) -> bool {
        self.watch_says_idle(|driver| {
            driver.reap();
        })
    }

    /// Queues the RECV that will read the reply to the next request, with POLL_FIRST (the
    /// kernel waits for readiness before trying) and its buffer picked from the ring only when
    /// bytes arrive: it holds no memory while the stream idles, completes if the peer sends
    /// bytes or closes, and is then the next exchange's read. That exchange costs two SQEs
    /// (the request's SEND, unlinked, and nothing else) where a POLL_ADD watch cost four (the
    /// watch, its POLL_REMOVE, the linked SEND and RECV). A watch that completed for any reason
    /// (bytes, EOF, an error, or the ring empty when the socket woke it) makes the connection
    /// not reusable: it is dropped, never misread.
    ///
    /// Without a provided-buffer ring, a one-shot POLL_ADD for POLLIN, cancelled when the
    /// stream is used; the loop does not wake up for that cancellation alone (see
    /// `InFlight::cancel_due`).
    fn watch_idle(&mut self) {
        if self.read_op.is_some() {
            return;
        }
        let Ok(driver) = driver::current() else {
            return;
        };
        if driver.has_buf_ring() {
            // Best effort: on failure the idle check peeks.
            let _ = self.arm_read(driver, true, true);
            return;
        }
        let (fd, fixed) = self.sqe_fd();
        let mut sqe = [opcode::PollAdd::new(fd, libc::POLLIN as u32)
            .build()
            .flags(fixed)];
        // SAFETY: POLL_ADD carries no pointers. Best effort: on failure the idle check peeks.
        if let Ok(key) = unsafe { driver.submit(&mut sqe) } {
            self.read_op = Some(InFlight::new(driver, key, RecvKeep::Watch));
        }
    }
}

/// Polls the SEND of a [`Stream::write_last`] that went unlinked, on the ring of the RECV it
/// went out behind (`recv`: an unlinked SEND is only ever queued behind one, which stays in
/// flight until the SEND is collected, so its key is never looked up in another thread's or a
/// later ring's table). `Ok` once every byte is sent (or when there is no SEND), `Err` carrying
/// [`LastWriteFailed`] when it failed. With `quiet`, its success will not wake the task.
///
/// The first try (MSG_DONTWAIT) may come back short, or refused with EAGAIN, when the socket's
/// buffer is full: the rest then goes in a second SEND on `fd`, from the bytes its slot kept,
/// with MSG_WAITALL and without MSG_DONTWAIT (it waits for room, and ends whole or failed,
/// posting its completion either way). `target` is what that SEND names (see
/// [`UringStream::sqe_fd`]).
fn poll_unlinked_send(
    send: &mut Option<UnlinkedSend>,
    recv: Option<&InFlight<RecvKeep>>,
    target: (types::Fd, squeue::Flags),
    cx: &mut std::task::Context<'_>,
    quiet: bool,
) -> Poll<io::Result<()>> {
    loop {
        let Some(UnlinkedSend { key, len, first }) = *send else {
            return Poll::Ready(Ok(()));
        };
        let Some(recv) = recv else {
            *send = None;
            return Poll::Ready(Err(io::Error::other("io_uring: write state lost")));
        };
        let driver = recv.driver();
        let all = i32::try_from(len).unwrap_or(i32::MAX);
        let (res, _, bytes) =
            std::task::ready!(driver.poll_send_keeping(key, cx, quiet.then_some(all)));
        *send = None;
        if res == all {
            return Poll::Ready(Ok(()));
        }
        let sent = if res == -libc::EAGAIN { 0 } else { res };
        let bytes = match bytes {
            Some(b) if first && (0..all).contains(&sent) => b,
            _ => return Poll::Ready(Err(last_write_failed())),
        };
        driver.count_short_send();
        let rest = len - sent as u32;
        let at = bytes.len() - rest as usize;
        let sqe = opcode::Send::new(target.0, bytes[at..].as_ptr(), rest)
            .flags(SEND_FLAGS | libc::MSG_WAITALL)
            .build()
            .flags(target.1);
        // SAFETY: the SEND reads the last `rest` bytes of `bytes`, which its slot keeps.
        match unsafe { driver.submit_send_keeping(sqe, bytes) } {
            Ok(key) => {
                *send = Some(UnlinkedSend {
                    key,
                    len: rest,
                    first: false,
                })
            }
            Err(_) => return Poll::Ready(Err(last_write_failed())),
        }
    }
}

/// What a read reports when the last write before it failed or was cut short.
fn last_write_failed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, LastWriteFailed)
}

/// A write on a stream whose last write ([`Stream::write_last`]) may still be in progress:
/// refused rather than risk reordering the bytes.
fn write_after_write_last() -> io::Error {
    io::Error::other("a write after write_last, before a read, on an io_uring stream")
}

/// Waits until `fd` (which must stay open meanwhile) is readable, with an IORING_OP_POLL_ADD on
/// this thread's ring. Dropping the future cancels the poll.
pub(crate) async fn readable(fd: RawFd) -> io::Result<()> {
    let driver = driver::current()?;
    let mut sqe = [opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32).build()];
    // SAFETY: POLL_ADD points at no memory of ours.
    let key = unsafe { driver.submit(&mut sqe) }?;
    let (res, _, NoResources) = InFlight::new(driver, key, NoResources).complete().await;
    if res < 0 {
        return Err(io::Error::from_raw_os_error(-res));
    }
    Ok(())
}

/// A listening socket accepted from with single-shot IORING_OP_ACCEPT, which (unlike the
/// multishot form) returns the peer's address.
pub struct UringListener {
    fd: OwnedFd,
    /// The listening socket has TCP_NODELAY, which Linux copies to every accepted socket: no
    /// setsockopt per connection then.
    nodelay_inherited: bool,
}

impl std::fmt::Debug for UringListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringListener")
            .field("fd", &self.fd.as_raw_fd())
            .finish()
    }
}

impl AsRawFd for UringListener {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for UringListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Where an ACCEPT writes the peer address.
struct AcceptAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

/// An accept's address storage; an abandoned accept that still returned a connection closes it.
struct AcceptKeep(Box<AcceptAddr>);

impl Abandoned for AcceptKeep {
    fn late_completion(self: Box<Self>, res: i32) {
        if res >= 0 {
            // SAFETY: a successful ACCEPT returned this descriptor to us and nobody else has
            // seen it; closing it here is its only release.
            drop(unsafe { OwnedFd::from_raw_fd(res) });
        }
    }
}

impl Listener for UringListener {
    type Stream = UringStream;

    /// One ACCEPT (with SOCK_CLOEXEC); the new stream gets TCP_NODELAY (inherited from the
    /// listening socket when it has it, else set here).
    ///
    /// # Cancellation
    /// Dropping the future cancels the ACCEPT; a connection it accepted anyway is closed.
    async fn accept(&self) -> io::Result<(UringStream, SocketAddr)> {
        let driver = driver::current()?;
        let mut addr = Box::new(AcceptAddr {
            // SAFETY: all-zero bytes are a valid sockaddr_storage.
            storage: unsafe { std::mem::zeroed() },
            len: std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        });
        let mut sqe = [opcode::Accept::new(
            types::Fd(self.fd.as_raw_fd()),
            (&mut addr.storage as *mut libc::sockaddr_storage).cast(),
            &mut addr.len,
        )
        .flags(libc::SOCK_CLOEXEC)
        .build()];
        // SAFETY: both pointers are into the boxed AcceptAddr, which the InFlight below owns
        // until the final completion; moving the Box does not move its contents.
        let key = unsafe { driver.submit(&mut sqe) }?;
        let (res, _, AcceptKeep(addr)) = InFlight::new(driver.clone(), key, AcceptKeep(addr))
            .complete()
            .await;
        if res < 0 {
            return Err(io::Error::from_raw_os_error(-res));
        }
        // SAFETY: a successful ACCEPT returns a new descriptor that we now own.
        let fd = unsafe { OwnedFd::from_raw_fd(res) };
        // SAFETY: the kernel wrote `len` bytes of a socket address into the storage.
        let peer = unsafe { socket2::SockAddr::new(addr.storage, addr.len) }
            .as_socket()
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "accepted a non-IP socket")
            })?;
        if !self.nodelay_inherited {
            socket2::SockRef::from(&fd).set_nodelay(true)?;
        }
        Ok((UringStream::new(fd, Some(peer), &driver), peer))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        socket2::SockRef::from(&self.fd)
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an IP socket"))
    }
}

/// What a CONNECT and its linked timeout point at, plus the socket being connected.
struct ConnectKeep {
    addr: socket2::SockAddr,
    timeout: types::Timespec,
    socket: socket2::Socket,
}

impl Abandoned for Box<ConnectKeep> {}

impl Backend for UringBackend {
    type Stream = UringStream;
    type Listener = UringListener;
    const NAME: &'static str = "uring";
    /// Four: with one, 50 clients each opening a connection per request got one new connection
    /// per loop pass (1.03 io_uring_enter calls per request; 0.57 with four); see
    /// docs/internals.md, "Connection churn".
    const ACCEPTS_IN_FLIGHT: usize = 4;

    /// Takes the socket as it is (blocking or not: the ring never blocks on it).
    fn adopt_listener(fd: OwnedFd) -> io::Result<UringListener> {
        if !socket2::SockRef::from(&fd).is_listener()? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "adopt_listener: the socket is not listening",
            ));
        }
        let nodelay_inherited = socket2::SockRef::from(&fd).nodelay().unwrap_or(false);
        Ok(UringListener {
            fd,
            nodelay_inherited,
        })
    }

    /// A CONNECT linked to a LINK_TIMEOUT: the kernel cancels the connect when the timeout
    /// fires, and the cancellation is reported as `TimedOut`.
    ///
    /// # Cancellation
    /// Dropping the future cancels the CONNECT; the socket closes after its final completion.
    async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<UringStream> {
        let driver = driver::current()?;
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.set_nodelay(true)?;
        let keep = Box::new(ConnectKeep {
            addr: socket2::SockAddr::from(addr),
            timeout: types::Timespec::from(timeout.max(MIN_CONNECT_TIMEOUT)),
            socket,
        });
        let mut sqes = [
            opcode::Connect::new(
                types::Fd(keep.socket.as_raw_fd()),
                keep.addr.as_ptr(),
                keep.addr.len(),
            )
            .build()
            .flags(squeue::Flags::IO_LINK),
            opcode::LinkTimeout::new(&keep.timeout)
                .build()
                .user_data(IGNORED_USER_DATA),
        ];
        // SAFETY: the address and timespec live in the Box, owned by the InFlight below until
        // the connect's final completion (the kernel copies the timespec at submission, which
        // precedes that completion).
        let key = unsafe { driver.submit(&mut sqes) }?;
        let (res, _, keep) = InFlight::new(driver.clone(), key, keep).complete().await;
        match res {
            0 => Ok(UringStream::new(
                OwnedFd::from(keep.socket),
                Some(addr),
                &driver,
            )),
            n if n == -libc::ECANCELED => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect to {addr} timed out"),
            )),
            n => Err(io::Error::from_raw_os_error(-n)),
        }
    }
}
