//! The per-connection, per-request driver: reads a head, runs the phases, talks to the
//! upstream, relays the response, and decides whether either connection can be reused.
//!
//! The request path, top to bottom, is [`serve_connection`] -> `proxy_request` ->
//! (`request_filter`, body pre-read, attempts of `upstream_peer` / connect / `exchange`) ->
//! `relay_response` -> `logging`. Nothing here blocks or takes a lock; everything it touches
//! belongs to this core.

use std::borrow::Cow;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use ringway_protocols::http::v1::{
    encode_request_head, encode_response_head, expects_continue, parse_request, parse_response,
    remove_hop_by_hop, request_framing, request_keep_alive, response_framing, response_keep_alive,
    BodyDecoder, BodyEncoder, BodyFraming, HttpError, Limits, Parsed, RequestHead, ResponseHead,
    Version,
};
use ringway_protocols::l4::{Backend, IoBuf, LastWriteFailed, Stream};
use ringway_protocols::rt::Timer;

use super::error::{Error, ErrorKind, Result, Retry, Side};
use super::panic::{guard, guard_sync, payload_str, Guarded};
use super::phase::{FailToProxy, ProxyHttp};
use super::recycle::{self, RecycledBox};
use super::session::Session;
use super::settings::{HttpSettings, DRAIN_LIMIT_BYTES, EXPECT_CONTINUE_WAIT, REPLAY_BUFFER_BYTES};
use super::CoreCtx;
use crate::metrics::bump;
use crate::runtime::{timeout, LocalSignal};
use crate::upstream::HttpPeer;

/// A connection with the bytes read past the last parsed message.
struct Conn<S> {
    stream: S,
    /// Bytes received but not consumed yet (a pipelined request, the start of a body).
    pending: Option<IoBuf>,
    /// Accumulates a head that arrived in several reads; empty otherwise.
    scratch: Vec<u8>,
    /// The deadline of every timed read, reused from one to the next (see `rt::Timer`). The
    /// upstream connection of a request borrows the client's for the exchange.
    timer: Timer,
}

impl<S: Stream> Conn<S> {
    /// Nothing received and unconsumed: the next thing done with this connection is a read
    /// (a pipelined request already buffered would be answered first, a write).
    fn idle(&self) -> bool {
        self.pending.is_none() && self.scratch.is_empty()
    }

    fn new(stream: S) -> Conn<S> {
        Conn {
            stream,
            pending: None,
            scratch: Vec::new(),
            timer: Timer::new(),
        }
    }

    /// Takes the pending bytes, or reads more within `dur`. `Ok(None)` at EOF.
    async fn next_bytes(&mut self, dur: Duration) -> io::Result<Option<IoBuf>> {
        if let Some(p) = self.pending.take() {
            return Ok(Some(p));
        }
        self.timer.timeout(dur, self.stream.read()).await
    }
}

/// Writes `buf` within `dur`; with `last`, as `Stream::write_last` (the stream is read next).
/// Hands the buffer back unless the deadline passed (the dropped write took it).
async fn write_timed<S: Stream, B: ringway_protocols::l4::StableBuf>(
    stream: &mut S,
    buf: B,
    dur: Duration,
    last: bool,
) -> (io::Result<()>, Option<B>) {
    // A timed-out write loses its buffer with the dropped future; callers then close.
    let mut slot = None;
    let res = timeout(dur, async {
        let (r, b) = if last {
            stream.write_last(buf).await
        } else {
            let (r, b) = stream.write_all(buf).await;
            (r, Some(b))
        };
        slot = b;
        r
    })
    .await;
    (res, slot)
}

/// Writes `buf` to `stream` within `dur`; on failure, an I/O error on `side` saying what was being
/// written. Hands the buffer back unless the deadline passed (the dropped write took it).
async fn send<S: Stream, B: ringway_protocols::l4::StableBuf>(
    stream: &mut S,
    buf: B,
    dur: Duration,
    side: Side,
    what: &'static str,
) -> Result<Option<B>> {
    send_maybe_last(stream, buf, false, dur, side, what).await
}

/// As [`send`], but with `last` (the message's last bytes, and the stream is read next) the
/// write may still be under way when this returns (see `Stream::write_last`) and a failure may
/// surface at the next read instead.
async fn send_maybe_last<S: Stream, B: ringway_protocols::l4::StableBuf>(
    stream: &mut S,
    buf: B,
    last: bool,
    dur: Duration,
    side: Side,
    what: &'static str,
) -> Result<Option<B>> {
    let (r, back) = write_timed(stream, buf, dur, last).await;
    r.map_err(|e| Error::io(side, false, e).context(what))?;
    Ok(back)
}

/// Writes part of a response to the client within the send timeout; see [`send_maybe_last`].
async fn send_response<S: Stream, B: ringway_protocols::l4::StableBuf>(
    down: &mut S,
    buf: B,
    last: bool,
    settings: &HttpSettings,
) -> std::result::Result<Option<B>, (Box<Error>, bool)> {
    send_maybe_last(
        down,
        buf,
        last,
        settings.send_timeout,
        Side::Downstream,
        "writing the response",
    )
    .await
    .map_err(|e| (e, false))
}

/// How reading a head ended, short of a head.
enum HeadEnd {
    /// EOF; `partial` when some bytes of a head had arrived.
    Eof { partial: bool },
    /// Idle too long before any byte, or shutdown while idle: close without a response.
    Idle,
}

/// Why reading a head failed.
enum HeadError {
    Http(HttpError),
    Io(io::Error),
    /// The deadline passed; `got_bytes` when part of a head had arrived.
    Timeout {
        got_bytes: bool,
    },
}

/// Reads and parses one head.
///
/// `first_byte` bounds the wait for the first byte; once one arrived the whole head must
/// arrive within `head_timeout` of it. `idle_abort` ends the wait before the first byte (the
/// core is shutting down). The head is re-parsed only when an end-of-head marker or a limit
/// boundary arrives, so a head sent one byte at a time costs linear, not quadratic, time.
async fn read_head<S: Stream, T>(
    conn: &mut Conn<S>,
    parse: impl Fn(&[u8]) -> std::result::Result<Parsed<T>, HttpError>,
    limits: &Limits,
    first_byte: Duration,
    head_timeout: Duration,
    idle_abort: Option<&LocalSignal>,
) -> std::result::Result<std::result::Result<T, HeadEnd>, HeadError> {
    if conn.scratch.is_empty() {
        if let Some(mut p) = conn.pending.take() {
            match parse(&p).map_err(HeadError::Http)? {
                Parsed::Complete { head, len } => {
                    p.advance(len);
                    if !p.is_empty() {
                        conn.pending = Some(p);
                    }
                    return Ok(Ok(head));
                }
                Parsed::Partial => conn.scratch.extend_from_slice(&p),
            }
        }
    }
    let mut first_at = (!conn.scratch.is_empty()).then(ringway_protocols::rt::now);
    let mut line_seen = conn.scratch.contains(&b'\n');
    loop {
        let wait = match first_at {
            None => first_byte,
            Some(t) => head_timeout.saturating_sub(t.elapsed()),
        };
        let read = conn.timer.timeout(wait, conn.stream.read());
        let res = match (first_at, idle_abort) {
            (None, Some(signal)) => {
                futures_lite::future::or(read, async {
                    signal.wait().await;
                    Err(io::Error::from(io::ErrorKind::Interrupted))
                })
                .await
            }
            _ => read.await,
        };
        let buf = match res {
            Ok(Some(buf)) => buf,
            Ok(None) => {
                return Ok(Err(HeadEnd::Eof {
                    partial: first_at.is_some(),
                }))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Err(HeadEnd::Idle)),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(HeadError::Timeout {
                    got_bytes: first_at.is_some(),
                })
            }
            Err(e) => return Err(HeadError::Io(e)),
        };
        if first_at.is_none() {
            first_at = Some(ringway_protocols::rt::now());
        }
        if conn.scratch.is_empty() {
            // The common case: the whole head in one read, parsed in place.
            match parse(&buf).map_err(HeadError::Http)? {
                Parsed::Complete { head, len } => {
                    let mut buf = buf;
                    buf.advance(len);
                    if !buf.is_empty() {
                        conn.pending = Some(buf);
                    }
                    return Ok(Ok(head));
                }
                Parsed::Partial => {
                    line_seen = buf.contains(&b'\n');
                    conn.scratch.extend_from_slice(&buf);
                    continue;
                }
            }
        }
        let old = conn.scratch.len();
        conn.scratch.extend_from_slice(&buf);
        let window = &conn.scratch[old.saturating_sub(3)..];
        let marker =
            window.windows(3).any(|w| w == b"\n\r\n") || window.windows(2).any(|w| w == b"\n\n");
        let new_line = !line_seen && buf.contains(&b'\n');
        line_seen |= new_line;
        let over_limit = conn.scratch.len() > limits.max_head_bytes
            || (!line_seen && conn.scratch.len() > limits.max_request_line_bytes);
        if marker || new_line || over_limit {
            match parse(&conn.scratch).map_err(HeadError::Http)? {
                Parsed::Complete { head, len } => {
                    if len < conn.scratch.len() {
                        conn.pending = Some(IoBuf::from_vec(conn.scratch[len..].to_vec()));
                    }
                    conn.scratch = Vec::new();
                    return Ok(Ok(head));
                }
                Parsed::Partial => {}
            }
        }
    }
}

/// Room the upstream request's copy of the headers keeps for fields a filter adds
/// (`X-Forwarded-For`, an `Upgrade` put back), so that adding them does not reallocate.
const UPSTREAM_ROOM_FIELDS: usize = 4;
/// Bytes of names and values in that room.
const UPSTREAM_ROOM_BYTES: usize = 128;

/// The client address a session gets when the stream does not know its peer.
const UNKNOWN_CLIENT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// Serves one downstream connection until it closes, its keep-alive ends, or the core shuts
/// down. Never panics outward: the caller also runs it under a guard as a backstop.
pub(crate) fn serve_connection<B: Backend, P: ProxyHttp>(
    app: Rc<P>,
    core: Rc<CoreCtx<B::Stream>>,
    settings: Rc<HttpSettings>,
    stream: B::Stream,
) -> impl std::future::Future<Output = ()> {
    let mut conn = Conn::new(stream);
    // An `async move` block that uses its captures in place, not an `async fn`: an async fn
    // moves each parameter into a local, and the future keeps both slots for its whole life
    // (every idle connection would pay for the stream twice).
    async move {
        let mut first = true;
        loop {
            // Idle: the wait for the next request's first bytes is a small future of its own (the
            // read and its timer). Reading the rest of the head and serving the request run boxed:
            // an async fn's state is as large as its largest await point, and the request pipeline
            // is kilobytes, which every idle keep-alive connection would otherwise hold. One
            // heap block per request instead, recycled on the core (see `recycle`).
            if conn.scratch.is_empty() && conn.pending.is_none() {
                let read = conn.timer.timeout(
                    if first {
                        settings.header_timeout
                    } else {
                        settings.keepalive_timeout
                    },
                    conn.stream.read(),
                );
                let res = if first {
                    read.await
                } else {
                    // At shutdown an idle keep-alive connection closes at once; a new one still gets
                    // its first request answered (its client sent it to a listener that was open).
                    futures_lite::future::or(read, async {
                        core.shutdown.wait().await;
                        Err(io::Error::from(io::ErrorKind::Interrupted))
                    })
                    .await
                };
                match res {
                    Ok(Some(buf)) => conn.pending = Some(buf),
                    Ok(None) => return,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => return,
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                        // A keep-alive connection idle too long closes silently; a new connection
                        // that stayed silent gets 408.
                        if first {
                            bump(&core.metrics.errors);
                            send_error_boxed(&mut conn.stream, 408, &settings).await;
                            core.metrics.record_response(408, 0);
                        }
                        return;
                    }
                    Err(_) => {
                        bump(&core.metrics.errors);
                        return;
                    }
                }
            }
            // The client's address comes from the stream, which keeps it anyway (one copy per
            // idle connection, not two); a backend that does not know it reports 0.0.0.0:0.
            let client = conn.stream.peer_addr().unwrap_or(UNKNOWN_CLIENT);
            let keep = RecycledBox::new_with(|| {
                next_request::<B, P>(&app, &core, &settings, &mut conn, first, client)
            })
            .await;
            first = false;
            if !keep || core.shutdown.is_set() {
                return;
            }
        }
    }
}

/// Reads the rest of a request head whose first bytes have arrived, then serves the request;
/// returns whether the downstream connection may be reused.
async fn next_request<B: Backend, P: ProxyHttp>(
    app: &P,
    core: &CoreCtx<B::Stream>,
    settings: &HttpSettings,
    conn: &mut Conn<B::Stream>,
    first: bool,
    client: SocketAddr,
) -> bool {
    let head = read_head(
        conn,
        |b| parse_request(b, &settings.limits),
        &settings.limits,
        settings.header_timeout,
        settings.header_timeout,
        None,
    )
    .await;
    let head = match head {
        Ok(Ok(head)) => head,
        Ok(Err(HeadEnd::Idle)) | Ok(Err(HeadEnd::Eof { partial: false })) => return false,
        Ok(Err(HeadEnd::Eof { partial: true })) | Err(HeadError::Io(_)) => {
            bump(&core.metrics.errors);
            return false;
        }
        Err(HeadError::Timeout { got_bytes }) => {
            // A head that came too slowly (or, on a new connection, not at all) gets 408.
            if got_bytes || first {
                bump(&core.metrics.errors);
                send_error(&mut conn.stream, 408, settings).await;
                core.metrics.record_response(408, 0);
            }
            return false;
        }
        Err(HeadError::Http(e)) => {
            bump(&core.metrics.errors);
            send_error(&mut conn.stream, e.status(), settings).await;
            core.metrics.record_response(e.status(), 0);
            return false;
        }
    };
    bump(&core.metrics.requests);
    process_request::<B, P>(app, core, settings, conn, head, client).await
}

/// What the driver knows about the downstream request's body.
struct ReqBody {
    framing: BodyFraming,
    decoder: BodyDecoder,
    /// The whole (filtered) body, when it was small enough to read before connecting.
    buffered: Option<Vec<u8>>,
    /// Body bytes read before connecting that are still to be sent (a body longer than the
    /// pre-read window).
    prefix: Vec<u8>,
    /// Whether any body byte went to an upstream (no retry after that, unless `buffered`).
    streamed: bool,
    /// Body bytes read from the client so far.
    read: u64,
    /// Whether the client's body was read to its end.
    complete: bool,
}

impl ReqBody {
    /// Whether a retry can send the body again.
    fn replayable(&self) -> bool {
        self.buffered.is_some() || !self.streamed
    }
}

/// Runs one request through the phases; returns whether the downstream connection may be
/// reused.
async fn process_request<B: Backend, P: ProxyHttp>(
    app: &P,
    core: &CoreCtx<B::Stream>,
    settings: &HttpSettings,
    conn: &mut Conn<B::Stream>,
    head: RequestHead,
    client: SocketAddr,
) -> bool {
    let mut session = Session::new(head, client, core.core);
    let mut ctx = match guard_sync(|| app.new_ctx()) {
        Ok(ctx) => ctx,
        Err(p) => {
            log::debug!("new_ctx panicked: {}", payload_str(&*p));
            send_error(&mut conn.stream, 500, settings).await;
            core.metrics.record_response(500, 0);
            bump(&core.metrics.errors);
            return false;
        }
    };
    let client_keep_alive = request_keep_alive(session.req_header());
    let mut body = None;
    let result =
        proxy_request::<B, P>(app, core, settings, conn, &mut session, &mut ctx, &mut body).await;
    let body_done = body.as_ref().is_none_or(|b: &ReqBody| b.complete);
    let (reuse, error) = match result {
        Ok(reuse) => (reuse && client_keep_alive && body_done, None),
        Err(e) => {
            bump(&core.metrics.errors);
            let ftp = match guard(app.fail_to_proxy(&mut session, &e, &mut ctx)).await {
                Ok(ftp) => ftp,
                Err(_) => FailToProxy {
                    error_code: if session.response_started() { 0 } else { 500 },
                    can_reuse_downstream: false,
                },
            };
            let mut reuse = ftp.can_reuse_downstream && client_keep_alive && body_done;
            if ftp.error_code > 0 && !session.response_started() {
                session.status = Some(ftp.error_code);
                // From here the response has started: nothing else may be sent for it.
                session.downstream_bytes_sent += 1;
                if !send_status(&mut conn.stream, ftp.error_code, reuse, settings).await {
                    reuse = false;
                }
            } else {
                reuse = false;
            }
            (reuse, Some(e))
        }
    };
    if let Some(status) = session.status {
        // The loop's clock at both ends (read once per loop pass): no clock read of its own,
        // and the same resolution as the session's start.
        let took = ringway_protocols::rt::now().saturating_duration_since(session.started());
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        core.metrics.record_response(status, us);
    }
    session.request_body_bytes = body.as_ref().map_or(0, |b| b.read);
    let _ = guard(app.logging(&mut session, error.as_deref(), &mut ctx)).await;
    reuse
}

/// Runs a phase future under the panic guard.
fn phase<T, F: Future<Output = Result<T>>>(fut: F) -> Phase<F> {
    Phase(guard(fut))
}

/// A phase future under the panic guard: its result, or an internal error if a poll panicked.
/// A plain future rather than an `async fn`: one state machine fewer around every phase (the
/// phase's future is not moved into a second one).
struct Phase<F>(Guarded<F>);

impl<T, F: Future<Output = Result<T>>> Future for Phase<F> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        // SAFETY: structural pinning of the only field, which is never moved out.
        let guarded = unsafe { self.map_unchecked_mut(|s| &mut s.0) };
        guarded
            .poll(cx)
            .map(|r| r.unwrap_or_else(|p| Err(phase_panicked(&*p))))
    }
}

/// Runs a synchronous phase under the panic guard.
fn phase_sync<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    guard_sync(f).unwrap_or_else(|p| Err(phase_panicked(&*p)))
}

/// The error a panicking phase ends its request with.
fn phase_panicked(payload: &(dyn std::any::Any + Send)) -> Box<Error> {
    Error::new(ErrorKind::Panic, Side::Internal)
        .context(format!("a phase panicked: {}", payload_str(payload)))
}

/// Runs `fail_to_connect` or `error_while_proxy` under the panic guard. A panic there ends the
/// request with a non-retryable internal error.
fn error_phase(f: impl FnOnce(Box<Error>) -> Box<Error>, e: Box<Error>) -> Box<Error> {
    guard_sync(|| f(e)).unwrap_or_else(|p| phase_panicked(&*p))
}

fn invalid(side: Side, e: HttpError) -> Box<Error> {
    Error::new(ErrorKind::InvalidHttp(e), side)
}

#[allow(clippy::too_many_arguments)]
async fn proxy_request<B: Backend, P: ProxyHttp>(
    app: &P,
    core: &CoreCtx<B::Stream>,
    settings: &HttpSettings,
    conn: &mut Conn<B::Stream>,
    session: &mut Session,
    ctx: &mut P::Ctx,
    body_slot: &mut Option<ReqBody>,
) -> Result<bool> {
    // Framing first: an ambiguous request reaches no phase that could forward it.
    let framing =
        request_framing(session.req_header()).map_err(|e| invalid(Side::Downstream, e))?;
    let body = body_slot.insert(ReqBody {
        decoder: BodyDecoder::new(&framing),
        complete: matches!(framing, BodyFraming::None | BodyFraming::Length(0)),
        framing,
        buffered: None,
        prefix: Vec::new(),
        streamed: false,
        read: 0,
    });
    if session.req_header().method.is_connect() && !settings.allow_connect {
        return Err(Error::downstream(ErrorKind::MethodNotAllowed));
    }
    if let (Some(max), BodyFraming::Length(n)) = (settings.max_body_bytes, &body.framing) {
        if *n > max {
            return Err(Error::new(ErrorKind::HttpStatus(413), Side::Downstream));
        }
    }
    let expect_continue = expects_continue(session.req_header()) && !body.complete;

    if phase(app.request_filter(session, ctx)).await? {
        let direct = session
            .direct
            .take()
            .unwrap_or_else(|| super::session::DirectResponse {
                head: ResponseHead::new(200),
                body: Vec::new(),
            });
        let mut keep = request_keep_alive(session.req_header());
        // The client may still be sending a body nobody will read: drain a bounded amount.
        if !body.complete && !expect_continue {
            keep &= drain_body(conn, body, settings).await;
        } else if !body.complete {
            keep = false;
        }
        return write_direct(conn, session, direct, keep, settings)
            .await
            .map(|()| keep);
    }

    // Up to REPLAY_BUFFER_BYTES of body are read before connecting (as nginx buffers request
    // bodies): a body that ends within it is validated whole before any upstream sees a byte,
    // can be replayed on a retry, and goes out with the head in one write. A longer one is
    // streamed after the bytes already read.
    if !body.complete && !expect_continue {
        let small = match body.framing {
            BodyFraming::Length(n) => n as usize <= REPLAY_BUFFER_BYTES,
            _ => true,
        };
        if small {
            let mut whole = Vec::new();
            read_body_into(conn, body, settings, &mut whole, REPLAY_BUFFER_BYTES).await?;
            if body.complete {
                let mut cow = Cow::Borrowed(&whole[..]);
                phase(app.request_body_filter(session, &mut cow, true, ctx)).await?;
                body.buffered = Some(cow.into_owned());
            } else {
                body.prefix = whole;
            }
        }
    }

    let max_retries = core.max_retries;
    let mut last_error: Option<Box<Error>> = None;
    loop {
        let peer = match phase(app.upstream_peer(session, ctx)).await {
            Ok(p) => p,
            // No peer left to retry on: the failure that caused the retry is the one to report.
            Err(e) if e.kind == ErrorKind::NoPeer => return Err(last_error.unwrap_or(e)),
            Err(e) => return Err(e),
        };
        session.peer = Some(peer.clone());
        let (up, reused) = match core.pool.checkout(peer.addr) {
            Some(s) => {
                bump(&core.metrics.upstream_reused);
                (s, true)
            }
            None => match B::connect(peer.addr, peer.connect_timeout).await {
                Ok(s) => {
                    bump(&core.metrics.upstream_connects);
                    (s, false)
                }
                Err(e) => {
                    let e = Error::connect(e).context("connecting upstream");
                    let e = error_phase(|e| app.fail_to_connect(session, &peer, ctx, e), e);
                    if e.retry_allowed(false) && session.retries < max_retries && body.replayable()
                    {
                        session.retries += 1;
                        bump(&core.metrics.retries);
                        last_error = Some(e);
                        continue;
                    }
                    return Err(e);
                }
            },
        };
        session.upstream_reused = reused;
        let mut up = Conn::new(up);
        // The client's timer serves the upstream reads too (one task, one wait at a time on
        // each connection); the client gets it back after the exchange.
        std::mem::swap(&mut up.timer, &mut conn.timer);
        let exchanged = exchange::<B, P>(
            app,
            core,
            settings,
            conn,
            &mut up,
            session,
            ctx,
            body,
            expect_continue,
            &peer,
        )
        .await;
        std::mem::swap(&mut up.timer, &mut conn.timer);
        match exchanged {
            Ok(Exchange {
                keep_downstream,
                keep_upstream,
            }) => {
                if keep_upstream && !core.shutdown.is_set() {
                    core.pool.checkin(peer.addr, up.stream);
                }
                return Ok(keep_downstream);
            }
            Err((e, first_write_failed)) => {
                if e.side != Side::Upstream {
                    return Err(e);
                }
                let e = if first_write_failed && reused {
                    e.set_retry(Retry::IfReused)
                } else {
                    e
                };
                let e = error_phase(|e| app.error_while_proxy(&peer, session, e, ctx, reused), e);
                if e.retry_allowed(reused)
                    && session.retries < max_retries
                    && !session.response_started()
                    && body.replayable()
                {
                    session.retries += 1;
                    bump(&core.metrics.retries);
                    last_error = Some(e);
                    continue;
                }
                return Err(e);
            }
        }
    }
}

/// Reads a Content-Length body whole into `out` (bounded by the caller).
async fn read_body_into<S: Stream>(
    conn: &mut Conn<S>,
    body: &mut ReqBody,
    settings: &HttpSettings,
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<()> {
    while !body.complete && out.len() <= limit {
        let next = conn.next_bytes(settings.body_timeout).await;
        let mut buf = match next {
            Ok(Some(buf)) => buf,
            Ok(None) => {
                return Err(Error::downstream(ErrorKind::ConnectionClosed)
                    .context("reading the request body"))
            }
            Err(e) => {
                return Err(Error::io(Side::Downstream, true, e).context("reading the request body"))
            }
        };
        while !buf.is_empty() && !body.complete {
            let d = body
                .decoder
                .decode(&buf)
                .map_err(|e| invalid(Side::Downstream, e))?;
            out.extend_from_slice(&buf[d.data.clone()]);
            body.read += d.data.len() as u64;
            if settings.max_body_bytes.is_some_and(|max| body.read > max) {
                return Err(Error::new(ErrorKind::HttpStatus(413), Side::Downstream));
            }
            buf.advance(d.consumed);
            body.complete = d.done;
        }
        if !buf.is_empty() {
            conn.pending = Some(buf);
        }
    }
    Ok(())
}

/// Reads and discards up to [`DRAIN_LIMIT_BYTES`] of body; true if the body ended within it.
async fn drain_body<S: Stream>(
    conn: &mut Conn<S>,
    body: &mut ReqBody,
    settings: &HttpSettings,
) -> bool {
    while !body.complete && body.read <= DRAIN_LIMIT_BYTES {
        let Ok(Some(mut buf)) = conn.next_bytes(settings.body_timeout).await else {
            return false;
        };
        let Ok(d) = body.decoder.decode(&buf) else {
            return false;
        };
        body.read += d.data.len() as u64;
        buf.advance(d.consumed);
        if !buf.is_empty() {
            conn.pending = Some(buf);
        }
        body.complete = d.done;
    }
    body.complete
}

struct Exchange {
    keep_downstream: bool,
    keep_upstream: bool,
}

/// One attempt against one upstream connection: send the request, relay the response.
///
/// Errors come with whether the very first write to the upstream failed (on a reused
/// connection that proves the origin never saw the request).
#[allow(clippy::too_many_arguments)]
async fn exchange<B: Backend, P: ProxyHttp>(
    app: &P,
    core: &CoreCtx<B::Stream>,
    settings: &HttpSettings,
    down: &mut Conn<B::Stream>,
    up: &mut Conn<B::Stream>,
    session: &mut Session,
    ctx: &mut P::Ctx,
    body: &mut ReqBody,
    expect_continue: bool,
    peer: &HttpPeer,
) -> std::result::Result<Exchange, (Box<Error>, bool)> {
    // A copy the upstream request filter can add a few fields to without reallocating.
    let original = session.req_header();
    let mut up_req = original.clone_with_room(UPSTREAM_ROOM_FIELDS, UPSTREAM_ROOM_BYTES);
    let upgrade = upgrade_requested(&up_req);
    remove_hop_by_hop(&mut up_req.headers);
    if let Some(proto) = &upgrade {
        // RFC 9110 section 7.8: Upgrade is hop-by-hop, so the proxy re-adds it for the next
        // hop. Nothing after this head is forwarded until the origin answers 101.
        up_req.headers.insert("Upgrade", proto.as_slice());
    }
    phase(app.upstream_request_filter(session, &mut up_req, ctx))
        .await
        .map_err(|e| (e, false))?;
    // The upstream always gets HTTP/1.1 with keep-alive; framing is regenerated from what the
    // driver will actually send (RFC 9112 section 6.1: never forward a framing header as-is).
    up_req.version = Version::Http11;
    let up_framing = match (&body.buffered, &body.framing) {
        (Some(b), _) => BodyFraming::Length(b.len() as u64),
        (None, BodyFraming::None) => BodyFraming::None,
        (None, BodyFraming::Length(n)) => BodyFraming::Length(*n),
        (None, _) => BodyFraming::Chunked,
    };
    let mut out = recycle::head_buffer();
    encode_request_head(
        &up_req,
        &up_framing,
        upgrade.as_ref().map(|_| "upgrade"),
        &mut out,
    );
    if let Some(b) = &body.buffered {
        out.extend_from_slice(b);
    }
    // With no body left to stream, the response is read next: the head goes out as the last
    // write before that read, linked to it.
    let streams_body = body.buffered.is_none() && !body.complete;
    let back = send_maybe_last(
        &mut up.stream,
        out,
        !streams_body,
        peer.write_timeout,
        Side::Upstream,
        "writing the request head",
    )
    .await
    .map_err(|e| (e, true))?;
    let mut out = back.unwrap_or_default();

    let mut early_head = None;
    if streams_body {
        if expect_continue {
            // Relay the origin's 100 (or its early final answer) before the client sends.
            match timeout(EXPECT_CONTINUE_WAIT, up.stream.read()).await {
                Ok(Some(buf)) => {
                    up.pending = Some(buf);
                    let head = read_response_head(up, settings, peer).await?;
                    if head.status == 100 {
                        relay_interim(down, session, &head, settings).await?;
                    } else {
                        early_head = Some(head);
                    }
                }
                Ok(None) => {
                    return Err((
                        Error::upstream(ErrorKind::ConnectionClosed)
                            .context("awaiting 100-continue"),
                        false,
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
                Err(e) => return Err((Error::io(Side::Upstream, true, e), false)),
            }
        }
        if early_head.is_none() {
            stream_request_body(
                app,
                settings,
                down,
                up,
                session,
                ctx,
                body,
                &up_framing,
                peer,
                &mut out,
            )
            .await?;
        }
    }

    // Response head, relaying interim 1xx responses as they come.
    let mut resp = loop {
        let head = match early_head.take() {
            Some(h) => h,
            None => read_response_head(up, settings, peer).await?,
        };
        if (100..200).contains(&head.status) && head.status != 101 {
            relay_interim(down, session, &head, settings).await?;
            continue;
        }
        break head;
    };
    if resp.status == 101 {
        let Some(requested) = &upgrade else {
            // A 101 nobody asked for: an upstream protocol error, never a tunnel.
            return Err((
                Error::upstream(ErrorKind::InvalidHttp(HttpError::InvalidStatusLine))
                    .context("unsolicited 101"),
                false,
            ));
        };
        return open_tunnel(app, settings, down, up, session, ctx, resp, requested).await;
    }
    let resp_framing = response_framing(&session.req_header().method, &resp).map_err(|e| {
        (
            invalid(Side::Upstream, e).context("response framing"),
            false,
        )
    })?;
    let upstream_keep = response_keep_alive(&resp, &resp_framing);
    // A response to HEAD, and a 304, may state the length the full response would have had
    // (RFC 9110 sections 8.6 and 15.4.5): keep it, though no body follows.
    let advertised = match resp_framing {
        BodyFraming::None if session.req_header().method.is_head() || resp.status == 304 => {
            match request_like_length(&resp.headers) {
                Some(n) => BodyFraming::Length(n),
                None => BodyFraming::None,
            }
        }
        _ => BodyFraming::None,
    };
    phase(app.upstream_response_filter(session, &mut resp, ctx))
        .await
        .map_err(|e| (e, false))?;
    remove_hop_by_hop(&mut resp.headers);
    phase(app.response_filter(session, &mut resp, ctx))
        .await
        .map_err(|e| (e, false))?;

    let client_version = session.req_header().version;
    let down_framing = match resp_framing {
        BodyFraming::None => BodyFraming::None,
        BodyFraming::Length(n) => BodyFraming::Length(n),
        // An HTTP/1.0 client cannot read chunked: re-frame as close-delimited.
        _ if client_version == Version::Http10 => BodyFraming::CloseDelimited,
        _ => BodyFraming::Chunked,
    };
    let keep_downstream = request_keep_alive(session.req_header())
        && !core.shutdown.is_set()
        && !matches!(down_framing, BodyFraming::CloseDelimited)
        && body.complete;
    let connection = match (keep_downstream, client_version) {
        (false, _) => Some("close"),
        (true, Version::Http10) => Some("keep-alive"),
        (true, _) => None,
    };
    resp.version = Version::Http11;
    out.clear();
    let head_framing = if matches!(advertised, BodyFraming::Length(_)) {
        &advertised
    } else {
        &down_framing
    };
    encode_response_head(&resp, head_framing, connection, &mut out);
    session.status = Some(resp.status);
    let clean = relay_response(
        app,
        settings,
        down,
        up,
        session,
        ctx,
        &resp_framing,
        &down_framing,
        peer,
        out,
        keep_downstream,
    )
    .await?;
    Ok(Exchange {
        keep_downstream: keep_downstream && clean.downstream_ok,
        keep_upstream: upstream_keep && clean.upstream_ok && body.complete,
    })
}

async fn read_response_head<S: Stream>(
    up: &mut Conn<S>,
    settings: &HttpSettings,
    peer: &HttpPeer,
) -> std::result::Result<ResponseHead, (Box<Error>, bool)> {
    let limits = settings.limits;
    match read_head(
        up,
        |b| parse_response(b, &limits),
        &limits,
        peer.read_timeout,
        peer.read_timeout,
        None,
    )
    .await
    {
        Ok(Ok(head)) => Ok(head),
        Ok(Err(_)) => Err((
            Error::upstream(ErrorKind::ConnectionClosed).context("reading the response head"),
            false,
        )),
        Err(HeadError::Http(e)) => Err((
            invalid(Side::Upstream, e).context("parsing the response head"),
            false,
        )),
        Err(HeadError::Io(e)) if LastWriteFailed::is(&e) => {
            // The request went out as the last write before this read (`write_last`), whose
            // failure surfaces here: the request's write failed, as if `send` had said so.
            Err((
                Error::io(Side::Upstream, false, e).context("writing the request head"),
                true,
            ))
        }
        Err(HeadError::Io(e)) => Err((
            Error::io(Side::Upstream, true, e).context("reading the response head"),
            false,
        )),
        Err(HeadError::Timeout { .. }) => Err((
            Error::upstream(ErrorKind::ReadTimeout).context("awaiting the response head"),
            false,
        )),
    }
}

async fn relay_interim<S: Stream>(
    down: &mut Conn<S>,
    session: &mut Session,
    head: &ResponseHead,
    settings: &HttpSettings,
) -> std::result::Result<(), (Box<Error>, bool)> {
    // RFC 9110 section 15.2: a 1xx is not sent to an HTTP/1.0 client.
    if session.req_header().version == Version::Http10 {
        return Ok(());
    }
    let mut h = head.clone();
    remove_hop_by_hop(&mut h.headers);
    let mut out = Vec::with_capacity(64);
    encode_response_head(&h, &BodyFraming::None, None, &mut out);
    session.downstream_bytes_sent += out.len() as u64;
    send(
        &mut down.stream,
        out,
        settings.send_timeout,
        Side::Downstream,
        "relaying a 1xx",
    )
    .await
    .map(|_| ())
    .map_err(|e| (e, false))
}

/// Writes the encoded body bytes in `out` to the upstream within its write timeout and hands
/// the emptied buffer back in `out` for the next chunk.
async fn send_body_bytes<S: Stream>(
    up: &mut Conn<S>,
    out: &mut Vec<u8>,
    peer: &HttpPeer,
) -> std::result::Result<(), (Box<Error>, bool)> {
    let back = send(
        &mut up.stream,
        std::mem::take(out),
        peer.write_timeout,
        Side::Upstream,
        "writing the request body",
    )
    .await
    .map_err(|e| (e, false))?;
    *out = back.unwrap_or_default();
    Ok(())
}

/// Streams the rest of the request body upstream, re-framed as `up_framing`.
#[allow(clippy::too_many_arguments)]
async fn stream_request_body<S: Stream, P: ProxyHttp>(
    app: &P,
    settings: &HttpSettings,
    down: &mut Conn<S>,
    up: &mut Conn<S>,
    session: &mut Session,
    ctx: &mut P::Ctx,
    body: &mut ReqBody,
    up_framing: &BodyFraming,
    peer: &HttpPeer,
    out: &mut Vec<u8>,
) -> std::result::Result<(), (Box<Error>, bool)> {
    let mut encoder = BodyEncoder::new(up_framing);
    body.streamed = true;
    if !body.prefix.is_empty() {
        // The bytes read before connecting go first.
        let prefix = std::mem::take(&mut body.prefix);
        let mut cow = Cow::Borrowed(&prefix[..]);
        phase(app.request_body_filter(session, &mut cow, false, ctx))
            .await
            .map_err(|e| (e, false))?;
        out.clear();
        encoder.encode(&cow, out).map_err(|e| {
            (
                invalid(Side::Internal, e).context("request body filter changed the length"),
                false,
            )
        })?;
        send_body_bytes(up, out, peer).await?;
    }
    while !body.complete {
        let next = down.next_bytes(settings.body_timeout).await;
        let mut buf = match next {
            Ok(Some(b)) => b,
            Ok(None) => {
                return Err((
                    Error::downstream(ErrorKind::ConnectionClosed)
                        .context("reading the request body"),
                    false,
                ))
            }
            Err(e) => {
                return Err((
                    Error::io(Side::Downstream, true, e).context("reading the request body"),
                    false,
                ))
            }
        };
        out.clear();
        while !buf.is_empty() && !body.complete {
            // A malformed chunk aborts the upstream request before it ends: the caller drops
            // the upstream connection unpooled.
            let d = body
                .decoder
                .decode(&buf)
                .map_err(|e| (invalid(Side::Downstream, e), false))?;
            body.read += d.data.len() as u64;
            if settings.max_body_bytes.is_some_and(|max| body.read > max) {
                // A chunked body that outgrew the limit: the upstream request is aborted before
                // it ends (the connection is dropped, never pooled).
                return Err((
                    Error::new(ErrorKind::HttpStatus(413), Side::Downstream),
                    false,
                ));
            }
            body.complete = d.done;
            let mut cow = Cow::Borrowed(&buf[d.data.clone()]);
            phase(app.request_body_filter(session, &mut cow, d.done, ctx))
                .await
                .map_err(|e| (e, false))?;
            encoder.encode(&cow, out).map_err(|e| {
                (
                    invalid(Side::Internal, e).context("request body filter changed the length"),
                    false,
                )
            })?;
            buf.advance(d.consumed);
        }
        if body.complete {
            encoder
                .finish(out)
                .map_err(|e| (invalid(Side::Internal, e), false))?;
        }
        if !buf.is_empty() {
            down.pending = Some(buf);
        }
        if !out.is_empty() {
            send_body_bytes(up, out, peer).await?;
        }
    }
    Ok(())
}

struct Clean {
    downstream_ok: bool,
    upstream_ok: bool,
}

/// Writes the response head (with the first body bytes) and streams the body.
#[allow(clippy::too_many_arguments)]
async fn relay_response<S: Stream, P: ProxyHttp>(
    app: &P,
    settings: &HttpSettings,
    down: &mut Conn<S>,
    up: &mut Conn<S>,
    session: &mut Session,
    ctx: &mut P::Ctx,
    resp_framing: &BodyFraming,
    down_framing: &BodyFraming,
    peer: &HttpPeer,
    mut out: Vec<u8>,
    read_next: bool,
) -> std::result::Result<Clean, (Box<Error>, bool)> {
    let mut decoder = BodyDecoder::new(resp_framing);
    let mut encoder = BodyEncoder::new(down_framing);
    let mut done = matches!(resp_framing, BodyFraming::None);
    let mut excess = false;
    let mut eof = false;
    // When the framing adds nothing (Content-Length or close-delimited on both sides), a
    // received buffer the body filter left alone is sent as it is: no copy into `out`.
    let passthrough = matches!(
        (resp_framing, down_framing),
        (BodyFraming::Length(_), BodyFraming::Length(_))
            | (BodyFraming::CloseDelimited, BodyFraming::CloseDelimited)
    );
    if !read_next {
        down.stream.no_more_reads();
    }
    // Bytes the upstream sent after the response head arrive first.
    let mut next = up.pending.take();
    loop {
        if let Some(mut buf) = next.take() {
            while !buf.is_empty() && !done {
                let d = decoder
                    .decode(&buf)
                    .map_err(|e| (invalid(Side::Upstream, e).context("response body"), false))?;
                done = d.done;
                let mut cow = Cow::Borrowed(&buf[d.data.clone()]);
                phase_sync(|| app.response_body_filter(session, &mut cow, d.done, ctx))
                    .map_err(|e| (e, false))?;
                if passthrough
                    && (out.is_empty() || buf.headroom() >= out.len())
                    && d.data.start == 0
                    && matches!(cow, Cow::Borrowed(_))
                {
                    // The buffer itself goes out; the decoder bounded it by the same length.
                    let n = d.data.len();
                    if let BodyEncoder::Length(remaining) = &mut encoder {
                        *remaining = remaining.saturating_sub(n as u64);
                    }
                    excess |= d.consumed < buf.len();
                    let mut whole = std::mem::replace(&mut buf, IoBuf::from_vec(Vec::new()));
                    whole.truncate(n);
                    if !out.is_empty() {
                        // The response head, re-encoded, goes in the space the upstream's head
                        // used, in front of the body that arrived with it: one send, and the
                        // body is not copied (a 16 KiB response was, into `out`). The headroom
                        // was checked above, so this cannot fail and leave the head behind.
                        let fitted = whole.prepend(&out);
                        debug_assert!(fitted, "headroom checked before");
                        session.downstream_bytes_sent += out.len() as u64;
                        out.clear();
                    }
                    if !whole.is_empty() {
                        session.downstream_bytes_sent += n as u64;
                        // The response's last bytes, and the client is read next?
                        let last = read_next && done && !excess && down.idle();
                        send_response(&mut down.stream, whole, last, settings).await?;
                    }
                    break;
                }
                encoder.encode(&cow, &mut out).map_err(|e| {
                    (
                        invalid(Side::Internal, e)
                            .context("response body filter changed the length"),
                        false,
                    )
                })?;
                buf.advance(d.consumed);
            }
            // Bytes past the end of a framed response: never pool a connection that sent them.
            excess |= !buf.is_empty();
        }
        if done {
            encoder
                .finish(&mut out)
                .map_err(|e| (invalid(Side::Internal, e), false))?;
        }
        if !out.is_empty() {
            session.downstream_bytes_sent += out.len() as u64;
            // The response's last bytes, and the client is read next?
            let last = read_next && done && !excess && down.idle();
            let back =
                send_response(&mut down.stream, std::mem::take(&mut out), last, settings).await?;
            out = back.unwrap_or_default();
            out.clear();
            if last {
                break;
            }
        }
        if done {
            break;
        }
        match up.timer.timeout(peer.read_timeout, up.stream.read()).await {
            Ok(Some(buf)) => next = Some(buf),
            Ok(None) => {
                // EOF ends a close-delimited body; anywhere else it truncates the response, and
                // the client's connection is cut rather than left looking complete.
                decoder
                    .on_eof()
                    .map_err(|e| (invalid(Side::Upstream, e).context("response body"), false))?;
                done = true;
                eof = true;
            }
            Err(e) => {
                return Err((
                    Error::io(Side::Upstream, true, e).context("reading the response body"),
                    false,
                ))
            }
        }
    }
    recycle::give_back_head_buffer(out);
    Ok(Clean {
        downstream_ok: !excess,
        upstream_ok: !excess && !eof,
    })
}

/// The protocol a request asks to upgrade to: an HTTP/1.1 request with `Upgrade` and a
/// `Connection` header naming `upgrade` (RFC 9110 section 7.8), without a body.
fn upgrade_requested(req: &RequestHead) -> Option<Vec<u8>> {
    if req.version != Version::Http11 {
        return None;
    }
    let proto = req.headers.get("upgrade")?;
    let named = req.headers.get_all("connection").any(|v| {
        v.split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
    });
    let bodyless =
        !req.headers.contains("content-length") && !req.headers.contains("transfer-encoding");
    (named && bodyless && !proto.is_empty()).then(|| proto.to_vec())
}

/// Relays the origin's 101 and then bytes both ways until both sides have closed, either side
/// fails, or neither sends anything for the tunnel idle timeout.
#[allow(clippy::too_many_arguments)]
async fn open_tunnel<S: Stream, P: ProxyHttp>(
    app: &P,
    settings: &HttpSettings,
    down: &mut Conn<S>,
    up: &mut Conn<S>,
    session: &mut Session,
    ctx: &mut P::Ctx,
    mut resp: ResponseHead,
    requested: &[u8],
) -> std::result::Result<Exchange, (Box<Error>, bool)> {
    let proto = resp
        .headers
        .get("upgrade")
        .map(<[u8]>::to_vec)
        .unwrap_or_else(|| requested.to_vec());
    phase(app.upstream_response_filter(session, &mut resp, ctx))
        .await
        .map_err(|e| (e, false))?;
    remove_hop_by_hop(&mut resp.headers);
    phase(app.response_filter(session, &mut resp, ctx))
        .await
        .map_err(|e| (e, false))?;
    resp.headers.insert("Upgrade", proto.as_slice());
    let mut out = Vec::with_capacity(256);
    encode_response_head(&resp, &BodyFraming::None, Some("upgrade"), &mut out);
    session.status = Some(101);
    session.downstream_bytes_sent += out.len() as u64;
    send(
        &mut down.stream,
        out,
        settings.send_timeout,
        Side::Downstream,
        "writing the 101",
    )
    .await
    .map_err(|e| (e, false))?;
    tunnel(down, up, settings).await.map_err(|e| (e, false))?;
    Ok(Exchange {
        keep_downstream: false,
        keep_upstream: false,
    })
}

/// Copies bytes both ways. Each direction ends with its reader's EOF, passed on as a FIN.
async fn tunnel<S: Stream>(
    down: &mut Conn<S>,
    up: &mut Conn<S>,
    settings: &HttpSettings,
) -> Result<()> {
    enum Got {
        Down(io::Result<Option<IoBuf>>),
        Up(io::Result<Option<IoBuf>>),
    }
    let idle = settings.tunnel_idle_timeout;
    let wdur = settings.send_timeout;
    // Bytes the client sent after its Upgrade request, and the origin after its 101, go first.
    if let Some(p) = down.pending.take() {
        send(&mut up.stream, p, wdur, Side::Upstream, "relaying a tunnel").await?;
    }
    if let Some(p) = up.pending.take() {
        send(
            &mut down.stream,
            p,
            wdur,
            Side::Downstream,
            "relaying a tunnel",
        )
        .await?;
    }
    let (mut down_open, mut up_open) = (true, true);
    while down_open || up_open {
        let (ds, us) = (&mut down.stream, &mut up.stream);
        // Reading is cancel-safe on every backend: the read that loses the race loses no bytes.
        let got = timeout(idle, async {
            Ok(match (down_open, up_open) {
                (true, true) => {
                    futures_lite::future::or(async { Got::Down(ds.read().await) }, async {
                        Got::Up(us.read().await)
                    })
                    .await
                }
                (true, false) => Got::Down(ds.read().await),
                _ => Got::Up(us.read().await),
            })
        })
        .await;
        match got {
            Err(_) => return Err(Error::downstream(ErrorKind::ReadTimeout).context("tunnel idle")),
            Ok(Got::Down(Ok(Some(buf)))) => {
                send(
                    &mut up.stream,
                    buf,
                    wdur,
                    Side::Upstream,
                    "relaying a tunnel",
                )
                .await?;
            }
            Ok(Got::Up(Ok(Some(buf)))) => {
                send(
                    &mut down.stream,
                    buf,
                    wdur,
                    Side::Downstream,
                    "relaying a tunnel",
                )
                .await?;
            }
            Ok(Got::Down(Ok(None))) => {
                down_open = false;
                let _ = up.stream.shutdown_write().await;
            }
            Ok(Got::Up(Ok(None))) => {
                up_open = false;
                let _ = down.stream.shutdown_write().await;
            }
            Ok(Got::Down(Err(e))) => return Err(Error::io(Side::Downstream, true, e)),
            Ok(Got::Up(Err(e))) => return Err(Error::io(Side::Upstream, true, e)),
        }
    }
    Ok(())
}

/// The single, all-digit Content-Length of a head, if it has exactly one.
fn request_like_length(headers: &ringway_protocols::http::v1::Headers) -> Option<u64> {
    let mut values = headers.get_all("content-length");
    let v = values.next()?;
    if values.next().is_some() || v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Writes a response a phase built (`request_filter`).
async fn write_direct<S: Stream>(
    conn: &mut Conn<S>,
    session: &mut Session,
    mut direct: super::session::DirectResponse,
    keep: bool,
    settings: &HttpSettings,
) -> Result<()> {
    remove_hop_by_hop(&mut direct.head.headers);
    let head_only = session.req_header().method.is_head();
    let mut out = Vec::with_capacity(256 + direct.body.len());
    encode_response_head(
        &direct.head,
        &BodyFraming::Length(direct.body.len() as u64),
        if keep { None } else { Some("close") },
        &mut out,
    );
    if !head_only {
        out.extend_from_slice(&direct.body);
    }
    session.status = Some(direct.head.status);
    session.downstream_bytes_sent += out.len() as u64;
    if !keep {
        conn.stream.no_more_reads();
    }
    send(
        &mut conn.stream,
        out,
        settings.send_timeout,
        Side::Downstream,
        "writing a response",
    )
    .await
    .map(|_| ())
}

/// Sends a bodiless error response and reports whether it was written.
async fn send_status<S: Stream>(
    stream: &mut S,
    status: u16,
    keep: bool,
    settings: &HttpSettings,
) -> bool {
    let head = ResponseHead::new(status);
    let mut out = Vec::with_capacity(96);
    encode_response_head(
        &head,
        &BodyFraming::Length(0),
        if keep { None } else { Some("close") },
        &mut out,
    );
    if !keep {
        stream.no_more_reads();
    }
    let (r, _) = write_timed(stream, out, settings.send_timeout, false).await;
    r.is_ok()
}

/// Answers a request that never reached the phases (bad head, timeout), then the caller closes.
async fn send_error<S: Stream>(stream: &mut S, status: u16, settings: &HttpSettings) {
    send_status(stream, status, false, settings).await;
}

/// [`send_error`] on the heap: its state is over a kilobyte, and inlined into the connection
/// loop it would be paid by every idle keep-alive connection, not only by the rare one that
/// gets an error before a request is parsed.
async fn send_error_boxed<S: Stream>(stream: &mut S, status: u16, settings: &HttpSettings) {
    Box::pin(send_error(stream, status, settings)).await;
}
