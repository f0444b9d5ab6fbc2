//! Per-listener HTTP limits and timeouts, with the defaults of the bad-input policy.

use std::time::Duration;

use ringway_protocols::http::v1::Limits;

/// Default total time for a request head, from its first byte (and for a new connection's
/// first byte).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time without progress on a request body.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time without write progress to a client (a client not reading).
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time a keep-alive connection may sit idle before the next request's first byte.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time a tunnel (after a 101) may carry no bytes in either direction.
pub const DEFAULT_TUNNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Request body bytes kept to replay a request on a retry.
pub const REPLAY_BUFFER_BYTES: usize = 64 * 1024;
/// Request body bytes Ringway reads and discards to keep a connection alive after answering
/// without reading the body (a filter's direct answer); beyond it, the connection closes.
pub const DRAIN_LIMIT_BYTES: u64 = 64 * 1024;
/// Time Ringway waits for an origin's `100 Continue` before sending an `Expect: 100-continue`
/// body anyway (RFC 9110 section 10.1.1 lets a client stop waiting, and a proxy acts for it).
pub const EXPECT_CONTINUE_WAIT: Duration = Duration::from_secs(1);

/// HTTP limits and timeouts of one listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpSettings {
    /// Head size and header count limits.
    pub limits: Limits,
    /// Total time for a request head. By default 10 s.
    pub header_timeout: Duration,
    /// Time without progress on a request body. By default 30 s.
    pub body_timeout: Duration,
    /// Time without write progress to the client. By default 30 s.
    pub send_timeout: Duration,
    /// Idle time allowed between requests. By default 60 s.
    pub keepalive_timeout: Duration,
    /// Time an upgraded connection (WebSocket) may stay silent both ways. By default 60 s.
    pub tunnel_idle_timeout: Duration,
    /// Largest request body accepted (413 beyond). By default unlimited.
    pub max_body_bytes: Option<u64>,
    /// Whether CONNECT is proxied (405 otherwise). By default false.
    pub allow_connect: bool,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            limits: Limits::default(),
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            tunnel_idle_timeout: DEFAULT_TUNNEL_IDLE_TIMEOUT,
            max_body_bytes: None,
            allow_connect: false,
        }
    }
}
