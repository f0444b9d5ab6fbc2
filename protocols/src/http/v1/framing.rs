//! Message framing decisions, taken once the head is parsed: how the body is delimited
//! (RFC 9112 section 6), whether the connection may carry another message, `Expect`, and
//! which hop-by-hop fields a proxy strips before forwarding.

use super::error::HttpError;
use super::head::{Method, RequestHead, ResponseHead, Version};
use super::headers::{
    has_token, is_tchar, list_elements, Headers, CONNECTION, CONTENT_LENGTH, EXPECT,
    HOP_BY_HOP_BITS, TRANSFER_ENCODING,
};

/// How a message body is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BodyFraming {
    /// No body at all.
    None,
    /// Exactly this many bytes (Content-Length).
    Length(u64),
    /// The chunked transfer coding.
    Chunked,
    /// Everything until the connection closes (responses only).
    CloseDelimited,
}

/// What the Transfer-Encoding list ends with.
enum FinalCoding {
    /// `chunked` alone.
    Chunked,
    /// `chunked` last, after codings we do not implement.
    ChunkedAfterOthers,
    /// Something other than `chunked` last.
    NotChunked,
}

/// The framing fields of a head, found in one pass.
struct FramingFields<'a> {
    content_length: Option<&'a [u8]>,
    content_length_lines: usize,
    transfer_encoding: bool,
}

fn framing_fields(headers: &Headers) -> FramingFields<'_> {
    let mut found = FramingFields {
        content_length: None,
        content_length_lines: 0,
        transfer_encoding: false,
    };
    if headers.known_bits() & (CONTENT_LENGTH | TRANSFER_ENCODING) == 0 {
        return found;
    }
    for (name, value) in headers.iter() {
        if name.eq_ignore_ascii_case("content-length") {
            found.content_length_lines += 1;
            found.content_length = Some(value);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            found.transfer_encoding = true;
        }
    }
    found
}

/// Reads every Transfer-Encoding line as one list (RFC 9110 section 5.3).
fn final_coding(headers: &Headers) -> Result<FinalCoding, HttpError> {
    let mut codings = 0usize;
    let mut chunked_at = None;
    for element in list_elements(headers, TRANSFER_ENCODING, "transfer-encoding") {
        // transfer-coding = token; Ringway takes no parameters, quotes or empty elements
        // (RFC 9112 section 7; policy: malformed Transfer-Encoding is 400)
        if element.is_empty() || !element.iter().all(|&b| is_tchar(b)) {
            return Err(HttpError::InvalidTransferEncoding);
        }
        if element.eq_ignore_ascii_case(b"chunked") {
            // chunked is applied at most once (RFC 9112 section 7)
            if chunked_at.is_some() {
                return Err(HttpError::InvalidTransferEncoding);
            }
            chunked_at = Some(codings);
        }
        codings += 1;
    }
    Ok(match chunked_at {
        Some(at) if at + 1 == codings && codings == 1 => FinalCoding::Chunked,
        Some(at) if at + 1 == codings => FinalCoding::ChunkedAfterOthers,
        _ => FinalCoding::NotChunked,
    })
}

/// Content-Length = 1*DIGIT, one field line, no list (RFC 9110 section 8.6; policy: even
/// equal duplicates are refused).
fn content_length(fields: &FramingFields<'_>) -> Result<Option<u64>, HttpError> {
    let Some(value) = fields.content_length else {
        return Ok(None);
    };
    if fields.content_length_lines > 1 {
        return Err(HttpError::DuplicateContentLength);
    }
    if value.contains(&b',') {
        let all_numbers = value
            .split(|&b| b == b',')
            .all(|e| parse_digits(trim(e)).is_some());
        return Err(if all_numbers {
            HttpError::DuplicateContentLength
        } else {
            HttpError::InvalidContentLength
        });
    }
    parse_digits(value)
        .map(Some)
        .ok_or(HttpError::InvalidContentLength)
}

fn trim(bytes: &[u8]) -> &[u8] {
    super::headers::trim_ows(bytes)
}

/// 1*DIGIT as u64; `None` if empty, not all digits, or overflowing.
fn parse_digits(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// Decides how a request body is delimited (RFC 9112 section 6.3), refusing every ambiguity
/// the policy lists.
///
/// No Content-Length and no Transfer-Encoding means no body ([`BodyFraming::None`]); a
/// request is never close-delimited.
///
/// # Errors
/// Checked in this order: [`HttpError::TransferEncodingOnHttp10`];
/// [`HttpError::ContentLengthWithTransferEncoding`]; [`HttpError::InvalidTransferEncoding`]
/// (empty element, `chunked` twice, parameters, quotes, control bytes);
/// [`HttpError::UnsupportedTransferCoding`] (`gzip, chunked`, 501);
/// [`HttpError::FinalCodingNotChunked`]; [`HttpError::DuplicateContentLength`] (two lines, or
/// a list like `1, 1`); [`HttpError::InvalidContentLength`].
pub fn request_framing(head: &RequestHead) -> Result<BodyFraming, HttpError> {
    // RFC 9112 section 6.3 item 7: a request without either field has no body
    message_framing(head.version, &head.headers, BodyFraming::None)
}

/// What Transfer-Encoding and Content-Length say about a message's body, requests and
/// responses alike; `absent` when neither field is present.
fn message_framing(
    version: Version,
    headers: &Headers,
    absent: BodyFraming,
) -> Result<BodyFraming, HttpError> {
    let fields = framing_fields(headers);
    if fields.transfer_encoding {
        // RFC 9112 section 6.1: Transfer-Encoding in HTTP/1.0 means faulty framing
        if version == Version::Http10 {
            return Err(HttpError::TransferEncodingOnHttp10);
        }
        // RFC 9112 section 6.1 and 6.3 item 3: both at once is refused (smuggling), though
        // item 3 lets a response's Transfer-Encoding win
        if fields.content_length_lines > 0 {
            return Err(HttpError::ContentLengthWithTransferEncoding);
        }
        return match final_coding(headers)? {
            FinalCoding::Chunked => Ok(BodyFraming::Chunked),
            // RFC 9112 section 6.1: a coding we do not implement is 501
            FinalCoding::ChunkedAfterOthers => Err(HttpError::UnsupportedTransferCoding),
            // RFC 9112 section 6.3 item 4: a request must end with chunked; a response that
            // does not would be close-delimited, but its bytes stay coded and the label is
            // hop-by-hop, so relaying it would hand them on unlabelled: refused as well
            FinalCoding::NotChunked => Err(HttpError::FinalCodingNotChunked),
        };
    }
    // RFC 9112 section 6.3 items 5, 6 (and 8 for responses: `absent`)
    Ok(match content_length(&fields)? {
        Some(n) => BodyFraming::Length(n),
        None => absent,
    })
}

/// Decides how a response body is delimited (RFC 9112 section 6.3), given the method of the
/// request it answers.
///
/// In order: a response to HEAD, a 1xx, 204 or 304 has no body whatever its fields say
/// (item 1); a 2xx to CONNECT has none either, the connection becomes a tunnel (item 2);
/// Transfer-Encoding ending in `chunked` is [`BodyFraming::Chunked`] (item 4: ending in anything
/// else is refused, see below); a valid Content-Length is
/// [`BodyFraming::Length`] (item 6); otherwise [`BodyFraming::CloseDelimited`] (item 8).
///
/// # Errors
/// [`HttpError::TransferEncodingOnHttp10`]; [`HttpError::ContentLengthWithTransferEncoding`]
/// (item 3 allows it, the policy answers 502 instead); [`HttpError::InvalidTransferEncoding`];
/// [`HttpError::UnsupportedTransferCoding`] for `chunked` after another coding and
/// [`HttpError::FinalCodingNotChunked`] for a final coding other than `chunked` (either way we
/// would forward content still coded but unlabelled); [`HttpError::DuplicateContentLength`];
/// [`HttpError::InvalidContentLength`] (item 5).
pub fn response_framing(
    request_method: &Method,
    head: &ResponseHead,
) -> Result<BodyFraming, HttpError> {
    // RFC 9112 section 6.3 item 1
    if request_method.is_head()
        || (100..200).contains(&head.status)
        || head.status == 204
        || head.status == 304
    {
        return Ok(BodyFraming::None);
    }
    // RFC 9112 section 6.3 item 2
    if request_method.is_connect() && (200..300).contains(&head.status) {
        return Ok(BodyFraming::None);
    }
    message_framing(head.version, &head.headers, BodyFraming::CloseDelimited)
}

/// Whether the connection options ask to close, or to keep alive (RFC 9112 section 9.3).
fn connection_options(headers: &Headers) -> (bool, bool) {
    let (mut close, mut keep_alive) = (false, false);
    for option in list_elements(headers, CONNECTION, "connection") {
        close |= option.eq_ignore_ascii_case(b"close");
        keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
    }
    (close, keep_alive)
}

fn persistent(version: Version, headers: &Headers) -> bool {
    let (close, keep_alive) = connection_options(headers);
    // RFC 9112 section 9.3: close wins; HTTP/1.1 persists by default, HTTP/1.0 only when
    // asked with keep-alive
    !close && (version == Version::Http11 || keep_alive)
}

/// Whether the client lets the connection carry another request after this one.
///
/// HTTP/1.1: yes unless `Connection` has the `close` option; HTTP/1.0: only with
/// `keep-alive` (RFC 9112 section 9.3). Any framing error closes the connection regardless.
pub fn request_keep_alive(head: &RequestHead) -> bool {
    persistent(head.version, &head.headers)
}

/// Whether the upstream connection may carry another request after this response.
///
/// False for a close-delimited body, for `Connection: close`, and for HTTP/1.0 without
/// `keep-alive` (RFC 9112 section 9.3).
pub fn response_keep_alive(head: &ResponseHead, framing: &BodyFraming) -> bool {
    *framing != BodyFraming::CloseDelimited && persistent(head.version, &head.headers)
}

/// Whether the request carries `Expect: 100-continue` (case-insensitive).
///
/// Always false for HTTP/1.0, whose expectation a server must ignore (RFC 9110 section 10.1.1).
pub fn expects_continue(head: &RequestHead) -> bool {
    head.version == Version::Http11 && has_token(&head.headers, EXPECT, "expect", "100-continue")
}

/// Strips the hop-by-hop fields before a message is forwarded (RFC 9110 section 7.6.1).
///
/// Removes `Connection` and every field it names, `Keep-Alive`, `Proxy-Connection`, `TE`,
/// `Transfer-Encoding`, `Upgrade` and `Content-Length` (the encoder writes framing from
/// [`BodyFraming`]). `Host` is never removed, even when `Connection` names it: a client must
/// not be able to make Ringway forward a request without its authority. One pass over the
/// fields.
pub fn remove_hop_by_hop(headers: &mut Headers) {
    if headers.known_bits() & HOP_BY_HOP_BITS == 0 {
        // Nothing to strip, and no Connection to name anything else.
        return;
    }
    let named: Vec<String> = list_elements(headers, CONNECTION, "connection")
        .filter(|option| !option.is_empty() && !option.eq_ignore_ascii_case(b"host"))
        .filter_map(|option| std::str::from_utf8(option).ok().map(str::to_owned))
        .collect();
    headers.retain_by_bit(|name, bit| {
        bit & HOP_BY_HOP_BITS == 0 && !named.iter().any(|n| name.eq_ignore_ascii_case(n))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::v1::headers::known_bit;
    use crate::http::v1::{parse_request, parse_response, Limits, Parsed};
    use HttpError::*;

    /// Fields that never cross a proxy (RFC 9110 section 7.6.1), plus the framing fields the
    /// encoder regenerates from the parsed framing (RFC 9112 section 6).
    const HOP_BY_HOP: [&str; 7] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "transfer-encoding",
        "upgrade",
        "content-length",
    ];

    #[test]
    fn the_hop_by_hop_bits_are_exactly_the_hop_by_hop_names() {
        let bits = HOP_BY_HOP.iter().fold(0, |b, n| b | known_bit(n));
        assert_eq!(bits, HOP_BY_HOP_BITS);
        assert_eq!(bits.count_ones(), 7, "a bit each");
        for other in [
            "host",
            "expect",
            "x-forwarded-for",
            "te2",
            "accept",
            "cookie",
        ] {
            assert_eq!(known_bit(other) & HOP_BY_HOP_BITS, 0, "{other}");
        }
        let mut h = Headers::new();
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            // Any case, and every one of them stripped.
            let name = if i % 2 == 0 {
                name.to_ascii_uppercase()
            } else {
                name.to_string()
            };
            h.append(&name, "x");
        }
        h.append("Host", "a");
        h.append("X-Keep", "1");
        remove_hop_by_hop(&mut h);
        let left: Vec<_> = h.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(left, ["Host", "X-Keep"]);
    }

    fn request(raw: &str) -> RequestHead {
        match parse_request(raw.as_bytes(), &Limits::default()) {
            Ok(Parsed::Complete { head, .. }) => head,
            other => panic!("{raw:?} did not parse: {other:?}"),
        }
    }

    fn response(raw: &str) -> ResponseHead {
        match parse_response(raw.as_bytes(), &Limits::default()) {
            Ok(Parsed::Complete { head, .. }) => head,
            other => panic!("{raw:?} did not parse: {other:?}"),
        }
    }

    /// Every CL/TE row of the request table in http-defaults.md, plus the valid shapes.
    #[test]
    fn request_framing_table() {
        let h = "GET / HTTP/1.1\r\nHost: a\r\n";
        let h10 = "GET / HTTP/1.0\r\n";
        let cases: &[(String, Result<BodyFraming, HttpError>)] = &[
            (format!("{h}\r\n"), Ok(BodyFraming::None)),
            (
                format!("{h}Content-Length: 0\r\n\r\n"),
                Ok(BodyFraming::Length(0)),
            ),
            (
                format!("{h}Content-Length: 42\r\n\r\n"),
                Ok(BodyFraming::Length(42)),
            ),
            (
                format!("{h}Content-Length: 007\r\n\r\n"),
                Ok(BodyFraming::Length(7)),
            ),
            (
                format!("{h}Content-Length: 18446744073709551615\r\n\r\n"),
                Ok(BodyFraming::Length(u64::MAX)),
            ),
            (
                format!("{h}Transfer-Encoding: chunked\r\n\r\n"),
                Ok(BodyFraming::Chunked),
            ),
            (
                format!("{h}Transfer-Encoding: CHUNKED\r\n\r\n"),
                Ok(BodyFraming::Chunked),
            ),
            (
                format!("{h}Transfer-Encoding:  chunked \r\n\r\n"),
                Ok(BodyFraming::Chunked),
            ),
            (
                format!("{h10}Content-Length: 3\r\n\r\n"),
                Ok(BodyFraming::Length(3)),
            ),
            // CL and TE together
            (
                format!("{h}Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
                Err(ContentLengthWithTransferEncoding),
            ),
            (
                format!("{h}Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"),
                Err(ContentLengthWithTransferEncoding),
            ),
            // two CL, equal or not; a list
            (
                format!("{h}Content-Length: 1\r\nContent-Length: 1\r\n\r\n"),
                Err(DuplicateContentLength),
            ),
            (
                format!("{h}Content-Length: 1\r\ncontent-length: 2\r\n\r\n"),
                Err(DuplicateContentLength),
            ),
            (
                format!("{h}Content-Length: 1, 1\r\n\r\n"),
                Err(DuplicateContentLength),
            ),
            (
                format!("{h}Content-Length: 1,2\r\n\r\n"),
                Err(DuplicateContentLength),
            ),
            // CL not all digits, or overflowing
            (
                format!("{h}Content-Length: +5\r\n\r\n"),
                Err(InvalidContentLength),
            ),
            (
                format!("{h}Content-Length: -1\r\n\r\n"),
                Err(InvalidContentLength),
            ),
            (
                format!("{h}Content-Length: 0x5\r\n\r\n"),
                Err(InvalidContentLength),
            ),
            (
                format!("{h}Content-Length: 1Z\r\n\r\n"),
                Err(InvalidContentLength),
            ),
            (
                format!("{h}Content-Length: \r\n\r\n"),
                Err(InvalidContentLength),
            ),
            (
                format!("{h}Content-Length: 1 2\r\n\r\n"),
                Err(InvalidContentLength),
            ),
            (
                format!("{h}Content-Length: 1,\r\n\r\n"),
                Err(InvalidContentLength),
            ),
            (
                format!("{h}Content-Length: 18446744073709551616\r\n\r\n"),
                Err(InvalidContentLength),
            ),
            (
                format!("{h}Content-Length: 99999999999999999999999\r\n\r\n"),
                Err(InvalidContentLength),
            ),
            // TE on HTTP/1.0
            (
                format!("{h10}Transfer-Encoding: chunked\r\n\r\n"),
                Err(TransferEncodingOnHttp10),
            ),
            // final coding not chunked
            (
                format!("{h}Transfer-Encoding: gzip\r\n\r\n"),
                Err(FinalCodingNotChunked),
            ),
            (
                format!("{h}Transfer-Encoding: chunked, gzip\r\n\r\n"),
                Err(FinalCodingNotChunked),
            ),
            (
                format!("{h}Transfer-Encoding: identity\r\n\r\n"),
                Err(FinalCodingNotChunked),
            ),
            (
                format!("{h}Transfer-Encoding: chunkedx\r\n\r\n"),
                Err(FinalCodingNotChunked),
            ),
            // chunked last after another coding
            (
                format!("{h}Transfer-Encoding: gzip, chunked\r\n\r\n"),
                Err(UnsupportedTransferCoding),
            ),
            (
                format!("{h}Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"),
                Err(UnsupportedTransferCoding),
            ),
            // malformed TE
            (
                format!("{h}Transfer-Encoding: ,chunked\r\n\r\n"),
                Err(InvalidTransferEncoding),
            ),
            (
                format!("{h}Transfer-Encoding: chunked,\r\n\r\n"),
                Err(InvalidTransferEncoding),
            ),
            (
                format!("{h}Transfer-Encoding: chunked, chunked\r\n\r\n"),
                Err(InvalidTransferEncoding),
            ),
            (
                format!("{h}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
                Err(InvalidTransferEncoding),
            ),
            (
                format!("{h}Transfer-Encoding: \"chunked\"\r\n\r\n"),
                Err(InvalidTransferEncoding),
            ),
            (
                format!("{h}Transfer-Encoding: chunked;q=1\r\n\r\n"),
                Err(InvalidTransferEncoding),
            ),
            (
                format!("{h}Transfer-Encoding: chun\tked\r\n\r\n"),
                Err(InvalidTransferEncoding),
            ),
            (
                format!("{h}Transfer-Encoding: \r\n\r\n"),
                Err(InvalidTransferEncoding),
            ),
            (
                format!("{h}Transfer-Encoding: chunked\u{e9}\r\n\r\n"),
                Err(InvalidTransferEncoding),
            ),
        ];
        for (raw, expected) in cases {
            assert_eq!(&request_framing(&request(raw)), expected, "{raw:?}");
        }
    }

    #[test]
    fn control_bytes_in_transfer_encoding_are_refused() {
        // The parser refuses control bytes in values; a head built in code can still hold one.
        let mut head = RequestHead::new(Method::POST, "/");
        head.headers.append("Host", "a");
        head.headers.append("Transfer-Encoding", b"chunked\x00");
        assert_eq!(request_framing(&head), Err(InvalidTransferEncoding));
    }

    #[test]
    fn response_framing_table() {
        let get = Method::GET;
        let cases: &[(&Method, &str, Result<BodyFraming, HttpError>)] = &[
            (
                &get,
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                Ok(BodyFraming::Length(5)),
            ),
            (
                &get,
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                Ok(BodyFraming::Chunked),
            ),
            (
                &get,
                "HTTP/1.1 200 OK\r\n\r\n",
                Ok(BodyFraming::CloseDelimited),
            ),
            (
                &get,
                "HTTP/1.0 200 OK\r\n\r\n",
                Ok(BodyFraming::CloseDelimited),
            ),
            (
                &get,
                "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n",
                Ok(BodyFraming::Length(2)),
            ),
            // item 1: no body whatever the fields say
            (
                &Method::HEAD,
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                Ok(BodyFraming::None),
            ),
            (
                &Method::HEAD,
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                Ok(BodyFraming::None),
            ),
            (&get, "HTTP/1.1 100 Continue\r\n\r\n", Ok(BodyFraming::None)),
            (
                &get,
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
                Ok(BodyFraming::None),
            ),
            (
                &get,
                "HTTP/1.1 103 Early Hints\r\n\r\n",
                Ok(BodyFraming::None),
            ),
            (
                &get,
                "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
                Ok(BodyFraming::None),
            ),
            (
                &get,
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
                Ok(BodyFraming::None),
            ),
            // item 2: 2xx to CONNECT is a tunnel; other statuses are framed
            (
                &Method::CONNECT,
                "HTTP/1.1 200 OK\r\n\r\n",
                Ok(BodyFraming::None),
            ),
            (
                &Method::CONNECT,
                "HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n",
                Ok(BodyFraming::Length(0)),
            ),
            // item 3 (policy: an error)
            (
                &get,
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                Err(ContentLengthWithTransferEncoding),
            ),
            // item 4
            (
                &get,
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                Err(FinalCodingNotChunked),
            ),
            (
                &get,
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                Err(FinalCodingNotChunked),
            ),
            (
                &get,
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                Err(UnsupportedTransferCoding),
            ),
            (
                &get,
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                Err(InvalidTransferEncoding),
            ),
            (
                &get,
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: ,chunked\r\n\r\n",
                Err(InvalidTransferEncoding),
            ),
            (
                &get,
                "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                Err(TransferEncodingOnHttp10),
            ),
            // item 5
            (
                &get,
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
                Err(DuplicateContentLength),
            ),
            (
                &get,
                "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
                Err(DuplicateContentLength),
            ),
            (
                &get,
                "HTTP/1.1 200 OK\r\nContent-Length: five\r\n\r\n",
                Err(InvalidContentLength),
            ),
        ];
        for (method, raw, expected) in cases {
            assert_eq!(
                &response_framing(method, &response(raw)),
                expected,
                "{method} {raw:?}"
            );
        }
    }

    #[test]
    fn keep_alive_table() {
        let cases = [
            ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", true),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                false,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, CLOSE\r\n\r\n",
                false,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nConnection: close\r\n\r\n",
                false,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n",
                true,
            ),
            ("GET / HTTP/1.0\r\n\r\n", false),
            ("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
            ("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
            (
                "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
                false,
            ),
        ];
        for (raw, expected) in cases {
            assert_eq!(request_keep_alive(&request(raw)), expected, "{raw:?}");
        }
        let responses = [
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                BodyFraming::Length(0),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\n\r\n",
                BodyFraming::CloseDelimited,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                BodyFraming::Length(0),
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                BodyFraming::Chunked,
                true,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
                BodyFraming::Length(0),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
                BodyFraming::Length(0),
                true,
            ),
            (
                "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n",
                BodyFraming::CloseDelimited,
                false,
            ),
            ("HTTP/1.1 204 No Content\r\n\r\n", BodyFraming::None, true),
        ];
        for (raw, framing, expected) in responses {
            let head = response(raw);
            assert_eq!(
                response_framing(&Method::GET, &head),
                Ok(framing),
                "{raw:?}"
            );
            assert_eq!(response_keep_alive(&head, &framing), expected, "{raw:?}");
        }
    }

    #[test]
    fn expect_continue_table() {
        let cases = [
            (
                "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
                true,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nexpect: 100-Continue\r\n\r\n",
                true,
            ),
            ("POST / HTTP/1.1\r\nHost: a\r\n\r\n", false),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n",
                false,
            ),
            ("POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n", false),
        ];
        for (raw, expected) in cases {
            assert_eq!(expects_continue(&request(raw)), expected, "{raw:?}");
        }
    }

    #[test]
    fn hop_by_hop_fields_are_removed_but_host_is_kept() {
        let mut head = request(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: Content-Length, Host, X-Foo\r\nX-Foo: 1\r\n\
             Content-Length: 3\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n\
             Upgrade: h2c\r\nX-Bar: 2\r\nx-foo: 3\r\n\r\n",
        );
        let framing = request_framing(&head);
        assert_eq!(framing, Ok(BodyFraming::Length(3)));
        remove_hop_by_hop(&mut head.headers);
        let names: Vec<&str> = head.headers.iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["Host", "X-Bar"]);
        // the encoder regenerates Content-Length from the framing
        let mut out = Vec::new();
        crate::http::v1::encode_request_head(&head, &BodyFraming::Length(3), None, &mut out);
        assert_eq!(
            out,
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Bar: 2\r\nContent-Length: 3\r\n\r\n"
        );
    }

    #[test]
    fn hop_by_hop_removal_is_a_no_op_without_such_fields() {
        let mut head = request("GET / HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n");
        let before = head.headers.clone();
        remove_hop_by_hop(&mut head.headers);
        assert_eq!(head.headers, before);
    }
}
