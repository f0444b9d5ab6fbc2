//! The per-core ring and the glommio task that drives it: who submits, who reaps, and how the
//! core sleeps without losing a wake-up.
//!
//! One ring per executor thread, created lazily on that thread (SINGLE_ISSUER | DEFER_TASKRUN:
//! completions are produced only when this thread enters the ring with GETEVENTS). Operations
//! queue SQEs without a syscall and wake the driver task; the driver submits and reaps once per
//! executor turn and yields while work keeps coming. A turn with nothing queued and no
//! IORING_SQ_TASKRUN flag makes no syscall. When a turn finds nothing while operations are in
//! flight, the driver parks: it enables the ring's eventfd, fences, re-checks the ring, and only
//! then waits for the eventfd through glommio's reactor, so glommio's own sleep covers it. See
//! `docs/internals.md` for the reasoning and the measurements.

use std::cell::{Cell, RefCell};
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{fence, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::future::{poll_fn, yield_now};
use futures_lite::AsyncRead;
use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::bufring::BufRing;
use super::slots::{Key, Slots, FILES_USER_DATA, IGNORED_USER_DATA, TIMER_USER_DATA};
use super::UringStats;
use crate::l4::buf::IoBuf;

/// Most slots in each ring's table of registered files (fewer when the descriptor limit is
/// lower: the kernel refuses a table larger). A stream's slot is its descriptor's number (see
/// [`Driver::register_file`]); a stream whose descriptor is past the table names its
/// descriptor instead. 32 Ki slots cost the kernel about 256 KiB per ring, and the driver the
/// 128 KiB of [`Driver::slot_numbers`].
const REGISTERED_FILES: u32 = 32 * 1024;

/// This process's soft limit on open descriptors (`RLIMIT_NOFILE`); no descriptor is at or past
/// it.
fn descriptor_limit() -> u32 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given, nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 0;
    }
    u32::try_from(limit.rlim_cur).unwrap_or(u32::MAX)
}

/// The entry that empties a slot of the table of files (`-1`). A static: the kernel reads it
/// when it issues the FILES_UPDATE, in a later `io_uring_enter`.
static NO_FILE: RawFd = -1;

/// Submission queue entries per ring; a full queue is flushed early by the operation that
/// found it full.
const SQ_ENTRIES: u32 = 256;

/// Completion queue entries per ring (the kernel buffers overflow beyond it, at a cost).
const CQ_ENTRIES: u32 = 4096;

/// How long a ring being torn down waits for its cancelled operations' final completions
/// before leaking their buffers rather than freeing memory the kernel may still write.
const TEARDOWN_WAIT: Duration = Duration::from_millis(200);

/// Resources of an operation whose future was dropped before its completion arrived: kept
/// alive in the slot until the final CQE, then told the result.
pub(crate) trait Abandoned: 'static {
    /// Receives the final result (`res` of the CQE) once the kernel is done with the resources.
    /// By default the resources are simply dropped.
    fn late_completion(self: Box<Self>, res: i32) {
        let _ = res;
    }
}

/// An abandoned operation's resources with its final CQE's `res` and `flags`.
type LateCompletion = (Box<dyn Abandoned>, i32, u32);

/// A collected SEND of [`Driver::submit_send_keeping`]: `res`, `flags` and the bytes its slot
/// kept.
type KeptSendResult = (i32, u32, Option<Box<[u8]>>);

/// What an abandoned operation that points at no memory leaves in its slot.
pub(crate) struct NoResources;

impl Abandoned for NoResources {}

/// Bytes a slot owned for its operation ([`Driver::submit_send_keeping`]), with the resources of
/// the future that abandoned it.
struct KeptBytes(#[allow(dead_code)] Box<[u8]>, Box<dyn Abandoned>);

impl Abandoned for KeptBytes {
    fn late_completion(self: Box<Self>, res: i32) {
        self.1.late_completion(res);
    }
}

enum OpState {
    /// Submitted (or queued); the future's waker, once it has polled. A completion whose
    /// result is `quiet_on` wakes nobody (a SEND that sent everything, which its task collects
    /// with the reply that follows). `keep` is memory the slot itself owns for the kernel (see
    /// [`Driver::submit_send_keeping`]), released with the completion.
    Waiting {
        waker: Option<Waker>,
        quiet_on: Option<i32>,
        keep: Option<Box<[u8]>>,
    },
    /// The CQE arrived; the future has not collected it yet. `keep` as in `Waiting`, handed to
    /// the collector (who may send the rest of a short send from it).
    Done {
        res: i32,
        flags: u32,
        keep: Option<Box<[u8]>>,
    },
    /// The future was dropped; the slot keeps its resources until the final CQE.
    Abandoned(Box<dyn Abandoned>),
}

/// The longest wait while completions are due (see [`Driver::wait`]): they come within the
/// same system call, so this only bounds the cost of a mistake.
const DUE_WAIT_CAP: Duration = Duration::from_millis(1);

/// A bound no wait exceeds when nothing in flight could end it, or when its alarm could not
/// be set (see `Inner::set_alarm`).
const IDLE_WAIT_CAP: Duration = Duration::from_secs(1);

struct Inner {
    ring: IoUring,
    slots: Slots<OpState>,
    /// The driver task's waker while it waits for work or is parked.
    driver_waker: Option<Waker>,
    /// Operations whose final CQE has not arrived yet (waiting or abandoned).
    in_kernel: usize,
    /// Read buffers lent to the kernel; `None` when the kernel refused the registration.
    buf_ring: Option<BufRing>,
    stats: UringStats,
    notes: Notes,
    /// The duration an alarm being armed or moved was submitted with: the kernel reads it
    /// during the submission, so it lives here rather than on a stack frame.
    alarm_ts: types::Timespec,
}

/// Operations the CQE routing has more to say about; the lists are almost always empty.
#[derive(Default)]
struct Notes {
    /// The lean loop's alarm: when the IORING_OP_TIMEOUT kept armed in the ring (see
    /// [`Driver::wait`]) expires, if one is armed. Cleared by its completion.
    alarm: Option<Instant>,
    /// Keys whose hard-linked SEND posted a failure (see `Driver::submit_send_then_recv`),
    /// until their stream collects them.
    failed_sends: Vec<Key>,
    /// Abandoned operations whose final CQE is certain to be posted by the next
    /// `io_uring_enter` and wakes nobody (see [`InFlight::cancel_due`]): the lean loop's wait
    /// asks for that many completions more.
    due: Vec<Key>,
    /// SENDs of [`Driver::submit_send_silent`] queued and not yet known to be submitted, with
    /// their lengths.
    silent_queued: Vec<(Key, i32)>,
    /// Those an `io_uring_enter` has taken in: done by the time it returned (they never wait
    /// for room), and whole unless a CQE says otherwise. [`Inner::settle_silent`] completes
    /// them once the CQEs posted by then are routed.
    silent_sent: Vec<(Key, i32)>,
    /// CQEs routed since the last `io_uring_enter` that carry a buffer the kernel picked from
    /// the ring (see [`BufRing::top_up`]).
    picked: u16,
}

impl Notes {
    /// An `io_uring_enter` that found `queued` SQEs in the queue took in `submitted`: when it
    /// took them all, the silent SENDs queued so far were among them.
    fn entered(&mut self, queued: usize, submitted: usize) {
        if submitted >= queued && !self.silent_queued.is_empty() {
            self.silent_sent.append(&mut self.silent_queued);
        }
    }
}

/// One core's ring, its operations and its counters.
pub(crate) struct Driver {
    inner: RefCell<Inner>,
    /// Registered with the ring; signalled by the kernel when deferred completions appear
    /// while it is enabled.
    eventfd: OwnedFd,
    /// Whether a driver task is alive on this thread's executor.
    task_alive: Cell<bool>,
    /// Whether the lean executor (`exec.rs`) drives the ring on this thread now: no glommio
    /// driver task is spawned then.
    lean: Cell<bool>,
    /// The wakers one reap collects, kept between reaps so that routing completions allocates
    /// nothing (taken out while in use: a reap that nests inside another starts a fresh one).
    wake_scratch: Cell<Vec<Waker>>,
    /// Likewise for the abandoned operations' final completions.
    late_scratch: Cell<Vec<LateCompletion>>,
    /// `slot_numbers[i] == i`, for every slot of the ring's table of registered files: what a
    /// FILES_UPDATE that registers descriptor `i` at slot `i` points at (it must stay put
    /// until the kernel issues it, and so for the ring's life). Empty when the ring has no
    /// table.
    slot_numbers: Box<[RawFd]>,
}

thread_local! {
    static DRIVER: RefCell<Option<Rc<Driver>>> = const { RefCell::new(None) };
}

/// This thread's driver, creating the ring and spawning its task on first use.
///
/// Must be called from inside a glommio executor (as every [`super::UringBackend`] operation
/// is): the driver task is spawned onto the current executor.
///
/// # Errors
/// When the ring or its eventfd cannot be created (io_uring disabled, out of memory or
/// descriptors), or the thread is exiting.
pub(crate) fn current() -> io::Result<Rc<Driver>> {
    let driver = thread_driver()?;
    if !driver.task_alive.get() && !driver.lean.get() {
        // First use on this thread, or a previous executor on this thread has gone.
        driver.task_alive.set(true);
        glommio::spawn_local(drive(driver.clone())).detach();
    }
    Ok(driver)
}

/// This thread's driver for the lean executor, which drives the ring itself (no glommio task).
///
/// # Errors
/// As [`current`].
pub(crate) fn current_lean() -> io::Result<Rc<Driver>> {
    let driver = thread_driver()?;
    driver.lean.set(true);
    Ok(driver)
}

/// This thread's driver, creating its ring on first use.
fn thread_driver() -> io::Result<Rc<Driver>> {
    DRIVER
        .try_with(|cell| -> io::Result<Rc<Driver>> {
            if let Some(d) = cell.borrow().as_ref() {
                return Ok(d.clone());
            }
            let d = Rc::new(Driver::new()?);
            *cell.borrow_mut() = Some(d.clone());
            Ok(d)
        })
        .map_err(|_| io::Error::other("io_uring driver: thread is exiting"))?
}

/// Closes `fd` with an IORING_OP_CLOSE queued on this thread's ring (no system call of its own;
/// it goes with the next submission), or with close(2) when the thread has no ring driven now.
pub(crate) fn close(fd: OwnedFd, registered: bool) {
    let raw = fd.as_raw_fd();
    let Some(driver) = DRIVER.try_with(|cell| cell.borrow().clone()).ok().flatten() else {
        // No ring on this thread any more (it is exiting), and so no table either.
        drop(fd);
        return;
    };
    if !(driver.lean.get() || driver.task_alive.get()) {
        // Nobody submits for the ring now.
        if registered {
            driver.empty_slot_now(raw);
        }
        drop(fd);
        return;
    }
    // The slot is emptied first (the table's reference to the socket goes), then the
    // descriptor closed: the socket closes as the CLOSE completes, as it would unregistered.
    let empty = opcode::FilesUpdate::new(&NO_FILE, 1)
        .offset(raw)
        .build()
        .user_data(IGNORED_USER_DATA)
        .flags(squeue::Flags::SKIP_SUCCESS);
    let close = opcode::Close::new(types::Fd(raw))
        .build()
        .user_data(IGNORED_USER_DATA)
        .flags(squeue::Flags::SKIP_SUCCESS);
    let mut both = [empty, close];
    let sqes = if registered {
        &mut both[..]
    } else {
        &mut both[1..]
    };
    // SAFETY: CLOSE carries no pointer; the FILES_UPDATE points at a static.
    match unsafe { driver.submit_detached(sqes) } {
        // The kernel owns the descriptor now.
        Ok(()) => {
            let _ = fd.into_raw_fd();
        }
        Err(_) => {
            if registered {
                driver.empty_slot_now(raw);
            }
            drop(fd);
        }
    }
}

/// This thread's ring counters, or zeroes when no ring was created here.
pub(crate) fn stats() -> UringStats {
    DRIVER
        .try_with(|cell| match cell.borrow().as_ref() {
            Some(d) => {
                let inner = d.inner.borrow();
                UringStats {
                    in_flight: inner.slots.len(),
                    ring_buffers_lent: inner.buf_ring.as_ref().map_or(0, BufRing::lent),
                    ..inner.stats
                }
            }
            None => UringStats::default(),
        })
        .unwrap_or_default()
}

fn new_ring() -> io::Result<IoUring> {
    let build = |coop: bool| {
        let mut b = IoUring::builder();
        b.setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .setup_cqsize(CQ_ENTRIES);
        if coop {
            b.setup_coop_taskrun();
        }
        b.build(SQ_ENTRIES)
    };
    build(true).or_else(|_| build(false))
}

impl Driver {
    fn new() -> io::Result<Driver> {
        let mut ring = new_ring()?;
        let eventfd = new_eventfd()?;
        ring.submitter().register_eventfd(eventfd.as_raw_fd())?;
        // Notifications only while parked.
        ring.completion().disable_eventfd();
        // No IORING_REGISTER_RING_FDS: io-uring 0.7 keeps the registered index in the
        // Submitter that registered it, and `ring.submitter()` builds a fresh one per call, so
        // a registration here would take a kernel slot and never be used (it was, until this
        // was noticed). Using it needs a long-lived Submitter; see docs/internals.md.
        //
        // The table of files: the kernel refuses one larger than the descriptor limit (EMFILE).
        let slots = REGISTERED_FILES.min(descriptor_limit());
        let slot_numbers = match ring.submitter().register_files_sparse(slots) {
            Ok(()) => (0..slots as RawFd).collect(),
            Err(e) => {
                log::info!(
                    "io_uring: no table of registered files ({e}); operations name descriptors"
                );
                Box::default()
            }
        };
        let buf_ring = match BufRing::register(&ring.submitter()) {
            Ok(r) => Some(r),
            Err(e) => {
                log::info!("io_uring: no provided-buffer ring ({e}); reads use their own buffers");
                None
            }
        };
        Ok(Driver {
            inner: RefCell::new(Inner {
                ring,
                slots: Slots::new(),
                driver_waker: None,
                in_kernel: 0,
                buf_ring,
                stats: UringStats::default(),
                notes: Notes::default(),
                alarm_ts: types::Timespec::new(),
            }),
            eventfd,
            task_alive: Cell::new(false),
            lean: Cell::new(false),
            wake_scratch: Cell::new(Vec::new()),
            late_scratch: Cell::new(Vec::new()),
            slot_numbers,
        })
    }

    /// Empties `fd`'s slot in the table of files with a system call, for a socket about to be
    /// closed when no FILES_UPDATE can be queued: otherwise the table would keep the socket
    /// open until the slot is reused or the ring goes. (Inside a borrow of the driver, which no
    /// path that drops a stream takes, it stays until then.)
    fn empty_slot_now(&self, fd: RawFd) {
        if let (Ok(inner), Ok(slot)) = (self.inner.try_borrow(), u32::try_from(fd)) {
            let _ = inner
                .ring
                .submitter()
                .register_files_update(slot, &[NO_FILE]);
        }
    }

    /// Registers the socket `fd` in the ring's table of files, at the slot of its own number,
    /// with a FILES_UPDATE queued for the next submission. Operations queued after it may then
    /// name the slot instead of the descriptor ([`squeue::Flags::FIXED_FILE`], the same
    /// number): the kernel takes the file from the table, without the descriptor lookup and the
    /// reference count (`fget` and `fput`) it pays per operation otherwise. The kernel issues
    /// submissions in the order they were queued, and issues the FILES_UPDATE at once, so the
    /// slot is filled before any later operation looks it up.
    ///
    /// False when the ring has no table or `fd` is past it: name the descriptor. The table
    /// holds a reference to the socket, so a registered socket must be closed with
    /// [`close`]`(fd, true)`, which empties the slot first. A FILES_UPDATE that fails (only
    /// out of kernel memory) posts a completion that is counted; the stream's operations then
    /// fail (`EBADF`) and it is closed, nothing else.
    pub(crate) fn register_file(&self, fd: RawFd) -> bool {
        let Some(number) = usize::try_from(fd)
            .ok()
            .and_then(|i| self.slot_numbers.get(i))
        else {
            return false;
        };
        let mut sqe = [opcode::FilesUpdate::new(number, 1)
            .offset(fd)
            .build()
            .user_data(FILES_USER_DATA)
            .flags(squeue::Flags::SKIP_SUCCESS)];
        // SAFETY: the entry points into `slot_numbers`, which lives as long as the ring.
        let queued = unsafe { self.submit_detached(&mut sqe) }.is_ok();
        if queued {
            self.inner.borrow_mut().stats.registered_files += 1;
        }
        queued
    }

    /// Takes a slot and queues `entries` (the first carries the slot's key as user_data; the
    /// others must carry [`IGNORED_USER_DATA`]). Nothing reaches the kernel before the driver's
    /// next turn, unless the submission queue was full.
    ///
    /// # Safety
    /// Every pointer in `entries` must stay valid until the operation's final completion: the
    /// caller hands the memory it points to to an [`InFlight`] built from the returned key.
    pub(crate) unsafe fn submit(&self, entries: &mut [squeue::Entry]) -> io::Result<Key> {
        // SAFETY: forwarded from the caller's contract.
        unsafe {
            self.submit_labelled(entries, None, |key, entries| {
                if let Some(first) = entries.first_mut() {
                    first.set_user_data(key.to_user_data());
                }
            })
        }
    }

    /// Queues a SEND of bytes in `keep`, which the slot owns until the completion is collected
    /// (the caller keeps only the key: see [`Driver::poll_send_keeping`] and
    /// [`Driver::abandon`]).
    ///
    /// # Safety
    /// `entry` must point into `keep` and at nothing else.
    pub(crate) unsafe fn submit_send_keeping(
        &self,
        entry: squeue::Entry,
        keep: Box<[u8]>,
    ) -> io::Result<Key> {
        let mut entries = [entry];
        // SAFETY: the entry points into `keep`, which moves into the slot (a boxed slice's
        // bytes do not move with it) and stays there until the final completion (or is leaked
        // with the ring).
        unsafe {
            self.submit_labelled(&mut entries, Some(keep), |key, entries| {
                entries[0].set_user_data(key.to_user_data());
            })
        }
    }

    /// [`Driver::submit_send_keeping`] for a SEND of `len` bytes that posts no completion when
    /// it sends them all: the entry must be an unlinked SEND with `MSG_DONTWAIT | MSG_WAITALL`
    /// and CQE_SKIP_SUCCESS. MSG_DONTWAIT makes the kernel complete it as it is issued, during
    /// the `io_uring_enter` that takes it in, without ever waiting for room; MSG_WAITALL makes
    /// a short send a failure, so anything short of whole posts a CQE (with the bytes sent, or
    /// EAGAIN, or the error). So once an enter that took it in has returned and the CQEs it
    /// posted are routed, a SEND without a CQE sent everything: [`Inner::settle_silent`]
    /// completes it then with `len`, and its bytes go. Nothing wakes the loop for it, so a wait
    /// needs to count on no completion of its own.
    ///
    /// # Safety
    /// As [`Driver::submit_send_keeping`].
    #[inline]
    pub(crate) unsafe fn submit_send_silent(
        &self,
        entry: squeue::Entry,
        keep: Box<[u8]>,
        len: i32,
    ) -> io::Result<Key> {
        // SAFETY: forwarded from the caller's contract.
        let key = unsafe { self.submit_send_keeping(entry, keep) }?;
        self.inner.borrow_mut().notes.silent_queued.push((key, len));
        Ok(key)
    }

    /// Queues a SEND hard-linked to the operation after it (`entries[1]`, usually a RECV), which
    /// the returned key names. The SEND carries `CQE_SKIP_SUCCESS`: it posts a CQE only when it
    /// fails or comes up short (with `MSG_WAITALL`, a short send is a failure), tagged so that
    /// [`Driver::take_send_failure`] reports it for the key. A hard link starts the second
    /// operation once the SEND ended, whatever its outcome, so the second operation's final CQE
    /// always comes, after the SEND is done with its buffer. (A soft link was tried: after a
    /// partial send the linked RECV was neither issued nor cancelled on Linux 6.18.)
    ///
    /// # Safety
    /// As [`Driver::submit`], for both operations until the second one's final completion.
    pub(crate) unsafe fn submit_send_then_recv(
        &self,
        entries: &mut [squeue::Entry; 2],
    ) -> io::Result<Key> {
        // SAFETY: forwarded from the caller's contract.
        unsafe {
            self.submit_labelled(entries, None, |key, entries| {
                entries[0].set_user_data(key.send_failure_user_data());
                entries[1].set_user_data(key.to_user_data());
            })
        }
    }

    /// Takes a slot (owning `keep`, memory the entries may point into), lets `label` write its
    /// key into the entries' `user_data`, queues them and wakes the driver task.
    ///
    /// # Safety
    /// As [`Driver::submit`]; pointers into `keep` stay valid (the slot keeps it until the
    /// final completion).
    unsafe fn submit_labelled(
        &self,
        entries: &mut [squeue::Entry],
        keep: Option<Box<[u8]>>,
        label: impl FnOnce(Key, &mut [squeue::Entry]),
    ) -> io::Result<Key> {
        let mut inner = self.inner.borrow_mut();
        let key = inner
            .slots
            .insert(OpState::Waiting {
                waker: None,
                quiet_on: None,
                keep,
            })
            .map_err(|_| io::Error::other("io_uring: out of operation slots"))?;
        label(key, entries);
        // SAFETY: forwarded from the caller's contract.
        if let Err(e) = unsafe { push_all(&mut inner, entries) } {
            inner.slots.remove(key);
            return Err(e);
        }
        inner.in_kernel += 1;
        let waker = inner.driver_waker.take();
        drop(inner);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(key)
    }

    /// Whether the SEND linked before the operation named by `key` failed (see
    /// [`Driver::submit_send_then_recv`]); forgets the record.
    pub(crate) fn take_send_failure(&self, key: Key) -> bool {
        let mut inner = self.inner.borrow_mut();
        match inner.notes.failed_sends.iter().position(|k| *k == key) {
            Some(i) => {
                inner.notes.failed_sends.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// Queues `entries` that nobody waits for (their CQEs carry [`IGNORED_USER_DATA`]): they
    /// go to the kernel with the next submission.
    ///
    /// # Safety
    /// As [`Driver::submit`], for the whole life of the operations.
    pub(crate) unsafe fn submit_detached(&self, entries: &mut [squeue::Entry]) -> io::Result<()> {
        let mut inner = self.inner.borrow_mut();
        // SAFETY: forwarded from the caller's contract.
        unsafe { push_all(&mut inner, entries) }?;
        let waker = inner.driver_waker.take();
        drop(inner);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Polls the operation named by `key`: its `(res, flags)` once the CQE has arrived, which
    /// also frees the slot. Until then, a completion with the result `quiet_on` will not wake
    /// the task.
    pub(crate) fn poll_op(
        &self,
        key: Key,
        cx: &mut Context<'_>,
        quiet: Option<i32>,
    ) -> Poll<(i32, u32)> {
        self.poll_send_keeping(key, cx, quiet)
            .map(|(res, flags, _bytes)| (res, flags))
    }

    /// [`Driver::poll_op`] for a SEND of [`Driver::submit_send_keeping`]: the bytes the slot
    /// kept come back with the result.
    pub(crate) fn poll_send_keeping(
        &self,
        key: Key,
        cx: &mut Context<'_>,
        quiet: Option<i32>,
    ) -> Poll<KeptSendResult> {
        let mut inner = self.inner.borrow_mut();
        // A replaced waker is dropped only after the borrow ends: dropping the last reference
        // to a task may drop its future, whose InFlight would re-enter the driver.
        let mut replaced = None;
        let out = match inner.slots.get_mut(key) {
            Some(OpState::Done { res, flags, keep }) => {
                let out = (*res, *flags, keep.take());
                inner.slots.remove(key);
                Poll::Ready(out)
            }
            Some(OpState::Waiting {
                waker, quiet_on, ..
            }) => {
                *quiet_on = quiet;
                match waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => replaced = waker.replace(cx.waker().clone()),
                }
                Poll::Pending
            }
            // Not reachable through `InFlight`, which stops polling after Ready.
            Some(OpState::Abandoned(_)) | None => Poll::Ready((-libc::ECANCELED, 0, None)),
        };
        drop(inner);
        drop(replaced);
        out
    }

    /// Whether the CQE of `key` has arrived and waits to be collected.
    fn is_done(&self, key: Key) -> bool {
        matches!(
            self.inner.borrow_mut().slots.get_mut(key),
            Some(OpState::Done { .. })
        )
    }

    /// The future of `key` was dropped: keep `res` alive until the final CQE and ask the kernel
    /// to cancel the operation; with `due`, count that CQE as due (see [`InFlight::cancel_due`]).
    ///
    /// A due operation is a POLL_ADD, cancelled with POLL_REMOVE: the kernel finds it in the
    /// ring's poll table at once, where ASYNC_CANCEL first searches the io-wq queues (about 1%
    /// of the proxy core went to that search and its locks, one watch per request).
    pub(crate) fn abandon(&self, key: Key, resources: Box<dyn Abandoned>, due: bool) {
        let mut inner = self.inner.borrow_mut();
        let state = match inner.slots.get_mut(key) {
            Some(state) => state,
            None => {
                drop(inner);
                resources.late_completion(-libc::ECANCELED);
                return;
            }
        };
        match state {
            OpState::Waiting { keep, .. } => {
                // Memory the slot owns stays with it (boxed again: only a stream dropped with
                // such a SEND still in flight gets here).
                let resources = match keep.take() {
                    Some(bytes) => Box::new(KeptBytes(bytes, resources)),
                    None => resources,
                };
                // The old state's waker is dropped after the borrow ends (see `poll_op`).
                let old = std::mem::replace(state, OpState::Abandoned(resources));
                inner.stats.cancels += 1;
                let cancel = if due {
                    opcode::PollRemove::new(key.to_user_data()).build()
                } else {
                    opcode::AsyncCancel::new(key.to_user_data()).build()
                };
                let mut cancel = [cancel
                    .user_data(IGNORED_USER_DATA)
                    .flags(squeue::Flags::SKIP_SUCCESS)];
                // SAFETY: ASYNC_CANCEL and POLL_REMOVE carry no pointers.
                match unsafe { push_all(&mut inner, &mut cancel) } {
                    Ok(()) if due => inner.notes.due.push(key),
                    Ok(()) => {}
                    // The operation then ends on its own; its resources wait in the slot.
                    Err(e) => log::warn!("io_uring: could not queue a cancellation: {e}"),
                }
                let waker = inner.driver_waker.take();
                drop(inner);
                drop(old);
                if let Some(w) = waker {
                    w.wake();
                }
            }
            OpState::Done { res, flags, .. } => {
                let (res, flags) = (*res, *flags);
                inner.slots.remove(key);
                drop(inner);
                drop(self.take_selected(res, flags));
                resources.late_completion(res);
            }
            OpState::Abandoned(_) => {
                drop(inner);
                resources.late_completion(-libc::ECANCELED);
            }
        }
    }

    /// One turn: submit what is queued, run deferred completions, reap the CQ and wake the
    /// operations. Returns how many SQEs were submitted plus CQEs reaped. Makes no syscall
    /// when nothing is queued and the kernel has flagged no deferred work.
    pub(crate) fn turn(&self) -> usize {
        let progressed = {
            let mut guard = self.inner.borrow_mut();
            let inner = &mut *guard;
            let (queued, taskrun, overflow) = {
                let sq = inner.ring.submission();
                (sq.len(), sq.taskrun(), sq.cq_overflow())
            };
            let mut submitted = 0;
            if queued > 0 || taskrun || overflow {
                // GETEVENTS runs the deferred completions; the crate adds it when TASKRUN or
                // overflow is flagged, and completions of the SQEs issued inline are posted
                // during the submit itself.
                match inner.enter(|s| s.submit_and_wait(0)) {
                    Ok(n) => submitted = n,
                    Err(e) => match e.raw_os_error() {
                        Some(libc::EINTR | libc::EAGAIN | libc::EBUSY) => {}
                        _ => log::error!("io_uring_enter failed: {e}"),
                    },
                }
            }
            submitted
        };
        progressed + self.reap()
    }

    /// Routes every CQE in the completion queue (no system call) and wakes their operations;
    /// returns how many.
    pub(crate) fn reap(&self) -> usize {
        let mut wake = self.wake_scratch.take();
        let mut late = self.late_scratch.take();
        let reaped = {
            let mut inner = self.inner.borrow_mut();
            let reaped = inner.route_completions(&mut wake, &mut late);
            inner.stats.completions += reaped as u64;
            inner.settle_silent(&mut wake, &mut late);
            reaped
        };
        for w in wake.drain(..) {
            w.wake();
        }
        self.wake_scratch.set(wake);
        for (resources, res, flags) in late.drain(..) {
            // A buffer the kernel picked for an abandoned RECV goes back to the ring.
            drop(self.take_selected(res, flags));
            resources.late_completion(res);
        }
        self.late_scratch.set(late);
        reaped
    }

    /// The lean executor's sleep: one `io_uring_enter` that submits what is queued, runs
    /// deferred completions and waits until at least one completion is posted or `deadline`
    /// passes (returning at once when one is already there), then reaps. `now` is the loop's
    /// fresh clock reading.
    ///
    /// The deadline is kept by an IORING_OP_TIMEOUT left armed in the ring (the alarm), not by
    /// a timeout on the wait itself: a wait with a timeout starts and cancels a kernel timer
    /// on every sleep, and on this machine (a VM, where programming the timer device traps to
    /// the host) cost about 5 us per sleep, 10-15% of the CPU per request at one connection.
    /// The alarm is moved only when the deadline comes before it (a timer earlier than any
    /// armed so far), and an alarm earlier than the deadline is left alone: it wakes the loop
    /// early once, and the next sleep arms the next. An expired timeout wakes a wait whatever
    /// count it asked for (the kernel's `cq_timeouts` check), so completions counted as due do
    /// not hold the loop past it.
    ///
    /// The completions of cancelled watches (see [`InFlight::cancel_due`]) are waited for on
    /// top, so that they do not end the wait alone; such a wait keeps a timeout of at most
    /// [`DUE_WAIT_CAP`], in case one were late. (A request's SEND behind a watch needs no such
    /// count: whole, it posts nothing, see [`Driver::submit_send_silent`].)
    ///
    /// With no deadline (no timer on the loop) the wait lasts until a completion: an idle core
    /// makes no system call once the alarm of its last timer has gone off. When nothing in
    /// flight could post a completion, it does not wait for one: with silent SENDs queued (they
    /// post nothing when whole, and are done when the enter returns) it only submits them, so
    /// the loop settles them and runs whoever awaits them; with nothing at all in flight it is
    /// bounded by [`IDLE_WAIT_CAP`].
    pub(crate) fn wait(&self, now: Instant, deadline: Option<Instant>) {
        {
            let mut guard = self.inner.borrow_mut();
            let inner = &mut *guard;
            if inner.ring.completion().is_empty() {
                inner.stats.parks += 1;
                let due = inner.notes.due.len();
                let silent = inner.notes.silent_queued.len();
                let deadline = match deadline {
                    None if inner.in_kernel == 0 => Some(now + IDLE_WAIT_CAP),
                    d => d,
                };
                let result = if silent > 0 && inner.in_kernel <= silent {
                    // Only silent SENDs could end the wait, and they post nothing when whole.
                    inner.enter(|s| s.submit())
                } else {
                    let alarmed = match deadline {
                        Some(d) => due == 0 && inner.set_alarm(now, d),
                        None => due == 0,
                    };
                    if alarmed {
                        inner.enter(|s| s.submit_and_wait(1))
                    } else {
                        let cap = if due > 0 { DUE_WAIT_CAP } else { IDLE_WAIT_CAP };
                        let timeout =
                            deadline.map_or(cap, |d| d.saturating_duration_since(now).min(cap));
                        let ts = types::Timespec::from(timeout);
                        let args = types::SubmitArgs::new().timespec(&ts);
                        inner.enter(|s| s.submit_with_args(1 + due, &args))
                    }
                };
                if let Err(e) = result {
                    match e.raw_os_error() {
                        Some(libc::ETIME | libc::EINTR | libc::EAGAIN | libc::EBUSY) => {}
                        _ => log::error!("io_uring_enter (wait) failed: {e}"),
                    }
                }
            }
        }
        self.reap();
    }

    /// Ends lean driving on this thread: cancels and reaps what is still in flight (bounded),
    /// and lets a later glommio-hosted use spawn its driver task again.
    pub(crate) fn shutdown_lean(&self) {
        self.shutdown();
        self.lean.set(false);
    }

    fn in_flight(&self) -> usize {
        self.inner.borrow().slots.len()
    }

    /// Ready when SQEs are queued; otherwise registers the driver's waker.
    fn poll_queued(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.inner.borrow_mut();
        if !inner.ring.submission().is_empty() {
            return Poll::Ready(());
        }
        let replaced = match &inner.driver_waker {
            Some(w) if w.will_wake(cx.waker()) => None,
            _ => inner.driver_waker.replace(cx.waker().clone()),
        };
        drop(inner);
        drop(replaced);
        Poll::Pending
    }

    /// Prepares to sleep: enables the eventfd, fences, then re-checks the ring. Returns false
    /// (and disables the eventfd again) when work turned up meanwhile: the kernel signals the
    /// eventfd only when deferred work goes from none to some, so work that arrived while it
    /// was disabled would otherwise never wake us.
    fn arm_eventfd(&self) -> bool {
        let mut inner = self.inner.borrow_mut();
        inner.ring.completion().enable_eventfd();
        fence(Ordering::SeqCst);
        let busy = {
            let sq = inner.ring.submission();
            !sq.is_empty() || sq.taskrun() || sq.cq_overflow()
        } || !inner.ring.completion().is_empty();
        if busy {
            inner.ring.completion().disable_eventfd();
            return false;
        }
        inner.stats.parks += 1;
        true
    }

    fn disarm_eventfd(&self) {
        self.inner.borrow_mut().ring.completion().disable_eventfd();
    }

    /// Counts a park ended by the eventfd.
    fn count_eventfd_wakeup(&self) {
        self.inner.borrow_mut().stats.eventfd_wakeups += 1;
    }

    /// Whether a completion may exist that this thread has not routed yet: CQEs waiting in the
    /// CQ, or deferred completions the kernel flagged (IORING_SQ_TASKRUN) and produces only at
    /// the next GETEVENTS. When false, every operation not marked done is still in the kernel.
    pub(crate) fn may_have_unreaped_completions(&self) -> bool {
        self.kernel_flagged() || !self.inner.borrow_mut().ring.completion().is_empty()
    }

    /// Whether the kernel flagged deferred completions (IORING_SQ_TASKRUN) or a CQ overflow:
    /// completions that only an `io_uring_enter` produces.
    pub(crate) fn kernel_flagged(&self) -> bool {
        let mut inner = self.inner.borrow_mut();
        let sq = inner.ring.submission();
        sq.taskrun() || sq.cq_overflow()
    }

    /// Whether reads can let the kernel pick their buffer from this core's ring.
    pub(crate) fn has_buf_ring(&self) -> bool {
        self.inner.borrow().buf_ring.is_some()
    }

    /// The buffer the kernel picked for a RECV whose CQE has `flags` (IORING_CQE_F_BUFFER),
    /// holding its first `res` bytes; a fresh buffer takes its place in the ring.
    pub(crate) fn take_selected(&self, res: i32, flags: u32) -> Option<IoBuf> {
        let bid = cqueue::buffer_select(flags)?;
        let mut inner = self.inner.borrow_mut();
        inner
            .buf_ring
            .as_mut()?
            .take_filled(bid, res.max(0) as usize)
    }

    /// Adds one ring-exhausted RECV to the counters.
    pub(crate) fn count_buffer_fallback(&self) {
        self.inner.borrow_mut().stats.recv_buffer_fallbacks += 1;
    }

    /// Adds one short send to the counters.
    pub(crate) fn count_short_send(&self) {
        self.inner.borrow_mut().stats.short_sends += 1;
    }
}

impl Inner {
    /// Enters the ring with `enter` (one submitting call of its `Submitter`) and books what it
    /// took in: the SQEs submitted and, when it took in all that was queued, the silent SENDs
    /// among them (see [`Notes::entered`]).
    fn enter(
        &mut self,
        enter: impl FnOnce(&io_uring::Submitter<'_>) -> io::Result<usize>,
    ) -> io::Result<usize> {
        self.stats.enters += 1;
        if let Some(buf_ring) = &mut self.buf_ring {
            buf_ring.top_up(std::mem::take(&mut self.notes.picked), self.in_kernel);
        }
        let queued = self.ring.submission().len();
        let result = enter(&self.ring.submitter());
        if let Ok(n) = result {
            self.stats.submitted += n as u64;
            self.notes.entered(queued, n);
        }
        result
    }

    /// Makes sure the alarm (see [`Driver::wait`]) goes off by `deadline`: arms it when none is
    /// armed, moves it when it would go off later, and leaves an earlier one alone. The SQE
    /// goes in with the wait's submission. False when it could not be queued: the alarm stays
    /// as it was, and that wait bounds itself (the next one tries again).
    fn set_alarm(&mut self, now: Instant, deadline: Instant) -> bool {
        let moving = match self.notes.alarm {
            Some(at) if at <= deadline => return true,
            Some(_) => true,
            None => false,
        };
        self.alarm_ts = types::Timespec::from(deadline.saturating_duration_since(now));
        let ts: *const types::Timespec = &self.alarm_ts;
        let entry = if moving {
            // A failure (the alarm went off meanwhile) posts a CQE nobody needs: the alarm's
            // own completion clears it and wakes the wait. (IORING_TIMEOUT_UPDATE needs Linux
            // 5.11; every ring here is built with DEFER_TASKRUN, which needs 6.1.)
            opcode::TimeoutUpdate::new(TIMER_USER_DATA, ts)
                .build()
                .user_data(IGNORED_USER_DATA)
                .flags(squeue::Flags::SKIP_SUCCESS)
        } else {
            opcode::Timeout::new(ts).build().user_data(TIMER_USER_DATA)
        };
        // SAFETY: the kernel reads the timespec while it takes the SQE in, during the
        // submission this wait makes (or the flush `push_all` makes), and `alarm_ts` stays
        // where it is until then (the driver lives in an Rc and is not moved).
        match unsafe { push_all(self, &mut [entry]) } {
            Ok(()) => {
                self.notes.alarm = Some(deadline);
                self.stats.alarms += 1;
                true
            }
            Err(e) => {
                log::warn!("io_uring: could not set the loop's alarm: {e}");
                false
            }
        }
    }

    /// Completes the silent SENDs (see [`Driver::submit_send_silent`]) that an enter has taken
    /// in and that posted no CQE: they sent every byte. Called once the CQ is routed; not while
    /// the kernel holds overflowed CQEs, one of which could be such a SEND's failure.
    fn settle_silent(&mut self, wake: &mut Vec<Waker>, late: &mut Vec<LateCompletion>) {
        if self.notes.silent_sent.is_empty() || self.ring.submission().cq_overflow() {
            return;
        }
        let mut sent = std::mem::take(&mut self.notes.silent_sent);
        for (key, len) in sent.drain(..) {
            // A SEND whose CQE came is `Done` (or collected and its slot reused: a stale key),
            // which `complete` leaves alone.
            // Sent whole: nothing of it is sent again, so its copy is freed now rather than
            // when the stream next polls, which for a connection left idle after its response
            // may be minutes away.
            complete(
                &mut self.slots,
                &mut self.in_kernel,
                &mut self.notes,
                key,
                (len, 0),
                false,
                wake,
                late,
            );
        }
        // The vector goes back for the next batch (no allocation per request).
        self.notes.silent_sent = sent;
    }

    /// Routes every CQE in the completion queue (see [`dispatch`]); returns how many.
    fn route_completions(
        &mut self,
        wake: &mut Vec<Waker>,
        late: &mut Vec<LateCompletion>,
    ) -> usize {
        let mut routed = 0;
        for cqe in self.ring.completion() {
            routed += 1;
            dispatch(
                &mut self.slots,
                &mut self.in_kernel,
                &mut self.stats,
                &cqe,
                wake,
                late,
                &mut self.notes,
            );
        }
        routed
    }
}

/// Routes one CQE to its slot: wakes a waiting future, or releases an abandoned operation's
/// resources. A stale key (a recycled slot) is counted and dropped.
fn dispatch(
    slots: &mut Slots<OpState>,
    in_kernel: &mut usize,
    stats: &mut UringStats,
    cqe: &cqueue::Entry,
    wake: &mut Vec<Waker>,
    late: &mut Vec<LateCompletion>,
    notes: &mut Notes,
) {
    let user_data = cqe.user_data();
    if user_data == IGNORED_USER_DATA {
        return;
    }
    if user_data == FILES_USER_DATA {
        // Registering a socket failed (success posts nothing).
        stats.registered_file_failures += 1;
        return;
    }
    if user_data == TIMER_USER_DATA {
        // The alarm went off (or was cancelled): the next wait arms another. A stray one (an
        // earlier executor's) only makes the next wait arm one more.
        notes.alarm = None;
        return;
    }
    if let Some(key) = Key::from_send_failure(user_data) {
        // Posted before the linked operation's own CQE (a hard link starts it only after the
        // SEND ended), so the stream sees it when it collects that operation.
        notes.failed_sends.push(key);
        return;
    }
    let picked = cqueue::buffer_select(cqe.flags()).is_some();
    if picked {
        notes.picked = notes.picked.saturating_add(1);
    }
    let key = Key::from_user_data(user_data);
    if !complete(
        slots,
        in_kernel,
        notes,
        key,
        (cqe.result(), cqe.flags()),
        true,
        wake,
        late,
    ) {
        stats.stale_completions += 1;
        if picked {
            // A buffer the kernel picked for nobody: back to the pool, its id to the ring.
            late.push((Box::new(NoResources), cqe.result(), cqe.flags()));
        }
    }
}

/// Ends the operation of `key` with `(res, flags)`: a waiting one is marked done and its task
/// woken unless the result is the one it asked to sleep through; the bytes its slot kept go to
/// whoever collects the result with `keep_bytes` (a short send's rest is sent from them), and
/// are freed now without. An abandoned one's resources are released. False when the key names
/// no operation in flight (a stale key: its slot was recycled).
#[inline]
#[allow(clippy::too_many_arguments)]
fn complete(
    slots: &mut Slots<OpState>,
    in_kernel: &mut usize,
    notes: &mut Notes,
    key: Key,
    (res, flags): (i32, u32),
    keep_bytes: bool,
    wake: &mut Vec<Waker>,
    late: &mut Vec<LateCompletion>,
) -> bool {
    let Some(state) = slots.get_mut(key) else {
        return false;
    };
    match state {
        OpState::Waiting {
            waker,
            quiet_on,
            keep,
        } => {
            *in_kernel = in_kernel.saturating_sub(1);
            if let Some(w) = waker.take().filter(|_| *quiet_on != Some(res)) {
                wake.push(w);
            }
            let keep = keep.take().filter(|_| keep_bytes);
            *state = OpState::Done { res, flags, keep };
        }
        OpState::Abandoned(_) => {
            *in_kernel = in_kernel.saturating_sub(1);
            if let Some(OpState::Abandoned(resources)) = slots.remove(key) {
                late.push((resources, res, flags));
            }
            // Nobody will collect a failure recorded for it.
            notes.failed_sends.retain(|k| *k != key);
            notes.due.retain(|k| *k != key);
        }
        OpState::Done { .. } => return false,
    }
    true
}

/// Pushes `entries` contiguously, flushing the submission queue once if they do not fit.
///
/// # Safety
/// As [`Driver::submit`].
unsafe fn push_all(inner: &mut Inner, entries: &mut [squeue::Entry]) -> io::Result<()> {
    for attempt in 0..2 {
        {
            let mut sq = inner.ring.submission();
            if sq.capacity() - sq.len() >= entries.len() {
                // SAFETY: the caller keeps every pointer valid until the final completion.
                return unsafe { sq.push_multiple(entries) }
                    .map_err(|_| io::Error::other("io_uring: submission queue full"));
            }
        }
        if attempt == 0 {
            inner.enter(|s| s.submit())?;
        }
    }
    Err(io::Error::other("io_uring: submission queue full"))
}

/// An operation in flight, holding the resources the kernel may touch until its completion.
///
/// Dropping it before completion moves the resources into the slot and queues an
/// ASYNC_CANCEL: they are released (and told the result) when the final CQE arrives.
pub(crate) struct InFlight<R: Abandoned> {
    driver: Rc<Driver>,
    key: Key,
    /// `(res, flags)` once the CQE has been collected (the slot is then free).
    done: Option<(i32, u32)>,
    resources: ManuallyDrop<R>,
}

impl<R: Abandoned> InFlight<R> {
    /// Tracks the operation submitted as `key`, whose memory lives in `resources`.
    pub(crate) fn new(driver: Rc<Driver>, key: Key, resources: R) -> InFlight<R> {
        InFlight {
            driver,
            key,
            done: None,
            resources: ManuallyDrop::new(resources),
        }
    }

    /// Ready with `(res, flags)` once the CQE has arrived; may be polled again afterwards.
    pub(crate) fn poll_done(&mut self, cx: &mut Context<'_>) -> Poll<(i32, u32)> {
        if let Some(done) = self.done {
            return Poll::Ready(done);
        }
        let done = std::task::ready!(self.driver.poll_op(self.key, cx, None));
        self.done = Some(done);
        Poll::Ready(done)
    }

    /// What the operation holds.
    pub(crate) fn resources(&self) -> &R {
        &self.resources
    }

    /// Drops the operation with a cancellation, as dropping it does, for an operation that can
    /// only end by that cancellation before the next `io_uring_enter` returns (a watch on a
    /// socket nobody has written to since it was checked idle): its final CQE is counted as
    /// due, and the lean loop's next wait asks the kernel for one completion more instead of
    /// returning for that CQE alone, which would cost a loop pass and a system call.
    ///
    /// Only for an operation that points at no memory (a POLL_ADD): its resources are dropped
    /// at once rather than kept until the final CQE, so a watch ended costs no allocation.
    pub(crate) fn cancel_due(self) {
        if self.done.is_some() || self.has_completed() {
            return;
        }
        let mut this = ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped, so `resources` and the driver Rc are each moved out
        // exactly once, here, and not used again. The kernel reads none of the resources (see
        // above), so they may go before the final CQE.
        drop(unsafe { ManuallyDrop::take(&mut this.resources) });
        // SAFETY: as above.
        let driver = unsafe { std::ptr::read(&this.driver) };
        // A box of nothing: no allocation.
        driver.abandon(this.key, Box::new(NoResources), true);
    }

    /// The key the operation was submitted under.
    pub(crate) fn key(&self) -> Key {
        self.key
    }

    /// The driver of the ring the operation was submitted to.
    pub(crate) fn driver(&self) -> &Driver {
        &self.driver
    }

    /// [`InFlight::driver`], shared.
    pub(crate) fn driver_rc(&self) -> Rc<Driver> {
        Rc::clone(&self.driver)
    }

    /// Whether the CQE has arrived (collected or not), without polling.
    pub(crate) fn has_completed(&self) -> bool {
        self.done.is_some() || self.driver.is_done(self.key)
    }

    /// The result and the resources, once [`InFlight::poll_done`] has returned Ready; `None`
    /// (and the operation abandoned as on drop) before that.
    pub(crate) fn into_result(self) -> Option<(i32, u32, R)> {
        let (res, flags) = self.done?;
        Some((res, flags, self.into_resources()))
    }

    /// Waits for the completion and returns `(res, flags, resources)`.
    ///
    /// # Cancellation
    /// Dropping the future cancels the operation; the resources live until its final CQE.
    pub(crate) async fn complete(mut self) -> (i32, u32, R) {
        let (res, flags) = poll_fn(|cx| self.poll_done(cx)).await;
        (res, flags, self.into_resources())
    }

    /// Gives the resources back without the abandoning Drop; only once `done` is set.
    fn into_resources(self) -> R {
        debug_assert!(self.done.is_some());
        let mut this = ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped, so `resources` is taken exactly once and the driver
        // Rc is moved out exactly once (and dropped here); neither is used again.
        let resources = unsafe { ManuallyDrop::take(&mut this.resources) };
        // SAFETY: as above.
        drop(unsafe { std::ptr::read(&this.driver) });
        resources
    }
}

impl<R: Abandoned> Drop for InFlight<R> {
    fn drop(&mut self) {
        // SAFETY: Drop runs once and `resources` is not touched afterwards.
        let resources = unsafe { ManuallyDrop::take(&mut self.resources) };
        if let Some((res, flags)) = self.done {
            // Completed and collected: the kernel is done with the memory. A ring buffer it
            // picked, if nobody took it, goes back to the ring.
            drop(self.driver.take_selected(res, flags));
            drop(resources);
        } else {
            self.driver.abandon(self.key, Box::new(resources), false);
        }
    }
}

/// Marks the driver task gone when its future is dropped (executor teardown), so the next
/// executor on this thread spawns a new one.
struct TaskAlive(Rc<Driver>);

impl Drop for TaskAlive {
    fn drop(&mut self) {
        self.0.task_alive.set(false);
        let waker = match self.0.inner.try_borrow_mut() {
            Ok(mut inner) => inner.driver_waker.take(),
            Err(_) => None,
        };
        drop(waker);
        self.0.shutdown();
    }
}

/// The driver task: submit and reap once per turn, yield while work keeps coming, park only
/// when nothing is left.
async fn drive(driver: Rc<Driver>) {
    let _alive = TaskAlive(driver.clone());
    let mut watch = EventfdWatch::new(driver.eventfd.as_raw_fd());
    loop {
        if driver.turn() > 0 {
            // Let the woken operations run and queue their next SQEs: one batch per turn.
            yield_now().await;
            continue;
        }
        if driver.in_flight() == 0 {
            poll_fn(|cx| driver.poll_queued(cx)).await;
            continue;
        }
        if !driver.arm_eventfd() {
            continue;
        }
        let mut first_poll = true;
        let fired = poll_fn(|cx| {
            if driver.poll_queued(cx).is_ready() {
                return Poll::Ready(false);
            }
            let woken = !first_poll;
            first_poll = false;
            // Without a watch (no descriptor for it) the driver spins rather than sleeps:
            // correct, not lean.
            watch.poll_fired(cx, woken).map(|r| {
                if let Err(e) = r {
                    log::error!("io_uring: cannot watch the ring's eventfd: {e}");
                }
                true
            })
        })
        .await;
        driver.disarm_eventfd();
        if fired {
            driver.count_eventfd_wakeup();
        }
    }
}

/// Waits for the ring's eventfd through glommio's reactor, so that glommio's park covers it.
///
/// glommio 0.9 exposes no "await readability of this fd" call. Its TCP stream, though, arms an
/// io_uring POLL_ADD for read readiness on the descriptor it is built from and reports nothing
/// until that poll completes; only then does a read try `recv`, which on an eventfd fails with
/// ENOTSOCK. So a stream built on a duplicate of the eventfd is a one-shot readiness watch:
/// `Pending` until the eventfd is readable. A fired watch is dropped (closing the duplicate) and
/// the next park builds a fresh one; an unfired watch stays armed across parks at no cost.
///
/// The control plane's doorbells (`rt::Doorbell`) wait the same way on cores that run
/// glommio's executor.
pub(crate) struct EventfdWatch {
    eventfd: RawFd,
    stream: Option<glommio::net::TcpStream>,
}

impl EventfdWatch {
    /// A watch on `eventfd`, which must outlive it; nothing is armed before the first poll.
    pub(crate) fn new(eventfd: RawFd) -> EventfdWatch {
        EventfdWatch {
            eventfd,
            stream: None,
        }
    }

    /// Ready once the eventfd has fired, with its counter consumed (or, rarely, after a
    /// spurious completion). `woken` says this is a re-poll within one park (a wake-up), when
    /// a non-blocking read of the counter tells whether it fired more cheaply than the
    /// stream's failing `recv` would. An error when no descriptor was left for the watch.
    pub(crate) fn poll_fired(&mut self, cx: &mut Context<'_>, woken: bool) -> Poll<io::Result<()>> {
        if woken && self.stream.is_some() && self.consume() {
            self.stream = None;
            return Poll::Ready(Ok(()));
        }
        let stream = match &mut self.stream {
            Some(s) => s,
            None => {
                // SAFETY: F_DUPFD_CLOEXEC on our own eventfd; the result is checked.
                let dup = unsafe { libc::fcntl(self.eventfd, libc::F_DUPFD_CLOEXEC, 0) };
                if dup < 0 {
                    return Poll::Ready(Err(io::Error::last_os_error()));
                }
                // SAFETY: `dup` is a fresh descriptor owned by nobody else; the stream closes
                // it when dropped.
                self.stream
                    .insert(unsafe { glommio::net::TcpStream::from_raw_fd(dup) })
            }
        };
        let mut scratch = [0u8; 8];
        match Pin::new(stream).poll_read(cx, &mut scratch) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => {
                // The poll completed (the eventfd fired during an earlier park and was not
                // consumed, or a spurious completion): start afresh.
                self.stream = None;
                self.consume();
                Poll::Ready(Ok(()))
            }
        }
    }

    /// Reads (and so resets) the eventfd's counter; true when it had fired.
    fn consume(&self) -> bool {
        consume_eventfd(self.eventfd)
    }
}

/// A non-blocking, close-on-exec eventfd at zero (the ring's, and `rt::Doorbell`'s).
pub(crate) fn new_eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain eventfd creation; the result is checked before use.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads (and so resets) the counter of the non-blocking eventfd `fd`; true when it was not
/// zero.
pub(crate) fn consume_eventfd(fd: RawFd) -> bool {
    let mut value = 0u64;
    // SAFETY: an 8-byte read into a u64 on the stack from a non-blocking eventfd.
    let n = unsafe {
        libc::read(
            fd,
            (&mut value as *mut u64).cast(),
            std::mem::size_of::<u64>(),
        )
    };
    n == std::mem::size_of::<u64>() as isize
}

impl Driver {
    /// Cancels every operation still in the kernel and reaps final completions for a bounded
    /// time, releasing abandoned operations' resources. Run when the executor drops the driver
    /// task (thread-locals such as the buffer pool are still alive then) and again when the
    /// thread-local driver itself is dropped.
    fn shutdown(&self) {
        let Ok(mut guard) = self.inner.try_borrow_mut() else {
            return;
        };
        let inner = &mut *guard;
        if inner.notes.alarm.take().is_some() {
            // The lean loop's alarm, disarmed rather than left to wake a later user of the ring.
            let mut remove = [opcode::TimeoutRemove::new(TIMER_USER_DATA)
                .build()
                .user_data(IGNORED_USER_DATA)
                .flags(squeue::Flags::SKIP_SUCCESS)];
            // SAFETY: TIMEOUT_REMOVE carries no pointers.
            let _ = unsafe { push_all(inner, &mut remove) };
        }
        if inner.in_kernel == 0 {
            // Nothing to cancel; queued operations nobody waits for (closes) still go in.
            if !inner.ring.submission().is_empty() {
                if let Err(e) = inner.enter(|s| s.submit()) {
                    log::warn!("io_uring: could not submit the last operations: {e}");
                }
            }
            return;
        }
        // 1. Ask the kernel to cancel everything in flight.
        let mut cancel = [opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(IGNORED_USER_DATA)];
        // SAFETY: ASYNC_CANCEL carries no pointers.
        let _ = unsafe { push_all(inner, &mut cancel) };
        // 2. Reap final completions for a bounded time.
        let deadline = std::time::Instant::now() + TEARDOWN_WAIT;
        let mut late = Vec::new();
        let mut wake = Vec::new();
        while inner.in_kernel > 0 && std::time::Instant::now() < deadline {
            let ts = types::Timespec::from(Duration::from_millis(10));
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = inner.enter(|s| s.submit_with_args(1, &args));
            inner.route_completions(&mut wake, &mut late);
            inner.settle_silent(&mut wake, &mut late);
        }
        drop(guard);
        // Futures still alive see their (cancelled) result when next polled.
        for w in wake {
            w.wake();
        }
        for (resources, res, flags) in late {
            // A resource's drop may touch a thread-local that is already gone at thread exit
            // (the buffer pool): losing that buffer beats aborting the thread.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                drop(self.take_selected(res, flags));
                resources.late_completion(res)
            }));
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.shutdown();
        let inner = self.inner.get_mut();
        if let Some(buf_ring) = inner.buf_ring.take() {
            buf_ring.release(&inner.ring.submitter(), inner.in_kernel > 0);
        }
        // Whatever is still in flight may yet be touched by the kernel: leak it rather than
        // free memory under a live operation. Closing the ring then cancels it for good.
        for state in self.inner.get_mut().slots.drain() {
            match state {
                OpState::Abandoned(resources) => std::mem::forget(resources),
                OpState::Waiting {
                    keep: Some(bytes), ..
                } => std::mem::forget(bytes),
                _ => {}
            }
        }
    }
}
