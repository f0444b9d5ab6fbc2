//! Read buffers chosen by the transport: a per-core free list of fixed-size heap buffers.
//!
//! A buffer goes back to its core's free list when the [`IoBuf`] holding it is dropped, so a
//! connection that is not in the middle of a read holds none. The pool is thread-local: every
//! executor thread has its own, and nothing here is shared between cores.

use std::cell::RefCell;
use std::ops::Deref;

/// Size of every pooled read buffer: one read returns at most this many bytes. 64 KiB: a
/// 16 KiB response with its head arrives in one read (with 16 KiB buffers it took two RECVs and
/// two SENDs; measured 25.3 -> 19.5 CPU µs/request at 50 connections, wrk, one run each).
pub const READ_BUF_SIZE: usize = 64 * 1024;

/// Free buffers kept per core; beyond it a returned buffer is freed.
const MAX_POOLED_BUFFERS: usize = 256;

struct Pool {
    free: Vec<Vec<u8>>,
    stats: PoolStats,
}

/// Counters of this core's read-buffer pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Buffers currently handed out (held by an [`IoBuf`] or an in-flight read).
    pub in_use: usize,
    /// Buffers waiting in the free list.
    pub free: usize,
    /// Buffers ever allocated on this core.
    pub allocated: u64,
}

impl Pool {
    /// A free buffer, or a new one.
    fn pop_or_alloc(&mut self) -> Vec<u8> {
        self.free.pop().unwrap_or_else(|| {
            self.stats.allocated += 1;
            Vec::with_capacity(READ_BUF_SIZE)
        })
    }
}

thread_local! {
    static POOL: RefCell<Pool> = const {
        RefCell::new(Pool { free: Vec::new(), stats: PoolStats { in_use: 0, free: 0, allocated: 0 } })
    };
}

/// This core's pool counters.
pub fn pool_stats() -> PoolStats {
    POOL.with(|p| {
        let p = p.borrow();
        PoolStats {
            free: p.free.len(),
            ..p.stats
        }
    })
}

/// Takes a buffer with room for `READ_BUF_SIZE` bytes from this core's pool. Only its first
/// `len()` bytes are initialized: none for a new one (it is not zeroed: a freed chunk that malloc
/// hands out again would be written over whole, touching pages the kernel may never fill), all
/// of them for one that was.
pub(crate) fn take() -> Vec<u8> {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        p.stats.in_use += 1;
        p.pop_or_alloc()
    })
}

/// Takes a buffer like [`take`] without counting it as in use: for memory lent to the kernel's
/// provided-buffer ring, which no connection holds until a read selects it. Count it with
/// [`count_taken`] when it is handed out in an [`IoBuf`]. `None` once this thread's pool is gone
/// (a ring torn down at thread exit lends nothing more).
pub(crate) fn take_uncounted() -> Option<Vec<u8>> {
    POOL.try_with(|p| p.borrow_mut().pop_or_alloc()).ok()
}

/// Counts a buffer from [`take_uncounted`] as in use, as it becomes an [`IoBuf`].
pub(crate) fn count_taken() {
    POOL.with(|p| p.borrow_mut().stats.in_use += 1);
}

/// Returns a buffer taken with [`take`], whatever its current length; `full` when all of its
/// `READ_BUF_SIZE` bytes are initialized.
fn give_back(mut buf: Vec<u8>, full: bool) {
    if buf.capacity() < READ_BUF_SIZE {
        POOL.with(|p| p.borrow_mut().stats.in_use -= 1);
        return;
    }
    if full {
        // SAFETY: the caller says all READ_BUF_SIZE bytes were initialized, and truncating a
        // Vec does not de-initialize memory; u8 has no drop glue and no invalid bit patterns.
        unsafe { buf.set_len(READ_BUF_SIZE) };
    } else {
        buf.clear();
    }
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        p.stats.in_use = p.stats.in_use.saturating_sub(1);
        if p.free.len() < MAX_POOLED_BUFFERS {
            p.free.push(buf);
        }
    });
}

/// Bytes read from a stream, in a buffer the transport chose.
///
/// Dereferences to the unconsumed bytes; [`IoBuf::advance`] consumes from the front. Dropping it
/// returns the memory to this core's pool.
pub struct IoBuf {
    buf: Vec<u8>,
    start: usize,
    pooled: bool,
    /// All `READ_BUF_SIZE` bytes of the pooled buffer are initialized (zeroed once for a reader
    /// that needs a slice, see [`IoBuf::zeroed_spare`]), whatever `buf.len()` says now.
    full: bool,
}

impl IoBuf {
    /// An empty pooled buffer for a read: see [`IoBuf::read_target`] and [`IoBuf::filled`], or
    /// [`IoBuf::zeroed_spare`].
    pub(crate) fn for_read() -> IoBuf {
        let mut b = IoBuf::pooled(take());
        b.buf.clear();
        b
    }

    /// Wraps a buffer from [`take`] as it is.
    fn pooled(buf: Vec<u8>) -> IoBuf {
        let full = buf.len() >= READ_BUF_SIZE;
        IoBuf {
            buf,
            start: 0,
            pooled: true,
            full,
        }
    }

    /// Wraps a pooled buffer (from [`take`]) into which the kernel has written `len` bytes
    /// from the start.
    ///
    /// # Safety
    /// The first `len` bytes of `buf`'s allocation are initialized, and `len` is at most its
    /// capacity.
    pub(crate) unsafe fn from_filled(buf: Vec<u8>, len: usize) -> IoBuf {
        let mut b = IoBuf::pooled(buf);
        // SAFETY: forwarded from the caller's contract.
        unsafe { b.filled(len) };
        b
    }

    /// Wraps bytes that did not come from the pool (tests, adapters); they are freed, not pooled.
    pub fn from_vec(buf: Vec<u8>) -> IoBuf {
        IoBuf {
            buf,
            start: 0,
            pooled: false,
            full: false,
        }
    }

    /// Where a read may write: the start of the allocation and its size (at most
    /// `READ_BUF_SIZE`). The memory may be uninitialized; nothing is read from it until
    /// [`IoBuf::filled`].
    pub(crate) fn read_target(&mut self) -> (*mut u8, usize) {
        (
            self.buf.as_mut_ptr(),
            self.buf.capacity().min(READ_BUF_SIZE),
        )
    }

    /// Records that a read wrote `n` bytes at [`IoBuf::read_target`]; they become the contents.
    ///
    /// # Safety
    /// The first `n` bytes of the allocation are initialized, and `n` is at most its capacity.
    pub(crate) unsafe fn filled(&mut self, n: usize) {
        self.start = 0;
        // SAFETY: forwarded from the caller's contract.
        unsafe { self.buf.set_len(n.min(self.buf.capacity())) };
    }

    /// The whole buffer as an initialized slice, for a reader that needs one (glommio's
    /// streams): zeroed the first time, then kept initialized by the pool.
    pub(crate) fn zeroed_spare(&mut self) -> &mut [u8] {
        if !self.full {
            self.buf.clear();
            self.buf.resize(READ_BUF_SIZE, 0);
            self.full = true;
        }
        // SAFETY: `full`: all READ_BUF_SIZE bytes are initialized, within the capacity.
        unsafe { self.buf.set_len(READ_BUF_SIZE) };
        self.start = 0;
        &mut self.buf[..]
    }

    /// Consumes `n` bytes from the front.
    ///
    /// # Panics
    /// If `n` exceeds the remaining length (a caller bug, never peer-controlled).
    pub fn advance(&mut self, n: usize) {
        assert!(n <= self.len(), "advance past the end of an IoBuf");
        self.start += n;
    }

    /// Bytes consumed from the front, whose space [`IoBuf::prepend`] can reuse.
    pub fn headroom(&self) -> usize {
        self.start
    }

    /// Writes `bytes` into the consumed space just before the unconsumed bytes, when they fit,
    /// so both go out as one contiguous slice (a re-encoded response head in front of body
    /// bytes that arrived with the upstream's head, without copying the body). Returns whether
    /// they fit; the buffer is unchanged when they do not.
    pub fn prepend(&mut self, bytes: &[u8]) -> bool {
        let Some(at) = self.start.checked_sub(bytes.len()) else {
            return false;
        };
        self.buf[at..self.start].copy_from_slice(bytes);
        self.start = at;
        true
    }

    /// Keeps only the first `n` unconsumed bytes.
    pub fn truncate(&mut self, n: usize) {
        self.buf.truncate(self.start + n.min(self.len()));
    }
}

impl Deref for IoBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

impl std::fmt::Debug for IoBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoBuf").field("len", &self.len()).finish()
    }
}

impl Drop for IoBuf {
    fn drop(&mut self) {
        if self.pooled {
            give_back(std::mem::take(&mut self.buf), self.full);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_return_to_the_pool_and_are_reused() {
        let before = pool_stats();
        let mut a = IoBuf::for_read();
        let (ptr, cap) = a.read_target();
        assert_eq!(cap, READ_BUF_SIZE);
        // SAFETY: five bytes written at the read target, within its capacity.
        unsafe {
            std::ptr::copy_nonoverlapping(b"hello".as_ptr(), ptr, 5);
            a.filled(5);
        }
        assert_eq!(&a[..], b"hello");
        assert_eq!(pool_stats().in_use, before.in_use + 1);
        drop(a);
        let after = pool_stats();
        assert_eq!(after.in_use, before.in_use);
        let allocated = after.allocated;
        let mut b = IoBuf::for_read();
        assert!(b.is_empty(), "a reused buffer starts empty");
        assert_eq!(b.zeroed_spare().len(), READ_BUF_SIZE);
        assert_eq!(
            pool_stats().allocated,
            allocated,
            "no new allocation on reuse"
        );
    }

    #[test]
    fn prepend_reuses_consumed_space_only() {
        let mut b = IoBuf::from_vec(b"HEAD:body".to_vec());
        assert!(!b.prepend(b"x"), "no headroom yet");
        b.advance(5);
        assert_eq!(b.headroom(), 5);
        assert!(!b.prepend(b"longer"), "six bytes do not fit in five");
        assert_eq!(&b[..], b"body");
        assert!(b.prepend(b"hd:"));
        assert_eq!(&b[..], b"hd:body");
        assert_eq!(b.headroom(), 2);
    }

    #[test]
    fn advance_and_truncate() {
        let mut b = IoBuf::from_vec(b"hello world".to_vec());
        b.advance(6);
        assert_eq!(&b[..], b"world");
        b.truncate(3);
        assert_eq!(&b[..], b"wor");
    }
}
