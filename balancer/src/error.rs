//! The balancer's error types, one enum per concern, each variant named for the offence.
//!
//! `Display` text is for people, not an API: match on the variants.

use std::fmt;
use std::io;
use std::net::SocketAddr;

/// Why a list of backends could not become a [`BackendSet`](crate::BackendSet).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendSetError {
    /// Two backends share an address; per-core state is keyed by address, so each must be unique.
    DuplicateAddress(SocketAddr),
    /// A backend has weight 0; take it out of the set instead.
    ZeroWeight(SocketAddr),
    /// A backend's weight is above [`MAX_WEIGHT`](crate::MAX_WEIGHT).
    WeightTooLarge {
        /// The offending backend.
        addr: SocketAddr,
        /// Its weight.
        weight: u32,
    },
    /// More backends than [`MAX_BACKENDS`](crate::MAX_BACKENDS).
    TooManyBackends(usize),
    /// A [`Health`](crate::Health) snapshot does not have one flag per backend.
    HealthLengthMismatch {
        /// Backends in the set.
        backends: usize,
        /// Flags in the snapshot.
        flags: usize,
    },
}

impl fmt::Display for BackendSetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DuplicateAddress(addr) => write!(f, "backend {addr} is listed twice"),
            Self::ZeroWeight(addr) => write!(f, "backend {addr} has weight 0"),
            Self::WeightTooLarge { addr, weight } => write!(
                f,
                "backend {addr} has weight {weight}, above the maximum {}",
                crate::MAX_WEIGHT
            ),
            Self::TooManyBackends(n) => {
                write!(f, "{n} backends, above the maximum {}", crate::MAX_BACKENDS)
            }
            Self::HealthLengthMismatch { backends, flags } => write!(
                f,
                "health snapshot has {flags} flags for {backends} backends"
            ),
        }
    }
}

impl std::error::Error for BackendSetError {}

/// An algorithm name that is not one of [`Algorithm`](crate::Algorithm)'s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownAlgorithm {
    /// The name as given.
    pub name: String,
}

impl fmt::Display for UnknownAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown balancing algorithm {:?} (expected one of round_robin, weighted_round_robin, \
             random, least_inflight, ketama, maglev)",
            self.name
        )
    }
}

impl std::error::Error for UnknownAlgorithm {}

/// A `hash_key` that is not `client_ip`, `path`, `header:NAME` or `cookie:NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidHashKey {
    /// The value as given.
    pub value: String,
}

impl fmt::Display for InvalidHashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid hash_key {:?} (expected client_ip, path, header:NAME or cookie:NAME)",
            self.value
        )
    }
}

impl std::error::Error for InvalidHashKey {}

/// Why a peer string such as `"127.0.0.1:9001"` or `"localhost:9001"` was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerSpecError {
    /// The string is empty.
    Empty,
    /// No `:port` after the host.
    MissingPort,
    /// The port is not a number in 1..=65535.
    InvalidPort,
    /// The host is neither an IP literal nor a valid DNS name.
    InvalidHost,
}

impl fmt::Display for PeerSpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "empty peer address",
            Self::MissingPort => "peer address has no port (expected host:port)",
            Self::InvalidPort => "peer port is not a number in 1..=65535",
            Self::InvalidHost => "peer host is neither an IP address nor a valid DNS name",
        })
    }
}

impl std::error::Error for PeerSpecError {}

/// Why discovery could not produce a backend list.
#[derive(Debug)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// Resolving a name failed and no earlier answer for it is known.
    Resolve {
        /// The `host:port` that failed.
        peer: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// A name resolved, but to no address of the requested family, and no earlier answer is known.
    NoAddresses {
        /// The `host:port` that resolved to nothing.
        peer: String,
    },
}

impl fmt::Display for DiscoveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Resolve { peer, source } => write!(f, "resolving {peer}: {source}"),
            Self::NoAddresses { peer } => write!(f, "{peer} resolved to no usable address"),
        }
    }
}

impl std::error::Error for DiscoveryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Resolve { source, .. } => Some(source),
            Self::NoAddresses { .. } => None,
        }
    }
}

/// Why a [`HealthCheckConfig`](crate::HealthCheckConfig) or
/// [`PassiveHealth`](crate::PassiveHealth) was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HealthConfigError {
    /// `interval` is zero.
    ZeroInterval,
    /// `timeout` is zero.
    ZeroTimeout,
    /// `timeout` is longer than `interval`, so probes of one backend would overlap.
    TimeoutExceedsInterval,
    /// `healthy_after` or `unhealthy_after` is zero.
    ZeroThreshold,
    /// An HTTP check's `path` does not start with `/`.
    InvalidPath,
    /// `expect_status` is outside 100..=599.
    InvalidStatus(u16),
    /// A check kind other than `tcp` or `http`.
    UnknownKind(String),
    /// `fail_timeout` is zero or above [`MAX_FAIL_TIMEOUT`](crate::MAX_FAIL_TIMEOUT).
    FailTimeoutOutOfRange,
}

impl fmt::Display for HealthConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroInterval => f.write_str("health check interval must be above zero"),
            Self::ZeroTimeout => f.write_str("health check timeout must be above zero"),
            Self::TimeoutExceedsInterval => {
                f.write_str("health check timeout must not exceed its interval")
            }
            Self::ZeroThreshold => {
                f.write_str("healthy_after and unhealthy_after must be at least 1")
            }
            Self::InvalidPath => f.write_str("HTTP health check path must start with '/'"),
            Self::InvalidStatus(s) => write!(f, "expect_status {s} is not an HTTP status"),
            Self::UnknownKind(k) => {
                write!(f, "unknown health check kind {k:?} (expected tcp or http)")
            }
            Self::FailTimeoutOutOfRange => write!(
                f,
                "fail_timeout must be above zero and at most {:?}",
                crate::MAX_FAIL_TIMEOUT
            ),
        }
    }
}

impl std::error::Error for HealthConfigError {}
