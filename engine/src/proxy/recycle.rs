//! Allocations of every request reused on this thread: the per-request future's box, and the
//! buffer its heads are encoded into.
//!
//! Each request runs in a boxed future of a few kilobytes (see `serve_connection`: boxed so that
//! an idle keep-alive connection does not hold it). Through glibc's allocator that size is
//! served by the large-bin path, which first consolidates the small freed chunks of the request
//! before it: about 1% of the proxy core at 50 connections went to that `malloc` alone. The
//! blocks of finished requests wait here instead, a few per thread, and the next request on the
//! thread takes one.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::cell::RefCell;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};

/// Blocks kept per thread: as many as the requests that end within one loop pass under load
/// (with 16, a third of the requests at 50 connections still allocated: 50 responses arriving
/// in one pass free 50 blocks), and at most a few hundred kilobytes held when the core idles.
const KEEP: usize = 64;

/// Free blocks and their layouts (one layout in practice: one future type per application).
struct FreeBlocks(Vec<(Layout, NonNull<u8>)>);

impl Drop for FreeBlocks {
    fn drop(&mut self) {
        for (layout, ptr) in self.0.drain(..) {
            // SAFETY: every block here was allocated with `alloc(layout)` and is owned by nobody.
            unsafe { dealloc(ptr.as_ptr(), layout) };
        }
    }
}

thread_local! {
    static FREE: RefCell<FreeBlocks> = const { RefCell::new(FreeBlocks(Vec::new())) };
}

/// A block for `layout`: a kept one, or a fresh allocation.
fn take(layout: Layout) -> NonNull<u8> {
    let kept = FREE
        .try_with(|f| {
            let mut f = f.borrow_mut();
            let i = f.0.iter().rposition(|(l, _)| *l == layout)?;
            Some(f.0.swap_remove(i).1)
        })
        .ok()
        .flatten();
    kept.unwrap_or_else(|| {
        // SAFETY: `layout` has a non-zero size (zero-sized values are never boxed here).
        NonNull::new(unsafe { alloc(layout) }).unwrap_or_else(|| handle_alloc_error(layout))
    })
}

/// Keeps the block for the next [`take`], or frees it when enough are kept.
///
/// # Safety
/// `ptr` was allocated with `layout` and nothing uses it any more.
unsafe fn give(layout: Layout, ptr: NonNull<u8>) {
    let kept = FREE
        .try_with(|f| {
            let mut f = f.borrow_mut();
            if f.0.len() < KEEP {
                f.0.push((layout, ptr));
                true
            } else {
                false
            }
        })
        .unwrap_or(false);
    if !kept {
        // SAFETY: from the caller's contract.
        unsafe { dealloc(ptr.as_ptr(), layout) };
    }
}

/// Encoded-head buffers kept per thread, and the most room one may have to be kept.
const HEAD_BUFFERS_KEEP: usize = 64;
const HEAD_BUFFER_MAX: usize = 4096;
/// The room of a new head buffer: a typical head fits.
const HEAD_BUFFER_ROOM: usize = 512;

thread_local! {
    static HEAD_BUFFERS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer to encode a head into: one a finished request gave back (see
/// [`give_back_head_buffer`]), or a new one. Saves a `malloc` and a `free` per request.
pub(crate) fn head_buffer() -> Vec<u8> {
    HEAD_BUFFERS
        .try_with(|b| b.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| Vec::with_capacity(HEAD_BUFFER_ROOM))
}

/// Keeps `buf` for the next [`head_buffer`], unless enough are kept or it grew large.
pub(crate) fn give_back_head_buffer(mut buf: Vec<u8>) {
    if buf.capacity() == 0 || buf.capacity() > HEAD_BUFFER_MAX {
        return;
    }
    buf.clear();
    let _ = HEAD_BUFFERS.try_with(|b| {
        let mut b = b.borrow_mut();
        if b.len() < HEAD_BUFFERS_KEEP {
            b.push(buf);
        }
    });
}

/// An owned `T` in a heap block recycled through this thread's free list; pinned in place (the
/// value never moves while the box lives), so it polls a future like `Pin<Box<F>>` does.
pub(crate) struct RecycledBox<T> {
    /// The value; dangling when `T` is zero-sized.
    ptr: NonNull<T>,
    _owns: PhantomData<T>,
}

impl<T> RecycledBox<T> {
    /// Moves `value` into a block.
    #[cfg(test)]
    pub(crate) fn new(value: T) -> Self {
        Self::new_with(|| value)
    }

    /// Puts the value `make` returns into a block, taken first, so that the value can be built
    /// where it will live instead of being built aside and copied in (a per-request future is a
    /// few kilobytes).
    #[inline(always)]
    pub(crate) fn new_with(make: impl FnOnce() -> T) -> Self {
        let layout = Layout::new::<T>();
        let ptr = if layout.size() == 0 {
            NonNull::dangling()
        } else {
            take(layout).cast::<T>()
        };
        // SAFETY: `ptr` is valid for a write of `T` (a block of its layout, or dangling and
        // well aligned for a zero-sized `T`).
        unsafe { ptr.as_ptr().write(make()) };
        RecycledBox {
            ptr,
            _owns: PhantomData,
        }
    }
}

impl<T> Drop for RecycledBox<T> {
    fn drop(&mut self) {
        let layout = Layout::new::<T>();
        // SAFETY: the value was written in `new` and is dropped only here.
        unsafe { std::ptr::drop_in_place(self.ptr.as_ptr()) };
        if layout.size() != 0 {
            // SAFETY: the block came from `take(layout)` and its value is gone.
            unsafe { give(layout, self.ptr.cast()) };
        }
    }
}

// The value stays in its block whatever happens to the box: moving the box moves a pointer.
impl<T> Unpin for RecycledBox<T> {}

impl<F: Future> Future for RecycledBox<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: the future lives in its block until the box drops it, and is never moved out
        // of it, so pinning it is sound.
        unsafe { Pin::new_unchecked(&mut *self.ptr.as_ptr()) }.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn a_block_is_reused_and_values_are_dropped_once() {
        let dropped = Rc::new(std::cell::Cell::new(0));
        struct Counted(Rc<std::cell::Cell<u32>>, [u8; 4000]);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.0.set(self.0.get() + 1);
            }
        }
        let a = RecycledBox::new(Counted(Rc::clone(&dropped), [1; 4000]));
        let first = a.ptr.as_ptr() as usize;
        drop(a);
        assert_eq!(dropped.get(), 1);
        let b = RecycledBox::new(Counted(Rc::clone(&dropped), [2; 4000]));
        assert_eq!(
            b.ptr.as_ptr() as usize,
            first,
            "the freed block is taken again"
        );
        // SAFETY: `b` holds a live value.
        assert_eq!(unsafe { &*b.ptr.as_ptr() }.1[3999], 2);
        drop(b);
        assert_eq!(dropped.get(), 2);
        drop(RecycledBox::new(()));
    }

    #[test]
    fn no_more_than_keep_blocks_wait() {
        let boxes: Vec<_> = (0..KEEP + 8)
            .map(|i| RecycledBox::new([i as u8; 3000]))
            .collect();
        drop(boxes);
        let kept = FREE.with(|f| f.borrow().0.len());
        assert!(kept <= KEEP, "{kept} blocks kept");
    }

    #[test]
    fn a_boxed_future_runs_to_completion() {
        let fut = RecycledBox::new(async { 7 });
        assert_eq!(futures_lite::future::block_on(fut), 7);
    }
}
