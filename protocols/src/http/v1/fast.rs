//! The common shape of a head, parsed in one pass straight into [`Headers`]: what nearly every
//! peer sends (`Name: value\r\n` lines, CRLF endings, ASCII, one space after the colon). It
//! accepts only heads the general parser (httparse and the checks after it, in `head`) accepts,
//! and builds the same head; anything else, including every error and every unfinished head,
//! it leaves to the general parser, which then decides. So the strictness and the diagnoses
//! stay in one place, and the fuzz checks compare the two on every input (see
//! `fuzz_checks::check_request_head`).
//!
//! Why: at 50 connections the two heads of a proxied request cost about 3,000 user-space
//! instructions through httparse's header array and the copy out of it (callgrind), a fifth
//! of the request path.

use super::head::{
    check_host_value, check_target, Limits, Method, Parsed, RequestHead, ResponseHead, Version,
};
use super::headers::{is_tchar, FieldSpan, Headers, HOST};

/// A token byte (`tchar`, RFC 9110 section 5.6.2).
const TCHAR: u8 = 1;
/// A byte this pass lets into a field value or reason phrase: HTAB, SP, VCHAR. (obs-text is
/// valid too, and left to the general parser.)
const TEXT: u8 = 2;
/// A byte this pass lets into a request-target: VCHAR (the general parser lets more through,
/// then refuses it).
const TARGET: u8 = 4;

/// The classes of every byte.
static CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        let mut class = 0;
        if is_tchar(byte) {
            class |= TCHAR;
        }
        if byte == b'\t' || (byte >= b' ' && byte <= b'~') {
            class |= TEXT;
        }
        if byte >= b'!' && byte <= b'~' {
            class |= TARGET;
        }
        table[b] = class;
        b += 1;
    }
    table
};

/// Most fields this pass takes; a head with more goes to the general parser.
const MAX_FIELDS: usize = 32;

/// The end of the run of `class` bytes in `buf` from `at`; `None` when the run reaches the end
/// of `buf` (the head is unfinished, or the byte after the run would decide).
#[inline]
fn run_end(buf: &[u8], mut at: usize, class: u8) -> Option<usize> {
    while CLASS[usize::from(*buf.get(at)?)] & class != 0 {
        at += 1;
    }
    Some(at)
}

/// A byte of value 1 in every lane of a word.
const ONES: u64 = u64::from_le_bytes([1; 8]);
/// The top bit of every lane.
const HIGH: u64 = ONES << 7;

/// Lanes of `y` (each below 0x80) from `lo` to `hi`, as their top bit. No lane carries into
/// the next: each sum stays below 0x100.
#[inline]
fn lanes_within(y: u64, lo: u8, hi: u8) -> u64 {
    let at_least_lo = y + ONES * u64::from(0x80 - lo);
    let above_hi = y + ONES * u64::from(0x7f - hi);
    at_least_lo & !above_hi & HIGH
}

/// [`run_end`] for [`TCHAR`], eight bytes at a time while they are letters, digits and `-`
/// (nearly every field name), then a byte at a time.
#[inline]
fn name_end(buf: &[u8], mut at: usize) -> Option<usize> {
    while let Some(word) = buf.get(at..at + 8) {
        let mut lanes = [0; 8];
        lanes.copy_from_slice(word);
        let x = u64::from_le_bytes(lanes);
        let y = x & !HIGH;
        let common = lanes_within(y | (ONES * 0x20), b'a', b'z')
            | lanes_within(y, b'0', b'9')
            | lanes_within(y, b'-', b'-');
        // A lane stops the word unless it is common and below 0x80.
        let stop = HIGH & !(common & !x);
        if stop == 0 {
            at += 8;
            continue;
        }
        at += (stop.trailing_zeros() / 8) as usize;
        break;
    }
    run_end(buf, at, TCHAR)
}

/// [`run_end`] for [`TEXT`] (with `TEXT`, HTAB allowed) or [`TARGET`], eight bytes at a time:
/// both are the bytes from `lowest` to `~`, so a word without a byte below `lowest` or above
/// `~` is all in the run. The lowest lane flagged is exact (a borrow or carry out of one lane
/// can flag only lanes above it), so a flagged word costs one step to the stopping byte.
#[inline]
fn text_end(buf: &[u8], mut at: usize, class: u8) -> Option<usize> {
    let lowest = if class == TEXT { b' ' } else { b'!' };
    loop {
        let Some(word) = buf.get(at..at + 8) else {
            return run_end(buf, at, class);
        };
        let mut lanes = [0; 8];
        lanes.copy_from_slice(word);
        let x = u64::from_le_bytes(lanes);
        let below = x.wrapping_sub(ONES * u64::from(lowest)) & !x;
        let above = x.wrapping_add(ONES) | x;
        let stop = (below | above) & HIGH;
        if stop == 0 {
            at += 8;
            continue;
        }
        at += (stop.trailing_zeros() / 8) as usize;
        if class == TEXT && buf[at] == b'\t' {
            at += 1;
            continue;
        }
        return Some(at);
    }
}

/// The field lines of `buf` from `at` up to and including the empty line: their spans
/// (offsets from `at`) in `spans`, how many, and where the head ends. `None` for anything but
/// the common shape, or more than `max` fields.
fn field_lines(
    buf: &[u8],
    start: usize,
    spans: &mut [FieldSpan; MAX_FIELDS],
    max: usize,
) -> Option<(usize, usize)> {
    let (mut at, mut n) = (start, 0);
    loop {
        if *buf.get(at)? == b'\r' {
            return (*buf.get(at + 1)? == b'\n').then_some((n, at + 2));
        }
        let name_at = at;
        at = name_end(buf, at)?;
        if at == name_at || buf[at] != b':' || *buf.get(at + 1)? != b' ' {
            return None;
        }
        let name_len = at - name_at;
        at += 2;
        let value_at = at;
        at = text_end(buf, at, TEXT)?;
        if buf[at] != b'\r' || *buf.get(at + 1)? != b'\n' {
            return None;
        }
        // No whitespace to trim at either end, and not empty: the general parser would keep
        // the value where it is, the same bytes.
        let (first, last) = (buf[value_at], buf[at - 1]);
        if at == value_at || matches!(first, b' ' | b'\t') || matches!(last, b' ' | b'\t') {
            return None;
        }
        if n == max {
            return None;
        }
        spans[n] = FieldSpan {
            name_at: u16::try_from(name_at - start).ok()?,
            name_len: u16::try_from(name_len).ok()?,
            value_len: u16::try_from(at - value_at).ok()?,
        };
        n += 1;
        at += 2;
    }
}

/// `bytes` as a `&str`; they are ASCII (every class above is).
fn ascii(bytes: &[u8]) -> &str {
    debug_assert!(bytes.is_ascii());
    // SAFETY: only bytes of the classes above, all ASCII, reach here.
    unsafe { std::str::from_utf8_unchecked(bytes) }
}

/// `HTTP/1.1` or `HTTP/1.0` at the start of `bytes`, followed by `then`.
fn version(bytes: &[u8], then: u8) -> Option<Version> {
    let v = bytes.get(..9)?;
    if &v[..7] != b"HTTP/1." || v[8] != then {
        return None;
    }
    match v[7] {
        b'1' => Some(Version::Http11),
        b'0' => Some(Version::Http10),
        _ => None,
    }
}

/// A request head in the common shape, from the start of `window` (see the module doc).
pub(super) fn request(window: &[u8], limits: &Limits) -> Option<Parsed<RequestHead>> {
    let method_end = run_end(window, 0, TCHAR)?;
    if method_end == 0 || window[method_end] != b' ' {
        return None;
    }
    let target_at = method_end + 1;
    let target_end = text_end(window, target_at, TARGET)?;
    if target_end == target_at || window[target_end] != b' ' {
        return None;
    }
    // `HTTP/1.x\r\n` after the space: the fields start 11 bytes on.
    let version = version(&window[target_end + 1..], b'\r')?;
    let fields_at = target_end + 11;
    if window.get(fields_at - 1) != Some(&b'\n') {
        return None;
    }
    let mut spans = [FieldSpan::default(); MAX_FIELDS];
    let max = limits.max_headers.min(MAX_FIELDS);
    let (n, len) = field_lines(window, fields_at, &mut spans, max)?;
    let (method, target) = (
        ascii(&window[..method_end]),
        ascii(&window[target_at..target_end]),
    );
    if method.len() + target.len() + 10 > limits.max_request_line_bytes
        || len > limits.max_head_bytes
    {
        return None;
    }
    let method = Method::from_token(method);
    let authority = check_target(&method, target).ok()?;
    let headers = Headers::from_block(&window[fields_at..len - 2], &spans[..n]);
    if headers.known_bits() & HOST != 0 {
        let mut hosts = headers.get_all("host");
        let host = hosts.next();
        if hosts.next().is_some() {
            return None;
        }
        check_host_value(version, host, authority).ok()?;
    } else {
        check_host_value(version, None, authority).ok()?;
    }
    Some(RequestHead::parsed(method, target, version, headers, len))
}

/// A response head in the common shape, from the start of `window` (see the module doc).
pub(super) fn response(window: &[u8], limits: &Limits) -> Option<Parsed<ResponseHead>> {
    let version = version(window, b' ')?;
    let code = window.get(9..13)?;
    if !code[..3].iter().all(u8::is_ascii_digit) || code[3] != b' ' {
        return None;
    }
    let status = code[..3]
        .iter()
        .fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
    if !(100..=599).contains(&status) {
        return None;
    }
    let reason_end = text_end(window, 13, TEXT)?;
    if window[reason_end] != b'\r' || *window.get(reason_end + 1)? != b'\n' {
        return None;
    }
    let reason = ascii(&window[13..reason_end]);
    let fields_at = reason_end + 2;
    let mut spans = [FieldSpan::default(); MAX_FIELDS];
    let max = limits.max_headers.min(MAX_FIELDS);
    let (n, len) = field_lines(window, fields_at, &mut spans, max)?;
    if len > limits.max_head_bytes {
        return None;
    }
    let headers = Headers::from_block(&window[fields_at..len - 2], &spans[..n]);
    Some(ResponseHead::parsed(version, status, reason, headers, len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::v1::fuzz_checks::{check_request_head, check_response_head};
    use crate::http::v1::head::{parse_request_general, parse_response_general};

    fn takes_request(head: &[u8]) -> bool {
        request(head, &Limits::default()).is_some()
    }

    fn takes_response(head: &[u8]) -> bool {
        response(head, &Limits::default()).is_some()
    }

    #[test]
    fn takes_the_common_shape_and_builds_what_the_general_parser_builds() {
        let requests: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /p?q=1 HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: x/1.0\r\nAccept: */*\r\n\r\nbody",
            b"POST /u HTTP/1.1\r\nhost: a\r\nContent-Length: 3\r\nX-A: b\tc\r\n\r\nabc",
            b"GET / HTTP/1.0\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET http://a:80/x HTTP/1.1\r\nHost: a\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            b"PURGE /x HTTP/1.1\r\nHost: a\r\n\r\n",
        ];
        for head in requests {
            assert!(takes_request(head), "{}", String::from_utf8_lossy(head));
            check_request_head(head);
        }
        let responses: &[&[u8]] = &[
            b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nX-Origin-Conn: 1\r\n\r\n",
            b"HTTP/1.0 404 Not Found\r\n\r\n",
            b"HTTP/1.1 200 Fine\r\nServer: s\r\n\r\n",
            b"HTTP/1.1 599 \r\n\r\n",
        ];
        for head in responses {
            assert!(takes_response(head), "{}", String::from_utf8_lossy(head));
            check_response_head(head);
        }
    }

    #[test]
    fn leaves_every_other_shape_to_the_general_parser() {
        let requests: &[&[u8]] = &[
            b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", // leading empty line
            b"GET / HTTP/1.1\r\nHost:a\r\n\r\n",      // no space after the colon
            b"GET / HTTP/1.1\r\nHost:  a\r\n\r\n",    // two
            b"GET / HTTP/1.1\r\nHost: a \r\n\r\n",    // trailing whitespace
            b"GET / HTTP/1.1\r\nX: \r\nHost: a\r\n\r\n", // empty value
            b"GET / HTTP/1.1\r\nHost: \xc3\xa9\r\n\r\n", // obs-text
            b"GET / HTTP/1.1\nHost: a\r\n\r\n",       // bare LF
            b"GET / HTTP/1.1\r\nHost: a\r\n\n",       // bare LF at the end
            b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",    // space before the colon
            b"GET / HTTP/1.1\r\n Host: a\r\n\r\n",    // leading space
            b"GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n", // obs-fold
            b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",    // two spaces
            b"GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", // non-ASCII target
            b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",     // version
            b"GET / HTTP/1.1\r\n\r\n",                // no Host
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", // two Hosts
            b"GET http://b/ HTTP/1.1\r\nHost: a\r\n\r\n", // Host mismatch
            b"GET / HTTP/1.1\r\nHost: a\r\n",         // unfinished
            b"GET / HTTP/1.1\r\nHost: a\r\n\r",       // unfinished
            b"GET /#f HTTP/1.1\r\nHost: a\r\n\r\n",   // fragment
        ];
        for head in requests {
            assert!(!takes_request(head), "{}", String::from_utf8_lossy(head));
            check_request_head(head);
        }
        let responses: &[&[u8]] = &[
            b"HTTP/1.1 200\r\n\r\n",   // no reason
            b"HTTP/1.1 099 X\r\n\r\n", // status out of range
            b"HTTP/1.1 600 X\r\n\r\n",
            b"HTTP/1.1 20 X\r\n\r\n",
            b"HTTP/1.1 200 \xff\r\n\r\n", // obs-text reason
            b"HTTP/1.1 200 OK\r\nServer : s\r\n\r\n",
            b"HTTP/1.1 200 OK\nServer: s\r\n\r\n",
            b"\r\nHTTP/1.1 200 OK\r\n\r\n",
            b"HTTP/1.2 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n",
        ];
        for head in responses {
            assert!(!takes_response(head), "{}", String::from_utf8_lossy(head));
            check_response_head(head);
        }
    }

    #[test]
    fn limits_send_a_head_to_the_general_parser() {
        let head = b"GET /abcdef HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nX-B: 2\r\n\r\n";
        let tight = [
            Limits {
                max_headers: 2,
                ..Limits::default()
            },
            Limits {
                max_head_bytes: head.len() - 1,
                ..Limits::default()
            },
            Limits {
                max_request_line_bytes: 10,
                ..Limits::default()
            },
        ];
        assert!(request(head, &Limits::default()).is_some());
        for limits in tight {
            assert!(request(head, &limits).is_none(), "{limits:?}");
            assert!(parse_request_general(head, &limits).is_err(), "{limits:?}");
        }
        let many: Vec<u8> = (0..MAX_FIELDS + 1)
            .flat_map(|i| format!("X-{i}: v\r\n").into_bytes())
            .collect();
        let head = [&b"GET / HTTP/1.1\r\nHost: a\r\n"[..], &many, b"\r\n"].concat();
        assert!(request(&head, &Limits::default()).is_none());
        assert!(matches!(
            parse_request_general(&head, &Limits::default()),
            Ok(Parsed::Complete { .. })
        ));
        // A field past the 16-bit offsets of a span, under limits raised to let it in.
        let raised = Limits {
            max_head_bytes: 1 << 20,
            ..Limits::default()
        };
        let long = "v".repeat(70_000);
        let head = format!("GET / HTTP/1.1\r\nX-Long: {long}\r\nHost: a\r\n\r\n");
        assert!(request(head.as_bytes(), &raised).is_none());
        let parsed = crate::http::v1::parse_request(head.as_bytes(), &raised);
        assert_eq!(parsed, parse_request_general(head.as_bytes(), &raised));
        let Ok(Parsed::Complete { head: parsed, .. }) = parsed else {
            panic!("a complete head");
        };
        assert_eq!(parsed.headers.get("x-long"), Some(long.as_bytes()));
    }

    /// A small deterministic generator (xorshift), so the test needs no crate and replays.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Bytes a mutation writes: the ones that decide between the parsers' paths.
    const INTERESTING: &[u8] = b" \t\r\n:/.*#?0129AZaz-_~\x00\x7f\x80\xff\"HTP";

    fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
        let mut out = seed.to_vec();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(out.len() + 1);
            let byte = INTERESTING[rng.below(INTERESTING.len())];
            match rng.below(4) {
                0 if at < out.len() => out[at] = byte,
                1 => out.insert(at, byte),
                2 if at < out.len() => {
                    out.remove(at);
                }
                _ => out.truncate(at),
            }
        }
        out
    }

    #[test]
    fn the_word_at_a_time_scans_stop_where_the_byte_at_a_time_scan_does() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for _ in 0..20_000 {
            let len = rng.below(40);
            // Mostly text, with a stopping byte (any byte at all) here and there.
            let buf: Vec<u8> = (0..len)
                .map(|_| match rng.below(8) {
                    0 => rng.next() as u8,
                    1 => b'\t',
                    2 => b"-_:aZ09"[rng.below(7)],
                    3 => b'a' + rng.below(26) as u8,
                    _ => b' ' + rng.below(95) as u8,
                })
                .collect();
            let at = rng.below(len + 1);
            for class in [TEXT, TARGET] {
                assert_eq!(
                    text_end(&buf, at, class),
                    run_end(&buf, at, class),
                    "{buf:?} from {at}"
                );
            }
            assert_eq!(
                name_end(&buf, at),
                run_end(&buf, at, TCHAR),
                "{buf:?} from {at}"
            );
        }
    }

    #[test]
    fn mutated_heads_get_the_same_verdict_from_both_parsers() {
        let requests: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /p HTTP/1.1\r\nHost: a:1\r\nX-A: b c\r\nContent-Length: 2\r\n\r\nxx",
            b"CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\n\r\n",
            b"GET http://a/ HTTP/1.0\r\nHost: a\r\nConnection: close\r\n\r\n",
        ];
        let responses: &[&[u8]] = &[
            b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nX-Origin-Conn: 1\r\n\r\n",
            b"HTTP/1.0 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut fast_taken, mut total) = (0, 0);
        for round in 0..20_000 {
            let req = mutate(&mut rng, requests[round % requests.len()]);
            for limits in [
                Limits::default(),
                Limits {
                    max_headers: 2,
                    max_head_bytes: 64,
                    max_request_line_bytes: 24,
                },
            ] {
                let general = parse_request_general(&req, &limits);
                let verdict = crate::http::v1::parse_request(&req, &limits);
                assert_eq!(verdict, general, "{:?}", String::from_utf8_lossy(&req));
                total += 1;
                fast_taken += usize::from(request(&req, &limits).is_some());
            }
            let res = mutate(&mut rng, responses[round % responses.len()]);
            let general = parse_response_general(&res, &Limits::default());
            let verdict = crate::http::v1::parse_response(&res, &Limits::default());
            assert_eq!(verdict, general, "{:?}", String::from_utf8_lossy(&res));
        }
        // The mutations leave a fair share of heads in the common shape: both paths ran.
        assert!(
            fast_taken > total / 20 && fast_taken < total / 2,
            "{fast_taken} of {total}"
        );
    }
}
