//! One origin connection: parses pipelined requests out of the read buffer and answers each in
//! order, batching the responses of one read into one write. Request bodies are consumed as
//! they arrive, in bounded memory (`/echo` streams them back).

use std::io;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ringway_protocols::l4::{Stream, READ_BUF_SIZE};

use super::request::{parse_request_head, RequestError, RequestHead, Route, MAX_HEAD_BYTES};
use super::Shared;
use crate::framing::{push_hex, push_hex16, push_u64, BodyDecoder, Fnv1a64, Framing, FramingError};

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
        push_framed_body(&mut fast_suffix, &body, chunked);
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

/// Appends `body` framed as the origin sends it: raw, or as one chunk plus the last chunk.
fn push_framed_body(out: &mut Vec<u8>, body: &[u8], chunked: bool) {
    if chunked {
        if !body.is_empty() {
            push_hex(out, body.len() as u64);
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(body);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
    } else {
        out.extend_from_slice(body);
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// How a response body is framed on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Out {
    /// No body and no framing header (204, 304).
    Bare,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Why a connection ended abnormally (logged at debug level only).
#[derive(Debug)]
pub(crate) enum ConnError {
    /// A socket error.
    Io(io::Error),
    /// A request body could not be decoded.
    Framing(FramingError),
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::Io(e) => write!(f, "socket error: {e}"),
            ConnError::Framing(e) => write!(f, "request body: {e}"),
        }
    }
}

impl From<io::Error> for ConnError {
    fn from(e: io::Error) -> Self {
        ConnError::Io(e)
    }
}

impl From<FramingError> for ConnError {
    fn from(e: FramingError) -> Self {
        ConnError::Framing(e)
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
                    self.push_head(status, seq, Out::Length(0), true, None, false);
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
            && head.framing == Framing::Empty
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

        let body_stats = if head.framing == Framing::Empty {
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
            Out::Bare
        } else if ctx.chunked {
            Out::Chunked
        } else {
            Out::Length(body.len() as u64)
        };
        self.push_head(status, seq, framing, close, body_stats, keep_alive_10);
        if !no_body && !head.head_method {
            push_framed_body(&mut self.out, body, ctx.chunked);
        }
        Ok(!close)
    }

    async fn delay(&self) {
        if !self.ctx.delay.is_zero() {
            glommio::timer::sleep(self.ctx.delay).await;
        }
    }

    /// Reads and hashes a request body; returns its length and FNV-1a hash.
    async fn consume_body(&mut self, framing: Framing) -> Result<(u64, u64), ConnError> {
        let mut dec = BodyDecoder::new(framing);
        let mut hash = Fnv1a64::new();
        let mut len = 0u64;
        loop {
            let n = dec.feed(&self.inbuf[self.pos..], &mut |d: &[u8]| {
                len += d.len() as u64;
                hash.update(d);
            })?;
            self.pos += n;
            if dec.is_done() {
                return Ok((len, hash.finish()));
            }
            if !self.fill().await? {
                return Err(FramingError::Truncated.into());
            }
        }
    }

    /// Streams the request body back: with its Content-Length, or chunked when it was chunked.
    async fn echo(
        &mut self,
        framing: Framing,
        close: bool,
        keep_alive_10: bool,
    ) -> Result<(), ConnError> {
        let seq = self.seq;
        let chunked = framing == Framing::Chunked;
        let out_framing = match framing {
            Framing::Length(n) => Out::Length(n),
            Framing::Chunked | Framing::Eof => Out::Chunked,
            Framing::Empty => Out::Length(0),
        };
        self.push_head(200, seq, out_framing, close, None, keep_alive_10);
        let mut dec = BodyDecoder::new(framing);
        loop {
            let Conn {
                inbuf, pos, out, ..
            } = &mut *self;
            let n = dec.feed(&inbuf[*pos..], &mut |d: &[u8]| {
                if chunked {
                    push_hex(out, d.len() as u64);
                    out.extend_from_slice(b"\r\n");
                    out.extend_from_slice(d);
                    out.extend_from_slice(b"\r\n");
                } else {
                    out.extend_from_slice(d);
                }
            })?;
            *pos += n;
            if dec.is_done() {
                break;
            }
            if self.out.len() >= FLUSH_AT / 2 {
                self.flush().await?;
            }
            if !self.fill().await? {
                return Err(FramingError::Truncated.into());
            }
        }
        if chunked {
            self.out.extend_from_slice(b"0\r\n\r\n");
        }
        Ok(())
    }

    fn push_head(
        &mut self,
        status: u16,
        seq: u64,
        framing: Out,
        close: bool,
        body_stats: Option<(u64, u64)>,
        keep_alive_10: bool,
    ) {
        let out = &mut self.out;
        out.extend_from_slice(b"HTTP/1.1 ");
        push_u64(out, u64::from(status));
        out.push(b' ');
        out.extend_from_slice(reason(status).as_bytes());
        out.extend_from_slice(b"\r\n");
        match framing {
            Out::Bare => {}
            Out::Length(n) => {
                out.extend_from_slice(b"Content-Length: ");
                push_u64(out, n);
                out.extend_from_slice(b"\r\n");
            }
            Out::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
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
