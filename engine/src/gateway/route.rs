//! Routing: which upstream a request's host and path select (`request_filter`).

use crate::config::RouteConf;
use crate::http::RequestHead;

/// The upstream index for a request's host and path: a route naming the exact host beats a
/// route without a host, then the longest matching prefix wins, then declaration order.
pub(super) fn route(routes: &[RouteConf], host: Option<&str>, path: &str) -> Option<usize> {
    let host = host.map(host_without_port);
    let mut best: Option<(bool, usize, usize)> = None;
    for (i, r) in routes.iter().enumerate() {
        let host_match = match (&r.host, host) {
            (None, _) => false,
            // Route hosts are lowercased when the configuration is read.
            (Some(rh), Some(h)) if rh.eq_ignore_ascii_case(h) => true,
            (Some(_), _) => continue,
        };
        if !path.starts_with(r.path_prefix.as_str()) {
            continue;
        }
        let better = match best {
            None => true,
            Some((bh, bl, _)) => (host_match, r.path_prefix.len()) > (bh, bl),
        };
        if better {
            best = Some((host_match, r.path_prefix.len(), i));
        }
    }
    best.map(|(_, _, i)| routes[i].upstream)
}

/// A Host value without its port (compared without regard to case: no lowercased copy).
fn host_without_port(h: &str) -> &str {
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
    without_port
}

/// The path (and query) of a request target, for routing and the `path` hash key: origin-form
/// as is; absolute-form without its scheme and authority.
pub(super) fn target_path(req: &RequestHead) -> &str {
    let t = req.target.as_str();
    if t.starts_with('/') {
        return t;
    }
    match t.find("://") {
        Some(i) => t[i + 3..].find('/').map_or("/", |j| &t[i + 3 + j..]),
        None => t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_form_paths() {
        let mut r = RequestHead::new(crate::http::Method::GET, "http://a.example/x/y");
        assert_eq!(target_path(&r), "/x/y");
        r.target = "/z".into();
        assert_eq!(target_path(&r), "/z");
        r.target = "http://a.example".into();
        assert_eq!(target_path(&r), "/");
    }

    #[test]
    fn hosts_lose_their_port() {
        assert_eq!(host_without_port("EXAMPLE.com:8080"), "EXAMPLE.com");
        assert_eq!(host_without_port("[::1]:80"), "::1");
        assert_eq!(host_without_port("a.example"), "a.example");
        assert_eq!(host_without_port(" a.example:x "), "a.example:x");
    }

    #[test]
    fn hosts_match_whatever_their_case() {
        let conf = |host: Option<&str>, prefix: &str, upstream| RouteConf {
            host: host.map(str::to_string),
            path_prefix: prefix.to_string(),
            upstream,
        };
        let routes = [conf(None, "/", 0), conf(Some("a.example"), "/", 1)];
        assert_eq!(route(&routes, Some("A.Example:8080"), "/x"), Some(1));
        assert_eq!(route(&routes, Some("b.example"), "/x"), Some(0));
        assert_eq!(route(&routes, None, "/x"), Some(0));
    }
}
