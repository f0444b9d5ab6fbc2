//! Request heads as the benchmark origin needs them: the route, the body framing and whether
//! the connection stays open, parsed with httparse from the connection's buffer.

use ringway_protocols::http::v1::BodyFraming;

use crate::framing::{has_token, is_chunked, parse_content_length};

/// Most headers a request may carry.
pub(crate) const MAX_HEADERS: usize = 64;

/// Largest request head accepted, request line included.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;

/// What the origin does with a request, chosen by its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// Anything else: the fixed body.
    Fixed,
    /// `/echo`: stream the request body back.
    Echo,
    /// `/sink`: consume the body, answer with its length and hash.
    Sink,
    /// `/headers`: answer with the raw request head.
    Headers,
    /// `/status/NNN`: that status with the fixed body.
    Status(u16),
    /// `/close`: answer, then close the connection.
    Close,
}

/// Why a request head was refused (the origin answers 400 or 431 and closes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestError {
    /// httparse refused the head.
    Malformed,
    /// A Content-Length value is not a number, or two disagree.
    InvalidContentLength,
    /// A transfer coding other than chunked last.
    UnsupportedTransferEncoding,
    /// The head exceeds [`MAX_HEAD_BYTES`] or [`MAX_HEADERS`].
    HeadTooLarge,
}

/// The parts of a request head the origin acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestHead {
    /// Bytes of the head, final CRLF included.
    pub(crate) len: usize,
    /// The request used the HEAD method: answer without a body.
    pub(crate) head_method: bool,
    /// The route its path selects.
    pub(crate) route: Route,
    /// How its body is framed.
    pub(crate) framing: BodyFraming,
    /// HTTP/1.0 (answer with `Connection: keep-alive` when it asked for it).
    pub(crate) http10: bool,
    /// The connection closes after the response.
    pub(crate) close: bool,
    /// `Expect: 100-continue` was sent.
    pub(crate) expect_continue: bool,
}

fn route(path: &str) -> Route {
    let path = path.split('?').next().unwrap_or(path);
    match path {
        "/echo" => Route::Echo,
        "/sink" => Route::Sink,
        "/headers" => Route::Headers,
        "/close" => Route::Close,
        _ => match path
            .strip_prefix("/status/")
            .and_then(|s| s.parse::<u16>().ok())
        {
            Some(code) if (200..=599).contains(&code) => Route::Status(code),
            _ => Route::Fixed,
        },
    }
}

/// Parses the head at the front of `buf`; `Ok(None)` when more bytes are needed.
pub(crate) fn parse_request_head(buf: &[u8]) -> Result<Option<RequestHead>, RequestError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_HEAD_BYTES {
                return Err(RequestError::HeadTooLarge);
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(RequestError::HeadTooLarge),
        Err(_) => return Err(RequestError::Malformed),
    };
    if len > MAX_HEAD_BYTES {
        return Err(RequestError::HeadTooLarge);
    }
    let http10 = req.version == Some(0);
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut te = false;
    let mut close = http10;
    let mut expect_continue = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = parse_content_length(h.value).ok_or(RequestError::InvalidContentLength)?;
            if content_length.is_some_and(|m| m != n) {
                return Err(RequestError::InvalidContentLength);
            }
            content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te = true;
            chunked = is_chunked(h.value);
        } else if h.name.eq_ignore_ascii_case("connection") {
            if has_token(h.value, "close") {
                close = true;
            } else if has_token(h.value, "keep-alive") {
                close = false;
            }
        } else if h.name.eq_ignore_ascii_case("expect") {
            expect_continue = h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        }
    }
    // RFC 9112 section 6.3: Transfer-Encoding overrides Content-Length; a request whose final
    // coding is not chunked cannot be framed.
    let framing = if te {
        if !chunked {
            return Err(RequestError::UnsupportedTransferEncoding);
        }
        BodyFraming::Chunked
    } else {
        match content_length {
            Some(0) | None => BodyFraming::None,
            Some(n) => BodyFraming::Length(n),
        }
    };
    Ok(Some(RequestHead {
        len,
        head_method: req.method == Some("HEAD"),
        route: route(req.path.unwrap_or("/")),
        framing,
        http10,
        close,
        expect_continue: expect_continue && framing != BodyFraming::None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_framing() {
        let cases: &[(&[u8], Route, BodyFraming, bool)] = &[
            (
                b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
                Route::Fixed,
                BodyFraming::None,
                false,
            ),
            (
                b"GET /status/503?x=1 HTTP/1.1\r\n\r\n",
                Route::Status(503),
                BodyFraming::None,
                false,
            ),
            (
                b"GET /status/99 HTTP/1.1\r\n\r\n",
                Route::Fixed,
                BodyFraming::None,
                false,
            ),
            (
                b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
                Route::Echo,
                BodyFraming::Length(5),
                false,
            ),
            (
                b"POST /sink HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                Route::Sink,
                BodyFraming::Chunked,
                false,
            ),
            (
                b"GET /headers HTTP/1.0\r\n\r\n",
                Route::Headers,
                BodyFraming::None,
                true,
            ),
            (
                b"GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
                Route::Fixed,
                BodyFraming::None,
                false,
            ),
            (
                b"GET /close HTTP/1.1\r\nConnection: close\r\n\r\n",
                Route::Close,
                BodyFraming::None,
                true,
            ),
        ];
        for (input, route, framing, close) in cases {
            let head = parse_request_head(input).unwrap().unwrap();
            assert_eq!(
                (head.route, head.framing, head.close),
                (*route, *framing, *close),
                "{input:?}"
            );
            assert_eq!(head.len, input.len());
        }
    }

    #[test]
    fn partial_and_refused_heads() {
        assert_eq!(parse_request_head(b"GET / HTTP/1.1\r\nHost"), Ok(None));
        assert_eq!(
            parse_request_head(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            Err(RequestError::InvalidContentLength)
        );
        assert_eq!(
            parse_request_head(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(RequestError::InvalidContentLength)
        );
        assert_eq!(
            parse_request_head(b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Err(RequestError::UnsupportedTransferEncoding)
        );
        assert_eq!(
            parse_request_head(b"\x01\x02 / HTTP/1.1\r\n\r\n"),
            Err(RequestError::Malformed)
        );
    }
}
