//! What a load run sends, prepared once before any executor starts: URLs parsed and resolved,
//! each request serialized to the exact bytes written per request.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use super::{LoadConfig, LoadError};
use crate::framing::push_u64;

/// One URL: which address it goes to and its pre-serialized request.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Index into [`Plan::addrs`].
    pub(crate) addr_index: usize,
    /// Head and body, written with one write per request.
    pub(crate) request: Vec<u8>,
}

/// Everything the executors need, immutable and shared.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) targets: Vec<Target>,
    pub(crate) addrs: Vec<SocketAddr>,
    pub(crate) connections: usize,
    pub(crate) timeout: Duration,
    pub(crate) close: bool,
    pub(crate) head_method: bool,
    pub(crate) warmup: Duration,
    /// Measured duration; `None` when only `max_requests` bounds the run.
    pub(crate) duration: Option<Duration>,
    /// Open loop: the interval between one connection's intended send times.
    pub(crate) conn_interval: Option<Duration>,
}

/// A URL split into what the request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url {
    /// `host[:port]` as written, for the Host header.
    pub(crate) authority: String,
    /// Host name or address, without brackets.
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Path and query, `/` when absent.
    pub(crate) path: String,
}

/// Parses `http://host[:port][/path]`.
pub(crate) fn parse_url(url: &str) -> Result<Url, LoadError> {
    let bad = |reason: &'static str| LoadError::InvalidUrl {
        url: url.to_string(),
        reason,
    };
    let rest = match url.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("http://") => &url[7..],
        _ => {
            if url
                .get(..8)
                .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
            {
                return Err(bad("https is not supported"));
            }
            return Err(bad("expected http://host[:port][/path]"));
        }
    };
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    let path = if path.is_empty() {
        "/".to_string()
    } else if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(bad("the path holds spaces or control characters"));
    }
    if authority.is_empty() || authority.contains('@') {
        return Err(bad("missing host, or userinfo (unsupported)"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let end = v6
            .find(']')
            .ok_or_else(|| bad("unterminated [IPv6] host"))?;
        let host = &v6[..end];
        let after = &v6[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse::<u16>().map_err(|_| bad("invalid port"))?,
            None if after.is_empty() => 80,
            None => return Err(bad("unexpected bytes after ]")),
        };
        (host.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse::<u16>().map_err(|_| bad("invalid port"))?,
            ),
            None => (authority.to_string(), 80),
        }
    };
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    Ok(Url {
        authority: authority.to_string(),
        host,
        port,
        path,
    })
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Serializes one request: request line, Host (unless given), the extra headers,
/// Content-Length when there is a body, `Connection: close` in close mode, then the body.
pub(crate) fn serialize_request(cfg: &LoadConfig, url: &Url) -> Vec<u8> {
    let has = |name: &str| {
        cfg.headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    };
    let mut out = Vec::with_capacity(128 + cfg.body_size);
    out.extend_from_slice(cfg.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(url.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !has("host") {
        out.extend_from_slice(b"Host: ");
        out.extend_from_slice(url.authority.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in &cfg.headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let wants_length = cfg.body_size > 0 || matches!(cfg.method.as_str(), "POST" | "PUT" | "PATCH");
    if wants_length && !has("content-length") && !has("transfer-encoding") {
        out.extend_from_slice(b"Content-Length: ");
        push_u64(&mut out, cfg.body_size as u64);
        out.extend_from_slice(b"\r\n");
    }
    if cfg.close && !has("connection") {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.resize(out.len() + cfg.body_size, b'x');
    out
}

/// Validates `cfg`, resolves its URLs and serializes its requests.
pub(crate) fn build(cfg: &LoadConfig) -> Result<Plan, LoadError> {
    if cfg.urls.is_empty() {
        return Err(LoadError::InvalidConfig("no URL given"));
    }
    if cfg.connections == 0 {
        return Err(LoadError::InvalidConfig("connections must be at least 1"));
    }
    if !is_token(&cfg.method) {
        return Err(LoadError::InvalidConfig("the method is not an HTTP token"));
    }
    for (name, value) in &cfg.headers {
        if !is_token(name) {
            return Err(LoadError::InvalidConfig(
                "a header name is not an HTTP token",
            ));
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(LoadError::InvalidConfig(
                "a header value holds CR, LF or NUL",
            ));
        }
    }
    if cfg.timeout.is_zero() {
        return Err(LoadError::InvalidConfig("timeout must be positive"));
    }
    let duration = if cfg.duration.is_zero() {
        if cfg.max_requests.is_none() {
            return Err(LoadError::InvalidConfig(
                "a zero duration needs max_requests",
            ));
        }
        None
    } else {
        Some(cfg.duration)
    };
    let conn_interval = match cfg.rate {
        None => None,
        Some(rate) if rate.is_finite() && rate > 0.0 => {
            let secs = cfg.connections as f64 / rate;
            if secs > 3600.0 {
                return Err(LoadError::InvalidConfig(
                    "rate too low for the connection count",
                ));
            }
            Some(Duration::from_secs_f64(secs).max(Duration::from_nanos(1)))
        }
        Some(_) => return Err(LoadError::InvalidConfig("rate must be a positive number")),
    };
    let mut addrs: Vec<SocketAddr> = Vec::new();
    let mut targets = Vec::with_capacity(cfg.urls.len());
    for raw in &cfg.urls {
        let url = parse_url(raw)?;
        let addr = (url.host.as_str(), url.port)
            .to_socket_addrs()
            .map_err(|source| LoadError::Resolve {
                url: raw.clone(),
                source,
            })?
            .next()
            .ok_or_else(|| LoadError::Resolve {
                url: raw.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
            })?;
        let addr_index = match addrs.iter().position(|a| *a == addr) {
            Some(i) => i,
            None => {
                addrs.push(addr);
                addrs.len() - 1
            }
        };
        targets.push(Target {
            addr_index,
            request: serialize_request(cfg, &url),
        });
    }
    Ok(Plan {
        targets,
        addrs,
        connections: cfg.connections,
        timeout: cfg.timeout,
        close: cfg.close,
        head_method: cfg.method == "HEAD",
        warmup: cfg.warmup,
        duration,
        conn_interval,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("http://127.0.0.1:8080/a/b?c=d").unwrap();
        assert_eq!(
            (
                u.authority.as_str(),
                u.host.as_str(),
                u.port,
                u.path.as_str()
            ),
            ("127.0.0.1:8080", "127.0.0.1", 8080, "/a/b?c=d")
        );
        let u = parse_url("HTTP://localhost").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("localhost", 80, "/")
        );
        let u = parse_url("http://[::1]:81?x").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 81, "/?x")
        );
        for bad in [
            "https://a/",
            "ftp://a",
            "http://",
            "http://a:99999/",
            "http://u@a/",
            "http://a/b c",
        ] {
            assert!(
                matches!(parse_url(bad), Err(LoadError::InvalidUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn requests_are_serialized_once_with_their_body() {
        let cfg = LoadConfig {
            method: "POST".into(),
            headers: vec![("X-A".into(), "1".into())],
            body_size: 3,
            close: true,
            ..LoadConfig::default()
        };
        let url = parse_url("http://h:1/p").unwrap();
        assert_eq!(
            serialize_request(&cfg, &url),
            b"POST /p HTTP/1.1\r\nHost: h:1\r\nX-A: 1\r\nContent-Length: 3\r\nConnection: close\r\n\r\nxxx"
        );
        let cfg = LoadConfig {
            headers: vec![("host".into(), "v".into())],
            ..LoadConfig::default()
        };
        assert_eq!(
            serialize_request(&cfg, &url),
            b"GET /p HTTP/1.1\r\nhost: v\r\n\r\n"
        );
    }
}
