//! What a phase sees of one request: the downstream head, the client, the core, and the
//! bookkeeping the driver keeps across retries.

use std::net::SocketAddr;
use std::time::Instant;

use ringway_protocols::http::v1::{Headers, RequestHead, ResponseHead};

use crate::runtime::CoreId;
use crate::upstream::HttpPeer;

/// A response a phase chose to send instead of proxying (`request_filter` returning `true`).
#[derive(Debug)]
pub struct DirectResponse {
    /// The head; framing headers are generated from `body`.
    pub head: ResponseHead,
    /// The whole body.
    pub body: Vec<u8>,
}

/// One downstream request as the phases see it.
///
/// A `Session` lives for one request: a keep-alive connection gets a new one per request.
#[derive(Debug)]
pub struct Session {
    req: RequestHead,
    client_addr: SocketAddr,
    core: CoreId,
    started: Instant,
    pub(crate) direct: Option<DirectResponse>,
    pub(crate) peer: Option<HttpPeer>,
    pub(crate) retries: usize,
    pub(crate) upstream_reused: bool,
    pub(crate) downstream_bytes_sent: u64,
    pub(crate) status: Option<u16>,
    pub(crate) request_body_bytes: u64,
}

impl Session {
    pub(crate) fn new(req: RequestHead, client_addr: SocketAddr, core: CoreId) -> Session {
        Session {
            req,
            client_addr,
            core,
            started: ringway_protocols::rt::now(),
            direct: None,
            peer: None,
            retries: 0,
            upstream_reused: false,
            downstream_bytes_sent: 0,
            status: None,
            request_body_bytes: 0,
        }
    }

    /// The downstream request head as received (phases may have changed it).
    pub fn req_header(&self) -> &RequestHead {
        &self.req
    }

    /// The downstream request head, for changes every later phase and the upstream will see.
    pub fn req_header_mut(&mut self) -> &mut RequestHead {
        &mut self.req
    }

    /// The client's address (the TCP peer, never a header's claim).
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// The core serving this request.
    pub fn core(&self) -> CoreId {
        self.core
    }

    /// When the request head was complete.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Answers the client directly with `status`, extra headers and `body`. Use from
    /// `request_filter` and return `Ok(true)`; Content-Length is generated.
    pub fn respond(&mut self, status: u16, headers: Headers, body: Vec<u8>) {
        let mut head = ResponseHead::new(status);
        head.headers = headers;
        self.direct = Some(DirectResponse { head, body });
    }

    /// The peer of the current (or last) attempt.
    pub fn peer(&self) -> Option<&HttpPeer> {
        self.peer.as_ref()
    }

    /// How many times the request was retried so far.
    pub fn retries(&self) -> usize {
        self.retries
    }

    /// Whether the current upstream connection came from the pool.
    pub fn upstream_reused(&self) -> bool {
        self.upstream_reused
    }

    /// Whether any response byte has gone downstream (after which no retry or error page is
    /// possible).
    pub fn response_started(&self) -> bool {
        self.downstream_bytes_sent > 0
    }

    /// Bytes written downstream for this request (head and body).
    pub fn downstream_bytes_sent(&self) -> u64 {
        self.downstream_bytes_sent
    }

    /// The status sent downstream, once a head was sent.
    pub fn response_status(&self) -> Option<u16> {
        self.status
    }

    /// Request body bytes read from the client so far.
    pub fn request_body_bytes(&self) -> u64 {
        self.request_body_bytes
    }
}
