//! `least_inflight`: power of two choices over this core's in-flight counts (Mitzenmacher), with
//! an EWMA of latency to break ties.
//!
//! Two distinct usable backends are drawn uniformly; the one with fewer requests in flight
//! relative to its weight wins, then the lower latency EWMA, then the first drawn. Comparing two
//! random candidates rather than scanning for the global minimum avoids herding every core onto
//! the same momentarily idle backend, and costs O(1) instead of O(n).

use crate::rng::SplitMix64;

/// Per-core load of one backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Load {
    /// Requests started on this core and not yet finished.
    pub(crate) in_flight: u32,
    /// Exponentially weighted moving average of latency in nanoseconds; 0 until the first sample.
    pub(crate) ewma_ns: u64,
}

/// New samples weigh `1 / 2^EWMA_SHIFT` in the latency average (1/8, like TCP's smoothed RTT).
const EWMA_SHIFT: u32 = 3;

impl Load {
    /// Folds a latency sample into the average.
    pub(crate) fn observe(&mut self, latency_ns: u64) {
        self.ewma_ns = if self.ewma_ns == 0 {
            latency_ns.max(1)
        } else {
            let old = self.ewma_ns;
            (old - (old >> EWMA_SHIFT))
                .saturating_add(latency_ns >> EWMA_SHIFT)
                .max(1)
        };
    }
}

/// Whether `a` is strictly preferable to `b`.
#[inline]
fn better(a: (Load, u32), b: (Load, u32)) -> bool {
    let (la, wa) = a;
    let (lb, wb) = b;
    let lhs = u64::from(la.in_flight) * u64::from(wb);
    let rhs = u64::from(lb.in_flight) * u64::from(wa);
    lhs < rhs || (lhs == rhs && la.ewma_ns < lb.ewma_ns)
}

#[inline]
fn choose(load: &[Load], weights: &[u32], a: usize, b: usize) -> usize {
    if better((load[b], weights[b]), (load[a], weights[a])) {
        b
    } else {
        a
    }
}

/// Two distinct indices in `0..n` (`n` >= 2), uniformly.
#[inline]
fn two_distinct(rng: &mut SplitMix64, n: usize) -> (usize, usize) {
    let a = rng.index(n);
    let mut b = rng.index(n - 1);
    if b >= a {
        b += 1;
    }
    (a, b)
}

/// One power-of-two-choices pick.
#[inline]
pub(crate) fn pick(
    rng: &mut SplitMix64,
    load: &[Load],
    weights: &[u32],
    usable: impl Fn(usize) -> bool,
) -> Option<usize> {
    let n = load.len();
    if n >= 2 {
        let (a, b) = two_distinct(rng, n);
        if usable(a) && usable(b) {
            return Some(choose(load, weights, a, b));
        }
    }
    // Some backend is out: draw among the usable ones by rank (two O(n) passes, no allocation).
    let count = (0..n).filter(|&i| usable(i)).count();
    let nth_usable = |rank: usize| (0..n).filter(|&i| usable(i)).nth(rank);
    match count {
        0 => None,
        1 => nth_usable(0),
        _ => {
            let (ra, rb) = two_distinct(rng, count);
            let a = nth_usable(ra)?;
            let b = nth_usable(rb)?;
            Some(choose(load, weights, a, b))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ewma_starts_at_first_sample_and_moves_an_eighth() {
        let mut l = Load::default();
        l.observe(800);
        assert_eq!(l.ewma_ns, 800);
        l.observe(1600);
        assert_eq!(l.ewma_ns, 900);
    }

    #[test]
    fn fewer_in_flight_per_weight_wins_then_latency() {
        let l = |in_flight, ewma_ns| Load { in_flight, ewma_ns };
        assert!(better((l(1, 0), 1), (l(2, 0), 1)));
        // 2 in flight on weight 2 is as loaded as 1 on weight 1: latency decides.
        assert!(better((l(2, 10), 2), (l(1, 20), 1)));
        assert!(!better((l(2, 30), 2), (l(1, 20), 1)));
        assert!(!better((l(0, 0), 1), (l(0, 0), 1)));
    }
}
