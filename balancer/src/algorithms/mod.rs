//! The selection algorithms, one per file, and [`Algorithm`], the name a config picks them by.
//!
//! Each algorithm is a pure function over a snapshot's tables, a little per-core state and a
//! `usable(index)` predicate that folds together active health, this core's passive ejections and
//! the backends this request already tried. [`Selector`](crate::Selector) wires them up.

pub(crate) mod ketama;
pub(crate) mod least_inflight;
pub(crate) mod maglev;
pub(crate) mod random;
pub(crate) mod round_robin;
pub(crate) mod wrr;

use std::fmt;
use std::str::FromStr;

use crate::error::UnknownAlgorithm;

/// How a [`Selector`](crate::Selector) chooses a backend (`algorithm = "..."` in config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Algorithm {
    /// `round_robin`: each usable backend in turn, ignoring weights; the cheapest pick. The
    /// default, as in nginx (whose plain round robin is weighted: use `weighted_round_robin` for
    /// that).
    #[default]
    RoundRobin,
    /// `weighted_round_robin`: nginx's smooth weighted round robin. Every window of
    /// `sum(weights)` consecutive picks gives each backend exactly its weight, interleaved (weights
    /// 5:1:1 give `a a b a c a a`, never `a a a a a b c`).
    WeightedRoundRobin,
    /// `random`: a random backend, chosen with probability proportional to its weight.
    Random,
    /// `least_inflight`: power of two choices. Draw two distinct usable backends at random and
    /// take the one with fewer requests in flight on this core relative to its weight
    /// (`inflight_a * weight_b < inflight_b * weight_a`, nginx's `least_conn` rule); on a tie the
    /// lower latency EWMA, then the first drawn.
    LeastInflight,
    /// `ketama`: consistent hashing of the request key on a ring of 160 points per unit of
    /// weight, in the spirit of nginx's `hash $key consistent`. Without a key it falls back to
    /// round robin.
    Ketama,
    /// `maglev`: Google's Maglev consistent hashing (a lookup table of a prime size, at least
    /// 65 537 and up to 1000 entries per backend, filled in weighted turns). A faster lookup and a
    /// more even spread than ketama; a change of backends moves somewhat more than the minimum
    /// share of keys (about 1.2/N instead of 1/N at 50 backends). Without a key it falls back to
    /// round robin.
    Maglev,
}

impl Algorithm {
    /// Every algorithm, in declaration order.
    pub const ALL: [Algorithm; 6] = [
        Self::RoundRobin,
        Self::WeightedRoundRobin,
        Self::Random,
        Self::LeastInflight,
        Self::Ketama,
        Self::Maglev,
    ];

    /// The config name: `"round_robin"`, `"weighted_round_robin"`, `"random"`,
    /// `"least_inflight"`, `"ketama"` or `"maglev"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::RoundRobin => "round_robin",
            Self::WeightedRoundRobin => "weighted_round_robin",
            Self::Random => "random",
            Self::LeastInflight => "least_inflight",
            Self::Ketama => "ketama",
            Self::Maglev => "maglev",
        }
    }

    /// Whether the algorithm places requests by a key (`ketama`, `maglev`).
    pub fn uses_key(self) -> bool {
        matches!(self, Self::Ketama | Self::Maglev)
    }
}

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    /// Accepts exactly the names [`Algorithm::name`] returns (lower case, underscores).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| UnknownAlgorithm { name: s.to_owned() })
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A reusable per-core bitset of backend indices, scratch space for the hash walks.
#[derive(Debug, Clone, Default)]
pub(crate) struct Visited {
    words: Vec<u64>,
}

impl Visited {
    /// Empties the set and sizes it for `n` backends.
    fn reset(&mut self, n: usize) {
        let words = n.div_ceil(64);
        self.words.clear();
        self.words.resize(words, 0);
    }

    fn contains(&self, i: usize) -> bool {
        self.words
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    fn insert(&mut self, i: usize) {
        if let Some(w) = self.words.get_mut(i / 64) {
            *w |= 1 << (i % 64);
        }
    }
}

/// The first usable owner in `owners` (a ring or table walked from the key's position): the
/// deterministic fallback of the hash algorithms when the key's backend is down.
///
/// Stops with `None` once all `n` backends have been rejected, so a pick when everything is down
/// costs about `n ln n` steps (every backend seen once), not a walk of the whole ring.
#[inline]
pub(crate) fn first_usable(
    owners: impl Iterator<Item = u16>,
    n: usize,
    visited: &mut Visited,
    usable: impl Fn(usize) -> bool,
) -> Option<usize> {
    let mut rejected = 0usize;
    let mut last = usize::MAX;
    for owner in owners {
        let owner = owner as usize;
        if owner == last {
            continue;
        }
        if rejected > 0 && visited.contains(owner) {
            continue;
        }
        if usable(owner) {
            return Some(owner);
        }
        if rejected == 0 {
            visited.reset(n);
        }
        visited.insert(owner);
        last = owner;
        rejected += 1;
        if rejected >= n {
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exactly_the_config_names() {
        for a in Algorithm::ALL {
            assert_eq!(a.name().parse::<Algorithm>(), Ok(a));
            assert_eq!(a.to_string(), a.name());
        }
        for bad in [
            "",
            "RoundRobin",
            "round-robin",
            "least_conn",
            "wrr",
            "hash",
            " random",
        ] {
            assert!(bad.parse::<Algorithm>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn first_usable_walks_in_order_and_stops() {
        let mut visited = Visited::default();
        let ring = [0u16, 0, 1, 2, 1, 3];
        let pick = |usable: &dyn Fn(usize) -> bool, visited: &mut Visited| {
            first_usable(ring.iter().copied(), 4, visited, usable)
        };
        assert_eq!(pick(&|_| true, &mut visited), Some(0));
        assert_eq!(pick(&|i| i >= 2, &mut visited), Some(2));
        assert_eq!(pick(&|i| i == 3, &mut visited), Some(3));
        assert_eq!(pick(&|_| false, &mut visited), None);
    }
}
