//! `ketama`: consistent hashing on a ring, in the spirit of nginx's `hash $key consistent`.
//!
//! Each backend places 160 points per unit of weight on a 64-bit ring, at `hash64_seeded(addr, j)`
//! for its address text (`"10.0.0.1:80"`, `"[::1]:80"`). A key goes to the owner of the first point
//! at or after the key's hash, wrapping. When a backend leaves, only the keys it owned move, each to
//! the owner of the next point; when the key's backend is down, the pick walks on the same way, so
//! the fallback is deterministic too. The ring depends only on the set of (address, weight) pairs,
//! not on their order, so every process and every core computes the same ring.

use std::net::SocketAddr;

use super::{first_usable, Visited};
use crate::backend::Backend;
use crate::hash::hash64_seeded;

/// Ring points per unit of weight (nginx's 160).
pub(crate) const POINTS_PER_WEIGHT: u64 = 160;

/// The most points a ring holds (10 bytes each). Sets whose `160 x total weight` exceeds it get
/// fewer points per unit of weight; only a total weight above 26 214 does.
pub(crate) const MAX_POINTS: u64 = 1 << 22;

/// Aim for about this many ring points per bucket of the lookup index.
const POINTS_PER_BUCKET: usize = 4;
/// The most index bits (a 4 MiB index); larger rings just get fuller buckets.
const MAX_INDEX_BITS: u32 = 20;

/// A built ring, sorted by point, with an index on the points' top bits so a lookup searches a
/// bucket of a few points instead of the whole ring (two or three cache misses rather than
/// eighteen dependent loads on a 300 000-point ring).
#[derive(Debug)]
pub(crate) struct KetamaRing {
    points: Box<[u64]>,
    owners: Box<[u16]>,
    /// `index[j]` is the position of the first point `>= j << shift`; `index[2^bits]` is the length.
    index: Box<[u32]>,
    shift: u32,
    backends: usize,
}

impl KetamaRing {
    /// The ring for `backends`.
    pub(crate) fn build(backends: &[Backend]) -> Self {
        let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
        let per_unit = if total.saturating_mul(POINTS_PER_WEIGHT) <= MAX_POINTS {
            POINTS_PER_WEIGHT
        } else {
            (MAX_POINTS / total.max(1)).max(1)
        };
        let mut points: Vec<(u64, SocketAddr, u16)> =
            Vec::with_capacity(usize::try_from(total * per_unit).unwrap_or(0));
        for (i, b) in backends.iter().enumerate() {
            let id = b.addr.to_string();
            for j in 0..u64::from(b.weight) * per_unit {
                // Fits: MAX_BACKENDS is below u16::MAX (checked in backend.rs).
                points.push((hash64_seeded(id.as_bytes(), j), b.addr, i as u16));
            }
        }
        // Ties (vanishingly rare in 64 bits) break by address, keeping the ring order-independent
        // (addresses are unique, so the index never decides).
        points.sort_unstable();
        let owners = points.iter().map(|p| p.2).collect();
        let points: Box<[u64]> = points.iter().map(|p| p.0).collect();
        let buckets = (points.len() / POINTS_PER_BUCKET).max(2);
        let bits = buckets.ilog2().min(MAX_INDEX_BITS);
        let shift = 64 - bits;
        let mut index = Vec::with_capacity((1 << bits) + 1);
        let mut pos = 0usize;
        for j in 0..1u64 << bits {
            let bound = j << shift;
            while pos < points.len() && points[pos] < bound {
                pos += 1;
            }
            // Ring sizes are bounded by MAX_POINTS, far below u32::MAX.
            index.push(pos as u32);
        }
        index.push(points.len() as u32);
        Self {
            points,
            owners,
            index: index.into(),
            shift,
            backends: backends.len(),
        }
    }

    /// The first usable owner at or after `hash` on the ring.
    #[inline]
    pub(crate) fn lookup(
        &self,
        hash: u64,
        visited: &mut Visited,
        usable: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let len = self.points.len();
        if len == 0 {
            return None;
        }
        let bucket = (hash >> self.shift) as usize;
        let lo = self.index.get(bucket).map_or(0, |&i| i as usize);
        let hi = self.index.get(bucket + 1).map_or(len, |&i| i as usize);
        let mut start = lo + self.points[lo..hi].partition_point(|&p| p < hash);
        if start == len {
            start = 0;
        }
        let (before, after) = self.owners.split_at(start);
        if let Some(&first) = after.first() {
            if usable(usize::from(first)) {
                return Some(usize::from(first));
            }
        }
        let walk = after.iter().chain(before).copied();
        first_usable(walk, self.backends, visited, usable)
    }

    /// How many points the ring holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.points.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(weights: &[u32]) -> Vec<Backend> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                Backend::new(SocketAddr::from(([10, 0, 0, i as u8 + 1], 80))).with_weight(w)
            })
            .collect()
    }

    #[test]
    fn points_per_weight_unit() {
        assert_eq!(KetamaRing::build(&backends(&[1, 2, 3])).len(), 960);
    }

    /// The index finds exactly what a binary search of the whole ring finds.
    #[test]
    fn index_agrees_with_a_full_search() {
        for weights in [&[1][..], &[1, 2, 3], &[3; 40]] {
            let ring = KetamaRing::build(&backends(weights));
            let mut v = Visited::default();
            let probes = (0..20_000u64)
                .map(|k| crate::hash::hash64(&k.to_le_bytes()))
                .chain(
                    ring.points
                        .iter()
                        .flat_map(|&p| [p, p.wrapping_sub(1), p.wrapping_add(1)]),
                )
                .chain([0, u64::MAX, 1 << 63]);
            for h in probes {
                let full = ring.points.partition_point(|&p| p < h) % ring.points.len();
                let want = ring.owners[full] as usize;
                assert_eq!(ring.lookup(h, &mut v, |_| true), Some(want), "hash {h:#x}");
            }
        }
    }

    #[test]
    fn ring_does_not_depend_on_backend_order() {
        let fwd = backends(&[1, 2, 3]);
        let mut rev = fwd.clone();
        rev.reverse();
        let (a, b) = (KetamaRing::build(&fwd), KetamaRing::build(&rev));
        let mut v = Visited::default();
        for k in 0..1000u64 {
            let h = crate::hash::hash64(&k.to_le_bytes());
            let ia = a.lookup(h, &mut v, |_| true).unwrap();
            let ib = b.lookup(h, &mut v, |_| true).unwrap();
            assert_eq!(fwd[ia].addr, rev[ib].addr);
        }
    }
}
