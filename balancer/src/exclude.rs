//! Which backends a pick must skip for the current request: the ones its earlier attempts already
//! tried, so a retry goes somewhere new.

use std::net::SocketAddr;

use crate::backend::Backend;

/// Backends one pick must not return, on top of the unhealthy and ejected ones.
///
/// Implemented by [`Tried`] (the usual choice for retries), [`NoExclude`], and every
/// `Fn(usize) -> bool` closure over backend indices.
pub trait Exclude {
    /// Whether backend `index` (which is `backend`) must be skipped.
    fn excludes(&self, index: usize, backend: &Backend) -> bool;

    /// Whether this excludes no backend at all, so a pick may skip calling
    /// [`excludes`](Self::excludes). By default `false` (always ask).
    fn excludes_nothing(&self) -> bool {
        false
    }
}

impl<F: Fn(usize) -> bool> Exclude for F {
    #[inline]
    fn excludes(&self, index: usize, _backend: &Backend) -> bool {
        self(index)
    }
}

/// Excludes nothing: the first attempt of a request.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoExclude;

impl Exclude for NoExclude {
    #[inline]
    fn excludes(&self, _index: usize, _backend: &Backend) -> bool {
        false
    }

    #[inline]
    fn excludes_nothing(&self) -> bool {
        true
    }
}

/// The backends a request has already tried, by address.
///
/// Addresses rather than indices, so the record stays right when the core switches to a new
/// [`BackendSet`](crate::BackendSet) between two attempts. Allocates only when the first address is
/// inserted, i.e. only on the retry path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tried {
    addrs: Vec<SocketAddr>,
}

impl Tried {
    /// Nothing tried yet.
    pub const fn new() -> Self {
        Self { addrs: Vec::new() }
    }

    /// Records that `addr` was tried.
    pub fn insert(&mut self, addr: SocketAddr) {
        if !self.addrs.contains(&addr) {
            self.addrs.push(addr);
        }
    }

    /// Whether `addr` was tried.
    pub fn contains(&self, addr: SocketAddr) -> bool {
        self.addrs.contains(&addr)
    }

    /// How many distinct backends were tried.
    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    /// Whether nothing was tried yet.
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    /// Forgets every attempt (to reuse the allocation for the next request).
    pub fn clear(&mut self) {
        self.addrs.clear();
    }
}

impl Exclude for Tried {
    #[inline]
    fn excludes(&self, _index: usize, backend: &Backend) -> bool {
        self.addrs.contains(&backend.addr)
    }

    #[inline]
    fn excludes_nothing(&self) -> bool {
        self.addrs.is_empty()
    }
}
