//! Peers as written in config: `"127.0.0.1:9001"`, `"[::1]:9001"` or `"localhost:9001"`, with a
//! weight and an optional name (`{ address = "127.0.0.1:9002", weight = 2 }`).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use crate::backend::Backend;
use crate::error::PeerSpecError;

/// The longest DNS name (RFC 1035 section 2.3.4).
const MAX_HOST_BYTES: usize = 253;
/// The longest DNS label (RFC 1035 section 2.3.4).
const MAX_LABEL_BYTES: usize = 63;

/// A peer address: an IP literal with a port, or a DNS name with a port to resolve.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PeerSpec {
    /// `"127.0.0.1:9001"`, `"[::1]:9001"`: used as is.
    Addr(SocketAddr),
    /// `"localhost:9001"`: resolved by [`DnsDiscovery`](crate::DnsDiscovery).
    Host {
        /// The DNS name.
        host: String,
        /// The port, 1..=65535.
        port: u16,
    },
}

impl PeerSpec {
    /// Whether this is an IP literal (needs no resolution).
    pub fn is_literal(&self) -> bool {
        matches!(self, Self::Addr(_))
    }

    /// The port.
    pub fn port(&self) -> u16 {
        match self {
            Self::Addr(a) => a.port(),
            Self::Host { port, .. } => *port,
        }
    }
}

impl FromStr for PeerSpec {
    type Err = PeerSpecError;

    /// Parses `ip:port`, `[ipv6]:port` or `name:port`; the port must be 1..=65535.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringway_balancer::PeerSpec;
    /// assert!("127.0.0.1:9001".parse::<PeerSpec>().unwrap().is_literal());
    /// assert!(!"localhost:9001".parse::<PeerSpec>().unwrap().is_literal());
    /// assert!("localhost".parse::<PeerSpec>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(PeerSpecError::Empty);
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            if addr.port() == 0 {
                return Err(PeerSpecError::InvalidPort);
            }
            return Ok(Self::Addr(addr));
        }
        let bare = s.trim_start_matches('[').trim_end_matches(']');
        if bare.parse::<IpAddr>().is_ok() {
            return Err(PeerSpecError::MissingPort);
        }
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(if is_dns_name(s) {
                PeerSpecError::MissingPort
            } else {
                PeerSpecError::InvalidHost
            });
        };
        if !is_dns_name(host) {
            return Err(PeerSpecError::InvalidHost);
        }
        let port: u16 = port.parse().map_err(|_| PeerSpecError::InvalidPort)?;
        if port == 0 || !port_is_plain_digits(s) {
            return Err(PeerSpecError::InvalidPort);
        }
        Ok(Self::Host {
            host: host.to_owned(),
            port,
        })
    }
}

/// `u16::from_str` accepts a leading `+`; config should not.
fn port_is_plain_digits(s: &str) -> bool {
    s.rsplit_once(':')
        .is_some_and(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
}

/// Letters, digits, `-` and `_` in dot-separated labels of 1..=63 bytes, no label starting or
/// ending with `-`, an optional trailing dot (RFC 1123 section 2.1, plus `_` as resolvers allow).
fn is_dns_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= MAX_HOST_BYTES
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= MAX_LABEL_BYTES
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl fmt::Display for PeerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Addr(a) => write!(f, "{a}"),
            Self::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// One configured peer: its address, weight and optional name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerConfig {
    /// Where the peer is.
    pub address: PeerSpec,
    /// Relative share of traffic. By default 1.
    pub weight: u32,
    /// A label for logs and metrics; by default none (a resolved name labels its addresses).
    pub name: Option<String>,
}

impl PeerConfig {
    /// A peer at `address` with weight 1 and no name.
    pub fn new(address: PeerSpec) -> Self {
        Self {
            address,
            weight: 1,
            name: None,
        }
    }

    /// This peer with `weight`.
    #[must_use]
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// This peer labelled `name`.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The backend this peer is, if its address is a literal.
    pub fn to_backend(&self) -> Option<Backend> {
        match &self.address {
            PeerSpec::Addr(addr) => Some(Backend {
                addr: *addr,
                weight: self.weight,
                name: self.name.clone(),
            }),
            PeerSpec::Host { .. } => None,
        }
    }
}

impl FromStr for PeerConfig {
    type Err = PeerSpecError;

    /// The string form of a peer: an address with weight 1.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Self::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_peer_strings() {
        let host = |h: &str, port| PeerSpec::Host {
            host: h.to_owned(),
            port,
        };
        let cases: &[(&str, Result<PeerSpec, PeerSpecError>)] = &[
            (
                "127.0.0.1:9001",
                Ok(PeerSpec::Addr(SocketAddr::from(([127, 0, 0, 1], 9001)))),
            ),
            (
                "[::1]:9001",
                Ok(PeerSpec::Addr("[::1]:9001".parse().unwrap())),
            ),
            ("localhost:9001", Ok(host("localhost", 9001))),
            ("api.internal.:443", Ok(host("api.internal.", 443))),
            ("_svc.example-1.com:80", Ok(host("_svc.example-1.com", 80))),
            ("", Err(PeerSpecError::Empty)),
            ("localhost", Err(PeerSpecError::MissingPort)),
            ("127.0.0.1", Err(PeerSpecError::MissingPort)),
            ("::1", Err(PeerSpecError::MissingPort)),
            ("[::1]", Err(PeerSpecError::MissingPort)),
            ("localhost:", Err(PeerSpecError::InvalidPort)),
            ("localhost:0", Err(PeerSpecError::InvalidPort)),
            ("127.0.0.1:0", Err(PeerSpecError::InvalidPort)),
            ("localhost:65536", Err(PeerSpecError::InvalidPort)),
            ("localhost:+80", Err(PeerSpecError::InvalidPort)),
            ("local host:80", Err(PeerSpecError::InvalidHost)),
            ("-bad.com:80", Err(PeerSpecError::InvalidHost)),
            ("a..b:80", Err(PeerSpecError::InvalidHost)),
            (":80", Err(PeerSpecError::InvalidHost)),
            ("http://x:80", Err(PeerSpecError::InvalidHost)),
        ];
        for (input, want) in cases {
            assert_eq!(&input.parse::<PeerSpec>(), want, "{input:?}");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["127.0.0.1:9001", "[::1]:9001", "localhost:9001"] {
            assert_eq!(s.parse::<PeerSpec>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn literal_peers_become_backends() {
        let p: PeerConfig = "127.0.0.1:9001".parse().unwrap();
        let b = p.with_weight(2).with_name("a").to_backend().unwrap();
        assert_eq!((b.weight, b.name.as_deref()), (2, Some("a")));
        assert_eq!(
            "localhost:1".parse::<PeerConfig>().unwrap().to_backend(),
            None
        );
    }
}
