//! Where backend lists come from: a small [`Discovery`] trait users can implement, static peers,
//! and `host:port` names re-resolved every `resolve_interval`.
//!
//! Discovery runs in the control plane, never on a request core: [`DnsDiscovery`] resolves through
//! the system resolver (`getaddrinfo` via `std::net::ToSocketAddrs`), which blocks. The control
//! plane turns each list into a [`BackendSet`](crate::BackendSet) and publishes it.

use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::backend::Backend;
use crate::error::DiscoveryError;
use crate::peer::{PeerConfig, PeerSpec};

/// How often [`DnsDiscovery`] re-resolves names by default.
pub const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(30);

/// A source of backend lists for one upstream.
pub trait Discovery {
    /// The current backends. May block (the control plane calls it off the request cores).
    ///
    /// # Errors
    ///
    /// A [`DiscoveryError`] when no list can be produced; the control plane then keeps the
    /// snapshot it has.
    fn discover(&mut self) -> Result<Vec<Backend>, DiscoveryError>;

    /// How long to wait before calling [`discover`](Self::discover) again; `None` (the default)
    /// when the list never changes.
    fn resolve_interval(&self) -> Option<Duration> {
        None
    }
}

/// A fixed list of backends.
#[derive(Debug, Clone, Default)]
pub struct StaticDiscovery {
    backends: Vec<Backend>,
}

impl StaticDiscovery {
    /// Always discovers `backends`.
    pub fn new(backends: Vec<Backend>) -> Self {
        Self { backends }
    }
}

impl Discovery for StaticDiscovery {
    fn discover(&mut self) -> Result<Vec<Backend>, DiscoveryError> {
        Ok(self.backends.clone())
    }
}

/// Which addresses of a resolved name become backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AddressFamily {
    /// IPv4 and IPv6. The default.
    #[default]
    Any,
    /// IPv4 only (`localhost` then means `127.0.0.1`, not also `::1`).
    Ipv4,
    /// IPv6 only.
    Ipv6,
}

impl AddressFamily {
    fn admits(self, addr: &SocketAddr) -> bool {
        match self {
            Self::Any => true,
            Self::Ipv4 => addr.is_ipv4(),
            Self::Ipv6 => addr.is_ipv6(),
        }
    }
}

/// Peers given as `host:port` names (IP literals may be mixed in), resolved on every
/// [`discover`](Discovery::discover).
///
/// Every address a name resolves to becomes a backend with the peer's weight, named after the peer
/// (or the host name). An address reached through two names is kept once. If a name fails to
/// resolve, or resolves to no address of the wanted family, its previous answer is reused (and a
/// warning logged), as nginx does for names it re-resolves; only a name that has never resolved
/// makes `discover` fail, so a typo is reported at start-up.
///
/// # Examples
///
/// ```
/// use ringway_balancer::{Discovery, DnsDiscovery, PeerConfig};
///
/// let peers = vec!["127.0.0.1:9001".parse::<PeerConfig>().unwrap()];
/// let mut dns = DnsDiscovery::new(peers);
/// assert_eq!(dns.discover().unwrap()[0].addr, "127.0.0.1:9001".parse().unwrap());
/// ```
#[derive(Debug, Clone)]
pub struct DnsDiscovery {
    peers: Vec<PeerConfig>,
    /// How often to re-resolve. By default [`DEFAULT_RESOLVE_INTERVAL`].
    pub resolve_interval: Duration,
    /// Which addresses to keep. By default both families.
    pub family: AddressFamily,
    /// The last good answer for each peer.
    last: Vec<Option<Vec<SocketAddr>>>,
}

impl DnsDiscovery {
    /// Resolves `peers` every [`DEFAULT_RESOLVE_INTERVAL`].
    pub fn new(peers: Vec<PeerConfig>) -> Self {
        let last = vec![None; peers.len()];
        Self {
            peers,
            resolve_interval: DEFAULT_RESOLVE_INTERVAL,
            family: AddressFamily::Any,
            last,
        }
    }

    /// This discovery re-resolving every `interval`.
    #[must_use]
    pub fn with_resolve_interval(mut self, interval: Duration) -> Self {
        self.resolve_interval = interval;
        self
    }

    /// This discovery keeping only `family` addresses.
    #[must_use]
    pub fn with_family(mut self, family: AddressFamily) -> Self {
        self.family = family;
        self
    }

    /// The configured peers.
    pub fn peers(&self) -> &[PeerConfig] {
        &self.peers
    }

    fn resolve(&self, peer: &PeerConfig) -> Result<Vec<SocketAddr>, DiscoveryError> {
        let mut addrs: Vec<SocketAddr> = match &peer.address {
            PeerSpec::Addr(addr) => vec![*addr],
            PeerSpec::Host { host, port } => (host.as_str(), *port)
                .to_socket_addrs()
                .map_err(|source| DiscoveryError::Resolve {
                    peer: peer.address.to_string(),
                    source,
                })?
                .collect(),
        };
        addrs.retain(|a| self.family.admits(a));
        if addrs.is_empty() {
            return Err(DiscoveryError::NoAddresses {
                peer: peer.address.to_string(),
            });
        }
        // The resolver's order may change between answers; a stable order keeps round robin's.
        addrs.sort_unstable();
        addrs.dedup();
        Ok(addrs)
    }
}

impl Discovery for DnsDiscovery {
    fn discover(&mut self) -> Result<Vec<Backend>, DiscoveryError> {
        let mut backends = Vec::with_capacity(self.peers.len());
        let mut seen = HashSet::new();
        for i in 0..self.peers.len() {
            let peer = &self.peers[i];
            let addrs = match (self.resolve(peer), &self.last[i]) {
                (Ok(addrs), _) => addrs,
                (Err(e), Some(previous)) => {
                    log::warn!("keeping the previous addresses of {}: {e}", peer.address);
                    previous.clone()
                }
                (Err(e), None) => return Err(e),
            };
            let name = match (&peer.name, &peer.address) {
                (Some(name), _) => Some(name.clone()),
                (None, PeerSpec::Host { host, .. }) => Some(host.clone()),
                (None, PeerSpec::Addr(_)) => None,
            };
            for &addr in &addrs {
                if seen.insert(addr) {
                    backends.push(Backend {
                        addr,
                        weight: peer.weight,
                        name: name.clone(),
                    });
                }
            }
            self.last[i] = Some(addrs);
        }
        Ok(backends)
    }

    fn resolve_interval(&self) -> Option<Duration> {
        Some(self.resolve_interval)
    }
}

/// The discovery for a configured peer list: [`StaticDiscovery`] when every peer is an IP
/// literal, else [`DnsDiscovery`] re-resolving every `resolve_interval`.
pub fn discovery_for(
    peers: Vec<PeerConfig>,
    resolve_interval: Duration,
) -> Box<dyn Discovery + Send> {
    let literal: Option<Vec<Backend>> = peers.iter().map(PeerConfig::to_backend).collect();
    match literal {
        Some(backends) => Box::new(StaticDiscovery::new(backends)),
        None => Box::new(DnsDiscovery::new(peers).with_resolve_interval(resolve_interval)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(s: &str) -> PeerConfig {
        s.parse().unwrap()
    }

    #[test]
    fn static_discovery_returns_its_list() {
        let b = Backend::new("127.0.0.1:1".parse().unwrap());
        let mut d = StaticDiscovery::new(vec![b.clone()]);
        assert_eq!(d.discover().unwrap(), vec![b]);
        assert_eq!(d.resolve_interval(), None);
    }

    #[test]
    fn resolves_localhost_and_names_backends_after_the_host() {
        let mut d = DnsDiscovery::new(vec![peer("localhost:9001").with_weight(3)])
            .with_family(AddressFamily::Ipv4)
            .with_resolve_interval(Duration::from_secs(5));
        let backends = d.discover().unwrap();
        assert!(backends
            .iter()
            .any(|b| b.addr == "127.0.0.1:9001".parse().unwrap()));
        assert!(backends
            .iter()
            .all(|b| b.addr.is_ipv4() && b.weight == 3 && b.name.as_deref() == Some("localhost")));
        assert_eq!(d.resolve_interval(), Some(Duration::from_secs(5)));
    }

    #[test]
    fn duplicate_addresses_are_kept_once() {
        let mut d = DnsDiscovery::new(vec![peer("127.0.0.1:9001"), peer("127.0.0.1:9001")]);
        assert_eq!(d.discover().unwrap().len(), 1);
    }

    #[test]
    fn unresolvable_name_fails_first_time_then_keeps_previous_answer() {
        // `.invalid` never resolves (RFC 2606 section 2).
        let mut d = DnsDiscovery::new(vec![peer("ringway-test.invalid:80")]);
        assert!(d.discover().is_err());
        let kept = vec!["10.0.0.1:80".parse().unwrap()];
        d.last[0] = Some(kept.clone());
        let backends = d.discover().unwrap();
        assert_eq!(backends.iter().map(|b| b.addr).collect::<Vec<_>>(), kept);
    }

    #[test]
    fn family_filter_can_leave_nothing() {
        let mut d = DnsDiscovery::new(vec![peer("127.0.0.1:80")]).with_family(AddressFamily::Ipv6);
        assert!(matches!(
            d.discover(),
            Err(DiscoveryError::NoAddresses { .. })
        ));
    }

    #[test]
    fn discovery_for_picks_static_for_literals() {
        let mut s = discovery_for(vec![peer("127.0.0.1:1")], Duration::from_secs(1));
        assert_eq!(s.resolve_interval(), None);
        assert_eq!(s.discover().unwrap().len(), 1);
        let d = discovery_for(vec![peer("localhost:1")], Duration::from_secs(7));
        assert_eq!(d.resolve_interval(), Some(Duration::from_secs(7)));
    }
}
