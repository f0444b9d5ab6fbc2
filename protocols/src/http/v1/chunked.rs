//! The chunked transfer coding (RFC 9112 section 7.1): our own strict, sans-IO decoder, byte
//! exact whatever the read sizes, and the chunk-header encoder. Used on both body paths:
//! request bodies from downstream, response bodies from upstream.

use std::ops::Range;

use super::error::HttpError;
use super::headers::{is_field_vchar_or_ws, is_tchar};

/// Most bytes in one chunk-size line, extensions included, CRLF excluded.
pub const MAX_CHUNK_LINE_BYTES: usize = 4096;
/// Most hex digits in a chunk-size (16 fill a u64; leading zeros count).
pub const MAX_CHUNK_SIZE_DIGITS: usize = 16;
/// Most bytes in the trailer section, its final CRLF included.
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// What one call to a body decoder did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Bytes of the input used; the caller drops them from its buffer.
    pub consumed: usize,
    /// The range of the input that is body payload (possibly empty); always within
    /// `0..consumed`.
    pub data: Range<usize>,
    /// Whether the body is complete; bytes after `consumed` belong to the next message.
    pub done: bool,
}

/// Where the decoder is in the chunked grammar (RFC 9112 section 7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Expecting the first hex digit of a chunk-size.
    SizeStart,
    /// Inside the chunk-size.
    Size,
    /// BWS after the chunk-size; only `;` may follow.
    SizeWs,
    /// After `;`: BWS, then an extension name.
    ExtNameStart,
    /// Inside an extension name.
    ExtName,
    /// BWS after an extension name: `=` or `;` follows.
    ExtNameWs,
    /// After `=`: BWS, then a token or quoted-string.
    ExtValueStart,
    /// Inside a token value.
    ExtToken,
    /// Inside a quoted-string value.
    ExtQuoted,
    /// After a backslash in a quoted-string.
    ExtQuotedPair,
    /// Right after the closing quote.
    ExtQuotedEnd,
    /// BWS after a value; only `;` may follow.
    ExtValueWs,
    /// Saw the CR ending a chunk-size line without extensions.
    SizeLf,
    /// Saw the CR ending a chunk-size line with extensions.
    ExtLf,
    /// Inside chunk data.
    Data,
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer field line or of the final empty line.
    TrailerLineStart,
    /// Inside a trailer field name.
    TrailerName,
    /// Inside a trailer field value.
    TrailerValue,
    /// Saw the CR ending a trailer field line.
    TrailerLf,
    /// Saw the CR of the final empty line.
    EndLf,
    /// The message body is complete.
    Done,
    /// A previous call failed; the decoder keeps answering with the same error.
    Failed(HttpError),
}

/// A strict, sans-IO decoder for the chunked transfer coding.
///
/// Feed it whatever bytes arrived; it never needs more than it is given, keeps no copy of
/// them, and decodes the same payload whether the input comes whole, a byte at a time or split
/// anywhere. Each call consumes up to and including at most one run of chunk data, so the
/// caller loops: `decode(&buf)`, forward `buf[data]`, drop `consumed` bytes, repeat while input
/// remains and the body is not done. Given non-empty input, a call that returns `Ok` without
/// `done` always consumes at least one byte.
///
/// Strictness (policy table, RFC 9112 section 7.1): chunk-size is 1 to 16 hex digits, no sign,
/// `0x` or leading whitespace; BWS only around `;` and `=` in extensions; extension names are
/// tokens, values tokens or quoted-strings, no CR, LF or control byte but HTAB; CRLF after each
/// chunk's data; trailer field lines are validated, bounded, and discarded.
///
/// # Errors
/// After an error every later call returns the same error.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: State,
    /// The chunk-size being read, then the data bytes still to come.
    size: u64,
    /// Hex digits read so far in this chunk-size.
    digits: usize,
    /// Bytes of the current chunk-size line so far.
    line_bytes: usize,
    /// Bytes of the trailer section so far.
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

impl ChunkedDecoder {
    /// A decoder at the start of a chunked body.
    pub fn new() -> Self {
        Self {
            state: State::SizeStart,
            size: 0,
            digits: 0,
            line_bytes: 0,
            trailer_bytes: 0,
        }
    }

    /// Whether the last chunk and the trailer section have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes as much of `input` as it can, stopping after one run of chunk data, at the end
    /// of the body, or at the end of the input.
    ///
    /// # Errors
    /// [`HttpError::InvalidChunkSize`], [`HttpError::ChunkSizeTooLong`],
    /// [`HttpError::InvalidChunkExtension`], [`HttpError::ChunkLineTooLong`],
    /// [`HttpError::MissingChunkCrlf`], [`HttpError::InvalidTrailer`],
    /// [`HttpError::TrailerTooLarge`].
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded, HttpError> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Done => break,
                State::Failed(error) => return Err(error),
                State::Data => {
                    let available = (input.len() - i) as u64;
                    let take = self.size.min(available) as usize;
                    let start = i;
                    i += take;
                    self.size -= take as u64;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    return Ok(Decoded {
                        consumed: i,
                        data: start..i,
                        done: false,
                    });
                }
                _ => {
                    if let Err(error) = self.step(input[i]) {
                        self.state = State::Failed(error);
                        return Err(error);
                    }
                    i += 1;
                }
            }
        }
        if let State::Failed(error) = self.state {
            return Err(error);
        }
        Ok(Decoded {
            consumed: i,
            data: i..i,
            done: self.state == State::Done,
        })
    }

    /// Advances the grammar by one byte outside chunk data.
    fn step(&mut self, b: u8) -> Result<(), HttpError> {
        use State::*;
        match self.state {
            SizeStart | Size | SizeWs | ExtNameStart | ExtName | ExtNameWs | ExtValueStart
            | ExtToken | ExtQuoted | ExtQuotedPair | ExtQuotedEnd | ExtValueWs
                if b != b'\r' =>
            {
                self.line_bytes += 1;
                if self.line_bytes > MAX_CHUNK_LINE_BYTES {
                    return Err(HttpError::ChunkLineTooLong);
                }
            }
            TrailerLineStart | TrailerName | TrailerValue | TrailerLf | EndLf => {
                self.trailer_bytes += 1;
                if self.trailer_bytes > MAX_TRAILER_BYTES {
                    return Err(HttpError::TrailerTooLarge);
                }
            }
            _ => {}
        }
        self.state = match (self.state, b) {
            // chunk-size = 1*HEXDIG (RFC 9112 section 7.1): no sign, no 0x, no leading space
            (SizeStart, _) => match hex_value(b) {
                Some(v) => {
                    self.size = u64::from(v);
                    self.digits = 1;
                    Size
                }
                None => return Err(HttpError::InvalidChunkSize),
            },
            (Size, _) => match hex_value(b) {
                Some(v) => {
                    self.digits += 1;
                    if self.digits > MAX_CHUNK_SIZE_DIGITS {
                        return Err(HttpError::ChunkSizeTooLong);
                    }
                    self.size = (self.size << 4) | u64::from(v);
                    Size
                }
                None => match b {
                    b';' => ExtNameStart,
                    b'\r' => SizeLf,
                    b if is_ws(b) => SizeWs,
                    _ => return Err(HttpError::InvalidChunkSize),
                },
            },
            // chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
            // (RFC 9112 section 7.1.1)
            (SizeWs, b';') => ExtNameStart,
            (SizeWs, b) if is_ws(b) => SizeWs,
            (SizeWs, _) => return Err(HttpError::InvalidChunkSize),
            (ExtNameStart, b) if is_ws(b) => ExtNameStart,
            (ExtNameStart, b) if is_tchar(b) => ExtName,
            (ExtName, b) if is_tchar(b) => ExtName,
            (ExtName, b'=') | (ExtNameWs, b'=') => ExtValueStart,
            (ExtName, b';') | (ExtNameWs, b';') => ExtNameStart,
            (ExtName, b'\r') => ExtLf,
            (ExtName, b) | (ExtNameWs, b) if is_ws(b) => ExtNameWs,
            (ExtValueStart, b) if is_ws(b) => ExtValueStart,
            (ExtValueStart, b) if is_tchar(b) => ExtToken,
            (ExtValueStart, b'"') => ExtQuoted,
            (ExtToken, b) if is_tchar(b) => ExtToken,
            (ExtToken, b';') | (ExtQuotedEnd, b';') | (ExtValueWs, b';') => ExtNameStart,
            (ExtToken, b'\r') | (ExtQuotedEnd, b'\r') => ExtLf,
            (ExtToken, b) | (ExtQuotedEnd, b) | (ExtValueWs, b) if is_ws(b) => ExtValueWs,
            // quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE (RFC 9110 section 5.6.4)
            (ExtQuoted, b'"') => ExtQuotedEnd,
            (ExtQuoted, b'\\') => ExtQuotedPair,
            (ExtQuoted, b) if is_field_vchar_or_ws(b) => ExtQuoted,
            (ExtQuotedPair, b) if is_field_vchar_or_ws(b) => ExtQuoted,
            (
                ExtNameStart | ExtName | ExtNameWs | ExtValueStart | ExtToken | ExtQuoted
                | ExtQuotedPair | ExtQuotedEnd | ExtValueWs,
                _,
            ) => return Err(HttpError::InvalidChunkExtension),
            (SizeLf | ExtLf, b'\n') => {
                self.line_bytes = 0;
                if self.size == 0 {
                    TrailerLineStart // last-chunk (RFC 9112 section 7.1)
                } else {
                    Data
                }
            }
            (SizeLf, _) => return Err(HttpError::InvalidChunkSize),
            (ExtLf, _) => return Err(HttpError::InvalidChunkExtension),
            // chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => {
                self.digits = 0;
                SizeStart
            }
            (DataCr | DataLf, _) => return Err(HttpError::MissingChunkCrlf),
            // trailer-section = *( field-line CRLF ) (RFC 9112 section 7.1.2); then CRLF
            (TrailerLineStart, b'\r') => EndLf,
            (TrailerLineStart, b) if is_tchar(b) => TrailerName,
            (TrailerName, b) if is_tchar(b) => TrailerName,
            (TrailerName, b':') => TrailerValue,
            (TrailerValue, b'\r') => TrailerLf,
            (TrailerValue, b) if is_field_vchar_or_ws(b) => TrailerValue,
            (TrailerLf, b'\n') => TrailerLineStart,
            (EndLf, b'\n') => Done,
            (TrailerLineStart | TrailerName | TrailerValue | TrailerLf | EndLf, _) => {
                return Err(HttpError::InvalidTrailer)
            }
            (Data | Done | Failed(_), _) => self.state,
        };
        Ok(())
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Appends the chunk-size line for a chunk of `len` bytes: lowercase hex, then CRLF.
///
/// The caller follows it with the data and CRLF. `len` 0 writes the last-chunk line `0\r\n`.
pub fn encode_chunk_header(len: usize, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut n = len as u64;
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = HEX[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::v1::testing::{feed_every_way, Outcome};
    use HttpError::*;

    /// A chunked body in, the payload and leftover out (or the error); fed whole, a byte at a
    /// time and split at every offset, all agreeing.
    fn check(input: &[u8], expected: Result<(&[u8], &[u8]), HttpError>) {
        let outcome = feed_every_way(input, || {
            crate::http::v1::BodyDecoder::Chunked(ChunkedDecoder::new())
        });
        match expected {
            Ok((payload, leftover)) => assert_eq!(
                outcome,
                Outcome {
                    data: payload.to_vec(),
                    done: true,
                    error: None,
                    leftover: leftover.to_vec()
                },
                "{:?}",
                String::from_utf8_lossy(input)
            ),
            Err(error) => assert_eq!(
                outcome.error,
                Some(error),
                "{:?}",
                String::from_utf8_lossy(input)
            ),
        }
    }

    #[test]
    fn valid_bodies() {
        let cases: &[(&[u8], &[u8], &[u8])] = &[
            (b"0\r\n\r\n", b"", b""),
            (b"5\r\nhello\r\n0\r\n\r\n", b"hello", b""),
            (
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nGET / HTTP/1.1\r\n",
                b"hello world",
                b"GET / HTTP/1.1\r\n",
            ),
            (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789", b""),
            (b"a\r\n0123456789\r\n000\r\n\r\n", b"0123456789", b""),
            (b"0000000000000003\r\nabc\r\n0\r\n\r\n", b"abc", b""),
            (b"3;name\r\nabc\r\n0\r\n\r\n", b"abc", b""),
            (b"3;name=value\r\nabc\r\n0\r\n\r\n", b"abc", b""),
            (b"3 ; name = value ; other\r\nabc\r\n0\r\n\r\n", b"abc", b""),
            (
                b"3\t;\tname\t=\t\"quoted \\\" value\"\r\nabc\r\n0;last\r\n\r\n",
                b"abc",
                b"",
            ),
            (b"3;a=\"\"\r\nabc\r\n0\r\n\r\n", b"abc", b""),
            (b"3;a=\"x\" ;b\r\nabc\r\n0\r\n\r\n", b"abc", b""),
            (
                b"3\r\nabc\r\n0\r\nExpires: never\r\nX-Checksum: abc \t def\r\n\r\n",
                b"abc",
                b"",
            ),
            (b"3\r\nabc\r\n0\r\nEmpty:\r\n\r\nnext", b"abc", b"next"),
        ];
        for (input, payload, leftover) in cases {
            check(input, Ok((payload, leftover)));
        }
    }

    #[test]
    fn chunk_line_rows_of_the_policy_table() {
        let cases: &[(&[u8], HttpError)] = &[
            // empty size, non-hex, sign, 0x, spaces before size
            (b"\r\n\r\n", InvalidChunkSize),
            (b";ext\r\n", InvalidChunkSize),
            (b"g\r\n", InvalidChunkSize),
            (b"5g\r\nhello\r\n", InvalidChunkSize),
            (b"+5\r\nhello\r\n", InvalidChunkSize),
            (b"-5\r\nhello\r\n", InvalidChunkSize),
            (b"0x5\r\nhello\r\n", InvalidChunkSize),
            (b" 5\r\nhello\r\n", InvalidChunkSize),
            (b"\t5\r\nhello\r\n", InvalidChunkSize),
            (b"5 \r\nhello\r\n", InvalidChunkSize),
            (b"5 5\r\nhello\r\n", InvalidChunkSize),
            (b"5\nhello\r\n", InvalidChunkSize),
            (b"5\rhello\r\n", InvalidChunkSize),
            // more than 16 hex digits
            (b"00000000000000001\r\nx\r\n", ChunkSizeTooLong),
            (b"fffffffffffffffff\r\n", ChunkSizeTooLong),
            // extension: CR, LF, control bytes, bad grammar
            (b"5;\r\nhello\r\n", InvalidChunkExtension),
            (b"5;a\nhello\r\n", InvalidChunkExtension),
            (b"5;a=b\rc\r\nhello\r\n", InvalidChunkExtension),
            (b"5;a\x00\r\nhello\r\n", InvalidChunkExtension),
            (b"5;a=\x7f\r\nhello\r\n", InvalidChunkExtension),
            (b"5;a=\"b\x01\"\r\nhello\r\n", InvalidChunkExtension),
            (b"5;a=\"b\r\n\"\r\nhello\r\n", InvalidChunkExtension),
            (b"5;a=\"unterminated\r\nhello\r\n", InvalidChunkExtension),
            (b"5;a=\r\nhello\r\n", InvalidChunkExtension),
            (b"5;a=b c\r\nhello\r\n", InvalidChunkExtension),
            (b"5;a \r\nhello\r\n", InvalidChunkExtension),
            (b"5;a=b \r\nhello\r\n", InvalidChunkExtension),
            (b"5;=b\r\nhello\r\n", InvalidChunkExtension),
            (b"5;a=\"x\"y\r\nhello\r\n", InvalidChunkExtension),
            // missing CRLF after data
            (b"5\r\nhelloX\r\n0\r\n\r\n", MissingChunkCrlf),
            (b"5\r\nhello\rX0\r\n\r\n", MissingChunkCrlf),
            (b"5\r\nhello\n0\r\n\r\n", MissingChunkCrlf),
            (b"5\r\nhello0\r\n\r\n", MissingChunkCrlf),
            // trailers
            (b"0\r\n : folded\r\n\r\n", InvalidTrailer),
            (b"0\r\nName : v\r\n\r\n", InvalidTrailer),
            (b"0\r\n: v\r\n\r\n", InvalidTrailer),
            (b"0\r\nName v\r\n\r\n", InvalidTrailer),
            (b"0\r\nName: a\x00b\r\n\r\n", InvalidTrailer),
            (b"0\r\nName: a\rb\r\n\r\n", InvalidTrailer),
            (b"0\r\nName: a\n\r\n", InvalidTrailer),
            (b"0\r\n\rX", InvalidTrailer),
            (b"0\r\n\n", InvalidTrailer),
        ];
        for (input, error) in cases {
            check(input, Err(*error));
        }
    }

    #[test]
    fn sixteen_hex_digits_boundary() {
        // 15 and 16 digits decode (a short body: the declared size is never reached)
        for digits in [15, 16] {
            let line = format!("{}1\r\nx\r\n0\r\n\r\n", "0".repeat(digits - 1));
            check(line.as_bytes(), Ok((b"x", b"")));
        }
        check(
            b"00000000000000001\r\nx\r\n0\r\n\r\n",
            Err(ChunkSizeTooLong),
        );
        // the largest 16-digit size is accepted and counted down without overflow
        let mut decoder = ChunkedDecoder::new();
        let got = decoder.decode(b"ffffffffffffffff\r\nabc");
        assert_eq!(
            got,
            Ok(Decoded {
                consumed: 21,
                data: 18..21,
                done: false
            })
        );
        assert_eq!(decoder.size, u64::MAX - 3);
    }

    #[test]
    fn chunk_line_length_boundary() {
        for (ext_len, ok) in [
            (MAX_CHUNK_LINE_BYTES - 3, true),
            (MAX_CHUNK_LINE_BYTES - 2, true),
            (MAX_CHUNK_LINE_BYTES - 1, false),
        ] {
            // "1;" + name: the line is 2 + ext_len bytes
            let input = format!("1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(ext_len));
            let expected = if ok {
                Ok((&b"x"[..], &b""[..]))
            } else {
                Err(ChunkLineTooLong)
            };
            check(input.as_bytes(), expected);
        }
    }

    #[test]
    fn trailer_size_boundary() {
        // "X:" + value + CRLF, then the final CRLF: 2 + v + 2 + 2 bytes
        for (value_len, ok) in [
            (MAX_TRAILER_BYTES - 7, true),
            (MAX_TRAILER_BYTES - 6, true),
            (MAX_TRAILER_BYTES - 5, false),
        ] {
            let input = format!("0\r\nX:{}\r\n\r\n", "v".repeat(value_len));
            let expected = if ok {
                Ok((&b""[..], &b""[..]))
            } else {
                Err(TrailerTooLarge)
            };
            // every-offset splitting of 16 KiB is slow in debug builds: check whole and bytewise
            let outcome =
                crate::http::v1::testing::feed_whole_and_bytewise(input.as_bytes(), || {
                    crate::http::v1::BodyDecoder::Chunked(ChunkedDecoder::new())
                });
            match expected {
                Ok(_) => assert!(outcome.done && outcome.error.is_none(), "{value_len}"),
                Err(e) => assert_eq!(outcome.error, Some(e), "{value_len}"),
            }
        }
    }

    #[test]
    fn truncated_input_is_not_an_error_and_consumes_what_it_can() {
        let mut decoder = ChunkedDecoder::new();
        assert_eq!(
            decoder.decode(b"5\r\nhel"),
            Ok(Decoded {
                consumed: 6,
                data: 3..6,
                done: false
            })
        );
        assert_eq!(
            decoder.decode(b""),
            Ok(Decoded {
                consumed: 0,
                data: 0..0,
                done: false
            })
        );
        assert_eq!(
            decoder.decode(b"lo\r"),
            Ok(Decoded {
                consumed: 2,
                data: 0..2,
                done: false
            })
        );
        assert_eq!(
            decoder.decode(b"\r"),
            Ok(Decoded {
                consumed: 1,
                data: 1..1,
                done: false
            })
        );
        assert_eq!(
            decoder.decode(b"\n0\r\n\r\nrest"),
            Ok(Decoded {
                consumed: 6,
                data: 6..6,
                done: true
            })
        );
        assert!(decoder.is_done());
        assert_eq!(
            decoder.decode(b"rest"),
            Ok(Decoded {
                consumed: 0,
                data: 0..0,
                done: true
            })
        );
    }

    #[test]
    fn errors_are_sticky() {
        let mut decoder = ChunkedDecoder::new();
        assert_eq!(decoder.decode(b"z"), Err(InvalidChunkSize));
        assert_eq!(decoder.decode(b"0\r\n\r\n"), Err(InvalidChunkSize));
    }

    #[test]
    fn chunk_header_encoding() {
        for (len, expected) in [
            (0usize, "0\r\n"),
            (1, "1\r\n"),
            (15, "f\r\n"),
            (16, "10\r\n"),
            (4096, "1000\r\n"),
            (0xdead_beef, "deadbeef\r\n"),
        ] {
            let mut out = Vec::new();
            encode_chunk_header(len, &mut out);
            assert_eq!(out, expected.as_bytes());
        }
    }
}
