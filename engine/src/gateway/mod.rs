//! The built-in, config-driven proxy the `ringway` binary runs: routes (host, path prefix) to
//! upstreams, a balanced backend per attempt, `X-Forwarded-For`. It is also an example of
//! embedding: it uses nothing the phase API does not offer to every application.
//!
//! Two halves, as the engine's shared-nothing design wants them:
//!
//! - [`GatewayShared`], built once per process from the [`Config`]: the routes, each upstream's
//!   published backend snapshot, and the control plane thread ([`crate::health`]) that runs
//!   active health checks and re-resolves `host:port` peers.
//! - [`Gateway`], built once per core from it: one balancer [`Selector`] per upstream with this
//!   core's cursors, in-flight counts and passive health, in plain `RefCell`s.
//!
//! On the request path: `request_filter` routes; `upstream_peer` picks a backend the request has
//! not tried (waiting briefly when every candidate is at `max_connections_per_peer`) and opens an
//! attempt; `fail_to_connect`, `error_while_proxy` or `logging` close it with its outcome, which
//! feeds passive health and `least_inflight`.
//!
//! [`Selector`]: ringway_balancer::Selector

mod balance;
mod route;

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringway_balancer::{discovery_for, BackendSet, Discovery, FailureKind, Tried};

use crate::config::{Config, RouteConf, UpstreamConf};
use crate::health::{ControlPlane, Published, UpstreamPlan};
use crate::http::{Headers, RequestHead, ResponseHead};
use crate::proxy::{is_transport_error, Error, ErrorKind, ProxyHttp, Result, Retry, Session, Side};
use crate::upstream::HttpPeer;
use balance::{request_key, CoreUpstream, InFlight, NoBackend, RequestKey};

/// How long a request waits for a connection slot when every usable backend is at
/// `max_connections_per_peer`, before it is answered 503.
pub const MAX_CAP_WAIT: Duration = Duration::from_millis(100);

/// What every core's gateway shares: the routes, each upstream's published snapshot, and the
/// control plane that keeps them current. Built once per process; dropping the last reference
/// (when the server's cores have ended) stops the control plane.
///
/// # Examples
///
/// ```no_run
/// use ringway::config;
/// use ringway::gateway::{Gateway, GatewayShared};
/// use ringway::Server;
///
/// let cfg = config::load("ringway.toml".as_ref()).unwrap();
/// let shared = GatewayShared::start(&cfg).unwrap();
/// Server::new(cfg.server.clone(), move |_core| Gateway::new(&shared)).run().unwrap();
/// ```
pub struct GatewayShared {
    routes: Vec<RouteConf>,
    /// Whether any route names a host: when none does, a request's Host is never looked at
    /// for routing (a lookup and a UTF-8 check, about 260 instructions per request).
    routes_by_host: bool,
    upstreams: Vec<SharedUpstream>,
    _control: Option<ControlPlane>,
}

struct SharedUpstream {
    conf: UpstreamConf,
    published: Arc<Published>,
}

impl GatewayShared {
    /// Publishes every upstream's first snapshot (the backends resolved when the configuration
    /// was loaded) and starts the control plane thread if some upstream has active health
    /// checks or `host:port` peers to re-resolve.
    ///
    /// # Errors
    /// The control plane thread cannot be spawned.
    pub fn start(config: &Config) -> io::Result<Arc<GatewayShared>> {
        Self::start_with_discovery(config, |_| None)
    }

    /// Like [`start`](Self::start), with backend lists from `discovery` for the upstreams it
    /// returns one for (by default: DNS re-resolution for `host:port` peers, none for IP
    /// literals). A custom discovery is asked for its first list now; if that fails, the
    /// configured peers serve until its next answer.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_with_discovery(
        config: &Config,
        mut discovery: impl FnMut(&UpstreamConf) -> Option<Box<dyn Discovery + Send>>,
    ) -> io::Result<Arc<GatewayShared>> {
        let mut upstreams = Vec::with_capacity(config.upstreams.len());
        let mut plans = Vec::new();
        for conf in &config.upstreams {
            let custom = discovery(conf);
            let mut backends = conf.backends.clone();
            let discovery = match custom {
                Some(mut d) => {
                    match d.discover() {
                        Ok(b) => backends = b,
                        Err(e) => log::warn!("upstream {}: {e}", conf.name),
                    }
                    Some(d)
                }
                None if conf.has_names() => {
                    Some(discovery_for(conf.peers.clone(), conf.resolve_interval))
                }
                None => None,
            };
            let set = BackendSet::new(backends)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            set.prepare(conf.algorithm);
            let published = Arc::new(Published::new(Arc::new(set)));
            plans.push(UpstreamPlan {
                name: conf.name.clone(),
                algorithm: conf.algorithm,
                published: Arc::clone(&published),
                discovery,
                health: conf.health.clone(),
            });
            upstreams.push(SharedUpstream {
                conf: conf.clone(),
                published,
            });
        }
        let control = ControlPlane::start(plans)?;
        Ok(Arc::new(GatewayShared {
            routes: config.routes.clone(),
            routes_by_host: config.routes.iter().any(|r| r.host.is_some()),
            upstreams,
            _control: control,
        }))
    }

    /// The index of the upstream named `name`.
    pub fn upstream_index(&self, name: &str) -> Option<usize> {
        self.upstreams.iter().position(|u| u.conf.name == name)
    }

    /// The latest snapshot of upstream `name`: its backends and their active-health flags.
    pub fn backends(&self, name: &str) -> Option<Arc<BackendSet>> {
        let i = self.upstream_index(name)?;
        Some(self.upstreams[i].published.load().1)
    }
}

impl std::fmt::Debug for GatewayShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayShared")
            .field("routes", &self.routes.len())
            .field("upstreams", &self.upstreams.len())
            .field("control_plane", &self._control.is_some())
            .finish()
    }
}

/// Per-request state of the gateway.
#[derive(Default)]
pub struct GatewayCtx {
    /// The upstream the route chose.
    pub upstream: Option<usize>,
    /// Backends earlier attempts of this request used (a retry picks another). Filled only when
    /// a retry happens, so a first attempt allocates nothing.
    tried: Tried,
    /// The backend of the current (or last) attempt.
    current: Option<SocketAddr>,
    /// The attempt in progress, until its outcome is known.
    attempt: Option<InFlight>,
    /// When the current attempt's response head arrived.
    answered_at: Option<Instant>,
}

impl GatewayCtx {
    /// The backends earlier attempts of this request used (not the current attempt's).
    pub fn tried(&self) -> &Tried {
        &self.tried
    }

    /// The backend of the current (or last) attempt.
    pub fn current(&self) -> Option<SocketAddr> {
        self.current
    }
}

impl std::fmt::Debug for GatewayCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayCtx")
            .field("upstream", &self.upstream)
            .field("tried", &self.tried)
            .field("current", &self.current)
            .field("attempt", &self.attempt)
            .finish()
    }
}

/// The gateway application, one per core.
pub struct Gateway {
    shared: Arc<GatewayShared>,
    upstreams: Vec<Rc<CoreUpstream>>,
}

impl Gateway {
    /// Builds one core's gateway over the process-wide `shared` state.
    pub fn new(shared: &Arc<GatewayShared>) -> Gateway {
        Gateway {
            upstreams: shared
                .upstreams
                .iter()
                .map(|u| Rc::new(CoreUpstream::new(&u.conf, Arc::clone(&u.published))))
                .collect(),
            shared: Arc::clone(shared),
        }
    }

    /// The upstream index for a request's host and path: a route naming the exact host beats
    /// a route without a host, then the longest matching prefix wins, then declaration order.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<usize> {
        route::route(&self.shared.routes, host, path)
    }

    fn conf(&self, upstream: usize) -> Option<&UpstreamConf> {
        self.shared.upstreams.get(upstream).map(|u| &u.conf)
    }

    /// Refuses further retries once the upstream's own `max_retries` are spent (the engine's
    /// bound is the largest over all upstreams).
    fn within_budget(&self, session: &Session, ctx: &GatewayCtx, e: Box<Error>) -> Box<Error> {
        let budget = ctx
            .upstream
            .and_then(|u| self.conf(u))
            .map_or(0, |c| c.max_retries);
        if session.retries() >= budget {
            e.set_retry(Retry::No)
        } else {
            e
        }
    }
}

/// How an error that ended an attempt counts for the balancer.
fn failure_kind(e: &Error) -> FailureKind {
    match (e.side, e.kind) {
        (
            Side::Upstream,
            ErrorKind::ConnectTimeout | ErrorKind::ReadTimeout | ErrorKind::WriteTimeout,
        ) => FailureKind::Timeout,
        (Side::Upstream, ErrorKind::ConnectRefused | ErrorKind::ConnectError) => {
            FailureKind::Connect
        }
        _ => FailureKind::Other,
    }
}

impl ProxyHttp for Gateway {
    type Ctx = GatewayCtx;

    fn new_ctx(&self) -> GatewayCtx {
        GatewayCtx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut GatewayCtx) -> Result<bool> {
        let req = session.req_header();
        let host = if self.shared.routes_by_host {
            req.headers.get_str("host")
        } else {
            None
        };
        ctx.upstream = self.route(host, route::target_path(req));
        if ctx.upstream.is_none() {
            session.respond(404, Headers::new(), b"no route\n".to_vec());
            return Ok(true);
        }
        Ok(false)
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut GatewayCtx) -> Result<HttpPeer> {
        let idx = ctx
            .upstream
            .ok_or_else(|| Error::new(ErrorKind::NoPeer, Side::Internal))?;
        let (Some(up), Some(conf)) = (self.upstreams.get(idx), self.conf(idx)) else {
            return Err(Error::new(ErrorKind::NoPeer, Side::Internal));
        };
        // An attempt the driver never reported on (a phase failed in between) ends here.
        if let Some(previous) = ctx.attempt.take() {
            previous.finish(Some(FailureKind::Other), None, ringway_protocols::rt::now());
        }
        // This is a retry: the last attempt's backend is not to be picked again.
        if let Some(previous) = ctx.current.take() {
            ctx.tried.insert(previous);
        }
        if session.retries() > conf.max_retries {
            return Err(Error::new(ErrorKind::NoPeer, Side::Internal)
                .context("the upstream's max_retries are spent"));
        }
        let key = up.hash_key().and_then(|k| request_key(k, session));
        let key = key.as_ref().map(RequestKey::as_bytes);
        let first_try = ringway_protocols::rt::now();
        let mut now = first_try;
        let attempt = loop {
            match up.start_attempt(key, &ctx.tried, now) {
                Ok(a) => break a,
                Err(NoBackend::AtCap) if now < first_try + MAX_CAP_WAIT => {
                    let left = (first_try + MAX_CAP_WAIT).saturating_duration_since(now);
                    futures_lite::future::or(up.slot_freed(), ringway_protocols::rt::sleep(left))
                        .await;
                    now = ringway_protocols::rt::now();
                }
                Err(NoBackend::AtCap) => {
                    return Err(Error::status(503)
                        .context("every usable peer is at max_connections_per_peer"));
                }
                // A retry with nowhere left to go reports the failure that caused it.
                Err(NoBackend::NoneUsable) if session.retries() > 0 => {
                    return Err(Error::new(ErrorKind::NoPeer, Side::Internal)
                        .context("no other usable peer"));
                }
                Err(NoBackend::NoneUsable) => {
                    return Err(Error::status(503).context("no usable peer in the upstream"));
                }
            }
        };
        ctx.current = Some(attempt.addr());
        let mut peer = HttpPeer::new(attempt.addr());
        peer.connect_timeout = conf.connect_timeout;
        peer.read_timeout = conf.read_timeout;
        peer.write_timeout = conf.write_timeout;
        peer.backend_index = Some(attempt.index());
        ctx.attempt = Some(attempt);
        ctx.answered_at = None;
        Ok(peer)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHead,
        _ctx: &mut GatewayCtx,
    ) -> Result<()> {
        append_forwarded_for(&mut upstream_request.headers, session.client_addr().ip());
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _upstream_response: &mut ResponseHead,
        ctx: &mut GatewayCtx,
    ) -> Result<()> {
        ctx.answered_at = Some(ringway_protocols::rt::now());
        Ok(())
    }

    async fn logging(&self, _session: &mut Session, error: Option<&Error>, ctx: &mut GatewayCtx) {
        if let Some(attempt) = ctx.attempt.take() {
            attempt.finish(
                error.map(failure_kind),
                ctx.answered_at,
                ringway_protocols::rt::now(),
            );
        }
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut GatewayCtx,
        e: Box<Error>,
    ) -> Box<Error> {
        if let Some(attempt) = ctx.attempt.take() {
            let kind = match failure_kind(&e) {
                FailureKind::Timeout => FailureKind::Timeout,
                _ => FailureKind::Connect,
            };
            attempt.finish(Some(kind), None, ringway_protocols::rt::now());
        }
        self.within_budget(session, ctx, e)
    }

    fn error_while_proxy(
        &self,
        _peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut GatewayCtx,
        _client_reused: bool,
    ) -> Box<Error> {
        if let Some(attempt) = ctx.attempt.take() {
            attempt.finish(Some(failure_kind(&e)), None, ringway_protocols::rt::now());
        }
        // The default policy: an idempotent request may go to another peer after a reset or a
        // closed connection (a reused connection's failed first write is `IfReused` already).
        let e = if e.retry == Retry::No
            && session.req_header().method.is_idempotent()
            && is_transport_error(&e)
        {
            e.set_retry(Retry::Yes)
        } else {
            e
        };
        self.within_budget(session, ctx, e)
    }
}

/// Appends the client's address to `X-Forwarded-For` (a client's own value is kept in front,
/// never trusted).
pub fn append_forwarded_for(headers: &mut Headers, ip: std::net::IpAddr) {
    // The address is written on the stack: no allocation per request for it.
    let mut text = [0u8; 64];
    let len = write_ip(&mut text, ip);
    let ip = &text[..len];
    let joined = {
        let mut existing = headers.get_all("x-forwarded-for").peekable();
        if existing.peek().is_none() {
            None
        } else {
            let mut v: Vec<u8> = Vec::new();
            for part in existing {
                if !v.is_empty() {
                    v.extend_from_slice(b", ");
                }
                v.extend_from_slice(part);
            }
            v.extend_from_slice(b", ");
            v.extend_from_slice(ip);
            Some(v)
        }
    };
    match joined {
        Some(v) => headers.insert("X-Forwarded-For", v),
        // None to replace: no second search of the fields.
        None => headers.append("X-Forwarded-For", ip),
    }
}

/// Writes `ip` as text at the start of `out` and returns its length: IPv4 by hand (dotted
/// decimal, the common case, without the formatting machinery that cost about 600 instructions
/// per request), IPv6 through `Display` (at most 45 characters).
fn write_ip(out: &mut [u8; 64], ip: std::net::IpAddr) -> usize {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    out[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    out[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                out[n] = b'0' + octet % 10;
                n += 1;
            }
            n
        }
        std::net::IpAddr::V6(v6) => {
            let mut w = &mut out[..];
            // At most 45 characters: it always fits.
            let _ = std::io::Write::write_fmt(&mut w, format_args!("{v6}"));
            64 - w.len()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        let mut buf = [0u8; 64];
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "192.168.100.9",
            "1.10.100.199",
            "::1",
            "2001:db8::ff00:42:8329",
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
            "::ffff:10.0.0.1",
        ] {
            let addr: std::net::IpAddr = ip.parse().unwrap();
            let n = write_ip(&mut buf, addr);
            assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), addr.to_string());
        }
    }

    fn gw(text: &str) -> Gateway {
        let cfg = crate::config::parse(text, "t").unwrap();
        Gateway::new(&GatewayShared::start(&cfg).unwrap())
    }

    #[test]
    fn routing_precedence() {
        let g = gw(r#"
[[listeners]]
address = "127.0.0.1:1"
[[upstreams]]
name = "a"
peers = ["127.0.0.1:2"]
[[upstreams]]
name = "b"
peers = ["127.0.0.1:3"]
[[upstreams]]
name = "c"
peers = ["127.0.0.1:4"]
[[upstreams]]
name = "d"
peers = ["127.0.0.1:5"]
[[routes]]
path_prefix = "/"
upstream = "a"
[[routes]]
path_prefix = "/api"
upstream = "b"
[[routes]]
host = "Example.com"
path_prefix = "/"
upstream = "c"
[[routes]]
path_prefix = "/api"
upstream = "d"
"#);
        let cases: &[(Option<&str>, &str, usize)] = &[
            (None, "/", 0),
            (None, "/api/x", 1), // longest prefix; declaration order breaks the tie with d
            (Some("other.org"), "/api", 1),
            (Some("example.com"), "/api/x", 2), // an exact host beats host-less routes
            (Some("EXAMPLE.com:8080"), "/", 2),
        ];
        for (host, path, want) in cases {
            assert_eq!(g.route(*host, path), Some(*want), "{host:?} {path}");
        }
    }

    #[test]
    fn no_match_without_a_catch_all() {
        let g = gw("[[listeners]]\naddress = \"127.0.0.1:1\"\n[[upstreams]]\nname = \"a\"\npeers = [\"127.0.0.1:2\"]\n[[routes]]\npath_prefix = \"/only\"\nupstream = \"a\"\n");
        assert_eq!(g.route(None, "/other"), None);
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = Headers::new();
        append_forwarded_for(&mut h, "10.0.0.1".parse().unwrap());
        assert_eq!(h.get("x-forwarded-for"), Some(&b"10.0.0.1"[..]));
        append_forwarded_for(&mut h, "127.0.0.1".parse().unwrap());
        assert_eq!(h.get("x-forwarded-for"), Some(&b"10.0.0.1, 127.0.0.1"[..]));
    }

    #[test]
    fn static_upstreams_without_health_checks_start_no_control_plane() {
        let cfg = crate::config::parse("[[listeners]]\naddress = \"127.0.0.1:1\"\n[[upstreams]]\nname = \"a\"\npeers = [\"127.0.0.1:2\"]\n[[routes]]\nupstream = \"a\"\n", "t").unwrap();
        let shared = GatewayShared::start(&cfg).unwrap();
        assert!(shared._control.is_none());
        assert_eq!(shared.backends("a").unwrap().len(), 1);
        assert!(shared.backends("b").is_none());
    }

    #[test]
    fn failures_are_classified_for_the_balancer() {
        let cases = [
            (
                Error::upstream(ErrorKind::ConnectRefused),
                FailureKind::Connect,
            ),
            (
                Error::upstream(ErrorKind::ConnectTimeout),
                FailureKind::Timeout,
            ),
            (
                Error::upstream(ErrorKind::ReadTimeout),
                FailureKind::Timeout,
            ),
            (Error::upstream(ErrorKind::ReadError), FailureKind::Other),
            (
                Error::downstream(ErrorKind::ReadTimeout),
                FailureKind::Other,
            ),
            (Error::status(503), FailureKind::Other),
        ];
        for (e, want) in cases {
            assert_eq!(failure_kind(&e), want, "{e}");
        }
    }
}
