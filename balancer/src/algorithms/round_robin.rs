//! `round_robin`: every usable backend in turn, weights ignored.

/// The per-core cursor: the index to try first on the next pick.
#[derive(Debug, Clone, Default)]
pub(crate) struct RoundRobin {
    next: usize,
}

impl RoundRobin {
    /// The first usable backend at or after the cursor (wrapping), moving the cursor past it.
    /// `None` after one full turn finds nothing usable.
    #[inline]
    pub(crate) fn pick(&mut self, n: usize, usable: impl Fn(usize) -> bool) -> Option<usize> {
        if n == 0 {
            return None;
        }
        // The set may have shrunk since the cursor last moved.
        let mut i = if self.next < n { self.next } else { 0 };
        for _ in 0..n {
            if usable(i) {
                self.next = if i + 1 == n { 0 } else { i + 1 };
                return Some(i);
            }
            i = if i + 1 == n { 0 } else { i + 1 };
        }
        None
    }
}
