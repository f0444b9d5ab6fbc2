//! The per-core upstream connection pool: keyed by peer address, LIFO, bounded per peer, idle
//! connections expire after a timeout and are checked for liveness at checkout.
//!
//! One pool per core, touched only by that core's tasks: no locks. A connection enters the pool
//! only after an exchange that ended cleanly on both sides (the driver decides).
//!
//! Liveness is checked at checkout ([`Stream::is_idle_and_open`]): on the io_uring backend from
//! the state of the watch put on the connection at check-in ([`Stream::watch_idle`]), with no
//! system call. The sweep also closes idle connections that the peer closed.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringway_protocols::l4::Stream;

use crate::runtime::{LocalNotify, Notified};

/// Default idle connections kept per peer per core.
pub const DEFAULT_MAX_IDLE_PER_PEER: usize = 32;
/// Connections idle for less than this are checked with
/// [`Stream::is_recently_idle_and_open`]: origins that close idle connections do so after
/// seconds of idleness, and under load a connection waits for microseconds.
const RECENTLY_IDLE: Duration = Duration::from_secs(1);

/// Default time an idle upstream connection is kept.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

struct Idle<S> {
    stream: S,
    since: Instant,
}

/// Counters of one core's pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Checkouts that found a live idle connection.
    pub reused: u64,
    /// Idle connections discarded because the peer closed them or sent bytes (found at checkout
    /// or by the sweep).
    pub dead: u64,
    /// Idle connections dropped for age or for the per-peer bound.
    pub evicted: u64,
    /// Connections now idle in the pool.
    pub idle: usize,
}

/// Hashes the pool's keys (peer addresses) for a lookup at every checkout and check-in.
///
/// SipHash, the standard map's, cost about 225 instructions per lookup of a `SocketAddr`; this
/// mixes the key's words with multiplications and ends with murmur3's finalizer, a few tens.
/// The seed is drawn per pool from the standard `RandomState`, so that an application that
/// picks peers from request data cannot aim keys at one bucket by knowing the function alone.
#[derive(Clone)]
struct PeerHashState {
    seed: u64,
}

impl PeerHashState {
    fn new() -> Self {
        PeerHashState {
            seed: std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64),
        }
    }
}

impl BuildHasher for PeerHashState {
    type Hasher = PeerHasher;

    fn build_hasher(&self) -> PeerHasher {
        PeerHasher { h: self.seed }
    }
}

/// See [`PeerHashState`].
struct PeerHasher {
    h: u64,
}

impl PeerHasher {
    fn mix(&mut self, word: u64) {
        self.h = (self.h ^ word)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(31);
    }
}

impl Hasher for PeerHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.mix(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.mix(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.mix(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }

    fn finish(&self) -> u64 {
        // murmur3's fmix64: every input bit reaches the high bits the map's control bytes use.
        let mut h = self.h;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// A per-core pool of idle upstream connections.
pub struct Pool<S> {
    idle: RefCell<HashMap<SocketAddr, Vec<Idle<S>>, PeerHashState>>,
    max_idle_per_peer: usize,
    idle_timeout: Duration,
    /// Notified when a check-in ends a peer's list being empty (see [`Pool::filled`]).
    filled: LocalNotify,
    reused: Cell<u64>,
    dead: Cell<u64>,
    evicted: Cell<u64>,
}

impl<S: Stream> Pool<S> {
    /// An empty pool keeping at most `max_idle_per_peer` connections per peer for
    /// `idle_timeout` each.
    pub fn new(max_idle_per_peer: usize, idle_timeout: Duration) -> Pool<S> {
        Pool {
            idle: RefCell::new(HashMap::with_hasher(PeerHashState::new())),
            max_idle_per_peer,
            idle_timeout,
            filled: LocalNotify::new(),
            reused: Cell::new(0),
            dead: Cell::new(0),
            evicted: Cell::new(0),
        }
    }

    /// Takes the most recently used live connection to `addr`, discarding expired or dead ones
    /// on the way.
    pub fn checkout(&self, addr: SocketAddr) -> Option<S> {
        let now = ringway_protocols::rt::now();
        let mut map = self.idle.borrow_mut();
        let list = map.get_mut(&addr)?;
        while let Some(idle) = list.pop() {
            if self.usable(&idle, now, true) {
                self.reused.set(self.reused.get() + 1);
                return Some(idle.stream);
            }
        }
        None
    }

    /// Whether an idle connection can carry another exchange at `now`; one that cannot is
    /// counted as evicted (idle too long) or dead (the peer closed it or sent bytes). With
    /// `quick`, a connection idle under [`RECENTLY_IDLE`] is checked with
    /// [`Stream::is_recently_idle_and_open`].
    fn usable(&self, idle: &Idle<S>, now: Instant, quick: bool) -> bool {
        let idle_for = now.duration_since(idle.since);
        if idle_for >= self.idle_timeout {
            self.evicted.set(self.evicted.get() + 1);
            return false;
        }
        let open = if quick && idle_for < RECENTLY_IDLE {
            idle.stream.is_recently_idle_and_open()
        } else {
            idle.stream.is_idle_and_open()
        };
        if !open {
            self.dead.set(self.dead.get() + 1);
        }
        open
    }

    /// Returns a connection whose exchange ended cleanly. Over the per-peer bound the oldest
    /// idle connection is closed.
    pub fn checkin(&self, addr: SocketAddr, mut stream: S) {
        if self.max_idle_per_peer == 0 {
            return;
        }
        stream.watch_idle();
        let mut map = self.idle.borrow_mut();
        let list = map.entry(addr).or_default();
        if list.is_empty() {
            self.filled.notify();
        } else if list.len() >= self.max_idle_per_peer {
            list.remove(0);
            self.evicted.set(self.evicted.get() + 1);
        }
        list.push(Idle {
            stream,
            since: ringway_protocols::rt::now(),
        });
    }

    /// Closes idle connections older than the idle timeout, and those the peer closed (or sent
    /// bytes on).
    pub fn sweep(&self, now: Instant) {
        self.idle.borrow_mut().retain(|_, list| {
            list.retain(|i| self.usable(i, now, false));
            !list.is_empty()
        });
    }

    /// Whether no connection is idle in the pool.
    pub fn is_empty(&self) -> bool {
        self.idle.borrow().values().all(Vec::is_empty)
    }

    /// Resolves after a connection is checked in to a peer that had none idle: from an empty
    /// pool, the first (the core's sweep waits for it rather than look on a timer).
    pub fn filled(&self) -> Notified<'_> {
        self.filled.notified()
    }

    /// Closes every idle connection (shutdown).
    pub fn clear(&self) {
        self.idle.borrow_mut().clear();
    }

    /// The pool's counters.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            reused: self.reused.get(),
            dead: self.dead.get(),
            evicted: self.evicted.get(),
            idle: self.idle.borrow().values().map(Vec::len).sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn peer_hashes_differ_and_spread_over_the_low_and_high_bits() {
        let state = PeerHashState::new();
        let addrs: Vec<SocketAddr> = (0..4096u32)
            .map(|i| {
                let ip = std::net::Ipv4Addr::new(10, 0, (i / 64) as u8, (i % 64) as u8);
                SocketAddr::new(ip.into(), 8000 + (i % 7) as u16)
            })
            .chain((0..1024u16).map(|p| SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), p)))
            .collect();
        let hashes: Vec<u64> = addrs.iter().map(|a| state.hash_one(a)).collect();
        assert_eq!(hashes.iter().collect::<HashSet<_>>().len(), addrs.len());
        // The map picks buckets with the low bits and tags them with the top 7: both vary.
        let low: HashSet<u64> = hashes.iter().map(|h| h & 1023).collect();
        let top: HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert!(low.len() > 900, "{} of 1024 low values", low.len());
        assert_eq!(top.len(), 128);
        // Another pool, another seed.
        assert_ne!(PeerHashState::new().hash_one(addrs[0]), hashes[0]);
    }
}
