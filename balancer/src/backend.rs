//! Backends and [`BackendSet`], the immutable snapshot of one upstream's backends that the control
//! plane builds, publishes to every core as an `Arc`, and replaces wholesale.
//!
//! A snapshot holds the backends, their active-health flags and the tables derived from them
//! (weight prefix sums, the ketama ring, the Maglev table). Tables are built at most once per
//! snapshot, shared by every core, and carried over unchanged when only health changes
//! ([`BackendSet::with_health`]).

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use crate::algorithms::ketama::KetamaRing;
use crate::algorithms::maglev::{self, MaglevTable};
use crate::algorithms::Algorithm;
use crate::error::BackendSetError;
use crate::health::Health;

/// The largest weight a backend may have (HAProxy's limit). Ketama places 160 ring points per
/// unit of weight, so this also bounds one backend's share of the ring's memory.
pub const MAX_WEIGHT: u32 = 256;

/// The most backends one set may hold. Bounds the Maglev table at about four million entries, and
/// lets the hash tables store backend indices as `u16`.
pub const MAX_BACKENDS: usize = 10_000;

const _: () = assert!(
    MAX_BACKENDS < u16::MAX as usize,
    "hash tables store indices as u16"
);

/// One origin server an upstream can send requests to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Backend {
    /// Where to connect. Also the backend's identity: per-core state survives a snapshot
    /// replacement when the address does, and consistent hashing places the backend by it.
    pub addr: SocketAddr,
    /// Relative share of traffic, 1..=[`MAX_WEIGHT`]. By default 1.
    pub weight: u32,
    /// An optional label for logs and metrics (for discovered backends, the name that resolved to
    /// `addr`). It plays no part in selection.
    pub name: Option<String>,
}

impl Backend {
    /// A backend at `addr` with weight 1 and no name.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            weight: 1,
            name: None,
        }
    }

    /// This backend with `weight` (checked when the set is built).
    #[must_use]
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// This backend labelled `name`.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}

/// Tables derived from the backend list alone (not from health), shared by every snapshot that
/// has the same list.
struct Tables {
    /// `weights[i]` is backend `i`'s weight, dense for the selection loops.
    weights: Box<[u32]>,
    /// `cumulative[i]` is the sum of weights `0..=i`, for weighted random draws.
    cumulative: Box<[u64]>,
    /// Whether every weight is equal, so a uniform draw needs no search.
    uniform: bool,
    ketama: OnceLock<Arc<KetamaRing>>,
    maglev: OnceLock<Arc<MaglevTable>>,
}

/// An immutable snapshot of one upstream's backends and their active-health state.
///
/// Built by the control plane, shared by every core as `Arc<BackendSet>`, replaced wholesale (see
/// [`Selector::update`](crate::Selector::update)). Backends are addressed by their index in
/// [`backends`](Self::backends); indices are only meaningful within one snapshot.
///
/// Hash tables are built lazily, once per snapshot, by the first selector that needs them; the
/// control plane should call [`prepare`](Self::prepare) before publishing so that no request core
/// ever pays for a build (about a millisecond per hundred backends).
///
/// # Examples
///
/// ```
/// use ringway_balancer::{Backend, BackendSet, Health};
///
/// let set = BackendSet::new(vec![
///     Backend::new("127.0.0.1:9001".parse().unwrap()),
///     Backend::new("127.0.0.1:9002".parse().unwrap()).with_weight(2),
/// ])
/// .unwrap();
/// assert_eq!(set.total_weight(), 3);
/// // An active health check marked the second backend down: publish a new snapshot.
/// let next = set.with_health(Health::from_flags(vec![true, false])).unwrap();
/// assert!(!next.health().is_up(1));
/// ```
#[derive(Clone)]
pub struct BackendSet {
    backends: Arc<[Backend]>,
    tables: Arc<Tables>,
    health: Health,
}

impl BackendSet {
    /// A snapshot of `backends`, all marked healthy.
    ///
    /// # Errors
    ///
    /// [`BackendSetError`] when an address repeats, a weight is 0 or above [`MAX_WEIGHT`], or
    /// there are more than [`MAX_BACKENDS`] backends. An empty set is allowed: every pick on it
    /// returns `None`.
    pub fn new(backends: Vec<Backend>) -> Result<Self, BackendSetError> {
        if backends.len() > MAX_BACKENDS {
            return Err(BackendSetError::TooManyBackends(backends.len()));
        }
        let mut seen = HashSet::with_capacity(backends.len());
        let mut cumulative = Vec::with_capacity(backends.len());
        let mut total = 0u64;
        for b in &backends {
            if b.weight == 0 {
                return Err(BackendSetError::ZeroWeight(b.addr));
            }
            if b.weight > MAX_WEIGHT {
                return Err(BackendSetError::WeightTooLarge {
                    addr: b.addr,
                    weight: b.weight,
                });
            }
            if !seen.insert(b.addr) {
                return Err(BackendSetError::DuplicateAddress(b.addr));
            }
            total += u64::from(b.weight);
            cumulative.push(total);
        }
        let weights: Box<[u32]> = backends.iter().map(|b| b.weight).collect();
        let uniform = weights.windows(2).all(|w| w[0] == w[1]);
        let health = Health::all_up(backends.len());
        Ok(Self {
            backends: backends.into(),
            tables: Arc::new(Tables {
                weights,
                cumulative: cumulative.into(),
                uniform,
                ketama: OnceLock::new(),
                maglev: OnceLock::new(),
            }),
            health,
        })
    }

    /// The same backends (and their already built tables) with a new health snapshot.
    ///
    /// # Errors
    ///
    /// [`BackendSetError::HealthLengthMismatch`] unless `health` has one flag per backend.
    pub fn with_health(&self, health: Health) -> Result<Self, BackendSetError> {
        if health.len() != self.backends.len() {
            return Err(BackendSetError::HealthLengthMismatch {
                backends: self.backends.len(),
                flags: health.len(),
            });
        }
        Ok(Self {
            backends: Arc::clone(&self.backends),
            tables: Arc::clone(&self.tables),
            health,
        })
    }

    /// Builds now whatever table `algorithm` needs (the ketama ring, the Maglev table), so that
    /// selectors created from this snapshot find it ready. Idempotent and cheap when already built.
    pub fn prepare(&self, algorithm: Algorithm) {
        match algorithm {
            Algorithm::Ketama => drop(self.ketama_ring()),
            Algorithm::Maglev => drop(self.maglev_table()),
            Algorithm::RoundRobin
            | Algorithm::WeightedRoundRobin
            | Algorithm::Random
            | Algorithm::LeastInflight => {}
        }
    }

    /// The backends, in the order they were given.
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// Backend `index`, if there is one.
    pub fn get(&self, index: usize) -> Option<&Backend> {
        self.backends.get(index)
    }

    /// The index of the backend at `addr`, if any (a linear scan).
    pub fn index_of(&self, addr: SocketAddr) -> Option<usize> {
        self.backends.iter().position(|b| b.addr == addr)
    }

    /// How many backends there are.
    pub fn len(&self) -> usize {
        self.backends.len()
    }

    /// Whether there are no backends.
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    /// The active-health flags published with this snapshot.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The sum of all weights.
    pub fn total_weight(&self) -> u64 {
        self.tables.cumulative.last().copied().unwrap_or(0)
    }

    /// Whether `other` holds the same backends in the same order (so indices and per-core state
    /// carry over unchanged). True at once for snapshots made by [`with_health`](Self::with_health).
    pub fn same_backends(&self, other: &BackendSet) -> bool {
        Arc::ptr_eq(&self.backends, &other.backends) || self.backends == other.backends
    }

    pub(crate) fn weights(&self) -> &[u32] {
        &self.tables.weights
    }

    pub(crate) fn cumulative(&self) -> &[u64] {
        &self.tables.cumulative
    }

    pub(crate) fn uniform_weights(&self) -> bool {
        self.tables.uniform
    }

    pub(crate) fn ketama_ring(&self) -> Arc<KetamaRing> {
        Arc::clone(
            self.tables
                .ketama
                .get_or_init(|| Arc::new(KetamaRing::build(&self.backends))),
        )
    }

    pub(crate) fn maglev_table(&self) -> Arc<MaglevTable> {
        Arc::clone(
            self.tables
                .maglev
                .get_or_init(|| Arc::new(maglev::MaglevTable::build(&self.backends))),
        )
    }
}

impl fmt::Debug for BackendSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendSet")
            .field("backends", &self.backends)
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn rejects_invalid_sets() {
        let dup = BackendSet::new(vec![Backend::new(addr(1)), Backend::new(addr(1))]);
        assert_eq!(dup.err(), Some(BackendSetError::DuplicateAddress(addr(1))));
        let zero = BackendSet::new(vec![Backend::new(addr(1)).with_weight(0)]);
        assert_eq!(zero.err(), Some(BackendSetError::ZeroWeight(addr(1))));
        let heavy = BackendSet::new(vec![Backend::new(addr(1)).with_weight(MAX_WEIGHT + 1)]);
        assert!(matches!(
            heavy.err(),
            Some(BackendSetError::WeightTooLarge { .. })
        ));
        let many = (0..=MAX_BACKENDS)
            .map(|i| Backend::new(SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 80))))
            .collect();
        assert_eq!(
            BackendSet::new(many).err(),
            Some(BackendSetError::TooManyBackends(MAX_BACKENDS + 1))
        );
    }

    #[test]
    fn with_health_shares_backends_and_checks_length() {
        let set = BackendSet::new(vec![Backend::new(addr(1)), Backend::new(addr(2))]).unwrap();
        set.prepare(Algorithm::Ketama);
        let next = set
            .with_health(Health::from_flags(vec![false, true]))
            .unwrap();
        assert!(set.same_backends(&next));
        assert!(Arc::ptr_eq(&set.ketama_ring(), &next.ketama_ring()));
        assert!(!next.health().is_up(0));
        assert_eq!(
            set.with_health(Health::all_up(3)).err(),
            Some(BackendSetError::HealthLengthMismatch {
                backends: 2,
                flags: 3
            })
        );
    }

    #[test]
    fn empty_set_is_allowed() {
        let set = BackendSet::new(Vec::new()).unwrap();
        assert!(set.is_empty());
        assert_eq!(set.total_weight(), 0);
    }
}
