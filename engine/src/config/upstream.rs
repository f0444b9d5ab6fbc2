//! `[[upstreams]]`: peers, the balancing algorithm and its hash key, active health checks
//! (`[upstreams.health]`), passive health, DNS re-resolution, the per-peer connection cap and
//! retries, validated into an [`UpstreamConf`] with every error pointing at its key and line.

use std::net::ToSocketAddrs;
use std::ops::Range;
use std::time::Duration;

use ringway_balancer::{
    discovery_for, Algorithm, Backend, BackendSet, BackendSetError, CheckKind, HashKey,
    HealthCheckConfig, HealthConfigError, PassiveHealth, PeerConfig, PeerSpec,
    DEFAULT_RESOLVE_INTERVAL, MAX_BACKENDS, MAX_FAIL_TIMEOUT, MAX_WEIGHT,
};
use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Validator};
use crate::upstream::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT, DEFAULT_WRITE_TIMEOUT};

/// One upstream after validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamConf {
    /// Name routes refer to.
    pub name: String,
    /// Its peers as written: IP literals, or `host:port` names re-resolved every
    /// `resolve_interval`.
    pub peers: Vec<PeerConfig>,
    /// The backends the peers resolved to when the configuration was loaded: the first snapshot
    /// the gateway serves from.
    pub backends: Vec<Backend>,
    /// Selection algorithm. By default `round_robin`.
    pub algorithm: Algorithm,
    /// What `ketama` and `maglev` hash (required by them, refused by the others).
    pub hash_key: Option<HashKey>,
    /// Active health checks (`[upstreams.health]`); none unless the table is present.
    pub health: Option<HealthCheckConfig>,
    /// Passive health: `max_fails` (by default 3; 0 disables) and `fail_timeout` (by default
    /// 10 s). Never applied to an upstream of a single literal peer (there is nothing to fail
    /// over to; nginx ignores `max_fails` there too).
    pub passive: PassiveHealth,
    /// How often `host:port` peers are re-resolved. By default 30 s.
    pub resolve_interval: Duration,
    /// Requests in flight to one peer on one core, at most; none by default.
    pub max_connections_per_peer: Option<u32>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Read timeout.
    pub read_timeout: Duration,
    /// Write timeout.
    pub write_timeout: Duration,
    /// Retries after the first attempt. By default `server.max_retries` (2).
    pub max_retries: usize,
}

impl UpstreamConf {
    /// Whether some peer is a name to re-resolve.
    pub fn has_names(&self) -> bool {
        self.peers.iter().any(|p| !p.address.is_literal())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    name: Spanned<String>,
    peers: Spanned<Vec<RawPeer>>,
    algorithm: Option<Spanned<String>>,
    hash_key: Option<Spanned<String>>,
    connect_timeout: Option<Spanned<String>>,
    read_timeout: Option<Spanned<String>>,
    write_timeout: Option<Spanned<String>>,
    max_retries: Option<usize>,
    max_fails: Option<u32>,
    fail_timeout: Option<Spanned<String>>,
    resolve_interval: Option<Spanned<String>>,
    max_connections_per_peer: Option<Spanned<u32>>,
    health: Option<Spanned<RawHealth>>,
}

impl RawUpstream {
    pub(super) fn name(&self) -> &Spanned<String> {
        &self.name
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawPeer {
    Addr(String),
    Table(RawPeerTable),
}

// Spans are lost inside an untagged enum (serde buffers its content), so peer errors point at
// the `peers` array and name the peer by index.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeerTable {
    address: String,
    weight: Option<u32>,
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    kind: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    expect_status: Option<Spanned<u16>>,
    interval: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    healthy_after: Option<Spanned<u32>>,
    unhealthy_after: Option<Spanned<u32>>,
}

impl Validator<'_> {
    /// Validates `upstreams[index]`; `default_retries` is `server.max_retries`.
    pub(super) fn upstream(
        &self,
        u: &RawUpstream,
        index: usize,
        default_retries: usize,
    ) -> Result<UpstreamConf, ConfigError> {
        let key = format!("upstreams[{index}]");
        let k = |field: &str| format!("{key}.{field}");
        let peers_span = u.peers.span();
        if u.peers.get_ref().is_empty() {
            return Err(self.err(
                Some(peers_span),
                &k("peers"),
                "an upstream needs at least one peer",
            ));
        }
        if u.peers.get_ref().len() > MAX_BACKENDS {
            return Err(self.err(
                Some(peers_span),
                &k("peers"),
                format!("more than {MAX_BACKENDS} peers"),
            ));
        }
        let mut peers: Vec<PeerConfig> = Vec::with_capacity(u.peers.get_ref().len());
        for (j, p) in u.peers.get_ref().iter().enumerate() {
            let pkey = format!("{key}.peers[{j}]");
            let peer = self.peer(p, peers_span.clone(), &pkey)?;
            if let PeerSpec::Addr(addr) = peer.address {
                if peers.iter().any(|q| q.address == PeerSpec::Addr(addr)) {
                    return Err(self.err(
                        Some(peers_span),
                        &pkey,
                        format!("peer {addr} is listed twice"),
                    ));
                }
            }
            peers.push(peer);
        }

        let algorithm = match &u.algorithm {
            None => Algorithm::default(),
            Some(a) => a.get_ref().parse::<Algorithm>().map_err(|e| {
                self.err(
                    Some(a.span()),
                    &k("algorithm"),
                    format!(
                        "unknown algorithm \"{}\"; expected one of {}",
                        e.name,
                        super::ALGORITHMS.join(", ")
                    ),
                )
            })?,
        };
        let hash_key = match &u.hash_key {
            None => None,
            Some(h) => Some(h.get_ref().parse::<HashKey>().map_err(|_| {
                self.err(
                    Some(h.span()),
                    &k("hash_key"),
                    format!(
                        "unknown hash key \"{}\"; expected client_ip, path, header:NAME or \
                         cookie:NAME",
                        h.get_ref()
                    ),
                )
            })?),
        };
        match (&hash_key, &u.hash_key, algorithm.uses_key()) {
            (None, _, true) => {
                let span = u.algorithm.as_ref().map(Spanned::span);
                return Err(self.err(
                    span,
                    &k("algorithm"),
                    format!(
                        "{} places requests by a key: set hash_key (client_ip, path, \
                         header:NAME or cookie:NAME)",
                        algorithm.name()
                    ),
                ));
            }
            (Some(_), Some(h), false) => {
                return Err(self.err(
                    Some(h.span()),
                    &k("hash_key"),
                    format!(
                        "hash_key applies to ketama and maglev, not {}",
                        algorithm.name()
                    ),
                ));
            }
            _ => {}
        }

        let mut passive = PassiveHealth::default();
        if let Some(n) = u.max_fails {
            passive.max_fails = n;
        }
        passive.fail_timeout =
            self.duration(&u.fail_timeout, &k("fail_timeout"), passive.fail_timeout)?;
        if passive.validate().is_err() {
            let span = u.fail_timeout.as_ref().map(Spanned::span);
            return Err(self.err(
                span,
                &k("fail_timeout"),
                format!(
                    "fail_timeout must be above zero and at most {}s",
                    MAX_FAIL_TIMEOUT.as_secs()
                ),
            ));
        }

        let named = peers.iter().any(|p| !p.address.is_literal());
        let resolve_interval = match &u.resolve_interval {
            Some(r) if !named => {
                return Err(self.err(
                    Some(r.span()),
                    &k("resolve_interval"),
                    "resolve_interval applies to peers given as host:port names, and every \
                     peer here is an IP address",
                ))
            }
            r => self.duration(r, &k("resolve_interval"), DEFAULT_RESOLVE_INTERVAL)?,
        };
        if resolve_interval.is_zero() {
            return Err(self.err(
                u.resolve_interval.as_ref().map(Spanned::span),
                &k("resolve_interval"),
                "resolve_interval must be above zero",
            ));
        }

        let max_connections_per_peer = match &u.max_connections_per_peer {
            None => None,
            Some(c) if *c.get_ref() == 0 => {
                return Err(self.err(
                    Some(c.span()),
                    &k("max_connections_per_peer"),
                    "max_connections_per_peer must be at least 1 (leave it out for no cap)",
                ))
            }
            Some(c) => Some(*c.get_ref()),
        };

        let health = match &u.health {
            None => None,
            Some(h) => Some(self.health(h, &k("health"))?),
        };

        let backends = self.resolve(&peers, resolve_interval, peers_span, &key)?;

        Ok(UpstreamConf {
            name: u.name.get_ref().clone(),
            peers,
            backends,
            algorithm,
            hash_key,
            health,
            passive,
            resolve_interval,
            max_connections_per_peer,
            connect_timeout: self.duration(
                &u.connect_timeout,
                &k("connect_timeout"),
                DEFAULT_CONNECT_TIMEOUT,
            )?,
            read_timeout: self.duration(
                &u.read_timeout,
                &k("read_timeout"),
                DEFAULT_READ_TIMEOUT,
            )?,
            write_timeout: self.duration(
                &u.write_timeout,
                &k("write_timeout"),
                DEFAULT_WRITE_TIMEOUT,
            )?,
            max_retries: u.max_retries.unwrap_or(default_retries),
        })
    }

    fn peer(&self, p: &RawPeer, span: Range<usize>, key: &str) -> Result<PeerConfig, ConfigError> {
        let (address, weight, name, addr_key) = match p {
            RawPeer::Addr(a) => (a.as_str(), 1, None, key.to_string()),
            RawPeer::Table(t) => (
                t.address.as_str(),
                t.weight.unwrap_or(1),
                t.name.clone(),
                format!("{key}.address"),
            ),
        };
        let spec: PeerSpec = address.parse().map_err(|e| {
            self.err(
                Some(span.clone()),
                &addr_key,
                format!("`{address}` is not a peer address: {e}"),
            )
        })?;
        if weight == 0 || weight > MAX_WEIGHT {
            return Err(self.err(
                Some(span),
                &format!("{key}.weight"),
                format!("weight must be 1..={MAX_WEIGHT}, found {weight}"),
            ));
        }
        let mut peer = PeerConfig::new(spec).with_weight(weight);
        peer.name = name;
        Ok(peer)
    }

    /// Resolves every name once (so a typo is reported now, at its peer) and returns the first
    /// backend list, exactly as the control plane's discovery will produce it.
    fn resolve(
        &self,
        peers: &[PeerConfig],
        resolve_interval: Duration,
        span: Range<usize>,
        key: &str,
    ) -> Result<Vec<Backend>, ConfigError> {
        for (j, p) in peers.iter().enumerate() {
            if let PeerSpec::Host { host, port } = &p.address {
                let found = (host.as_str(), *port)
                    .to_socket_addrs()
                    .map(|mut it| it.next().is_some());
                let problem = match found {
                    Ok(true) => continue,
                    Ok(false) => "resolves to no address".to_string(),
                    Err(e) => format!("does not resolve: {e}"),
                };
                return Err(self.err(
                    Some(span),
                    &format!("{key}.peers[{j}]"),
                    format!("`{}` {problem}", p.address),
                ));
            }
        }
        let backends = discovery_for(peers.to_vec(), resolve_interval)
            .discover()
            .map_err(|e| self.err(Some(span.clone()), &format!("{key}.peers"), e.to_string()))?;
        match BackendSet::new(backends.clone()) {
            Ok(_) => Ok(backends),
            Err(BackendSetError::DuplicateAddress(addr)) => Err(self.err(
                Some(span),
                &format!("{key}.peers"),
                format!("two peers resolve to {addr}"),
            )),
            Err(e) => Err(self.err(Some(span), &format!("{key}.peers"), e.to_string())),
        }
    }

    fn health(&self, h: &Spanned<RawHealth>, key: &str) -> Result<HealthCheckConfig, ConfigError> {
        let raw = h.get_ref();
        let k = |field: &str| format!("{key}.{field}");
        let mut c = HealthCheckConfig::default();
        if let Some(kind) = &raw.kind {
            c.kind = kind.get_ref().parse().map_err(|_| {
                self.err(
                    Some(kind.span()),
                    &k("kind"),
                    format!("expected \"tcp\" or \"http\", found \"{}\"", kind.get_ref()),
                )
            })?;
        }
        if c.kind == CheckKind::Tcp {
            for (field, span) in [
                ("path", raw.path.as_ref().map(Spanned::span)),
                (
                    "expect_status",
                    raw.expect_status.as_ref().map(Spanned::span),
                ),
            ] {
                if let Some(span) = span {
                    return Err(self.err(
                        Some(span),
                        &k(field),
                        format!("{field} applies to kind = \"http\" checks"),
                    ));
                }
            }
        }
        if let Some(p) = &raw.path {
            c.path = p.get_ref().clone();
        }
        c.expect_status = raw.expect_status.as_ref().map(|s| *s.get_ref());
        c.interval = self.duration(&raw.interval, &k("interval"), c.interval)?;
        c.timeout = self.duration(&raw.timeout, &k("timeout"), c.timeout)?;
        if let Some(n) = &raw.healthy_after {
            c.healthy_after = *n.get_ref();
        }
        if let Some(n) = &raw.unhealthy_after {
            c.unhealthy_after = *n.get_ref();
        }
        // Point each problem at the key that causes it, or at the table for a default.
        let span_of = |s: Option<Range<usize>>| Some(s.unwrap_or_else(|| h.span()));
        let problem = match c.validate() {
            Ok(()) => return Ok(c),
            Err(e) => e,
        };
        let (field, span, message) = match problem {
            HealthConfigError::ZeroInterval => (
                "interval",
                raw.interval.as_ref().map(Spanned::span),
                "interval must be above zero".to_string(),
            ),
            HealthConfigError::ZeroTimeout => (
                "timeout",
                raw.timeout.as_ref().map(Spanned::span),
                "timeout must be above zero".to_string(),
            ),
            HealthConfigError::TimeoutExceedsInterval => (
                "timeout",
                raw.timeout
                    .as_ref()
                    .or(raw.interval.as_ref())
                    .map(Spanned::span),
                format!(
                    "timeout ({}) is longer than interval ({})",
                    super::format_duration(c.timeout),
                    super::format_duration(c.interval)
                ),
            ),
            HealthConfigError::ZeroThreshold if c.healthy_after == 0 => (
                "healthy_after",
                raw.healthy_after.as_ref().map(Spanned::span),
                "healthy_after must be at least 1".to_string(),
            ),
            HealthConfigError::ZeroThreshold => (
                "unhealthy_after",
                raw.unhealthy_after.as_ref().map(Spanned::span),
                "unhealthy_after must be at least 1".to_string(),
            ),
            HealthConfigError::InvalidPath => (
                "path",
                raw.path.as_ref().map(Spanned::span),
                format!("a health check path starts with '/', found \"{}\"", c.path),
            ),
            HealthConfigError::InvalidStatus(s) => (
                "expect_status",
                raw.expect_status.as_ref().map(Spanned::span),
                format!("expect_status must be 100..=599, found {s}"),
            ),
            other => ("", None, other.to_string()),
        };
        let key = if field.is_empty() {
            key.to_string()
        } else {
            k(field)
        };
        Err(self.err(span_of(span), &key, message))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse, ConfigError};
    use super::*;

    /// A configuration whose one upstream gets `keys` after its peers and `tables` (such as
    /// `[upstreams.health]`) after that.
    fn text(peers: &str, keys: &str, tables: &str) -> String {
        format!(
            "[[listeners]]\naddress = \"127.0.0.1:8080\"\n\n[[upstreams]]\nname = \"app\"\npeers = [{peers}]\n{keys}\n{tables}\n[[routes]]\nupstream = \"app\"\n"
        )
    }

    fn one(peers: &str, keys: &str, tables: &str) -> UpstreamConf {
        parse(&text(peers, keys, tables), "t.toml")
            .unwrap_or_else(|e| panic!("{e}"))
            .upstreams
            .remove(0)
    }

    fn err(peers: &str, keys: &str, tables: &str) -> (ConfigError, String) {
        let t = text(peers, keys, tables);
        (parse(&t, "t.toml").expect_err("must fail"), t)
    }

    /// The 1-based number of the first line starting with `start`.
    fn line_of(text: &str, start: &str) -> usize {
        text.lines()
            .position(|l| l.starts_with(start))
            .map_or(0, |i| i + 1)
    }

    const TWO: &str = "\"127.0.0.1:9001\", { address = \"127.0.0.1:9002\", weight = 2 }";

    #[test]
    fn defaults() {
        let u = one(TWO, "", "");
        assert_eq!(u.algorithm, Algorithm::RoundRobin);
        assert_eq!(
            (&u.hash_key, &u.health, u.max_connections_per_peer),
            (&None, &None, None)
        );
        assert_eq!(u.passive, PassiveHealth::default());
        assert_eq!(u.resolve_interval, DEFAULT_RESOLVE_INTERVAL);
        assert_eq!(u.max_retries, 2);
        assert_eq!(
            u.backends,
            vec![
                Backend::new("127.0.0.1:9001".parse().unwrap()),
                Backend::new("127.0.0.1:9002".parse().unwrap()).with_weight(2),
            ]
        );
        assert!(!u.has_names());
    }

    #[test]
    fn every_key() {
        let u = one(
            TWO,
            "algorithm = \"maglev\"\nhash_key = \"cookie:sid\"\nmax_fails = 5\nfail_timeout = \"3s\"\nmax_connections_per_peer = 64\nmax_retries = 1\n",
            "[upstreams.health]\nkind = \"http\"\npath = \"/healthz\"\nexpect_status = 204\ninterval = \"1s\"\ntimeout = \"500ms\"\nhealthy_after = 1\nunhealthy_after = 4\n",
        );
        assert_eq!(u.algorithm, Algorithm::Maglev);
        assert_eq!(u.hash_key, Some(HashKey::Cookie("sid".into())));
        assert_eq!(
            u.passive,
            PassiveHealth {
                max_fails: 5,
                fail_timeout: Duration::from_secs(3)
            }
        );
        assert_eq!((u.max_connections_per_peer, u.max_retries), (Some(64), 1));
        assert_eq!(
            u.health,
            Some(HealthCheckConfig {
                kind: CheckKind::Http,
                path: "/healthz".into(),
                expect_status: Some(204),
                interval: Duration::from_secs(1),
                timeout: Duration::from_millis(500),
                healthy_after: 1,
                unhealthy_after: 4,
            })
        );
        // An empty table turns checks on with their defaults.
        let u = one(TWO, "", "[upstreams.health]\n");
        assert_eq!(u.health, Some(HealthCheckConfig::default()));
        // Inline form.
        let u = one(
            TWO,
            "health = { kind = \"tcp\", interval = \"2s\", timeout = \"1s\" }",
            "",
        );
        assert_eq!(u.health.map(|h| h.interval), Some(Duration::from_secs(2)));
    }

    #[test]
    fn every_algorithm_parses() {
        for a in Algorithm::ALL {
            let keys = if a.uses_key() {
                format!("algorithm = \"{}\"\nhash_key = \"client_ip\"", a.name())
            } else {
                format!("algorithm = \"{}\"", a.name())
            };
            assert_eq!(one(TWO, &keys, "").algorithm, a);
        }
        for (key, want) in [
            ("path", HashKey::Path),
            ("header:X-User", HashKey::Header("x-user".into())),
        ] {
            let keys = format!("algorithm = \"ketama\"\nhash_key = \"{key}\"");
            assert_eq!(one(TWO, &keys, "").hash_key, Some(want));
        }
    }

    #[test]
    fn bad_upstream_keys_point_at_their_key_and_line() {
        // (keys, tables, expected key, text on the expected line)
        let cases: &[(&str, &str, &str, &str)] = &[
            (
                "algorithm = \"fastest\"",
                "",
                "upstreams[0].algorithm",
                "algorithm",
            ),
            (
                "algorithm = \"ketama\"",
                "",
                "upstreams[0].algorithm",
                "algorithm",
            ),
            (
                "hash_key = \"client_ip\"",
                "",
                "upstreams[0].hash_key",
                "hash_key",
            ),
            (
                "algorithm = \"maglev\"\nhash_key = \"header:\"",
                "",
                "upstreams[0].hash_key",
                "hash_key",
            ),
            (
                "fail_timeout = \"0s\"",
                "",
                "upstreams[0].fail_timeout",
                "fail_timeout",
            ),
            (
                "fail_timeout = \"2d\"",
                "",
                "upstreams[0].fail_timeout",
                "fail_timeout",
            ),
            (
                "fail_timeout = \"48h\"",
                "",
                "upstreams[0].fail_timeout",
                "fail_timeout",
            ),
            (
                "max_connections_per_peer = 0",
                "",
                "upstreams[0].max_connections_per_peer",
                "max_connections_per_peer",
            ),
            (
                "resolve_interval = \"10s\"",
                "",
                "upstreams[0].resolve_interval",
                "resolve_interval",
            ),
            ("max_fails = -1", "", "upstreams[0].max_fails", "max_fails"),
            ("weight = 2", "", "upstreams[0].weight", "weight"),
        ];
        for (keys, tables, key, on_line) in cases {
            let (e, t) = err(TWO, keys, tables);
            assert_eq!(
                (e.key.as_str(), e.line),
                (*key, line_of(&t, on_line)),
                "{keys}: {e}"
            );
            assert!(e.column > 0, "{e}");
        }
    }

    #[test]
    fn bad_health_tables_point_at_file_line_and_key() {
        let h = "[upstreams.health]\n";
        // (table body, expected key, text on the expected line)
        let cases: &[(&str, &str, &str)] = &[
            ("kind = \"udp\"", "upstreams[0].health.kind", "kind"),
            (
                "intervall = \"1s\"",
                "upstreams[0].health.intervall",
                "intervall",
            ),
            (
                "interval = \"0s\"",
                "upstreams[0].health.interval",
                "interval",
            ),
            (
                "interval = \"soon\"",
                "upstreams[0].health.interval",
                "interval",
            ),
            (
                "timeout = \"0ms\"",
                "upstreams[0].health.timeout",
                "timeout",
            ),
            // The default interval is 5 s.
            (
                "timeout = \"10s\"",
                "upstreams[0].health.timeout",
                "timeout",
            ),
            (
                "interval = \"1s\"\ntimeout = \"2s\"",
                "upstreams[0].health.timeout",
                "timeout",
            ),
            (
                "healthy_after = 0",
                "upstreams[0].health.healthy_after",
                "healthy_after",
            ),
            (
                "unhealthy_after = 0",
                "upstreams[0].health.unhealthy_after",
                "unhealthy_after",
            ),
            (
                "healthy_after = -1",
                "upstreams[0].health.healthy_after",
                "healthy_after",
            ),
            ("path = \"/x\"", "upstreams[0].health.path", "path"),
            (
                "expect_status = 200",
                "upstreams[0].health.expect_status",
                "expect_status",
            ),
            (
                "kind = \"http\"\npath = \"health\"",
                "upstreams[0].health.path",
                "path",
            ),
            (
                "kind = \"http\"\nexpect_status = 42",
                "upstreams[0].health.expect_status",
                "expect_status",
            ),
            (
                "kind = \"http\"\nexpect_status = 70000",
                "upstreams[0].health.expect_status",
                "expect_status",
            ),
        ];
        for (body, key, on_line) in cases {
            let (e, t) = err(TWO, "", &format!("{h}{body}\n"));
            let line = line_of(&t, on_line);
            assert_eq!((e.key.as_str(), e.line), (*key, line), "{body}: {e}");
            let shown = e.to_string();
            assert!(
                shown.starts_with(&format!("t.toml:{line}:{}: {key}: ", e.column)),
                "{shown}"
            );
        }
        // A health table under the second upstream names it.
        let t = "[[listeners]]\naddress = \"127.0.0.1:1\"\n[[upstreams]]\nname = \"a\"\npeers = [\"127.0.0.1:2\"]\n[[upstreams]]\nname = \"b\"\npeers = [\"127.0.0.1:3\"]\n[upstreams.health]\nkind = \"icmp\"\n[[routes]]\nupstream = \"a\"\n";
        let e = parse(t, "t.toml").expect_err("must fail");
        assert_eq!(
            (e.key.as_str(), e.line),
            ("upstreams[1].health.kind", 10),
            "{e}"
        );
    }

    #[test]
    fn bad_peers_name_their_index() {
        let cases: &[(&str, &str)] = &[
            ("\"127.0.0.1:1\", \"127.0.0.1:1\"", "upstreams[0].peers[1]"),
            ("\"127.0.0.1:1\", \"nope\"", "upstreams[0].peers[1]"),
            ("\"127.0.0.1:0\"", "upstreams[0].peers[0]"),
            (
                "{ address = \"127.0.0.1:1\", weight = 257 }",
                "upstreams[0].peers[0].weight",
            ),
            ("{ address = \"x y:1\" }", "upstreams[0].peers[0].address"),
            // A peer table with an unknown key: only the array's position survives serde.
            (
                "{ address = \"127.0.0.1:1\", wieght = 2 }",
                "upstreams[0].peers",
            ),
            // `.invalid` never resolves (RFC 2606 section 2).
            (
                "\"127.0.0.1:1\", \"ringway-test.invalid:80\"",
                "upstreams[0].peers[1]",
            ),
        ];
        for (peers, key) in cases {
            let (e, t) = err(peers, "", "");
            assert_eq!(
                (e.key.as_str(), e.line),
                (*key, line_of(&t, "peers")),
                "{peers}: {e}"
            );
        }
    }

    #[test]
    fn named_peers_resolve_now_and_may_set_resolve_interval() {
        let u = one("\"localhost:9001\"", "resolve_interval = \"5s\"", "");
        assert!(u.has_names());
        assert_eq!(u.resolve_interval, Duration::from_secs(5));
        assert!(!u.backends.is_empty());
        assert!(u.backends.iter().all(|b| b.addr.port() == 9001));
    }

    #[test]
    fn the_engine_retry_bound_covers_every_upstream() {
        let t = "[server]\nmax_retries = 1\n[[listeners]]\naddress = \"127.0.0.1:1\"\n[[upstreams]]\nname = \"a\"\npeers = [\"127.0.0.1:2\"]\nmax_retries = 4\n[[upstreams]]\nname = \"b\"\npeers = [\"127.0.0.1:3\"]\n[[routes]]\nupstream = \"a\"\n";
        let c = parse(t, "t").unwrap();
        assert_eq!(c.server.max_retries, 4);
        assert_eq!(
            (c.upstreams[0].max_retries, c.upstreams[1].max_retries),
            (4, 1)
        );
    }
}
