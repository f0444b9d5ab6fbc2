//! Reading one response on the load generator's side: the head parsed with httparse straight
//! from the transport's buffer when it arrives whole, the body skipped without copying it,
//! whatever its framing, by the codec's `BodyDecoder`.

use ringway_protocols::http::v1::{BodyDecoder, BodyFraming};
use ringway_protocols::l4::Stream;

use super::ErrorKind;
use crate::framing::{decode_body, has_token, is_chunked, parse_content_length};

/// Headers parsed in the fast path; a response with more is re-parsed with [`MAX_HEADERS`].
const FAST_HEADERS: usize = 32;

/// Most headers a response may carry.
const MAX_HEADERS: usize = 256;

/// Largest response head accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The parts of a response head the load generator needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResponseHead {
    pub(crate) len: usize,
    pub(crate) status: u16,
    pub(crate) framing: BodyFraming,
    /// The connection cannot carry another request.
    pub(crate) close: bool,
    /// A 1xx interim response (other than 101): the final one follows.
    pub(crate) interim: bool,
}

/// Parses a response head at the front of `buf`; `Ok(None)` when more bytes are needed.
pub(crate) fn parse_response_head(
    buf: &[u8],
    head_method: bool,
) -> Result<Option<ResponseHead>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; FAST_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(status) => finish_head(&resp, status, buf.len(), head_method),
        Err(httparse::Error::TooManyHeaders) => {
            let mut headers = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(buf) {
                Ok(status) => finish_head(&resp, status, buf.len(), head_method),
                Err(_) => Err(()),
            }
        }
        Err(_) => Err(()),
    }
}

fn finish_head(
    resp: &httparse::Response<'_, '_>,
    status: httparse::Status<usize>,
    available: usize,
    head_method: bool,
) -> Result<Option<ResponseHead>, ()> {
    let len = match status {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => {
            return if available > MAX_HEAD_BYTES {
                Err(())
            } else {
                Ok(None)
            };
        }
    };
    let code = resp.code.ok_or(())?;
    let mut close = resp.version == Some(0);
    let mut content_length = None;
    let mut te = None;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = parse_content_length(h.value).ok_or(())?;
            if content_length.is_some_and(|m| m != n) {
                return Err(());
            }
            content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te = Some(is_chunked(h.value));
        } else if h.name.eq_ignore_ascii_case("connection") {
            if has_token(h.value, "close") {
                close = true;
            } else if has_token(h.value, "keep-alive") {
                close = false;
            }
        }
    }
    let interim = (100..200).contains(&code) && code != 101;
    // RFC 9112 section 6.3: no body after HEAD, 1xx, 204 and 304; Transfer-Encoding overrides
    // Content-Length; otherwise a response without either runs until the connection closes.
    let framing = if head_method || interim || code == 204 || code == 304 {
        BodyFraming::None
    } else {
        match (te, content_length) {
            (Some(true), _) => BodyFraming::Chunked,
            (Some(false), _) | (None, None) => BodyFraming::CloseDelimited,
            (None, Some(n)) => BodyFraming::Length(n),
        }
    };
    if framing == BodyFraming::CloseDelimited || code == 101 {
        close = true;
    }
    Ok(Some(ResponseHead {
        len,
        status: code,
        framing,
        close,
        interim,
    }))
}

/// A complete response, as the load generator records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Response {
    pub(crate) status: u16,
    /// Bytes read for it, head and framing included.
    pub(crate) bytes: u64,
    /// The connection cannot carry another request.
    pub(crate) close: bool,
}

/// Reads responses from one connection, keeping bytes that arrived past a response (or a head
/// split across reads) for the next call.
#[derive(Debug, Default)]
pub(crate) struct ResponseReader {
    acc: Vec<u8>,
}

impl ResponseReader {
    /// Forgets leftover bytes: call when the connection is replaced.
    pub(crate) fn reset(&mut self) {
        self.acc.clear();
    }

    /// Reads one whole response from `stream`.
    ///
    /// # Errors
    /// [`ErrorKind::Read`] when the socket fails or closes before the response is complete,
    /// [`ErrorKind::Parse`] when the head or the framing is invalid.
    pub(crate) async fn read<S: Stream>(
        &mut self,
        stream: &mut S,
        head_method: bool,
    ) -> Result<Response, ErrorKind> {
        let mut bytes = 0u64;
        let (head, mut dec) = loop {
            if !self.acc.is_empty() {
                if let Some(head) =
                    parse_response_head(&self.acc, head_method).map_err(|()| ErrorKind::Parse)?
                {
                    if head.interim {
                        self.acc.drain(..head.len);
                        continue;
                    }
                    let mut dec = BodyDecoder::new(&head.framing);
                    let n = decode_body(&mut dec, &self.acc[head.len..], |_| Ok(()))
                        .map_err(|_| ErrorKind::Parse)?;
                    let used = head.len + n;
                    if used >= self.acc.len() {
                        self.acc.clear();
                    } else {
                        self.acc.drain(..used);
                    }
                    break (head, dec);
                }
            }
            let buf = match stream.read().await {
                Ok(Some(buf)) => buf,
                Ok(None) | Err(_) => return Err(ErrorKind::Read),
            };
            bytes += buf.len() as u64;
            if self.acc.is_empty() {
                // The common case: a whole head in one read, parsed where it landed.
                match parse_response_head(&buf, head_method).map_err(|()| ErrorKind::Parse)? {
                    Some(head) if !head.interim => {
                        let mut dec = BodyDecoder::new(&head.framing);
                        let n = decode_body(&mut dec, &buf[head.len..], |_| Ok(()))
                            .map_err(|_| ErrorKind::Parse)?;
                        let used = head.len + n;
                        if used < buf.len() {
                            self.acc.extend_from_slice(&buf[used..]);
                        }
                        break (head, dec);
                    }
                    _ => self.acc.extend_from_slice(&buf),
                }
            } else {
                self.acc.extend_from_slice(&buf);
            }
        };
        let mut close = head.close;
        while !dec.is_done() {
            match stream.read().await {
                Ok(Some(buf)) => {
                    bytes += buf.len() as u64;
                    let n =
                        decode_body(&mut dec, &buf, |_| Ok(())).map_err(|_| ErrorKind::Parse)?;
                    if n < buf.len() {
                        self.acc.extend_from_slice(&buf[n..]);
                    }
                }
                Ok(None) => {
                    dec.on_eof().map_err(|_| ErrorKind::Read)?;
                    close = true;
                }
                Err(_) => return Err(ErrorKind::Read),
            }
        }
        Ok(Response {
            status: head.status,
            bytes,
            close,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_and_framing() {
        let cases: &[(&[u8], bool, u16, BodyFraming, bool)] = &[
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n",
                false,
                200,
                BodyFraming::Length(13),
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                false,
                200,
                BodyFraming::Chunked,
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\n\r\n",
                false,
                200,
                BodyFraming::CloseDelimited,
                true,
            ),
            (
                b"HTTP/1.1 204 No Content\r\n\r\n",
                false,
                204,
                BodyFraming::None,
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n",
                true,
                200,
                BodyFraming::None,
                false,
            ),
            (
                b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n",
                false,
                200,
                BodyFraming::Length(1),
                true,
            ),
            (
                b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n",
                false,
                200,
                BodyFraming::Length(1),
                false,
            ),
            (
                b"HTTP/1.1 500 X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                false,
                500,
                BodyFraming::Length(0),
                true,
            ),
        ];
        for (input, head_method, status, framing, close) in cases {
            let h = parse_response_head(input, *head_method).unwrap().unwrap();
            assert_eq!(
                (h.status, h.framing, h.close, h.len),
                (*status, *framing, *close, input.len()),
                "{input:?}"
            );
        }
        assert_eq!(
            parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Le", false),
            Ok(None)
        );
        assert!(
            parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false).is_err()
        );
        assert!(parse_response_head(b"garbage\r\n\r\n", false).is_err());
        assert!(
            parse_response_head(b"HTTP/1.1 100 Continue\r\n\r\n", false)
                .unwrap()
                .unwrap()
                .interim
        );
    }

    #[test]
    fn many_headers_fall_back_to_the_large_array() {
        let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..100 {
            head.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        head.extend_from_slice(b"Content-Length: 2\r\n\r\n");
        let h = parse_response_head(&head, false).unwrap().unwrap();
        assert_eq!(h.framing, BodyFraming::Length(2));
    }
}
