//! Message framing for the origin (request bodies) and the load generator (response bodies):
//! the framing fields read from heads parsed with httparse, and the loop that runs the codec's
//! [`BodyDecoder`] over whatever one read returned, without buffering the body.
//!
//! Bodies are decoded by `ringway_protocols::http::v1`, the proxy's strict, fuzzed codec; only
//! the head parsing stays on httparse here, borrowed from the read buffer, because the codec's
//! owned heads cost an allocation per message on both hot paths.

use ringway_protocols::http::v1::{BodyDecoder, HttpError};

/// Parses a Content-Length value: ASCII digits only, optional surrounding whitespace.
pub(crate) fn parse_content_length(value: &[u8]) -> Option<u64> {
    let v = value.trim_ascii();
    if v.is_empty() || v.len() > 19 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in v {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(b - b'0');
    }
    Some(n)
}

/// True when a comma-separated header value lists `token` (ASCII case-insensitive).
pub(crate) fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// True when the last transfer coding listed is `chunked`.
pub(crate) fn is_chunked(value: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .next_back()
        .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// Appends the decimal digits of `n`.
pub(crate) fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

/// Decodes body bytes from the front of `input`, handing each run of payload to `sink`.
///
/// Runs `decoder` until the body is complete or `input` is used up (the codec stops after
/// each run of chunk data). Returns how many bytes of `input` belong to the body; bytes past
/// its end are left alone, they start the next message.
///
/// # Errors
/// The decoder's error for invalid chunked framing, or the first error `sink` returns.
pub(crate) fn decode_body(
    decoder: &mut BodyDecoder,
    input: &[u8],
    mut sink: impl FnMut(&[u8]) -> Result<(), HttpError>,
) -> Result<usize, HttpError> {
    let mut used = 0;
    loop {
        let rest = &input[used..];
        let decoded = decoder.decode(rest)?;
        if !decoded.data.is_empty() {
            sink(&rest[decoded.data])?;
        }
        used += decoded.consumed;
        if decoded.done || decoded.consumed == 0 || used == input.len() {
            return Ok(used);
        }
    }
}

#[cfg(test)]
mod tests {
    use ringway_protocols::http::v1::BodyFraming;

    use super::*;

    /// Feeds `input` in pieces ending at `splits` (then the rest), as successive reads would
    /// arrive: returns the payload, the bytes the body took and whether it is complete.
    fn decode_split(
        framing: BodyFraming,
        input: &[u8],
        splits: &[usize],
    ) -> Result<(Vec<u8>, usize, bool), HttpError> {
        let mut decoder = BodyDecoder::new(&framing);
        let mut payload = Vec::new();
        let mut used = 0;
        let mut start = 0;
        for end in splits.iter().copied().chain([input.len()]) {
            let piece = &input[start..end];
            let n = decode_body(&mut decoder, piece, |d| {
                payload.extend_from_slice(d);
                Ok(())
            })?;
            used += n;
            if n < piece.len() {
                break;
            }
            start = end;
        }
        Ok((payload, used, decoder.is_done()))
    }

    /// Framing, bytes in; then the payload, the bytes the body took and whether it is complete.
    type Case = (BodyFraming, &'static [u8], &'static [u8], usize, bool);

    #[test]
    fn bodies_whole_bytewise_and_split_everywhere() {
        let cases: &[Case] = &[
            (BodyFraming::None, b"GET /", b"", 0, true),
            (BodyFraming::Length(0), b"next", b"", 0, true),
            (BodyFraming::Length(3), b"abcdef", b"abc", 3, true),
            (BodyFraming::Length(9), b"abcdef", b"abcdef", 6, false),
            (
                BodyFraming::CloseDelimited,
                b"all of it",
                b"all of it",
                9,
                false,
            ),
            (BodyFraming::Chunked, b"0\r\n\r\n", b"", 5, true),
            (
                BodyFraming::Chunked,
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nNEXT",
                b"hello world",
                26,
                true,
            ),
            (
                BodyFraming::Chunked,
                b"A;name=value\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n",
                b"0123456789",
                43,
                true,
            ),
            (BodyFraming::Chunked, b"5\r\nhel", b"hel", 6, false),
        ];
        for &(framing, input, payload, used, done) in cases {
            let want = (payload.to_vec(), used, done);
            let bytewise: Vec<usize> = (1..input.len()).collect();
            assert_eq!(decode_split(framing, input, &[]), Ok(want.clone()));
            assert_eq!(decode_split(framing, input, &bytewise), Ok(want.clone()));
            for at in 0..=input.len() {
                let got = decode_split(framing, input, &[at]);
                assert_eq!(got, Ok(want.clone()), "{framing:?} split at {at}");
            }
        }
    }

    #[test]
    fn errors_from_the_decoder_and_the_sink() {
        assert_eq!(
            decode_split(BodyFraming::Chunked, b"3\r\nabcX", &[]),
            Err(HttpError::MissingChunkCrlf)
        );
        assert_eq!(
            decode_split(BodyFraming::Chunked, b"zz\r\n", &[]),
            Err(HttpError::InvalidChunkSize)
        );
        let mut decoder = BodyDecoder::new(&BodyFraming::Chunked);
        let refused = decode_body(&mut decoder, b"1\r\na\r\n1\r\nb\r\n", |d| {
            if d == b"b" {
                Err(HttpError::BodyTooLong)
            } else {
                Ok(())
            }
        });
        assert_eq!(refused, Err(HttpError::BodyTooLong));
    }

    #[test]
    fn header_helpers() {
        assert_eq!(parse_content_length(b" 42 "), Some(42));
        assert_eq!(parse_content_length(b"4x"), None);
        assert_eq!(parse_content_length(b""), None);
        assert_eq!(parse_content_length(b"99999999999999999999"), None);
        assert!(has_token(b"keep-alive, Close", "close"));
        assert!(!has_token(b"closed", "close"));
        assert!(is_chunked(b"gzip, chunked"));
        assert!(!is_chunked(b"chunked, gzip"));
        let mut v = Vec::new();
        push_u64(&mut v, 0);
        v.push(b' ');
        push_u64(&mut v, 18_446_744_073_709_551_615);
        assert_eq!(v, b"0 18446744073709551615");
    }
}
