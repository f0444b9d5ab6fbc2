//! The admin endpoint: a small HTTP/1.1 server on its own thread (never on a request core)
//! that merges every core's published counters on each scrape.
//!
//! `GET /metrics` answers Prometheus text; `GET /healthz` answers `ok`; anything else 404.
//! One request per connection, parsed with the strict codec, bounded in size and time. The
//! thread sleeps in `poll` on the listener and a doorbell rung to stop it: no timer.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use ringway_protocols::http::v1::{parse_request, Limits, Parsed};
use ringway_protocols::rt::Doorbell;

use super::ServerStats;
use crate::runtime::poll_readable;

/// Time a scraper gets to send its request.
const ADMIN_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Back-off after an accept failed other than for want of a pending connection (out of
/// descriptors, say): the connection stays pending, so `poll` would return at once.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A running admin endpoint; stops when dropped.
pub struct AdminServer {
    addr: SocketAddr,
    stop: Arc<Doorbell>,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Binds `addr` and serves `stats()` from a thread named `ringway-admin`.
    ///
    /// # Errors
    /// When `addr` cannot be bound.
    pub fn start(
        addr: SocketAddr,
        stats: impl Fn() -> ServerStats + Send + 'static,
    ) -> io::Result<AdminServer> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(Doorbell::new()?);
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("ringway-admin".into())
            .spawn(move || {
                while wait_readable(&listener, &stop2) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            if let Err(e) = serve_one(s, &stats) {
                                log::debug!("admin: {e}");
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => {
                            log::warn!("admin accept: {e}");
                            std::thread::sleep(ACCEPT_BACKOFF);
                        }
                    }
                }
            })?;
        log::info!("admin endpoint on http://{addr}/metrics");
        Ok(AdminServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stop.ring();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sleeps until `listener` has a connection to accept (true) or `stop` rang (false).
fn wait_readable(listener: &TcpListener, stop: &Doorbell) -> bool {
    // Interrupted, neither is readable: look again (the listener is non-blocking, so a
    // spurious accept is harmless).
    let [_, rang] = poll_readable([listener.as_raw_fd(), stop.as_fd().as_raw_fd()], None);
    // The eventfd is read only when it is readable (a scrape costs no read of it).
    !(rang && stop.take())
}

fn serve_one(mut s: TcpStream, stats: &impl Fn() -> ServerStats) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(ADMIN_READ_TIMEOUT))?;
    s.set_write_timeout(Some(ADMIN_READ_TIMEOUT))?;
    let limits = Limits::default();
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let head = loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        match parse_request(&buf, &limits) {
            Ok(Parsed::Complete { head, .. }) => break head,
            Ok(Parsed::Partial) => continue,
            Err(e) => return respond(&mut s, e.status(), "text/plain", "bad request\n"),
        }
    };
    let path = head.target.split('?').next().unwrap_or("");
    match (head.method.as_str(), path) {
        ("GET", "/metrics") => respond(
            &mut s,
            200,
            "text/plain; version=0.0.4",
            &stats().to_prometheus(),
        ),
        ("GET", "/healthz") => respond(&mut s, 200, "text/plain", "ok\n"),
        _ => respond(&mut s, 404, "text/plain", "not found\n"),
    }
}

fn respond(s: &mut TcpStream, status: u16, content_type: &str, body: &str) -> io::Result<()> {
    let reason = ringway_protocols::http::v1::canonical_reason(status).unwrap_or("");
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    // One write: the body in a second segment would wait for the scraper's delayed ACK of the
    // head (Nagle), 40 ms a scrape.
    let mut all = head.into_bytes();
    all.extend_from_slice(body.as_bytes());
    s.write_all(&all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::CoreStats;

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn metrics_merge_every_core_and_unknown_paths_are_404() {
        let admin = AdminServer::start("127.0.0.1:0".parse().unwrap(), || ServerStats {
            cores: vec![
                CoreStats {
                    core: 0,
                    requests: 7,
                    ..CoreStats::default()
                },
                CoreStats {
                    core: 1,
                    requests: 5,
                    ..CoreStats::default()
                },
            ],
        })
        .unwrap();
        let m = get(admin.addr(), "/metrics");
        assert!(m.starts_with("HTTP/1.1 200"), "{m}");
        assert!(m.contains("ringway_requests_total{core=\"0\"} 7"), "{m}");
        assert!(m.contains("ringway_requests_total{core=\"1\"} 5"), "{m}");
        assert!(get(admin.addr(), "/healthz").ends_with("ok\n"));
        assert!(get(admin.addr(), "/nope").starts_with("HTTP/1.1 404"));
        let bad = {
            let mut s = TcpStream::connect(admin.addr()).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    }
}
