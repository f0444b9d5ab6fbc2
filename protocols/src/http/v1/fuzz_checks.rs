//! Invariant checks for the HTTP/1.1 codec, shared by the fuzz targets in `fuzz/` and by the
//! corpus-replay test, so every `cargo test` runs what the fuzzer runs. Each `check_*` takes
//! arbitrary bytes and panics only if the codec breaks one of its own promises.

use super::{
    encode_request_head, encode_response_head, expects_continue, parse_request, parse_response,
    remove_hop_by_hop, request_framing, request_keep_alive, response_framing, response_keep_alive,
    BodyDecoder, BodyEncoder, BodyFraming, Headers, HttpError, Limits, Method, Parsed, Version,
};

/// A parsed head's fields, however they were copied (in one block or one by one), are what
/// appending them one by one gives, on the wire too; and every lookup the known-name bits
/// answer agrees with a scan.
fn check_fields(headers: &Headers) {
    let mut rebuilt = Headers::new();
    for (name, value) in headers.iter() {
        rebuilt.append(name, value);
    }
    assert_eq!(&rebuilt, headers);
    let (mut wire, mut rebuilt_wire) = (Vec::new(), Vec::new());
    headers.write_wire(0, &mut wire);
    rebuilt.write_wire(0, &mut rebuilt_wire);
    assert_eq!(wire, rebuilt_wire, "wire form");
    for (name, _) in headers.iter() {
        let scanned = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count();
        assert_eq!(headers.get_all(name).count(), scanned, "{name}");
        let lower = name.to_ascii_lowercase();
        assert_eq!(headers.get_all(&lower).count(), scanned, "{name}");
    }
    for name in [
        "connection",
        "content-length",
        "transfer-encoding",
        "upgrade",
        "expect",
    ] {
        let scanned = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count();
        assert_eq!(headers.get_all(name).count(), scanned, "{name}");
    }
}

/// Inputs up to this size are split at every offset; larger ones whole and byte by byte.
const EVERY_OFFSET_MAX: usize = 2048;
/// Complete heads up to this size have every prefix re-parsed; larger ones a sample.
const EVERY_PREFIX_MAX: usize = 512;

/// What a body decoder made of some input, however it was split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The payload, concatenated.
    pub data: Vec<u8>,
    /// Whether the body completed (after EOF, for a close-delimited body).
    pub done: bool,
    /// The error, if decoding or EOF failed.
    pub error: Option<HttpError>,
    /// The bytes after the body, not consumed.
    pub leftover: Vec<u8>,
}

/// Feeds `pieces` in order to `decoder` the way the engine does (buffer, decode, drop what
/// was consumed, repeat), then signals EOF.
///
/// # Panics
/// If the decoder breaks its contract: a payload range outside what it consumed, consuming
/// more than it was given, or making no progress on non-empty input before it is done.
pub fn feed(pieces: &[&[u8]], mut decoder: BodyDecoder) -> Outcome {
    let mut buffer = Vec::new();
    let mut data = Vec::new();
    let mut done = false;
    for piece in pieces {
        buffer.extend_from_slice(piece);
        while !done {
            let decoded = match decoder.decode(&buffer) {
                Ok(decoded) => decoded,
                Err(error) => {
                    return Outcome {
                        data,
                        done: false,
                        error: Some(error),
                        leftover: Vec::new(),
                    }
                }
            };
            assert!(decoded.consumed <= buffer.len(), "consumed more than given");
            assert!(
                decoded.data.start <= decoded.data.end && decoded.data.end <= decoded.consumed,
                "payload outside consumed"
            );
            data.extend_from_slice(&buffer[decoded.data.clone()]);
            buffer.drain(..decoded.consumed);
            done = decoded.done;
            assert_eq!(done, decoder.is_done(), "done disagrees with is_done");
            if decoded.consumed == 0 {
                assert!(done || buffer.is_empty(), "no progress on non-empty input");
                break;
            }
        }
    }
    if !done {
        if let Err(error) = decoder.on_eof() {
            return Outcome {
                data,
                done: false,
                error: Some(error),
                leftover: Vec::new(),
            };
        }
        done = decoder.is_done();
    }
    Outcome {
        data,
        done,
        error: None,
        leftover: buffer,
    }
}

/// Feeds `input` whole, then byte by byte; asserts both agree and returns the outcome.
///
/// # Panics
/// If the two outcomes differ, or [`feed`] panics.
pub fn feed_whole_and_bytewise(input: &[u8], make: impl Fn() -> BodyDecoder) -> Outcome {
    let whole = feed(&[input], make());
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(
        feed(&bytes, make()),
        whole,
        "byte-at-a-time differs from whole"
    );
    whole
}

/// Feeds `input` whole, byte by byte, and split in two at every offset; asserts all agree and
/// returns the outcome.
///
/// # Panics
/// If any two outcomes differ, or [`feed`] panics.
pub fn feed_every_way(input: &[u8], make: impl Fn() -> BodyDecoder) -> Outcome {
    let whole = feed_whole_and_bytewise(input, &make);
    for at in 0..=input.len() {
        let (a, b) = input.split_at(at);
        assert_eq!(
            feed(&[a, b], make()),
            whole,
            "split at {at} differs from whole"
        );
    }
    whole
}

fn feed_bounded(input: &[u8], make: impl Fn() -> BodyDecoder) -> Outcome {
    if input.len() <= EVERY_OFFSET_MAX {
        feed_every_way(input, make)
    } else {
        feed_whole_and_bytewise(input, make)
    }
}

/// Limits loose enough that a re-encoded head (which may gain a space per field) parses.
const LOOSE: Limits = Limits {
    max_headers: 4 * super::MAX_HEADERS,
    max_head_bytes: 1 << 20,
    max_request_line_bytes: 1 << 20,
};

/// Limits small enough that short inputs reach each of them.
const TIGHT: Limits = Limits {
    max_headers: 2,
    max_head_bytes: 64,
    max_request_line_bytes: 24,
};

/// The one-pass parser (`fast`) takes only heads the general parser takes, and builds the same
/// head, field layout and wire form included: the parse functions' verdict equals the general
/// parser's, whichever of the two decided it.
fn same_verdict<T: PartialEq + std::fmt::Debug>(
    verdict: &Result<Parsed<T>, HttpError>,
    general: &Result<Parsed<T>, HttpError>,
    headers: impl Fn(&T) -> &Headers,
) {
    assert_eq!(verdict, general, "one-pass and general parsers disagree");
    if let (Ok(Parsed::Complete { head: a, .. }), Ok(Parsed::Complete { head: b, .. })) =
        (verdict, general)
    {
        let (mut wire_a, mut wire_b) = (Vec::new(), Vec::new());
        headers(a).write_wire(0, &mut wire_a);
        headers(b).write_wire(0, &mut wire_b);
        assert_eq!(wire_a, wire_b, "wire form");
        assert_eq!(
            headers(a).known_bits(),
            headers(b).known_bits(),
            "known bits"
        );
    }
}

fn prefix_lengths(len: usize) -> impl Iterator<Item = usize> {
    let step = if len <= EVERY_PREFIX_MAX { 1 } else { len / 64 };
    (0..len)
        .step_by(step.max(1))
        .chain(len.saturating_sub(4)..len)
}

fn without_framing_fields(headers: &super::Headers) -> super::Headers {
    let mut headers = headers.clone();
    headers.retain(|n, _| {
        !n.eq_ignore_ascii_case("content-length") && !n.eq_ignore_ascii_case("transfer-encoding")
    });
    headers
}

/// Parses `data` as a request head and checks: the verdict's status is one the policy uses;
/// every prefix of a complete head is `Partial`; a head with valid framing re-encodes to bytes
/// that parse to the same head and framing; hop-by-hop removal keeps Host and is idempotent.
///
/// # Panics
/// On a broken invariant.
pub fn check_request_head(data: &[u8]) {
    let limits = Limits::default();
    for limits in [limits, TIGHT] {
        same_verdict(
            &parse_request(data, &limits),
            &super::head::parse_request_general(data, &limits),
            |h| &h.headers,
        );
    }
    let (head, len) = match parse_request(data, &limits) {
        Ok(Parsed::Complete { head, len }) => (head, len),
        Ok(Parsed::Partial) => {
            assert!(
                data.len() <= limits.max_head_bytes,
                "partial beyond the head limit"
            );
            return;
        }
        Err(error) => {
            assert!(matches!(error.status(), 400 | 414 | 431 | 505), "{error:?}");
            return;
        }
    };
    assert!(len <= data.len() && len <= limits.max_head_bytes);
    for at in prefix_lengths(len) {
        assert_eq!(
            parse_request(&data[..at], &limits),
            Ok(Parsed::Partial),
            "prefix {at} of a complete head"
        );
    }
    if head.version == Version::Http11 {
        assert_eq!(head.headers.get_all("host").count(), 1);
    }
    check_fields(&head.headers);
    let _ = request_keep_alive(&head);
    let _ = expects_continue(&head);

    let mut stripped = head.headers.clone();
    remove_hop_by_hop(&mut stripped);
    assert_eq!(
        stripped.get_all("host").count(),
        head.headers.get_all("host").count(),
        "Host removed"
    );
    let once = stripped.clone();
    remove_hop_by_hop(&mut stripped);
    assert_eq!(stripped, once, "hop-by-hop removal not idempotent");

    let framing = match request_framing(&head) {
        Ok(framing) => framing,
        Err(error) => {
            assert!(matches!(error.status(), 400 | 501), "{error:?}");
            return;
        }
    };
    assert_ne!(
        framing,
        BodyFraming::CloseDelimited,
        "a request is never close-delimited"
    );
    let mut out = Vec::new();
    encode_request_head(&head, &framing, None, &mut out);
    let again = match parse_request(&out, &LOOSE) {
        Ok(Parsed::Complete { head, len }) if len == out.len() => head,
        other => panic!(
            "re-encoded head {:?} parsed as {other:?}",
            String::from_utf8_lossy(&out)
        ),
    };
    assert_eq!(request_framing(&again), Ok(framing));
    assert_eq!(
        (&again.method, &again.target, again.version),
        (&head.method, &head.target, head.version)
    );
    assert_eq!(
        without_framing_fields(&again.headers),
        without_framing_fields(&head.headers)
    );
}

/// Parses `data` as a response head and checks, for a GET, HEAD and CONNECT request: framing
/// decisions never panic, and a head with valid framing re-encodes to bytes that parse to the
/// same head (framing fields aside) and, but for bodiless statuses, the same framing.
///
/// # Panics
/// On a broken invariant.
pub fn check_response_head(data: &[u8]) {
    let limits = Limits::default();
    for limits in [limits, TIGHT] {
        same_verdict(
            &parse_response(data, &limits),
            &super::head::parse_response_general(data, &limits),
            |h| &h.headers,
        );
    }
    let head = match parse_response(data, &limits) {
        Ok(Parsed::Complete { head, len }) => {
            assert!(len <= data.len() && len <= limits.max_head_bytes);
            for at in prefix_lengths(len) {
                assert_eq!(
                    parse_response(&data[..at], &limits),
                    Ok(Parsed::Partial),
                    "prefix {at} of a complete head"
                );
            }
            head
        }
        Ok(Parsed::Partial) | Err(_) => return,
    };
    assert!((100..=599).contains(&head.status));
    check_fields(&head.headers);
    for method in [Method::GET, Method::HEAD, Method::CONNECT] {
        let Ok(framing) = response_framing(&method, &head) else {
            continue;
        };
        let _ = response_keep_alive(&head, &framing);
        if framing == BodyFraming::CloseDelimited {
            assert!(!response_keep_alive(&head, &framing));
        }
        let mut out = Vec::new();
        encode_response_head(&head, &framing, None, &mut out);
        let again = match parse_response(&out, &LOOSE) {
            Ok(Parsed::Complete { head, len }) if len == out.len() => head,
            other => panic!(
                "re-encoded head {:?} parsed as {other:?}",
                String::from_utf8_lossy(&out)
            ),
        };
        assert_eq!(
            (again.version, again.status, &again.reason),
            (head.version, head.status, &head.reason)
        );
        assert_eq!(
            without_framing_fields(&again.headers),
            without_framing_fields(&head.headers)
        );
        if framing != BodyFraming::None {
            assert_eq!(response_framing(&method, &again), Ok(framing));
        }
    }
}

/// Decodes `data` as a chunked body whole, byte by byte and split at every offset (all must
/// agree); a body that decodes is re-encoded and must decode to the same payload.
///
/// # Panics
/// On a broken invariant.
pub fn check_chunked(data: &[u8]) {
    let outcome = feed_bounded(data, || BodyDecoder::new(&BodyFraming::Chunked));
    if outcome.error.is_none() {
        assert!(outcome.done);
        let mut encoder = BodyEncoder::new(&BodyFraming::Chunked);
        let mut wire = Vec::new();
        for piece in outcome.data.chunks(1000) {
            assert_eq!(encoder.encode(piece, &mut wire), Ok(()));
        }
        assert_eq!(encoder.finish(&mut wire), Ok(()));
        let again = feed_whole_and_bytewise(&wire, || BodyDecoder::new(&BodyFraming::Chunked));
        assert_eq!(
            again,
            Outcome {
                data: outcome.data,
                done: true,
                error: None,
                leftover: Vec::new()
            }
        );
    }
}

/// Reads `data` as a request (head, then body) and as a response to GET: when the head and
/// its framing are valid, the body decodes the same way however it is split, never past its
/// Content-Length, and re-encodes to the same payload.
///
/// # Panics
/// On a broken invariant.
pub fn check_framing(data: &[u8]) {
    let limits = Limits::default();
    if let Ok(Parsed::Complete { head, len }) = parse_request(data, &limits) {
        if let Ok(framing) = request_framing(&head) {
            check_body(&data[len..], framing);
        }
    }
    if let Ok(Parsed::Complete { head, len }) = parse_response(data, &limits) {
        if let Ok(framing) = response_framing(&Method::GET, &head) {
            check_body(&data[len..], framing);
        }
    }
}

fn check_body(body: &[u8], framing: BodyFraming) {
    let outcome = feed_bounded(body, || BodyDecoder::new(&framing));
    match framing {
        BodyFraming::None => assert_eq!(outcome.data.len(), 0),
        BodyFraming::Length(n) => assert!(outcome.data.len() as u64 <= n),
        BodyFraming::CloseDelimited => assert_eq!(outcome.data, body),
        BodyFraming::Chunked => {}
    }
    if outcome.error.is_none() {
        let mut encoder = BodyEncoder::new(&framing);
        let mut wire = Vec::new();
        assert_eq!(encoder.encode(&outcome.data, &mut wire), Ok(()));
        assert_eq!(encoder.finish(&mut wire), Ok(()));
        let again = feed_whole_and_bytewise(&wire, || BodyDecoder::new(&framing));
        assert_eq!(again.data, outcome.data);
        assert!(again.done && again.error.is_none());
    }
}
