//! `random`: a backend drawn with probability proportional to its weight.

use crate::rng::SplitMix64;

/// A weighted random draw; `cumulative[i]` is the sum of weights `0..=i`.
///
/// If the drawn backend is not usable, draws again among the usable ones only (an O(n) pass),
/// which keeps each usable backend's probability exactly `weight / usable_weight`.
#[inline]
pub(crate) fn pick(
    rng: &mut SplitMix64,
    weights: &[u32],
    cumulative: &[u64],
    uniform: bool,
    usable: impl Fn(usize) -> bool,
) -> Option<usize> {
    let total = *cumulative.last()?;
    let first = if uniform {
        rng.index(cumulative.len())
    } else {
        let r = rng.below(total);
        cumulative.partition_point(|&c| c <= r)
    };
    if usable(first) {
        return Some(first);
    }
    let usable_total: u64 = weights
        .iter()
        .enumerate()
        .filter(|&(i, _)| usable(i))
        .map(|(_, &w)| u64::from(w))
        .sum();
    if usable_total == 0 {
        return None;
    }
    let mut r = rng.below(usable_total);
    for (i, &w) in weights.iter().enumerate() {
        if !usable(i) {
            continue;
        }
        let w = u64::from(w);
        if r < w {
            return Some(i);
        }
        r -= w;
    }
    None
}
