//! [`Selector`]: one core's balancer for one upstream. It reads the shared immutable
//! [`BackendSet`] and keeps this core's mutable state (cursors, smooth-WRR weights, PRNG,
//! in-flight counts, latency averages, passive ejections) with no atomics and no locks.
//!
//! On the request path the proxy calls [`Selector::pick`] in its `upstream_peer` phase, then
//! [`Selector::on_start`] when the attempt begins and [`Selector::on_finish`] when it ends; a
//! retry picks again with the failed backend added to its [`Tried`](crate::Tried) set.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::algorithms::ketama::KetamaRing;
use crate::algorithms::least_inflight::{self, Load};
use crate::algorithms::maglev::MaglevTable;
use crate::algorithms::round_robin::RoundRobin;
use crate::algorithms::{random, wrr, Algorithm, Visited};
use crate::backend::{Backend, BackendSet};
use crate::exclude::Exclude;
use crate::hash::hash64;
use crate::health::passive::{PassiveHealth, PassiveState};
use crate::outcome::{FailureKind, Outcome};
use crate::rng::SplitMix64;

/// One attempt in progress, returned by [`Selector::on_start`] and handed back to
/// [`Selector::on_finish`].
///
/// It remembers the backend's address as well as its index, so the outcome lands on the right
/// backend even if the core switched to a new snapshot while the attempt was in flight (and is
/// dropped if the backend left). Not `Clone`: each attempt finishes once.
#[derive(Debug)]
#[must_use = "hand the attempt back to Selector::on_finish, or the backend's in-flight count leaks"]
pub struct Attempt {
    index: usize,
    addr: Option<SocketAddr>,
    generation: u64,
}

impl Attempt {
    /// The backend's index in the snapshot that was current when the attempt started.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The backend's address (`None` if `on_start` was given an index out of range).
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }
}

/// One core's balancer for one upstream.
///
/// Create one per core per upstream from the shared snapshot; it is deliberately not shared
/// (every method that changes state takes `&mut self`; wrap it in a `RefCell` beside the
/// core's other state).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::{Duration, Instant};
/// use ringway_balancer::{Algorithm, Backend, BackendSet, FailureKind, Outcome, Selector, Tried};
///
/// let set = Arc::new(BackendSet::new(vec![
///     Backend::new("127.0.0.1:9001".parse().unwrap()),
///     Backend::new("127.0.0.1:9002".parse().unwrap()).with_weight(2),
/// ]).unwrap());
/// let mut selector = Selector::new(set, "weighted_round_robin".parse().unwrap());
///
/// let now = Instant::now();
/// let mut tried = Tried::new();
/// let first = selector.pick(None, now, &tried).unwrap();
/// let attempt = selector.on_start(first);
/// // ... the connect fails: record it and retry elsewhere.
/// tried.insert(attempt.addr().unwrap());
/// selector.on_finish(attempt, Outcome::failure(FailureKind::Connect, Duration::from_millis(1)), now);
/// let second = selector.pick(None, now, &tried).unwrap();
/// assert_ne!(first, second);
/// ```
#[derive(Debug)]
pub struct Selector {
    set: Arc<BackendSet>,
    algorithm: Algorithm,
    passive_config: PassiveHealth,
    passive: Vec<PassiveState>,
    /// How many entries of `passive` have a deadline; while none has, picks skip the check.
    with_deadline: usize,
    load: Vec<Load>,
    cursors: Cursors,
    ketama: Option<Arc<KetamaRing>>,
    maglev: Option<Arc<MaglevTable>>,
    /// Bumped whenever the backend list (and so the meaning of indices) changes.
    generation: u64,
}

/// The algorithms' own per-core state.
#[derive(Debug)]
struct Cursors {
    round_robin: RoundRobin,
    wrr_current: Vec<i64>,
    rng: SplitMix64,
    visited: Visited,
}

impl Selector {
    /// A selector over `set` using `algorithm`, with default passive health
    /// ([`PassiveHealth::default`]) and a randomly seeded PRNG.
    ///
    /// Builds the snapshot's hash table if the algorithm needs one and nobody has yet (see
    /// [`BackendSet::prepare`]).
    pub fn new(set: Arc<BackendSet>, algorithm: Algorithm) -> Self {
        Self::with_seed(set, algorithm, SplitMix64::from_entropy().next_u64())
    }

    /// Like [`new`](Self::new) with a fixed PRNG seed, for reproducible tests and benchmarks.
    /// Give each core a different seed in production, or its random draws run in lockstep.
    pub fn with_seed(set: Arc<BackendSet>, algorithm: Algorithm, seed: u64) -> Self {
        let n = set.len();
        let mut selector = Self {
            algorithm,
            passive_config: PassiveHealth::default(),
            passive: vec![PassiveState::default(); n],
            with_deadline: 0,
            load: vec![Load::default(); n],
            cursors: Cursors {
                round_robin: RoundRobin::default(),
                wrr_current: vec![0; n],
                rng: SplitMix64::from_seed(seed),
                visited: Visited::default(),
            },
            ketama: None,
            maglev: None,
            generation: 0,
            set,
        };
        selector.refresh_tables();
        selector
    }

    /// This selector with passive health settings `config`.
    #[must_use]
    pub fn with_passive_health(mut self, config: PassiveHealth) -> Self {
        self.passive_config = config;
        self
    }

    /// The algorithm in use.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The passive health settings in use.
    pub fn passive_health(&self) -> PassiveHealth {
        self.passive_config
    }

    /// The snapshot currently selected from.
    pub fn backend_set(&self) -> &Arc<BackendSet> {
        &self.set
    }

    /// Backend `index` of the current snapshot.
    pub fn backend(&self, index: usize) -> Option<&Backend> {
        self.set.get(index)
    }

    /// Chooses a backend for one attempt and returns its index in the current snapshot.
    ///
    /// Skips backends that are down in the snapshot's [`Health`](crate::Health), ejected on this
    /// core by passive health at `now`, or excluded by `exclude` (those the request already
    /// tried). `key` is the request's hash key for `ketama` and `maglev` (client IP, path, a header
    /// or cookie value); other algorithms ignore it, and the hash algorithms fall back to round
    /// robin without one. When the key's backend is skipped, the hash algorithms walk on to the
    /// next ring point or table slot, so a key's fallback backend is deterministic as well.
    ///
    /// If the chosen backend is passively ejected and its `fail_timeout` has passed, this pick is
    /// its one trial: it is held back from further picks until [`on_finish`](Self::on_finish)
    /// reports the trial's outcome (or another `fail_timeout` passes).
    ///
    /// Returns `None` when no backend is usable. Costs O(1) for `round_robin`, `least_inflight`,
    /// `ketama` (an indexed bucket of a few ring points) and `maglev`, O(log n) for `random` with
    /// unequal weights, and O(n) for `weighted_round_robin`; plus an O(n) pass when the first
    /// choice is unusable (a walk of about `n ln n` points for the hash algorithms when
    /// everything is down).
    pub fn pick<E: Exclude + ?Sized>(
        &mut self,
        key: Option<&[u8]>,
        now: Instant,
        exclude: &E,
    ) -> Option<usize> {
        let set = &*self.set;
        let view = View {
            algorithm: self.algorithm,
            set,
            load: &self.load,
            ketama: self.ketama.as_deref(),
            maglev: self.maglev.as_deref(),
        };
        let cursors = &mut self.cursors;
        let everything_usable =
            set.health().is_all_up() && self.with_deadline == 0 && exclude.excludes_nothing();
        let picked = if everything_usable {
            // The common case: no per-backend checks at all.
            if view.algorithm == Algorithm::WeightedRoundRobin {
                wrr::pick_all(&mut cursors.wrr_current, set.weights(), set.total_weight())
            } else {
                view.choose(key, cursors, |_| true)
            }
        } else {
            let backends = set.backends();
            let health = set.health();
            let passive = &self.passive;
            view.choose(key, cursors, |i: usize| {
                health.is_up(i) && passive[i].allows(now) && !exclude.excludes(i, &backends[i])
            })
        }?;
        // Only a backend with a passive deadline can be due for a trial.
        if self.with_deadline > 0 {
            let config = self.passive_config;
            self.with_passive(picked, |p| p.on_picked(now, &config));
        }
        Some(picked)
    }

    /// Records that an attempt on backend `index` begins (connect or pool checkout): raises its
    /// in-flight count on this core. Hand the returned [`Attempt`] to
    /// [`on_finish`](Self::on_finish) when the attempt ends, whatever the result.
    pub fn on_start(&mut self, index: usize) -> Attempt {
        let addr = self.set.get(index).map(|b| b.addr);
        if let Some(load) = self.load.get_mut(index) {
            load.in_flight = load.in_flight.saturating_add(1);
        }
        Attempt {
            index,
            addr,
            generation: self.generation,
        }
    }

    /// Records how an attempt ended at `now`: lowers the in-flight count; feeds the latency of
    /// successes and timeouts into the latency average; a success resets passive health, a
    /// connect error or timeout counts toward ejection, other failures do neither.
    ///
    /// Nothing happens if the backend left the set while the attempt was in flight.
    pub fn on_finish(&mut self, attempt: Attempt, outcome: Outcome, now: Instant) {
        let Some(index) = self.resolve(&attempt) else {
            return;
        };
        let Some(load) = self.load.get_mut(index) else {
            return;
        };
        load.in_flight = load.in_flight.saturating_sub(1);
        let latency_ns = u64::try_from(outcome.latency.as_nanos()).unwrap_or(u64::MAX);
        let config = self.passive_config;
        match outcome.failure {
            None => {
                load.observe(latency_ns);
                self.with_passive(index, PassiveState::on_success);
            }
            Some(kind) => {
                if kind == FailureKind::Timeout {
                    load.observe(latency_ns);
                }
                if kind.counts_as_failure() {
                    self.with_passive(index, |p| p.on_failure(now, &config));
                }
            }
        }
    }

    /// Switches to a new snapshot published by the control plane.
    ///
    /// Per-backend state (in-flight counts, latency averages, passive ejections) is kept for every
    /// backend whose address is in both snapshots, and starts fresh for new ones. When only health
    /// changed (the same backend list) nothing is remapped. When the list changed, the smooth-WRR
    /// cycle restarts from zero (as nginx's does on reload) so its exact-window guarantee holds
    /// again from the next pick; round-robin and PRNG state carry on.
    pub fn update(&mut self, set: Arc<BackendSet>) {
        // Active health brought these back: their passive ejection on this core ends too,
        // instead of lasting until the next fail_timeout trial.
        let came_back: Vec<SocketAddr> = if self.set.health().up_count() == self.set.len() {
            Vec::new()
        } else {
            let was_down: std::collections::HashSet<SocketAddr> = (0..self.set.len())
                .filter(|&i| !self.set.health().is_up(i))
                .filter_map(|i| self.set.get(i).map(|b| b.addr))
                .collect();
            (0..set.len())
                .filter(|&j| set.health().is_up(j))
                .filter_map(|j| set.get(j).map(|b| b.addr))
                .filter(|a| was_down.contains(a))
                .collect()
        };
        if !self.set.same_backends(&set) {
            let old: HashMap<SocketAddr, usize> = self
                .set
                .backends()
                .iter()
                .enumerate()
                .map(|(i, b)| (b.addr, i))
                .collect();
            let (passive, load) = set
                .backends()
                .iter()
                .map(|b| match old.get(&b.addr) {
                    Some(&i) => (self.passive[i], self.load[i]),
                    None => (PassiveState::default(), Load::default()),
                })
                .unzip();
            self.passive = passive;
            self.with_deadline = self.passive.iter().filter(|p| p.has_deadline()).count();
            self.load = load;
            self.cursors.wrr_current = vec![0; set.len()];
            self.generation += 1;
        }
        self.set = set;
        for addr in came_back {
            if let Some(j) = self.set.index_of(addr) {
                self.with_passive(j, |p| *p = PassiveState::default());
            }
        }
        self.refresh_tables();
    }

    /// Requests in flight to backend `index` on this core.
    pub fn in_flight(&self, index: usize) -> u32 {
        self.load.get(index).map_or(0, |l| l.in_flight)
    }

    /// The latency average of backend `index` on this core, if it has a sample.
    pub fn latency_ewma(&self, index: usize) -> Option<Duration> {
        self.load
            .get(index)
            .filter(|l| l.ewma_ns > 0)
            .map(|l| Duration::from_nanos(l.ewma_ns))
    }

    /// Whether backend `index` is passively ejected on this core at `now`.
    pub fn is_ejected(&self, index: usize, now: Instant) -> bool {
        self.passive.get(index).is_some_and(|p| p.is_ejected(now))
    }

    /// Applies `change` to backend `index`'s passive state, keeping `with_deadline` in step.
    fn with_passive(&mut self, index: usize, change: impl FnOnce(&mut PassiveState)) {
        let Some(state) = self.passive.get_mut(index) else {
            return;
        };
        let before = state.has_deadline();
        change(state);
        match (before, state.has_deadline()) {
            (false, true) => self.with_deadline += 1,
            (true, false) => self.with_deadline -= 1,
            _ => {}
        }
    }

    fn resolve(&self, attempt: &Attempt) -> Option<usize> {
        let addr = attempt.addr?;
        if attempt.generation == self.generation {
            Some(attempt.index)
        } else {
            self.set.index_of(addr)
        }
    }

    fn refresh_tables(&mut self) {
        self.ketama = (self.algorithm == Algorithm::Ketama).then(|| self.set.ketama_ring());
        self.maglev = (self.algorithm == Algorithm::Maglev).then(|| self.set.maglev_table());
    }
}

/// What one pick reads: the snapshot and the per-core load, and the hash table in use.
struct View<'a> {
    algorithm: Algorithm,
    set: &'a BackendSet,
    load: &'a [Load],
    ketama: Option<&'a KetamaRing>,
    maglev: Option<&'a MaglevTable>,
}

impl View<'_> {
    /// Runs the algorithm with `usable` deciding which backends may be returned. Called with a
    /// constant `|_| true` when nothing is down, ejected or excluded, so that case compiles to
    /// loops without per-backend checks.
    #[inline(always)]
    fn choose(
        &self,
        key: Option<&[u8]>,
        cursors: &mut Cursors,
        usable: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let set = self.set;
        let n = set.len();
        match (self.algorithm, key) {
            (Algorithm::RoundRobin, _) | (Algorithm::Ketama | Algorithm::Maglev, None) => {
                cursors.round_robin.pick(n, usable)
            }
            (Algorithm::WeightedRoundRobin, _) => {
                wrr::pick(&mut cursors.wrr_current, set.weights(), usable)
            }
            (Algorithm::Random, _) => random::pick(
                &mut cursors.rng,
                set.weights(),
                set.cumulative(),
                set.uniform_weights(),
                usable,
            ),
            (Algorithm::LeastInflight, _) => {
                least_inflight::pick(&mut cursors.rng, self.load, set.weights(), usable)
            }
            (Algorithm::Ketama, Some(key)) => match self.ketama {
                Some(ring) => ring.lookup(hash64(key), &mut cursors.visited, usable),
                None => cursors.round_robin.pick(n, usable),
            },
            (Algorithm::Maglev, Some(key)) => match self.maglev {
                Some(table) => table.lookup(hash64(key), &mut cursors.visited, usable),
                None => cursors.round_robin.pick(n, usable),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NoExclude;

    /// The count that gates the fast path tracks every passive deadline through ejection, trial,
    /// recovery and snapshot replacement.
    #[test]
    fn deadline_count_follows_passive_state() {
        let a = |p| SocketAddr::from(([127, 0, 0, 1], p));
        let set = BackendSet::new(vec![Backend::new(a(1)), Backend::new(a(2))]).unwrap();
        let mut sel = Selector::with_seed(Arc::new(set), Algorithm::RoundRobin, 1);
        let t0 = Instant::now();
        let fail = Outcome::failure(FailureKind::Connect, Duration::ZERO);
        for _ in 0..3 {
            let at = sel.on_start(0);
            sel.on_finish(at, fail, t0);
        }
        assert_eq!(sel.with_deadline, 1);
        // The fast path is off: backend 0 is skipped.
        assert_eq!(sel.pick(None, t0, &NoExclude), Some(1));
        assert_eq!(sel.pick(None, t0, &NoExclude), Some(1));
        // Replaced snapshot, backend 0 survives at index 1: still ejected, still counted.
        let next = BackendSet::new(vec![Backend::new(a(2)), Backend::new(a(1))]).unwrap();
        sel.update(Arc::new(next));
        assert_eq!(sel.with_deadline, 1);
        assert!(sel.is_ejected(1, t0));
        // Trial after fail_timeout, success: the count drops back and the fast path returns.
        let t1 = t0 + Duration::from_secs(10);
        let trial = sel.on_start(1);
        sel.with_passive(1, |p| p.on_picked(t1, &PassiveHealth::default()));
        sel.on_finish(trial, Outcome::success(Duration::ZERO), t1);
        assert_eq!(sel.with_deadline, 0);
        let picks: Vec<_> = (0..4).map(|_| sel.pick(None, t1, &NoExclude)).collect();
        assert!(picks.contains(&Some(1)));
    }
}
