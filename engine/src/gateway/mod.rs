//! The built-in, config-driven proxy the `ringway` binary runs: routes (host, path prefix) to
//! upstreams, a peer per attempt, `X-Forwarded-For`. It is also an example of embedding: it
//! uses nothing the phase API does not offer to every application.

use std::cell::Cell;
use std::rc::Rc;

use crate::config::{Config, RouteConf, UpstreamConf};
use crate::http::{Headers, RequestHead};
use crate::proxy::{Error, ErrorKind, ProxyHttp, Result, Session, Side};
use crate::upstream::HttpPeer;

/// Per-request state of the gateway.
#[derive(Debug, Default)]
pub struct GatewayCtx {
    /// The upstream the route chose.
    pub upstream: Option<usize>,
    /// Peers already tried for this request (a retry picks another).
    pub tried: Vec<usize>,
}

struct Upstream {
    conf: UpstreamConf,
    /// Round-robin position on this core.
    next: Cell<usize>,
}

/// The gateway application, one per core.
pub struct Gateway {
    routes: Rc<[RouteConf]>,
    upstreams: Vec<Upstream>,
}

impl Gateway {
    /// Builds the gateway for one core from a validated configuration.
    pub fn new(config: &Config) -> Gateway {
        Gateway {
            routes: config.routes.clone().into(),
            upstreams: config
                .upstreams
                .iter()
                .map(|u| Upstream {
                    conf: u.clone(),
                    next: Cell::new(0),
                })
                .collect(),
        }
    }

    /// The upstream index for a request's host and path: a route naming the exact host beats
    /// a route without a host, then the longest matching prefix wins, then declaration order.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<usize> {
        let host = host.map(normalize_host);
        let mut best: Option<(bool, usize, usize)> = None;
        for (i, r) in self.routes.iter().enumerate() {
            let host_match = match (&r.host, &host) {
                (None, _) => false,
                (Some(rh), Some(h)) if rh == h => true,
                (Some(_), _) => continue,
            };
            if !path.starts_with(r.path_prefix.as_str()) {
                continue;
            }
            let key = (host_match, r.path_prefix.len(), i);
            let better = match best {
                None => true,
                Some((bh, bl, _)) => (host_match, r.path_prefix.len()) > (bh, bl),
            };
            if better {
                best = Some(key);
            }
        }
        best.map(|(_, _, i)| self.routes[i].upstream)
    }
}

/// Lowercases a Host value and strips its port.
fn normalize_host(h: &str) -> String {
    let h = h.trim();
    let without_port = if let Some(rest) = h.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        h.rsplit_once(':').map_or(h, |(host, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                host
            } else {
                h
            }
        })
    };
    without_port.to_ascii_lowercase()
}

/// The path of a request target, for routing: origin-form as is; absolute-form without its
/// scheme and authority.
fn target_path(req: &RequestHead) -> &str {
    let t = req.target.as_str();
    if t.starts_with('/') {
        return t;
    }
    match t.find("://") {
        Some(i) => t[i + 3..].find('/').map_or("/", |j| &t[i + 3 + j..]),
        None => t,
    }
}

impl ProxyHttp for Gateway {
    type Ctx = GatewayCtx;

    fn new_ctx(&self) -> GatewayCtx {
        GatewayCtx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut GatewayCtx) -> Result<bool> {
        let req = session.req_header();
        ctx.upstream = self.route(req.headers.get_str("host"), target_path(req));
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
        let up = &self.upstreams[idx];
        let peers = &up.conf.peers;
        // Round robin on this core, preferring peers this request has not tried yet; once all
        // were tried, any (the driver bounds the retries).
        let start = up.next.get();
        let order = (0..peers.len()).map(|k| (start + k) % peers.len());
        let pick = order
            .clone()
            .find(|i| !ctx.tried.contains(i))
            .or_else(|| order.clone().next());
        let Some(i) = pick else {
            return Err(
                Error::new(ErrorKind::NoPeer, Side::Internal).context("the upstream has no peers")
            );
        };
        up.next.set((i + 1) % peers.len());
        ctx.tried.push(i);
        let _ = session;
        let mut peer = HttpPeer::new(peers[i].addr);
        peer.connect_timeout = up.conf.connect_timeout;
        peer.read_timeout = up.conf.read_timeout;
        peer.write_timeout = up.conf.write_timeout;
        peer.backend_index = Some(i);
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
}

/// Appends the client's address to `X-Forwarded-For` (a client's own value is kept in front,
/// never trusted).
pub fn append_forwarded_for(headers: &mut Headers, ip: std::net::IpAddr) {
    let ip = ip.to_string();
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
            v.extend_from_slice(ip.as_bytes());
            Some(v)
        }
    };
    headers.insert("X-Forwarded-For", joined.unwrap_or_else(|| ip.into_bytes()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw(text: &str) -> Gateway {
        Gateway::new(&crate::config::parse(text, "t").unwrap())
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
    fn absolute_form_paths() {
        let mut r = RequestHead::new(crate::http::Method::GET, "http://a.example/x/y");
        assert_eq!(target_path(&r), "/x/y");
        r.target = "/z".into();
        assert_eq!(target_path(&r), "/z");
    }
}
