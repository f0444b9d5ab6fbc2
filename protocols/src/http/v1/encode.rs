//! Head serialization: writes a request head to an upstream or a response head to a client,
//! with framing fields regenerated from the decided [`BodyFraming`] rather than copied.

use super::framing::BodyFraming;
use super::head::{RequestHead, ResponseHead};
use super::headers::{Headers, CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};

/// Appends `n` in decimal.
fn write_decimal(mut n: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

fn write_field(name: &str, value: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A rough size for the head, so one reservation usually suffices.
fn estimate(headers: &Headers, start_line: usize) -> usize {
    start_line + headers.wire_len() + 64
}

/// Writes the fields, skipping framing fields (and `Connection` when one is supplied).
fn write_fields(headers: &Headers, connection: Option<&str>, out: &mut Vec<u8>) {
    let mut skip = CONTENT_LENGTH | TRANSFER_ENCODING;
    if connection.is_some() {
        skip |= CONNECTION;
    }
    headers.write_wire(skip, out);
}

fn write_framing(framing: &BodyFraming, out: &mut Vec<u8>) {
    match framing {
        BodyFraming::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            write_decimal(*n, out);
            out.extend_from_slice(b"\r\n");
        }
        BodyFraming::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        BodyFraming::None | BodyFraming::CloseDelimited => {}
    }
}

fn write_connection(connection: Option<&str>, out: &mut Vec<u8>) {
    if let Some(value) = connection {
        write_field("Connection", value.as_bytes(), out);
    }
}

/// Appends a request head to `out`: request line, the fields in order, the framing field for
/// `framing`, an optional `Connection`, and the empty line.
///
/// Content-Length and Transfer-Encoding still in `head.headers` are skipped: framing is
/// regenerated from `framing` (`Length(n)` writes `Content-Length: n`, `Chunked` writes
/// `Transfer-Encoding: chunked`, `None` writes nothing; a request is never close-delimited, so
/// `CloseDelimited` writes nothing either). When `connection` is given, it replaces any
/// `Connection` field in `head.headers`; otherwise those are written as they are (call
/// [`super::remove_hop_by_hop`] first when proxying). Nothing is validated: a head built from
/// untrusted strings should use [`Headers::try_insert`].
pub fn encode_request_head(
    head: &RequestHead,
    framing: &BodyFraming,
    connection: Option<&str>,
    out: &mut Vec<u8>,
) {
    let method = head.method.as_str();
    out.reserve(estimate(
        &head.headers,
        method.len() + head.target.len() + 12,
    ));
    // request-line = method SP request-target SP HTTP-version CRLF (RFC 9112 section 3)
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.target.as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.version.as_str().as_bytes());
    out.extend_from_slice(b"\r\n");
    write_fields(&head.headers, connection, out);
    write_framing(framing, out);
    write_connection(connection, out);
    out.extend_from_slice(b"\r\n");
}

/// Appends a response head to `out`: status line, the fields in order, the framing field for
/// `framing`, an optional `Connection`, and the empty line.
///
/// Framing fields in `head.headers` are skipped and regenerated from `framing`, as for
/// [`encode_request_head`]; `CloseDelimited` writes none (pair it with
/// `Some("close")`). Two statuses differ:
/// - 1xx and 204 never carry Content-Length or Transfer-Encoding, whatever `framing` says
///   (RFC 9110 section 8.6, RFC 9112 section 6.1).
/// - Otherwise, with `framing` [`BodyFraming::None`] (a response to HEAD, a 304), a single
///   all-digit Content-Length still in `head.headers` is kept as the origin sent it: there it
///   advertises the size of the representation, not this message's body (RFC 9110 sections
///   8.6 and 15.4.5). [`super::remove_hop_by_hop`] removes it, so a caller that wants it kept
///   puts it back after that call. A 2xx to CONNECT must carry none (RFC 9110 section 9.3.6):
///   the caller strips it.
///
/// Chunked framing is for HTTP/1.1 peers; re-framing for an HTTP/1.0 client is the caller's
/// choice of `framing`. Nothing is validated.
pub fn encode_response_head(
    head: &ResponseHead,
    framing: &BodyFraming,
    connection: Option<&str>,
    out: &mut Vec<u8>,
) {
    out.reserve(estimate(&head.headers, head.reason.len() + 15));
    // status-line = HTTP-version SP status-code SP [ reason-phrase ] CRLF (RFC 9112 section 4)
    out.extend_from_slice(head.version.as_str().as_bytes());
    out.push(b' ');
    write_decimal(u64::from(head.status), out);
    out.push(b' ');
    out.extend_from_slice(head.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    write_fields(&head.headers, connection, out);
    let bodiless_status = (100..200).contains(&head.status) || head.status == 204;
    if bodiless_status {
        // RFC 9110 section 8.6 / RFC 9112 section 6.1: never framing fields on 1xx or 204
    } else if *framing == BodyFraming::None {
        let mut lengths = head.headers.get_all("content-length");
        if let (Some(value), None) = (lengths.next(), lengths.next()) {
            if !value.is_empty() && value.iter().all(u8::is_ascii_digit) {
                write_field("Content-Length", value, out);
            }
        }
    } else {
        write_framing(framing, out);
    }
    write_connection(connection, out);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::v1::{
        parse_request, parse_response, request_framing, response_framing, Limits, Method, Parsed,
        Version,
    };

    fn encode_req(head: &RequestHead, framing: BodyFraming, connection: Option<&str>) -> String {
        let mut out = Vec::new();
        encode_request_head(head, &framing, connection, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn encode_res(head: &ResponseHead, framing: BodyFraming, connection: Option<&str>) -> String {
        let mut out = Vec::new();
        encode_response_head(head, &framing, connection, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn request_heads() {
        let mut head = RequestHead::new(Method::POST, "/upload?x=1");
        head.headers.append("Host", "example.com");
        head.headers.append("Content-Length", "999");
        head.headers.append("transfer-encoding", "chunked");
        head.headers.append("Connection", "keep-alive");
        assert_eq!(
            encode_req(&head, BodyFraming::Length(12), None),
            "POST /upload?x=1 HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive\r\nContent-Length: 12\r\n\r\n"
        );
        assert_eq!(
            encode_req(&head, BodyFraming::Chunked, Some("close")),
            "POST /upload?x=1 HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
        head.version = Version::Http10;
        assert_eq!(
            encode_req(&head, BodyFraming::None, None),
            "POST /upload?x=1 HTTP/1.0\r\nHost: example.com\r\nConnection: keep-alive\r\n\r\n"
        );
    }

    #[test]
    fn response_heads() {
        let mut head = ResponseHead::new(200);
        head.headers.append("Content-Type", "text/plain");
        head.headers.append("Content-Length", "5");
        assert_eq!(
            encode_res(&head, BodyFraming::Chunked, None),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        assert_eq!(
            encode_res(&head, BodyFraming::CloseDelimited, Some("close")),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
        );
        // HEAD response: the advertised length is kept
        assert_eq!(
            encode_res(&head, BodyFraming::None, None),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n"
        );
        // ... unless ambiguous
        head.headers.append("Content-Length", "5");
        assert_eq!(
            encode_res(&head, BodyFraming::None, None),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"
        );
        // 204 and 1xx never carry framing fields
        for status in [204, 100, 101] {
            let mut head = ResponseHead::new(status);
            head.headers.append("Content-Length", "0");
            let text = encode_res(&head, BodyFraming::Length(0), None);
            assert!(
                !text.to_ascii_lowercase().contains("content-length"),
                "{text}"
            );
            let text = encode_res(&head, BodyFraming::Chunked, None);
            assert!(
                !text.to_ascii_lowercase().contains("transfer-encoding"),
                "{text}"
            );
        }
        let mut head = ResponseHead::new(799);
        head.reason = "".into();
        assert_eq!(
            encode_res(&head, BodyFraming::Length(0), None),
            "HTTP/1.1 799 \r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn decimal() {
        for n in [0u64, 7, 10, 12345, u64::MAX] {
            let mut out = Vec::new();
            write_decimal(n, &mut out);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    /// Encode then parse gives the same head (and the same framing).
    #[test]
    fn request_round_trips() {
        let raws = [
            "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /p?q=1 HTTP/1.0\r\n\r\n",
            "POST /x HTTP/1.1\r\nHost: example.com:8080\r\nX-Empty: \r\nX-Obs: caf\u{e9}\r\nContent-Length: 3\r\n\r\n",
            "PUT /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
            "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
            "GET http://example.com/x HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n",
            "PURGE /cache HTTP/1.1\r\nhost: a\r\nX-Tab: a\tb\r\n\r\n",
        ];
        for raw in raws {
            let Ok(Parsed::Complete { head, len }) =
                parse_request(raw.as_bytes(), &Limits::default())
            else {
                panic!("{raw:?}");
            };
            assert_eq!(len, raw.len());
            let framing = request_framing(&head).unwrap();
            let mut out = Vec::new();
            encode_request_head(&head, &framing, None, &mut out);
            let Ok(Parsed::Complete { head: again, len }) = parse_request(&out, &Limits::default())
            else {
                panic!("{raw:?} re-encoded as {:?}", String::from_utf8_lossy(&out));
            };
            assert_eq!(len, out.len());
            assert_eq!(request_framing(&again), Ok(framing));
            // framing fields are written last; every raw head here has them last already
            assert_eq!(again, head, "{raw:?}");
        }
    }

    #[test]
    fn response_round_trips() {
        let raws = [
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 404 Not Found\r\nServer: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.0 200 OK\r\nX: y\r\n\r\n",
            "HTTP/1.1 599 \r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        ];
        for raw in raws {
            let Ok(Parsed::Complete { head, .. }) =
                parse_response(raw.as_bytes(), &Limits::default())
            else {
                panic!("{raw:?}");
            };
            let framing = response_framing(&Method::GET, &head).unwrap();
            let mut out = Vec::new();
            encode_response_head(&head, &framing, None, &mut out);
            assert_eq!(String::from_utf8_lossy(&out), raw, "{raw:?}");
        }
    }
}
