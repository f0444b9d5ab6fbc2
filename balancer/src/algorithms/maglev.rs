//! `maglev`: Maglev consistent hashing (Eisenbud et al., NSDI 2016, section 3.4), weighted.
//!
//! Each backend derives a permutation of the table's slots from its address text (`offset` and
//! `skip` from two seeded hashes; the table size is prime, so every `skip` visits every slot). The
//! backends then take turns claiming their next free preferred slot until the table is full. With
//! equal weights every backend gets every turn and owns `M/n` slots to within one; with weights,
//! a backend takes a turn in proportion to its weight (Envoy's scheme). A lookup is one multiply
//! and one load. When the key's backend is down, the pick walks on to the next slots, so the
//! fallback is deterministic. Turn order is by address, so the table depends only on the set of
//! (address, weight) pairs, not on their order.

use std::net::SocketAddr;

use super::{first_usable, Visited};
use crate::backend::Backend;
use crate::hash::hash64_seeded;

/// Table sizes: primes just above powers of four, from Envoy's default 65 537 up. A set of `n`
/// backends uses the smallest of at least `1000 n` entries, or the largest (still over 400 per
/// backend at [`MAX_BACKENDS`](crate::MAX_BACKENDS), above the paper's `M >= 100 N`).
///
/// Why 1000 per backend rather than the paper's 100: Maglev moves more than the leaving backend's
/// keys, and the excess grows with `N^2 / M`. Removing one of `N` backends moved (in units of
/// `1/N` of all keys; 1.0 is the minimum) 1.02 at N = 10 and 1.22 at N = 50 with 65 537 slots,
/// 1.24 at N = 100 with 262 147, but 1.47 at N = 20 with 2053 and 4.4 at N = 100 with 16 411.
/// Entries are `u16`, so the table costs 128 KiB up to 65 backends, 512 KiB up to 262, 2 MiB up to
/// 1048 and 8 MiB beyond. Coarse steps keep the size, and so the table, stable while backends
/// come and go; a change that crosses a step (65 to 66 backends, say) reshuffles every key.
pub(crate) const TABLE_SIZES: [usize; 4] = [65_537, 262_147, 1_048_583, 4_194_319];

/// Table entries wanted per backend.
const SLOTS_PER_BACKEND: usize = 1000;

const OFFSET_SEED: u64 = 0x6d61_676c_6576_6f66; // "maglevof"
const SKIP_SEED: u64 = 0x6d61_676c_6576_736b; // "maglevsk"
const EMPTY: u16 = u16::MAX;

/// The table size for `n` backends.
pub(crate) fn table_size(n: usize) -> usize {
    let want = n.saturating_mul(SLOTS_PER_BACKEND);
    TABLE_SIZES
        .iter()
        .copied()
        .find(|&m| m >= want)
        .unwrap_or(TABLE_SIZES[TABLE_SIZES.len() - 1])
}

/// A built lookup table: `entries[slot]` is a backend index.
#[derive(Debug)]
pub(crate) struct MaglevTable {
    entries: Box<[u16]>,
    backends: usize,
}

/// One backend's progress through its permutation while the table fills.
struct Turn {
    index: u16,
    addr: SocketAddr,
    next: usize,
    skip: usize,
    weight: u64,
    /// The backend takes a turn in an iteration `k` with `k * weight >= target`.
    target: u64,
}

impl MaglevTable {
    /// The table for `backends`.
    pub(crate) fn build(backends: &[Backend]) -> Self {
        if backends.is_empty() {
            return Self {
                entries: Box::new([]),
                backends: 0,
            };
        }
        Self::build_sized(backends, table_size(backends.len()))
    }

    /// The table for `backends` with `m` slots (a prime).
    pub(crate) fn build_sized(backends: &[Backend], m: usize) -> Self {
        if backends.is_empty() {
            return Self {
                entries: Box::new([]),
                backends: 0,
            };
        }
        let m64 = m as u64;
        let mut turns: Vec<Turn> = backends
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let id = b.addr.to_string();
                let offset = hash64_seeded(id.as_bytes(), OFFSET_SEED) % m64;
                let skip = hash64_seeded(id.as_bytes(), SKIP_SEED) % (m64 - 1) + 1;
                Turn {
                    // Fits: MAX_BACKENDS is below u16::MAX (checked in backend.rs).
                    index: i as u16,
                    addr: b.addr,
                    next: offset as usize,
                    skip: skip as usize,
                    weight: u64::from(b.weight),
                    target: 0,
                }
            })
            .collect();
        turns.sort_unstable_by_key(|t| t.addr);
        let max_weight = turns.iter().map(|t| t.weight).max().unwrap_or(1);

        let mut entries = vec![EMPTY; m];
        let mut filled = 0usize;
        let mut iteration = 1u64;
        'fill: loop {
            for t in &mut turns {
                if iteration * t.weight < t.target {
                    continue;
                }
                t.target += max_weight;
                // The permutation visits every slot and some are free, so this ends.
                loop {
                    let slot = t.next;
                    t.next += t.skip;
                    if t.next >= m {
                        t.next -= m;
                    }
                    if entries[slot] == EMPTY {
                        entries[slot] = t.index;
                        filled += 1;
                        break;
                    }
                }
                if filled == m {
                    break 'fill;
                }
            }
            iteration += 1;
        }
        Self {
            entries: entries.into(),
            backends: backends.len(),
        }
    }

    /// The first usable owner at or after the slot `hash` maps to.
    #[inline]
    pub(crate) fn lookup(
        &self,
        hash: u64,
        visited: &mut Visited,
        usable: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let m = self.entries.len() as u64;
        // Lemire's fast range reduction: uniform over 0..m without a division.
        let slot = ((u128::from(hash) * u128::from(m)) >> 64) as usize;
        let (before, after) = self.entries.split_at(slot.min(self.entries.len()));
        if let Some(&first) = after.first() {
            if usable(usize::from(first)) {
                return Some(usize::from(first));
            }
        }
        let walk = after.iter().chain(before).copied();
        first_usable(walk, self.backends, visited, usable)
    }

    /// Slots owned by each backend.
    #[cfg(test)]
    pub(crate) fn slot_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.backends];
        for &e in self.entries.iter() {
            counts[e as usize] += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_prime(n: usize) -> bool {
        n >= 2
            && (2..)
                .take_while(|d| d * d <= n)
                .all(|d| !n.is_multiple_of(d))
    }

    fn backends(weights: &[u32]) -> Vec<Backend> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                Backend::new(SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 80)))
                    .with_weight(w)
            })
            .collect()
    }

    /// Prints the slot churn figures quoted on `TABLE_SIZES` (columns: table sizes 2053 to
    /// 1 048 583): `cargo test --release -p ringway-balancer --lib measure_churn -- --ignored
    /// --nocapture`.
    #[test]
    #[ignore]
    fn measure_churn() {
        for n in [10usize, 20, 50, 100, 200, 500, 1000] {
            let mut line = format!("n={n:5}:");
            for m in [2053, 16_411, 65_537, 262_147, 1_048_583] {
                if m < 10 * n {
                    line += "        -";
                    continue;
                }
                let all = backends(&vec![1; n]);
                let mut rest = all.clone();
                rest.remove(n / 2);
                let a = MaglevTable::build_sized(&all, m);
                let b = MaglevTable::build_sized(&rest, m);
                let changed = a
                    .entries
                    .iter()
                    .zip(b.entries.iter())
                    .filter(|(x, y)| all[**x as usize].addr != rest[**y as usize].addr)
                    .count();
                line += &format!(" {:8.3}", changed as f64 / m as f64 * n as f64);
            }
            println!("{line}");
        }
    }

    #[test]
    fn table_sizes_are_prime_and_large_enough() {
        for m in TABLE_SIZES {
            assert!(is_prime(m), "{m} is not prime");
        }
        assert_eq!(table_size(1), 65_537);
        assert_eq!(table_size(65), 65_537);
        assert_eq!(table_size(66), 262_147);
        assert_eq!(table_size(1024), 1_048_583);
        assert_eq!(table_size(1049), 4_194_319);
        assert!(table_size(crate::MAX_BACKENDS) >= 400 * crate::MAX_BACKENDS);
    }

    #[test]
    fn equal_weights_own_equal_slots_to_within_one() {
        let t = MaglevTable::build(&backends(&[1; 7]));
        let counts = t.slot_counts();
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(max - min <= 1, "{counts:?}");
    }

    #[test]
    fn weighted_slots_follow_weights() {
        let t = MaglevTable::build(&backends(&[1, 2, 3]));
        let counts = t.slot_counts();
        let m = 65_537.0;
        for (i, want) in [1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0].iter().enumerate() {
            let share = counts[i] as f64 / m;
            assert!((share - want).abs() < 0.01, "{counts:?}");
        }
    }

    #[test]
    fn table_does_not_depend_on_backend_order() {
        let fwd = backends(&[1, 2, 3, 1]);
        let mut rev = fwd.clone();
        rev.reverse();
        let (a, b) = (MaglevTable::build(&fwd), MaglevTable::build(&rev));
        for (x, y) in a.entries.iter().zip(b.entries.iter()) {
            assert_eq!(fwd[*x as usize].addr, rev[*y as usize].addr);
        }
    }
}
