//! One active health probe of one backend, on blocking `std::net` sockets: a TCP connect, or an
//! HTTP/1.1 `GET path` whose status is judged by the check's rule. Runs in the control plane's
//! probe threads, never on a request core.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ringway_balancer::{CheckKind, HealthCheckConfig};

/// The most bytes read while looking for an HTTP status line.
const MAX_STATUS_LINE_BYTES: usize = 1024;

/// Probes `addr` once as `config` says; true when it passed within `config.timeout`.
pub fn probe(addr: SocketAddr, config: &HealthCheckConfig) -> bool {
    match config.kind {
        CheckKind::Tcp => TcpStream::connect_timeout(&addr, config.timeout).is_ok(),
        CheckKind::Http => match http_status(addr, &config.path, config.timeout) {
            Some(status) => config.status_is_healthy(status),
            None => false,
        },
    }
}

/// Sends `GET path` to `addr` and returns the status of the answer, if one came within
/// `timeout` (connect, write and read together).
fn http_status(addr: SocketAddr, path: &str, timeout: Duration) -> Option<u16> {
    let deadline = Instant::now() + timeout;
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    };
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_nodelay(true).ok()?;
    s.set_write_timeout(Some(remaining()?)).ok()?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: ringway-health-check\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n"
    );
    s.write_all(request.as_bytes()).ok()?;
    let mut buf = Vec::with_capacity(128);
    let mut chunk = [0u8; 256];
    loop {
        if let Some(status) = parse_status_line(&buf) {
            return status;
        }
        if buf.len() >= MAX_STATUS_LINE_BYTES {
            return None;
        }
        s.set_read_timeout(Some(remaining()?)).ok()?;
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// `Some(Some(status))` for a complete `HTTP/1.x NNN ...` line, `Some(None)` for a complete
/// line that is not one, `None` while the line is incomplete.
fn parse_status_line(buf: &[u8]) -> Option<Option<u16>> {
    let end = buf.iter().position(|&b| b == b'\n')?;
    let line = &buf[..end];
    let status = (|| {
        let rest = line
            .strip_prefix(b"HTTP/1.1 ")
            .or_else(|| line.strip_prefix(b"HTTP/1.0 "))?;
        let digits = rest.get(..3)?;
        if !digits.iter().all(u8::is_ascii_digit)
            || rest.get(3).is_some_and(|&b| b != b' ' && b != b'\r')
        {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    })();
    Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        let cases: &[(&[u8], Option<Option<u16>>)] = &[
            (b"HTTP/1.1 200 OK\r\n", Some(Some(200))),
            (b"HTTP/1.0 503 Service Unavailable\r\n", Some(Some(503))),
            (b"HTTP/1.1 204\r\n", Some(Some(204))),
            (b"HTTP/1.1 20", None),
            (b"HTTP/1.1 2000 OK\r\n", Some(None)),
            (b"SSH-2.0-OpenSSH\r\n", Some(None)),
            (b"HTTP/2 200\r\n", Some(None)),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_status_line(input),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn a_closed_port_fails_both_kinds() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 1)));
        for kind in [CheckKind::Tcp, CheckKind::Http] {
            let config = HealthCheckConfig {
                kind,
                timeout: Duration::from_millis(200),
                ..HealthCheckConfig::default()
            };
            assert!(!probe(addr, &config), "{kind:?}");
        }
    }
}
