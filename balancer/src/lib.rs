//! Ringway's load balancing: backends, selection algorithms, and active and passive health, as
//! pure logic with no I/O types. The engine calls it in the `upstream_peer` phase of every request
//! attempt and from its control plane.
//!
//! The split follows the engine's shared-nothing design:
//!
//! - The **control plane** (one per process) discovers backends ([`Discovery`]), builds an
//!   immutable [`BackendSet`] with its hash tables ([`BackendSet::prepare`]), runs active health
//!   checks into an [`ActiveHealth`], and publishes `Arc<BackendSet>` snapshots to every core,
//!   replacing them wholesale.
//! - Each **request core** owns one [`Selector`] per upstream: cursors, smooth-WRR weights, a
//!   PRNG, in-flight counts, latency averages and passive ejections, all plain fields behind
//!   `&mut self`. Nothing on the pick path is atomic or locked, and no core writes memory another
//!   core reads.
//!
//! The algorithms ([`Algorithm`]): `round_robin`, `weighted_round_robin` (nginx's smooth WRR),
//! `random`, `least_inflight` (power of two choices), `ketama` and `maglev` (consistent hashing
//! of a request key).
//!
//! # Examples
//!
//! ```
//! use std::sync::Arc;
//! use std::time::{Duration, Instant};
//! use ringway_balancer::{Algorithm, Backend, BackendSet, NoExclude, Outcome, Selector};
//!
//! // Control plane: build and publish a snapshot.
//! let set = BackendSet::new(vec![
//!     Backend::new("127.0.0.1:9001".parse().unwrap()),
//!     Backend::new("127.0.0.1:9002".parse().unwrap()),
//! ])
//! .unwrap();
//! set.prepare(Algorithm::Maglev);
//! let set = Arc::new(set);
//!
//! // A request core: the same key always lands on the same backend.
//! let mut selector = Selector::new(Arc::clone(&set), Algorithm::Maglev);
//! let now = Instant::now();
//! let a = selector.pick(Some(b"198.51.100.7"), now, &NoExclude).unwrap();
//! let b = selector.pick(Some(b"198.51.100.7"), now, &NoExclude).unwrap();
//! assert_eq!(a, b);
//! let attempt = selector.on_start(a);
//! selector.on_finish(attempt, Outcome::success(Duration::from_millis(2)), now);
//! ```

mod algorithms;
mod backend;
mod discovery;
mod error;
mod exclude;
pub mod hash;
mod health;
mod key;
mod outcome;
mod peer;
mod rng;
mod selector;

pub use algorithms::Algorithm;
pub use backend::{Backend, BackendSet, MAX_BACKENDS, MAX_WEIGHT};
pub use discovery::{
    discovery_for, AddressFamily, Discovery, DnsDiscovery, StaticDiscovery,
    DEFAULT_RESOLVE_INTERVAL,
};
pub use error::{
    BackendSetError, DiscoveryError, HealthConfigError, PeerSpecError, UnknownAlgorithm,
};
pub use exclude::{Exclude, NoExclude, Tried};
pub use health::active::{ActiveHealth, CheckKind, HealthCheckConfig, HealthTracker, Transition};
pub use health::passive::{PassiveHealth, MAX_FAIL_TIMEOUT};
pub use health::Health;
pub use key::{cookie_value, HashKey, IpKey};
pub use outcome::{FailureKind, Outcome};
pub use peer::{PeerConfig, PeerSpec};
pub use selector::{Attempt, Selector};
