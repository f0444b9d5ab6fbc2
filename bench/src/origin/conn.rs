//! One origin connection: parses pipelined requests out of the read buffer and answers each in
//! order, batching the responses of one read into one write. Request bodies are consumed as
//! they arrive, in bounded memory (`/echo` streams them back).

use std::io;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ringway_protocols::http::v1::{
    canonical_reason, BodyDecoder, BodyEncoder, BodyFraming, HttpError,
};
use ringway_protocols::l4::{Stream, READ_BUF_SIZE};

use super::request::{parse_request_head, RequestError, RequestHead, Route, MAX_HEAD_BYTES};
use super::Shared;
use crate::fnv::{push_hex16, Fnv1a64};
use crate::framing::{decode_body, push_u64};

/// Pending response bytes past which the connection writes before parsing further.
const FLUSH_AT: usize = 64 * 1024;

/// What every connection of one executor answers with, prepared once.
pub(crate) struct CoreCtx {
    /// The fixed body.
    pub(crate) body: Vec<u8>,
    /// Answer with chunked encoding.
    pub(crate) chunked: bool,
    /// Wait this long before answering each request.
    pub(crate) delay: Duration,
    /// Counters shared with the handle.
    pub(crate) shared: Arc<Shared>,
    /// This executor's index in the shared counters.
    pub(crate) index: usize,
    /// The common 200 response up to the connection number: `... X-Origin-Conn: `.
    fast_prefix: Vec<u8>,
    /// The rest of the common 200 response: `\r\n\r\n` and the framed body.
    fast_suffix: Vec<u8>,
}

impl CoreCtx {
    pub(crate) fn new(
        body_size: usize,
        chunked: bool,
        delay: Duration,
        shared: Arc<Shared>,
        index: usize,
    ) -> CoreCtx {
        let body = vec![b'x'; body_size];
        let mut fast_prefix = b"HTTP/1.1 200 OK\r\n".to_vec();
        if chunked {
            fast_prefix.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        } else {
            fast_prefix.extend_from_slice(b"Content-Length: ");
            push_u64(&mut fast_prefix, body_size as u64);
            fast_prefix.extend_from_slice(b"\r\n");
        }
        fast_prefix.extend_from_slice(b"X-Origin-Conn: ");
        let mut fast_suffix = b"\r\n\r\n".to_vec();
        push_body(&mut fast_suffix, &body, chunked);
        CoreCtx {
            body,
            chunked,
            delay,
            shared,
            index,
            fast_prefix,
            fast_suffix,
        }
    }
}

/// Appends `body` framed as the origin sends it: as is under its Content-Length, or as one
/// chunk and the last chunk.
fn push_body(out: &mut Vec<u8>, body: &[u8], chunked: bool) {
    let framing = if chunked {
        BodyFraming::Chunked
    } else {
        BodyFraming::Length(body.len() as u64)
    };
    let mut encoder = BodyEncoder::new(&framing);
    let framed = encoder.encode(body, out).and_then(|()| encoder.finish(out));
    debug_assert!(framed.is_ok(), "the framing was chosen for this body");
}

/// Why a connection ended abnormally (logged at debug level only).
#[derive(Debug)]
pub(crate) enum ConnError {
    /// A socket error.
    Io(io::Error),
    /// A request body was badly framed or cut short.
    Body(HttpError),
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::Io(e) => write!(f, "socket error: {e}"),
            ConnError::Body(e) => write!(f, "request body: {e}"),
        }
    }
}

impl From<io::Error> for ConnError {
    fn from(e: io::Error) -> Self {
        ConnError::Io(e)
    }
}

impl From<HttpError> for ConnError {
    fn from(e: HttpError) -> Self {
        ConnError::Body(e)
    }
}

/// One accepted connection and its buffers.
pub(crate) struct Conn<S: Stream> {
    stream: S,
    seq: u64,
    ctx: Rc<CoreCtx>,
    /// Bytes read and not yet consumed start at `pos`.
    inbuf: Vec<u8>,
    pos: usize,
    /// Response bytes not yet written.
    out: Vec<u8>,
}

impl<S: Stream> Conn<S> {
    pub(crate) fn new(stream: S, seq: u64, ctx: Rc<CoreCtx>) -> Self {
        Conn {
            stream,
            seq,
            ctx,
            inbuf: Vec::with_capacity(READ_BUF_SIZE),
            pos: 0,
            out: Vec::with_capacity(4096),
        }
    }

    /// Serves requests until the peer closes, a response closes, or an error.
    pub(crate) async fn run(mut self) -> Result<(), ConnError> {
        loop {
            match parse_request_head(&self.inbuf[self.pos..]) {
                Ok(Some(head)) => {
                    self.ctx.shared.requests[self.ctx.index]
                        .0
                        .fetch_add(1, Ordering::Relaxed);
                    let keep = self.handle(head).await?;
                    if !keep {
                        self.flush().await?;
                        let _ = self.stream.shutdown_write().await;
                        return Ok(());
                    }
                    if self.out.len() >= FLUSH_AT {
                        self.flush().await?;
                    }
                }
                Ok(None) => {
                    if !self.out.is_empty() {
                        self.flush().await?;
                    }
                    if !self.fill().await? {
                        return Ok(());
                    }
                }
                Err(e) => {
                    let status = if e == RequestError::HeadTooLarge {
                        431
                    } else {
                        400
                    };
                    let seq = self.seq;
                    self.push_head(status, seq, BodyFraming::Length(0), true, None, false);
                    self.flush().await?;
                    return Ok(());
                }
            }
        }
    }

    /// Reads once more into `inbuf`; false at end of stream.
    async fn fill(&mut self) -> io::Result<bool> {
        if self.pos >= self.inbuf.len() {
            self.inbuf.clear();
        } else if self.pos > 0 {
            self.inbuf.drain(..self.pos);
        }
        self.pos = 0;
        if self.inbuf.len() > MAX_HEAD_BYTES + READ_BUF_SIZE {
            // Unreachable through parse_request_head's limit; keeps memory bounded regardless.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too large",
            ));
        }
        match self.stream.read().await? {
            Some(buf) => {
                self.inbuf.extend_from_slice(&buf);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let (res, mut buf) = self.stream.write_all(std::mem::take(&mut self.out)).await;
        buf.clear();
        self.out = buf;
        res
    }

    /// Answers one request whose head is at `pos`; returns whether the connection stays open.
    async fn handle(&mut self, head: RequestHead) -> Result<bool, ConnError> {
        let raw_head = match head.route {
            Route::Headers => Some(self.inbuf[self.pos..self.pos + head.len].to_vec()),
            _ => None,
        };
        self.pos += head.len;
        let close = head.close || head.route == Route::Close;
        let seq = self.seq;

        // The common case, prepared once per executor: GET / on a kept-alive HTTP/1.1 connection.
        if head.route == Route::Fixed
            && head.framing == BodyFraming::None
            && !head.head_method
            && !close
            && !head.http10
        {
            self.delay().await;
            self.out.extend_from_slice(&self.ctx.fast_prefix);
            push_u64(&mut self.out, seq);
            self.out.extend_from_slice(&self.ctx.fast_suffix);
            return Ok(true);
        }

        if head.expect_continue {
            self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            self.flush().await?;
        }
        self.delay().await;
        let keep_alive_10 = head.http10 && !close;

        if head.route == Route::Echo && !head.head_method {
            self.echo(head.framing, close, keep_alive_10).await?;
            return Ok(!close);
        }

        let body_stats = if head.framing == BodyFraming::None {
            None
        } else {
            Some(self.consume_body(head.framing).await?)
        };
        let status = match head.route {
            Route::Status(code) => code,
            _ => 200,
        };
        let ctx = self.ctx.clone();
        let body: &[u8] = match &raw_head {
            Some(raw) => raw,
            None => &ctx.body,
        };
        let no_body = status == 204 || status == 304;
        let framing = if no_body {
            BodyFraming::None
        } else if ctx.chunked {
            BodyFraming::Chunked
        } else {
            BodyFraming::Length(body.len() as u64)
        };
        self.push_head(status, seq, framing, close, body_stats, keep_alive_10);
        if !no_body && !head.head_method {
            push_body(&mut self.out, body, ctx.chunked);
        }
        Ok(!close)
    }

    async fn delay(&self) {
        if !self.ctx.delay.is_zero() {
            glommio::timer::sleep(self.ctx.delay).await;
        }
    }

    /// Reads and hashes a request body; returns its length and FNV-1a hash.
    async fn consume_body(&mut self, framing: BodyFraming) -> Result<(u64, u64), ConnError> {
        let mut dec = BodyDecoder::new(&framing);
        let mut hash = Fnv1a64::new();
        let mut len = 0u64;
        loop {
            self.pos += decode_body(&mut dec, &self.inbuf[self.pos..], |d| {
                len += d.len() as u64;
                hash.update(d);
                Ok(())
            })?;
            if dec.is_done() {
                return Ok((len, hash.finish()));
            }
            if !self.fill().await? {
                return Err(HttpError::TruncatedBody.into());
            }
        }
    }

    /// Streams the request body back: with its Content-Length, or chunked when it was chunked.
    async fn echo(
        &mut self,
        framing: BodyFraming,
        close: bool,
        keep_alive_10: bool,
    ) -> Result<(), ConnError> {
        let seq = self.seq;
        let out_framing = match framing {
            BodyFraming::None => BodyFraming::Length(0),
            BodyFraming::Length(n) => BodyFraming::Length(n),
            BodyFraming::Chunked | BodyFraming::CloseDelimited => BodyFraming::Chunked,
        };
        self.push_head(200, seq, out_framing, close, None, keep_alive_10);
        let mut dec = BodyDecoder::new(&framing);
        let mut enc = BodyEncoder::new(&out_framing);
        loop {
            let Conn {
                inbuf, pos, out, ..
            } = &mut *self;
            *pos += decode_body(&mut dec, &inbuf[*pos..], |d| enc.encode(d, out))?;
            if dec.is_done() {
                break;
            }
            if self.out.len() >= FLUSH_AT / 2 {
                self.flush().await?;
            }
            if !self.fill().await? {
                return Err(HttpError::TruncatedBody.into());
            }
        }
        enc.finish(&mut self.out)?;
        Ok(())
    }

    fn push_head(
        &mut self,
        status: u16,
        seq: u64,
        framing: BodyFraming,
        close: bool,
        body_stats: Option<(u64, u64)>,
        keep_alive_10: bool,
    ) {
        let out = &mut self.out;
        out.extend_from_slice(b"HTTP/1.1 ");
        push_u64(out, u64::from(status));
        out.push(b' ');
        out.extend_from_slice(canonical_reason(status).unwrap_or("Status").as_bytes());
        out.extend_from_slice(b"\r\n");
        match framing {
            // 204 and 304: no body and no framing field
            BodyFraming::None | BodyFraming::CloseDelimited => {}
            BodyFraming::Length(n) => {
                out.extend_from_slice(b"Content-Length: ");
                push_u64(out, n);
                out.extend_from_slice(b"\r\n");
            }
            BodyFraming::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        }
        out.extend_from_slice(b"X-Origin-Conn: ");
        push_u64(out, seq);
        out.extend_from_slice(b"\r\n");
        if let Some((len, fnv)) = body_stats {
            out.extend_from_slice(b"X-Body-Len: ");
            push_u64(out, len);
            out.extend_from_slice(b"\r\nX-Body-Fnv: ");
            push_hex16(out, fnv);
            out.extend_from_slice(b"\r\n");
        }
        if close {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if keep_alive_10 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
}
