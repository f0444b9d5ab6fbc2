//! The per-core provided-buffer ring: read buffers lent to the kernel, which picks one only when
//! bytes arrive, so a connection waiting in `read` holds no buffer at all.
//!
//! A RECV with IOSQE_BUFFER_SELECT names the group instead of a buffer; its CQE carries the id
//! of the buffer the kernel filled. The driver then takes that buffer out of the ring (it becomes
//! an [`IoBuf`], returned to the per-core pool when dropped). When every lent buffer is taken the
//! RECV fails with ENOBUFS and the stream falls back to a RECV into its own pooled buffer.
//!
//! The ring lends only as many buffers as the next `io_uring_enter` could pick, not all it
//! has room for (see [`BufRing::top_up`]). The kernel takes them in the order they were lent,
//! so a ring kept full makes every read land in the buffer lent the most reads ago, whose
//! cache lines have gone cold; kept short, it cycles through the few buffers a quiet core
//! uses, which the pool hands back warm.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::Submitter;

use crate::l4::buf::{count_taken, take_uncounted, IoBuf, READ_BUF_SIZE};

/// The buffer group id of this core's ring.
pub(crate) const BUF_GROUP: u16 = 0;

/// The ring's room (a power of two): the most buffers lent at once, so the most reads that can
/// complete without a consumer before RECVs fall back to their own buffers. 64 x 64 KiB = 4 MiB
/// per core at most; a quiet core lends a handful.
const RING_ENTRIES: u16 = 64;

/// Buffers lent beyond the operations that could pick one. The bound needs none (see
/// [`BufRing::top_up`]); two spare keep a miscount nobody has thought of from costing reads their
/// ring buffer.
const LEND_MARGIN: usize = 2;

/// Ring memory must be page-aligned.
const PAGE: usize = 4096;

/// The registered ring of buffer descriptors and the buffers they point at.
pub(crate) struct BufRing {
    entries: NonNull<BufRingEntry>,
    layout: Layout,
    /// The buffer under each id, from when it is lent until the driver takes it out after the
    /// kernel picked it; `None` for an id in `free`.
    bufs: Vec<Option<Vec<u8>>>,
    /// Ids with no buffer, lent next.
    free: Vec<u16>,
    /// Buffers in the ring the kernel has not picked, as of the last [`Self::top_up`] (the
    /// driver counts the picks routed since).
    available: u16,
    /// Our copy of the ring's tail (the kernel reads the shared one).
    tail: u16,
}

impl BufRing {
    /// Allocates the ring and registers it as [`BUF_GROUP`], with no buffer lent yet (the
    /// first [`Self::top_up`] lends them).
    ///
    /// # Errors
    /// When the kernel refuses the registration (then reads use their own buffers).
    pub(crate) fn register(submitter: &Submitter<'_>) -> io::Result<BufRing> {
        let size = usize::from(RING_ENTRIES) * std::mem::size_of::<BufRingEntry>();
        let layout = Layout::from_size_align(size.max(PAGE), PAGE)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: a non-zero-sized, page-aligned layout.
        let raw = unsafe { alloc_zeroed(layout) };
        let entries = NonNull::new(raw.cast::<BufRingEntry>())
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        // SAFETY: the memory is page-aligned, zeroed, RING_ENTRIES entries long, and stays
        // allocated until `Drop` has unregistered the group (or is leaked if that fails).
        let registered = unsafe {
            submitter.register_buf_ring_with_flags(raw as u64, RING_ENTRIES, BUF_GROUP, 0)
        };
        if let Err(e) = registered {
            // SAFETY: allocated above with this layout and never registered.
            unsafe { dealloc(raw, layout) };
            return Err(e);
        }
        Ok(BufRing {
            entries,
            layout,
            bufs: (0..RING_ENTRIES).map(|_| None).collect(),
            // Popped from the end: the lowest ids first.
            free: (0..RING_ENTRIES).rev().collect(),
            available: 0,
            tail: 0,
        })
    }

    /// Books `picked` buffers the kernel took since the last call (CQEs with
    /// IORING_CQE_F_BUFFER), then lends from the pool until the ring holds enough for
    /// `could_pick` RECVs (the operations in the kernel, an upper bound of the ring RECVs among
    /// them) plus [`LEND_MARGIN`], within its room. Called before each `io_uring_enter`.
    ///
    /// Why that is enough, whenever the kernel picks (inside an enter, where a ring with
    /// IORING_SETUP_DEFER_TASKRUN runs RECVs, or on an io-wq worker, where a RECV goes when it
    /// cannot arm its poll): a RECV picks at most one buffer, and one that picked stays in
    /// `in_kernel` until its CQE is routed. So the buffers really left are `available` minus the
    /// picks not routed yet, each of which also takes its RECV out of those that can still
    /// pick: while no more than the ring's room is in the kernel, no RECV finds it empty.
    /// A ring holding more than that is left to drain as reads pick buffers: nothing is lent
    /// until it holds fewer than needed.
    pub(crate) fn top_up(&mut self, picked: u16, could_pick: usize) {
        self.available = self.available.saturating_sub(picked);
        let want = could_pick
            .saturating_add(LEND_MARGIN)
            .min(usize::from(RING_ENTRIES));
        let mut lent = false;
        while usize::from(self.available) < want {
            let Some(bid) = self.free.pop() else { break };
            let Some(buf) = take_uncounted() else {
                self.free.push(bid);
                break;
            };
            self.lend(bid, buf);
            self.available += 1;
            lent = true;
        }
        if lent {
            self.publish();
        }
    }

    /// Buffers lent and not picked, as of the last [`Self::top_up`].
    pub(crate) fn lent(&self) -> usize {
        usize::from(self.available)
    }

    /// Writes the descriptor of `buf` under `bid` at our tail (published by [`Self::publish`]).
    fn lend(&mut self, bid: u16, buf: Vec<u8>) {
        let index = usize::from(self.tail & (RING_ENTRIES - 1));
        // SAFETY: `index` is below RING_ENTRIES, within the allocation. Only addr, len and bid
        // are written: the `resv` field of entry 0, which is the shared tail, is left alone.
        let entry = unsafe { &mut *self.entries.as_ptr().add(index) };
        entry.set_addr(buf.as_ptr() as u64);
        entry.set_len(buf.capacity().min(READ_BUF_SIZE) as u32);
        entry.set_bid(bid);
        if let Some(slot) = self.bufs.get_mut(usize::from(bid)) {
            *slot = Some(buf);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the lent descriptors visible to the kernel.
    fn publish(&self) {
        // SAFETY: `entries` is the ring's base, page-aligned and initialised; the tail field is
        // a naturally aligned u16 inside it, which the kernel only reads.
        let tail = unsafe { BufRingEntry::tail(self.entries.as_ptr()) };
        // SAFETY: as above; AtomicU16 has the layout of u16. Release orders the descriptor
        // writes before the new tail.
        unsafe { (*tail.cast::<AtomicU16>()).store(self.tail, Ordering::Release) };
    }

    /// Takes the buffer the kernel filled under `bid` (its first `len` bytes are data) and
    /// returns it as an [`IoBuf`] counted in the pool; the id is free for the next
    /// [`Self::top_up`].
    pub(crate) fn take_filled(&mut self, bid: u16, len: usize) -> Option<IoBuf> {
        let buf = self.bufs.get_mut(usize::from(bid))?.take()?;
        let lent = buf.capacity().min(READ_BUF_SIZE);
        self.free.push(bid);
        count_taken();
        // SAFETY: the kernel wrote `len` bytes at the start of this buffer, which it was lent
        // with `lent` bytes of room.
        Some(unsafe { IoBuf::from_filled(buf, len.min(lent)) })
    }
}

impl BufRing {
    /// Unregisters the group and frees the ring; with `kernel_may_still_use`, leaks it instead.
    pub(crate) fn release(self, submitter: &Submitter<'_>, kernel_may_still_use: bool) {
        if kernel_may_still_use || submitter.unregister_buf_ring(BUF_GROUP).is_err() {
            std::mem::forget(self);
            return;
        }
        // SAFETY: the group is unregistered: the kernel no longer reads the descriptors.
        unsafe { dealloc(self.entries.as_ptr().cast(), self.layout) };
        // The lent buffers were never counted as in use; they are plain heap memory now.
        drop(self.bufs);
    }
}
