//! TOML configuration: parsed strictly (unknown keys are errors), validated, and reported with
//! file, line, column and key. Produces the engine's [`ServerConf`] and the gateway's routes and
//! upstreams.

mod duration;
mod locate;
mod upstream;

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

pub use duration::{format_duration, parse_duration};
pub use upstream::UpstreamConf;

use crate::proxy::panic::PanicHookMode;
use crate::proxy::HttpSettings;
use crate::runtime::CpuList;
use crate::server::{IoBackend, ListenerConf, ServerConf, DEFAULT_MAX_CONNECTIONS};

/// The selection algorithms an upstream may name.
pub const ALGORITHMS: &[&str] = &[
    "round_robin",
    "weighted_round_robin",
    "random",
    "least_inflight",
    "ketama",
    "maglev",
];

/// A configuration error, located in its file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or `<string>`).
    pub file: String,
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// 1-based column, 0 when unknown.
    pub column: usize,
    /// The dotted key, when known (`upstreams[0].peers[1]`).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// One route after validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteConf {
    /// Exact host (lowercase, no port), or any host.
    pub host: Option<String>,
    /// Path prefix.
    pub path_prefix: String,
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Engine settings and listeners.
    pub server: ServerConf,
    /// Upstreams, in declaration order.
    pub upstreams: Vec<UpstreamConf>,
    /// Routes, in declaration order.
    pub routes: Vec<RouteConf>,
}

// ---- the raw, serde-facing shape ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    listeners: Vec<RawListener>,
    #[serde(default)]
    upstreams: Vec<upstream::RawUpstream>,
    #[serde(default)]
    routes: Vec<RawRoute>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    cpus: Option<Spanned<RawCpus>>,
    grace_period: Option<Spanned<String>>,
    max_retries: Option<usize>,
    pool_max_idle_per_peer: Option<usize>,
    pool_idle_timeout: Option<Spanned<String>>,
    panic_hook: Option<Spanned<String>>,
    admin: Option<Spanned<String>>,
    io: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawCpus {
    Word(String),
    List(Vec<usize>),
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    header_timeout: Option<Spanned<String>>,
    body_timeout: Option<Spanned<String>>,
    send_timeout: Option<Spanned<String>>,
    keepalive_timeout: Option<Spanned<String>>,
    tunnel_idle_timeout: Option<Spanned<String>>,
    max_headers: Option<usize>,
    max_head_bytes: Option<usize>,
    max_request_line_bytes: Option<usize>,
    max_body_bytes: Option<u64>,
    allow_connect: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    address: Spanned<String>,
    backlog: Option<i32>,
    max_connections: Option<usize>,
    http: Option<RawHttp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    host: Option<String>,
    path_prefix: Option<Spanned<String>>,
    upstream: Spanned<String>,
}

/// Reads and validates a configuration file.
///
/// # Errors
/// The file cannot be read, is not valid TOML, has unknown keys, or fails validation.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        line: 0,
        column: 0,
        key: String::new(),
        message: e.to_string(),
    })?;
    parse(&text, &file)
}

/// Parses and validates configuration text; `file` names it in errors.
///
/// # Errors
/// As [`load`].
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    let v = Validator { text, file };
    let raw: Raw = toml::from_str(text).map_err(|e| {
        let mut msg = e.message().trim().to_string();
        if msg.contains("untagged enum RawPeer") {
            msg = "a peer is an address string or a table with `address` and optional `weight` \
                   and `name` (no other keys)"
                .to_string();
        }
        let key = e
            .span()
            .map(|s| locate::key_at(text, s.start))
            .unwrap_or_default();
        v.err(e.span(), &key, msg)
    })?;
    v.validate(raw)
}

struct Validator<'a> {
    text: &'a str,
    file: &'a str,
}

impl Validator<'_> {
    fn err(
        &self,
        span: Option<Range<usize>>,
        key: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = span.map_or((0, 0), |s| {
            let before = &self.text[..s.start.min(self.text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            (line, column)
        });
        ConfigError {
            file: self.file.to_string(),
            line,
            column,
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn duration(
        &self,
        s: &Option<Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match s {
            None => Ok(default),
            Some(sp) => parse_duration(sp.get_ref()).map_err(|m| self.err(Some(sp.span()), key, m)),
        }
    }

    fn http(
        &self,
        raw: &RawHttp,
        base: &HttpSettings,
        key: &str,
    ) -> Result<HttpSettings, ConfigError> {
        let mut h = base.clone();
        h.header_timeout = self.duration(
            &raw.header_timeout,
            &format!("{key}.header_timeout"),
            h.header_timeout,
        )?;
        h.body_timeout = self.duration(
            &raw.body_timeout,
            &format!("{key}.body_timeout"),
            h.body_timeout,
        )?;
        h.send_timeout = self.duration(
            &raw.send_timeout,
            &format!("{key}.send_timeout"),
            h.send_timeout,
        )?;
        h.keepalive_timeout = self.duration(
            &raw.keepalive_timeout,
            &format!("{key}.keepalive_timeout"),
            h.keepalive_timeout,
        )?;
        h.tunnel_idle_timeout = self.duration(
            &raw.tunnel_idle_timeout,
            &format!("{key}.tunnel_idle_timeout"),
            h.tunnel_idle_timeout,
        )?;
        if let Some(n) = raw.max_headers {
            h.limits.max_headers = n;
        }
        if let Some(n) = raw.max_head_bytes {
            h.limits.max_head_bytes = n;
        }
        if let Some(n) = raw.max_request_line_bytes {
            h.limits.max_request_line_bytes = n;
        }
        if raw.max_body_bytes.is_some() {
            h.max_body_bytes = raw.max_body_bytes;
        }
        if let Some(b) = raw.allow_connect {
            h.allow_connect = b;
        }
        Ok(h)
    }

    fn addr(&self, s: &Spanned<String>, key: &str) -> Result<SocketAddr, ConfigError> {
        self.addr_at(s.get_ref(), s.span(), key)
    }

    fn addr_at(
        &self,
        text: &str,
        span: Range<usize>,
        key: &str,
    ) -> Result<SocketAddr, ConfigError> {
        if let Ok(a) = text.parse::<SocketAddr>() {
            return Ok(a);
        }
        let mut it = text.to_socket_addrs().map_err(|e| {
            self.err(
                Some(span.clone()),
                key,
                format!("`{text}` is not an address: {e}"),
            )
        })?;
        it.next()
            .ok_or_else(|| self.err(Some(span), key, format!("`{text}` resolves to no address")))
    }

    fn validate(&self, raw: Raw) -> Result<Config, ConfigError> {
        let mut server = ServerConf::default();
        if let Some(c) = &raw.server.cpus {
            server.cpus = match c.get_ref() {
                RawCpus::Word(w) if w == "all" => CpuList::All,
                RawCpus::Word(w) => {
                    return Err(self.err(
                        Some(c.span()),
                        "server.cpus",
                        format!("expected \"all\" or a list of cpu numbers, found \"{w}\""),
                    ))
                }
                RawCpus::List(v) if v.is_empty() => {
                    return Err(self.err(Some(c.span()), "server.cpus", "the cpu list is empty"))
                }
                RawCpus::List(v) => {
                    let mut sorted = v.clone();
                    sorted.sort_unstable();
                    sorted.dedup();
                    if sorted.len() != v.len() {
                        return Err(self.err(
                            Some(c.span()),
                            "server.cpus",
                            "a cpu is listed twice",
                        ));
                    }
                    CpuList::List(v.clone())
                }
            };
        }
        server.grace_period = self.duration(
            &raw.server.grace_period,
            "server.grace_period",
            server.grace_period,
        )?;
        if let Some(n) = raw.server.max_retries {
            server.max_retries = n;
        }
        if let Some(n) = raw.server.pool_max_idle_per_peer {
            server.pool_max_idle_per_peer = n;
        }
        server.pool_idle_timeout = self.duration(
            &raw.server.pool_idle_timeout,
            "server.pool_idle_timeout",
            server.pool_idle_timeout,
        )?;
        if let Some(p) = &raw.server.panic_hook {
            server.panic_hook = match p.get_ref().as_str() {
                "quiet" => PanicHookMode::Quiet,
                "chain" => PanicHookMode::Chain,
                other => {
                    return Err(self.err(
                        Some(p.span()),
                        "server.panic_hook",
                        format!("expected \"quiet\" or \"chain\", found \"{other}\""),
                    ))
                }
            };
        }
        if let Some(io) = &raw.server.io {
            server.io = match io.get_ref().as_str() {
                "auto" => IoBackend::Auto,
                "uring" => IoBackend::Uring,
                "glommio" => IoBackend::Glommio,
                other => {
                    return Err(self.err(
                        Some(io.span()),
                        "server.io",
                        format!("expected \"auto\", \"uring\" or \"glommio\", found \"{other}\""),
                    ))
                }
            };
        }
        if let Some(a) = &raw.server.admin {
            server.admin = Some(self.addr(a, "server.admin")?);
        }
        let base_http = self.http(&raw.http, &HttpSettings::default(), "http")?;
        if raw.listeners.is_empty() {
            return Err(self.err(
                None,
                "listeners",
                "at least one [[listeners]] table is required",
            ));
        }
        for (i, l) in raw.listeners.iter().enumerate() {
            let key = format!("listeners[{i}]");
            let addr = self.addr(&l.address, &format!("{key}.address"))?;
            let http = match &l.http {
                Some(h) => self.http(h, &base_http, &format!("{key}.http"))?,
                None => base_http.clone(),
            };
            server.listeners.push(ListenerConf {
                addr,
                backlog: l.backlog.unwrap_or(crate::listen::DEFAULT_BACKLOG),
                max_connections: l.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
                http,
            });
        }

        let mut upstreams: Vec<UpstreamConf> = Vec::new();
        for (i, u) in raw.upstreams.iter().enumerate() {
            if upstreams.iter().any(|x| &x.name == u.name().get_ref()) {
                return Err(self.err(
                    Some(u.name().span()),
                    &format!("upstreams[{i}].name"),
                    format!("upstream \"{}\" is defined twice", u.name().get_ref()),
                ));
            }
            upstreams.push(self.upstream(u, i, server.max_retries)?);
        }
        // The engine bounds every request's retries; each upstream's own bound is the gateway's.
        server.max_retries = upstreams
            .iter()
            .map(|u| u.max_retries)
            .fold(server.max_retries, usize::max);

        let mut routes = Vec::new();
        for (i, r) in raw.routes.iter().enumerate() {
            let key = format!("routes[{i}]");
            let upstream = upstreams
                .iter()
                .position(|u| &u.name == r.upstream.get_ref())
                .ok_or_else(|| {
                    self.err(
                        Some(r.upstream.span()),
                        &format!("{key}.upstream"),
                        format!("no upstream is named \"{}\"", r.upstream.get_ref()),
                    )
                })?;
            let path_prefix = match &r.path_prefix {
                None => "/".to_string(),
                Some(p) if p.get_ref().starts_with('/') => p.get_ref().clone(),
                Some(p) => {
                    return Err(self.err(
                        Some(p.span()),
                        &format!("{key}.path_prefix"),
                        "a path prefix starts with '/'",
                    ))
                }
            };
            routes.push(RouteConf {
                host: r.host.as_ref().map(|h| h.to_ascii_lowercase()),
                path_prefix,
                upstream,
            });
        }
        if routes.is_empty() && !upstreams.is_empty() {
            return Err(self.err(None, "routes", "at least one [[routes]] table is required"));
        }
        Ok(Config {
            server,
            upstreams,
            routes,
        })
    }
}

/// The configuration `ringway serve` documents: one listener, two peers, one route.
pub const EXAMPLE: &str = r#"# Ringway example configuration.
[server]
cpus = "all"                  # or a list: [0, 1]
grace_period = "10s"

[http]                        # defaults for every listener
header_timeout = "10s"
keepalive_timeout = "60s"

[[listeners]]
address = "127.0.0.1:8080"

[[upstreams]]
name = "app"
peers = ["127.0.0.1:9001", { address = "127.0.0.1:9002", weight = 1 }]
algorithm = "round_robin"     # weighted_round_robin, random, least_inflight, ketama, maglev
connect_timeout = "5s"
max_retries = 2               # a retry goes to a peer the request has not tried
max_fails = 3                 # passive health: skip a peer on a core after 3 failures...
fail_timeout = "10s"          # ...for this long

[upstreams.health]            # active checks, once per process; see docs/balancing.md
kind = "tcp"                  # or "http", with path = "/health" and expect_status = 200
interval = "5s"
timeout = "2s"

[[routes]]
path_prefix = "/"
upstream = "app"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> ConfigError {
        parse(text, "t.toml").expect_err("must fail")
    }

    const MIN: &str = "[[listeners]]\naddress = \"127.0.0.1:8080\"\n[[upstreams]]\nname = \"app\"\npeers = [\"127.0.0.1:9001\"]\n[[routes]]\nupstream = \"app\"\n";

    #[test]
    fn the_example_parses() {
        let c = parse(EXAMPLE, "example.toml").unwrap();
        assert_eq!(c.server.listeners.len(), 1);
        assert_eq!(c.upstreams[0].peers.len(), 2);
        assert_eq!(c.routes[0].path_prefix, "/");
        assert_eq!(c.server.cpus, CpuList::All);
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MIN, "t.toml").unwrap();
        assert_eq!(c.server.grace_period, Duration::from_secs(10));
        assert_eq!(
            c.upstreams[0].algorithm,
            ringway_balancer::Algorithm::RoundRobin
        );
        assert_eq!(c.server.listeners[0].http, HttpSettings::default());
    }

    #[test]
    fn unknown_keys_are_errors_with_a_line() {
        let e = err(&format!("{MIN}[server]\ncpuz = [0]\n"));
        assert_eq!(e.line, 9, "{e}");
        assert!(e.message.contains("cpuz"), "{e}");
    }

    #[test]
    fn bad_values_point_at_their_key_and_line() {
        let cases: &[(&str, &str, usize)] = &[
            ("[server]\ncpus = \"some\"\n", "server.cpus", 9),
            (
                "[server]\ngrace_period = \"10 parsecs\"\n",
                "server.grace_period",
                9,
            ),
            ("[http]\nheader_timeout = \"x\"\n", "http.header_timeout", 9),
        ];
        for (extra, key, line) in cases {
            let e = err(&format!("{MIN}{extra}"));
            assert_eq!((e.key.as_str(), e.line), (*key, *line), "{e}");
        }
        let e = err("[[listeners]]\naddress = \"nope\"\n");
        assert_eq!(
            (e.key.as_str(), e.line, e.column),
            ("listeners[0].address", 2, 11),
            "{e}"
        );
        let e = err("[[listeners]]\naddress = \"127.0.0.1:1\"\n[[upstreams]]\nname = \"a\"\npeers = [\"127.0.0.1:2\"]\n[[routes]]\nupstream = \"b\"\n");
        assert_eq!((e.key.as_str(), e.line), ("routes[0].upstream", 7), "{e}");
        assert!(
            e.to_string()
                .starts_with("t.toml:7:12: routes[0].upstream: "),
            "{e}"
        );
    }

    #[test]
    fn peers_as_strings_or_tables() {
        let c = parse(
            "[[listeners]]\naddress = \"127.0.0.1:1\"\n[[upstreams]]\nname = \"a\"\npeers = [\"127.0.0.1:2\", { address = \"127.0.0.1:3\", weight = 2 }]\nalgorithm = \"weighted_round_robin\"\n[[routes]]\nupstream = \"a\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.upstreams[0].peers[1].weight, 2);
        let e = err("[[listeners]]\naddress = \"127.0.0.1:1\"\n[[upstreams]]\nname = \"a\"\npeers = [{ address = \"127.0.0.1:3\", weight = 0 }]\n[[routes]]\nupstream = \"a\"\n");
        assert_eq!(e.key, "upstreams[0].peers[0].weight", "{e}");
        let e = err("[[listeners]]\naddress = \"127.0.0.1:1\"\n[[upstreams]]\nname = \"a\"\npeers = [\"127.0.0.1:2\"]\nalgorithm = \"fastest\"\n[[routes]]\nupstream = \"a\"\n");
        assert_eq!(
            (e.key.as_str(), e.line),
            ("upstreams[0].algorithm", 6),
            "{e}"
        );
    }

    #[test]
    fn listener_http_overrides_the_defaults() {
        let c = parse(
            "[http]\nheader_timeout = \"5s\"\nmax_headers = 50\ntunnel_idle_timeout = \"7s\"\n[[listeners]]\naddress = \"127.0.0.1:1\"\n[listeners.http]\nheader_timeout = \"2s\"\n[[listeners]]\naddress = \"127.0.0.1:2\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            c.server.listeners[0].http.header_timeout,
            Duration::from_secs(2)
        );
        assert_eq!(c.server.listeners[0].http.limits.max_headers, 50);
        assert_eq!(
            c.server.listeners[1].http.tunnel_idle_timeout,
            Duration::from_secs(7)
        );
        assert_eq!(
            c.server.listeners[1].http.header_timeout,
            Duration::from_secs(5)
        );
    }

    #[test]
    fn no_listener_is_an_error() {
        assert_eq!(err("[server]\ncpus = [0]\n").key, "listeners");
    }
}
