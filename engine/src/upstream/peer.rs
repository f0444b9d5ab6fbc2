//! Where a request goes: an upstream peer and the per-peer timeouts the driver applies.

use std::net::SocketAddr;
use std::time::Duration;

/// Default time to establish an upstream TCP connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time to wait for upstream bytes (the response head, then each body read).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time for the upstream to accept written bytes.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// An upstream HTTP/1.1 server chosen by `upstream_peer`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpPeer {
    /// The address to connect to; also the connection pool's key.
    pub addr: SocketAddr,
    /// Time to establish the TCP connection. By default 5 s.
    pub connect_timeout: Duration,
    /// Time to wait for each read from the upstream. By default 60 s.
    pub read_timeout: Duration,
    /// Time for each write to the upstream. By default 60 s.
    pub write_timeout: Duration,
    /// Index of this peer in the application's own backend list, echoed back to it in
    /// `logging` and the failure phases (the gateway uses it for passive health).
    pub backend_index: Option<usize>,
}

impl HttpPeer {
    /// A peer at `addr` with the default timeouts.
    pub fn new(addr: SocketAddr) -> HttpPeer {
        HttpPeer {
            addr,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            backend_index: None,
        }
    }
}
