//! `weighted_round_robin`: nginx's smooth weighted round robin
//! (`ngx_http_upstream_get_peer` in `ngx_http_upstream_round_robin.c`).
//!
//! On each pick every usable backend's current weight grows by its weight; the largest current
//! weight wins (the first on a tie) and drops by the total of the usable weights. The current
//! weights always sum to zero, so the sequence repeats every `sum(weights)` picks and each period
//! holds each backend exactly `weight` times, spread out rather than in bursts. nginx's
//! `effective_weight` (lowered on failures) is not modelled: passive health ejects instead.

/// One smooth-WRR step over `current` (per-core state, one entry per backend) and `weights`.
#[inline]
pub(crate) fn pick(
    current: &mut [i64],
    weights: &[u32],
    usable: impl Fn(usize) -> bool,
) -> Option<usize> {
    let mut total = 0i64;
    let mut best: Option<usize> = None;
    let mut best_current = i64::MIN;
    for (i, (cur, &w)) in current.iter_mut().zip(weights).enumerate() {
        if !usable(i) {
            continue;
        }
        let w = i64::from(w);
        *cur += w;
        total += w;
        if best.is_none() || *cur > best_current {
            best = Some(i);
            best_current = *cur;
        }
    }
    let best = best?;
    current[best] -= total;
    Some(best)
}

/// [`pick`] when every backend is usable, written as three branch-free passes (add, max, find)
/// that the compiler vectorizes: the same result, about twice as fast on large sets.
#[inline]
pub(crate) fn pick_all(current: &mut [i64], weights: &[u32], total: u64) -> Option<usize> {
    for (cur, &w) in current.iter_mut().zip(weights) {
        *cur += i64::from(w);
    }
    let max = current.iter().copied().max()?;
    // The first maximum, as nginx's strict `>` picks.
    let best = current.iter().position(|&c| c == max)?;
    // Total weight is at most MAX_BACKENDS x MAX_WEIGHT, far below i64::MAX.
    current[best] -= total as i64;
    Some(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both versions produce the same sequence.
    #[test]
    fn pick_all_matches_pick() {
        let weights = [3u32, 1, 4, 1, 5, 9, 2, 6, 5, 3];
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let mut a = vec![0i64; weights.len()];
        let mut b = vec![0i64; weights.len()];
        for _ in 0..1000 {
            assert_eq!(
                pick(&mut a, &weights, |_| true),
                pick_all(&mut b, &weights, total)
            );
        }
        assert_eq!(a, b);
    }
}
