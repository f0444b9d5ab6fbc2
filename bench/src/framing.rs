//! Sans-IO HTTP/1.1 message-body framing shared by the origin (request bodies) and the load
//! generator (response bodies): Content-Length, chunked and close-delimited bodies, decoded
//! incrementally from whatever slices the transport returns, without buffering the body.
//!
//! Deliberately small and lenient: this is a benchmark tool, not the proxy's strict codec
//! (`ringway_protocols::http::v1`).

use std::fmt;

/// Longest chunk-size line accepted, extensions included.
pub(crate) const MAX_CHUNK_LINE_BYTES: usize = 4096;

/// Most trailer-section bytes accepted after the last chunk.
pub(crate) const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// Why a body could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    /// A chunk-size line did not start with a hex digit or held an unexpected byte.
    InvalidChunkSize,
    /// A chunk size does not fit in 64 bits.
    ChunkSizeOverflow,
    /// A chunk-size line exceeded 4 KiB (extensions included).
    ChunkLineTooLong,
    /// Chunk data was not followed by CRLF.
    MissingChunkCrlf,
    /// The trailer section exceeded 16 KiB.
    TrailerTooLong,
    /// The connection closed before the body was complete.
    Truncated,
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            FramingError::InvalidChunkSize => "invalid chunk size line",
            FramingError::ChunkSizeOverflow => "chunk size overflows 64 bits",
            FramingError::ChunkLineTooLong => "chunk size line too long",
            FramingError::MissingChunkCrlf => "chunk data not followed by CRLF",
            FramingError::TrailerTooLong => "trailer section too long",
            FramingError::Truncated => "connection closed inside the body",
        };
        f.write_str(s)
    }
}

impl std::error::Error for FramingError {}

/// How a message body is delimited (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body at all.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the peer closes the connection (responses only).
    Eof,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    SizeLws,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    EndLf,
    Done,
}

/// Incremental decoder of one message body.
#[derive(Debug, Clone)]
pub(crate) struct BodyDecoder {
    kind: Framing,
    /// Length: bytes left. Chunked: bytes left in the current chunk.
    remaining: u64,
    state: ChunkState,
    size: u64,
    digits: usize,
    line: usize,
    trailer: usize,
    done: bool,
}

impl BodyDecoder {
    /// A decoder for a body framed as `framing`.
    pub(crate) fn new(framing: Framing) -> BodyDecoder {
        let (remaining, done) = match framing {
            Framing::Empty => (0, true),
            Framing::Length(n) => (n, n == 0),
            Framing::Chunked | Framing::Eof => (0, false),
        };
        BodyDecoder {
            kind: framing,
            remaining,
            state: ChunkState::Size,
            size: 0,
            digits: 0,
            line: 0,
            trailer: 0,
            done,
        }
    }

    /// True once the whole body has been consumed.
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// Consumes body bytes from the front of `input`, passing the decoded data to `sink`.
    ///
    /// Returns how many bytes of `input` belong to this body; bytes past the end of the body
    /// are left alone (they start the next message).
    pub(crate) fn feed(
        &mut self,
        input: &[u8],
        sink: &mut impl FnMut(&[u8]),
    ) -> Result<usize, FramingError> {
        if self.done {
            return Ok(0);
        }
        match self.kind {
            Framing::Empty => Ok(0),
            Framing::Length(_) => {
                let n = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(input.len());
                if n > 0 {
                    sink(&input[..n]);
                }
                self.remaining -= n as u64;
                self.done = self.remaining == 0;
                Ok(n)
            }
            Framing::Eof => {
                if !input.is_empty() {
                    sink(input);
                }
                Ok(input.len())
            }
            Framing::Chunked => self.feed_chunked(input, sink),
        }
    }

    /// The peer closed the connection: completes a close-delimited body.
    ///
    /// # Errors
    /// [`FramingError::Truncated`] when the body was delimited otherwise and is incomplete.
    pub(crate) fn eof(&mut self) -> Result<(), FramingError> {
        if self.done {
            return Ok(());
        }
        if self.kind == Framing::Eof {
            self.done = true;
            return Ok(());
        }
        Err(FramingError::Truncated)
    }

    fn end_size_line(&mut self) {
        self.line = 0;
        self.digits = 0;
        if self.size == 0 {
            self.state = ChunkState::TrailerStart;
        } else {
            self.remaining = self.size;
            self.state = ChunkState::Data;
        }
        self.size = 0;
    }

    // RFC 9112 section 7.1: chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF; the last
    // chunk has size 0 and is followed by a trailer section and CRLF. Bare LF is tolerated.
    fn feed_chunked(
        &mut self,
        input: &[u8],
        sink: &mut impl FnMut(&[u8]),
    ) -> Result<usize, FramingError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                ChunkState::Size => {
                    self.bump_line()?;
                    if let Some(d) = hex_digit(b) {
                        if self.size > (u64::MAX >> 4) {
                            return Err(FramingError::ChunkSizeOverflow);
                        }
                        self.size = (self.size << 4) | u64::from(d);
                        self.digits += 1;
                    } else {
                        if self.digits == 0 {
                            return Err(FramingError::InvalidChunkSize);
                        }
                        match b {
                            b'\r' => self.state = ChunkState::SizeLf,
                            b'\n' => self.end_size_line(),
                            b';' => self.state = ChunkState::Ext,
                            b' ' | b'\t' => self.state = ChunkState::SizeLws,
                            _ => return Err(FramingError::InvalidChunkSize),
                        }
                    }
                    i += 1;
                }
                ChunkState::SizeLws => {
                    self.bump_line()?;
                    match b {
                        b' ' | b'\t' => {}
                        b';' => self.state = ChunkState::Ext,
                        b'\r' => self.state = ChunkState::SizeLf,
                        b'\n' => self.end_size_line(),
                        _ => return Err(FramingError::InvalidChunkSize),
                    }
                    i += 1;
                }
                ChunkState::Ext => {
                    self.bump_line()?;
                    match b {
                        b'\r' => self.state = ChunkState::SizeLf,
                        b'\n' => self.end_size_line(),
                        _ => {}
                    }
                    i += 1;
                }
                ChunkState::SizeLf => {
                    if b != b'\n' {
                        return Err(FramingError::InvalidChunkSize);
                    }
                    self.end_size_line();
                    i += 1;
                }
                ChunkState::Data => {
                    let avail = input.len() - i;
                    let n = usize::try_from(self.remaining)
                        .unwrap_or(usize::MAX)
                        .min(avail);
                    sink(&input[i..i + n]);
                    i += n;
                    self.remaining -= n as u64;
                    if self.remaining == 0 {
                        self.state = ChunkState::DataCr;
                    }
                }
                ChunkState::DataCr => {
                    match b {
                        b'\r' => self.state = ChunkState::DataLf,
                        b'\n' => self.state = ChunkState::Size,
                        _ => return Err(FramingError::MissingChunkCrlf),
                    }
                    i += 1;
                }
                ChunkState::DataLf => {
                    if b != b'\n' {
                        return Err(FramingError::MissingChunkCrlf);
                    }
                    self.state = ChunkState::Size;
                    i += 1;
                }
                ChunkState::TrailerStart => {
                    self.bump_trailer()?;
                    match b {
                        b'\r' => self.state = ChunkState::EndLf,
                        b'\n' => {
                            self.finish();
                            return Ok(i + 1);
                        }
                        _ => self.state = ChunkState::TrailerLine,
                    }
                    i += 1;
                }
                ChunkState::TrailerLine => {
                    self.bump_trailer()?;
                    if b == b'\n' {
                        self.state = ChunkState::TrailerStart;
                    }
                    i += 1;
                }
                ChunkState::EndLf => {
                    if b != b'\n' {
                        return Err(FramingError::InvalidChunkSize);
                    }
                    self.finish();
                    return Ok(i + 1);
                }
                ChunkState::Done => return Ok(i),
            }
        }
        Ok(i)
    }

    fn finish(&mut self) {
        self.state = ChunkState::Done;
        self.done = true;
    }

    fn bump_line(&mut self) -> Result<(), FramingError> {
        self.line += 1;
        if self.line > MAX_CHUNK_LINE_BYTES {
            return Err(FramingError::ChunkLineTooLong);
        }
        Ok(())
    }

    fn bump_trailer(&mut self) -> Result<(), FramingError> {
        self.trailer += 1;
        if self.trailer > MAX_TRAILER_BYTES {
            return Err(FramingError::TrailerTooLong);
        }
        Ok(())
    }
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

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

/// Appends the lowercase hex digits of `n`, without leading zeros.
pub(crate) fn push_hex(out: &mut Vec<u8>, mut n: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut tmp = [0u8; 16];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = DIGITS[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

/// Appends `n` as exactly 16 lowercase hex digits.
pub(crate) fn push_hex16(out: &mut Vec<u8>, n: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..16).rev() {
        out.push(DIGITS[((n >> (shift * 4)) & 0xf) as usize]);
    }
}

/// Incremental 64-bit FNV-1a.
#[derive(Debug, Clone, Copy)]
pub struct Fnv1a64(u64);

impl Fnv1a64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    /// A hasher over no bytes yet.
    pub fn new() -> Fnv1a64 {
        Fnv1a64(Self::OFFSET)
    }

    /// Hashes more bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(Self::PRIME);
        }
        self.0 = h;
    }

    /// The hash of every byte so far.
    pub fn finish(&self) -> u64 {
        self.0
    }
}

impl Default for Fnv1a64 {
    fn default() -> Self {
        Fnv1a64::new()
    }
}

/// The 64-bit FNV-1a hash of `bytes`, as the origin reports it in `X-Body-Fnv` (16 hex digits).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h = Fnv1a64::new();
    h.update(bytes);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_whole(
        framing: Framing,
        input: &[u8],
    ) -> Result<(Vec<u8>, usize, bool), FramingError> {
        let mut d = BodyDecoder::new(framing);
        let mut out = Vec::new();
        let n = d.feed(input, &mut |b| out.extend_from_slice(b))?;
        Ok((out, n, d.is_done()))
    }

    /// Feeds `input` in pieces split at `splits`, returning data, consumed and done.
    fn decode_split(
        framing: Framing,
        input: &[u8],
        splits: &[usize],
    ) -> Result<(Vec<u8>, usize, bool), FramingError> {
        let mut d = BodyDecoder::new(framing);
        let mut out = Vec::new();
        let mut consumed = 0;
        let mut bounds = splits.to_vec();
        bounds.push(input.len());
        let mut start = 0;
        for end in bounds {
            let piece = &input[start..end];
            let n = d.feed(piece, &mut |b| out.extend_from_slice(b))?;
            consumed += n;
            if n < piece.len() {
                break;
            }
            start = end;
        }
        Ok((out, consumed, d.is_done()))
    }

    const CHUNKED_CASES: &[(&[u8], &[u8], usize)] = &[
        (b"5\r\nhello\r\n0\r\n\r\n", b"hello", 15),
        (
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nNEXT",
            b"hello world",
            26,
        ),
        (
            b"A;name=value\r\n0123456789\r\n0\r\n\r\n",
            b"0123456789",
            31,
        ),
        (b"3 \r\nabc\r\n0\r\nTrailer: x\r\n\r\n", b"abc", 26),
        (b"3\nabc\n0\n\n", b"abc", 9),
        (b"0\r\n\r\n", b"", 5),
    ];

    #[test]
    fn chunked_whole_bytewise_and_split_everywhere() {
        for (input, want, consumed) in CHUNKED_CASES {
            let (data, n, done) = decode_whole(Framing::Chunked, input).unwrap();
            assert_eq!(
                (&data[..], n, done),
                (*want, *consumed, true),
                "whole {input:?}"
            );
            let bytewise: Vec<usize> = (1..input.len()).collect();
            let (data, n, done) = decode_split(Framing::Chunked, input, &bytewise).unwrap();
            assert_eq!(
                (&data[..], n, done),
                (*want, *consumed, true),
                "bytewise {input:?}"
            );
            for at in 0..=input.len() {
                let (data, n, done) = decode_split(Framing::Chunked, input, &[at]).unwrap();
                assert_eq!(
                    (&data[..], n, done),
                    (*want, *consumed, true),
                    "split {at} {input:?}"
                );
            }
        }
    }

    #[test]
    fn chunked_rejects_bad_framing() {
        let cases: &[(&[u8], FramingError)] = &[
            (b"\r\n", FramingError::InvalidChunkSize),
            (b"zz\r\n", FramingError::InvalidChunkSize),
            (b"3\r\nabcX", FramingError::MissingChunkCrlf),
            (b"3\r\nabc\rX", FramingError::MissingChunkCrlf),
            (b"11111111111111111\r\n", FramingError::ChunkSizeOverflow),
        ];
        for (input, err) in cases {
            assert_eq!(
                decode_whole(Framing::Chunked, input).unwrap_err(),
                *err,
                "{input:?}"
            );
        }
        let long = [b'1'; MAX_CHUNK_LINE_BYTES + 1];
        let mut input = b"1;".to_vec();
        input.extend_from_slice(&long);
        assert_eq!(
            decode_whole(Framing::Chunked, &input).unwrap_err(),
            FramingError::ChunkLineTooLong
        );
    }

    #[test]
    fn chunked_incomplete_waits_and_eof_truncates() {
        let mut d = BodyDecoder::new(Framing::Chunked);
        let n = d.feed(b"5\r\nhel", &mut |_| {}).unwrap();
        assert_eq!(n, 6);
        assert!(!d.is_done());
        assert_eq!(d.eof(), Err(FramingError::Truncated));
    }

    #[test]
    fn length_and_eof_bodies() {
        let (data, n, done) = decode_whole(Framing::Length(3), b"abcdef").unwrap();
        assert_eq!((&data[..], n, done), (&b"abc"[..], 3, true));
        let (data, n, done) = decode_split(Framing::Length(4), b"abcdef", &[1, 2, 3]).unwrap();
        assert_eq!((&data[..], n, done), (&b"abcd"[..], 4, true));
        assert!(BodyDecoder::new(Framing::Length(0)).is_done());
        assert!(BodyDecoder::new(Framing::Empty).is_done());
        let mut d = BodyDecoder::new(Framing::Eof);
        assert_eq!(d.feed(b"abc", &mut |_| {}).unwrap(), 3);
        assert!(!d.is_done());
        d.eof().unwrap();
        assert!(d.is_done());
        let mut d = BodyDecoder::new(Framing::Length(5));
        d.feed(b"ab", &mut |_| {}).unwrap();
        assert_eq!(d.eof(), Err(FramingError::Truncated));
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
        v.push(b' ');
        push_hex(&mut v, 0x1f);
        v.push(b' ');
        push_hex16(&mut v, 0xab);
        assert_eq!(v, b"0 18446744073709551615 1f 00000000000000ab");
    }

    #[test]
    fn fnv_known_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
