//! Body decoding and encoding for every [`BodyFraming`]: the one interface the engine streams
//! request and response bodies through, whatever the framing on either side.

use super::chunked::{encode_chunk_header, ChunkedDecoder, Decoded};
use super::error::HttpError;
use super::framing::BodyFraming;

/// Reads a body framed as decided by [`super::request_framing`] or [`super::response_framing`].
///
/// Sans-IO: give it the bytes buffered so far; it says how many it used and which of them are
/// payload. See [`ChunkedDecoder`] for the calling loop; every variant follows it.
#[derive(Clone, Debug)]
pub enum BodyDecoder {
    /// No body: done at once, consumes nothing.
    None,
    /// Content-Length: this many payload bytes still to come.
    Length(u64),
    /// The chunked coding.
    Chunked(ChunkedDecoder),
    /// Until EOF; `true` once EOF was seen.
    CloseDelimited(bool),
}

impl BodyDecoder {
    /// A decoder for `framing`.
    pub fn new(framing: &BodyFraming) -> Self {
        match framing {
            BodyFraming::None => Self::None,
            BodyFraming::Length(n) => Self::Length(*n),
            BodyFraming::Chunked => Self::Chunked(ChunkedDecoder::new()),
            BodyFraming::CloseDelimited => Self::CloseDelimited(false),
        }
    }

    /// Decodes from `input`.
    ///
    /// `Length` takes at most the bytes still due and is done at zero: bytes past the end are
    /// not consumed, and the caller decides what they are (a pipelined request, or an upstream
    /// body longer than its Content-Length). `None` is done at once. `CloseDelimited` takes
    /// everything and is done only after [`BodyDecoder::on_eof`]. `Chunked` is
    /// [`ChunkedDecoder::decode`].
    ///
    /// # Errors
    /// Only the chunked coding fails here; see [`ChunkedDecoder::decode`].
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded, HttpError> {
        match self {
            Self::None => Ok(Decoded {
                consumed: 0,
                data: 0..0,
                done: true,
            }),
            Self::Length(remaining) => {
                let take = (*remaining).min(input.len() as u64) as usize;
                *remaining -= take as u64;
                Ok(Decoded {
                    consumed: take,
                    data: 0..take,
                    done: *remaining == 0,
                })
            }
            Self::Chunked(decoder) => decoder.decode(input),
            Self::CloseDelimited(eof) => {
                let take = if *eof { 0 } else { input.len() };
                Ok(Decoded {
                    consumed: take,
                    data: 0..take,
                    done: *eof,
                })
            }
        }
    }

    /// Tells the decoder the peer closed its side.
    ///
    /// # Errors
    /// [`HttpError::TruncatedBody`] unless the body is close-delimited or already complete.
    pub fn on_eof(&mut self) -> Result<(), HttpError> {
        match self {
            Self::CloseDelimited(eof) => {
                *eof = true;
                Ok(())
            }
            _ if self.is_done() => Ok(()),
            _ => Err(HttpError::TruncatedBody),
        }
    }

    /// Whether the whole body has been read.
    pub fn is_done(&self) -> bool {
        match self {
            Self::None => true,
            Self::Length(remaining) => *remaining == 0,
            Self::Chunked(decoder) => decoder.is_done(),
            Self::CloseDelimited(eof) => *eof,
        }
    }
}

/// Writes a body in the framing announced by the head encoder.
///
/// Appends to the caller's buffer so head and first body bytes can go out in one write.
#[derive(Clone, Debug)]
pub enum BodyEncoder {
    /// No body: any payload is an error.
    None,
    /// Content-Length: this many bytes may still be written.
    Length(u64),
    /// The chunked coding; `true` once the last chunk was written.
    Chunked(bool),
    /// Until close: bytes pass through unchanged.
    CloseDelimited,
}

impl BodyEncoder {
    /// An encoder for `framing`.
    pub fn new(framing: &BodyFraming) -> Self {
        match framing {
            BodyFraming::None => Self::None,
            BodyFraming::Length(n) => Self::Length(*n),
            BodyFraming::Chunked => Self::Chunked(false),
            BodyFraming::CloseDelimited => Self::CloseDelimited,
        }
    }

    /// Appends `data` to `out` in this framing: as is for `Length` and `CloseDelimited`; one
    /// chunk (size line, data, CRLF) for `Chunked`, nothing for empty data (an empty chunk
    /// would end the body).
    ///
    /// # Errors
    /// [`HttpError::BodyTooLong`] when `data` would exceed the Content-Length, when a `None`
    /// body gets any byte, or after a chunked body was finished; `out` is left unchanged.
    pub fn encode(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), HttpError> {
        match self {
            Self::None if data.is_empty() => Ok(()),
            Self::None => Err(HttpError::BodyTooLong),
            Self::Length(remaining) => {
                if data.len() as u64 > *remaining {
                    return Err(HttpError::BodyTooLong);
                }
                *remaining -= data.len() as u64;
                out.extend_from_slice(data);
                Ok(())
            }
            Self::Chunked(true) if !data.is_empty() => Err(HttpError::BodyTooLong),
            Self::Chunked(_) => {
                if !data.is_empty() {
                    // chunk = chunk-size CRLF chunk-data CRLF (RFC 9112 section 7.1)
                    out.reserve(data.len() + 20);
                    encode_chunk_header(data.len(), out);
                    out.extend_from_slice(data);
                    out.extend_from_slice(b"\r\n");
                }
                Ok(())
            }
            Self::CloseDelimited => {
                out.extend_from_slice(data);
                Ok(())
            }
        }
    }

    /// Ends the body: the last chunk and an empty trailer section (`0\r\n\r\n`) for `Chunked`
    /// (once; later calls write nothing), nothing otherwise.
    ///
    /// # Errors
    /// [`HttpError::TruncatedBody`] if a `Length` body is short of its Content-Length.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), HttpError> {
        match self {
            Self::Length(remaining) if *remaining > 0 => Err(HttpError::TruncatedBody),
            Self::Chunked(finished) => {
                if !*finished {
                    out.extend_from_slice(b"0\r\n\r\n");
                    *finished = true;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::v1::testing::{feed_every_way, Outcome};

    fn outcome(data: &[u8], done: bool, error: Option<HttpError>, leftover: &[u8]) -> Outcome {
        Outcome {
            data: data.to_vec(),
            done,
            error,
            leftover: leftover.to_vec(),
        }
    }

    #[test]
    fn decoders_fed_every_way() {
        let cases: &[(BodyFraming, &[u8], Outcome)] = &[
            (BodyFraming::None, b"", outcome(b"", true, None, b"")),
            (
                BodyFraming::None,
                b"GET /",
                outcome(b"", true, None, b"GET /"),
            ),
            (
                BodyFraming::Length(0),
                b"next",
                outcome(b"", true, None, b"next"),
            ),
            (
                BodyFraming::Length(5),
                b"hello",
                outcome(b"hello", true, None, b""),
            ),
            (
                BodyFraming::Length(5),
                b"hello world",
                outcome(b"hello", true, None, b" world"),
            ),
            (
                BodyFraming::Length(5),
                b"hel",
                outcome(b"hel", false, Some(HttpError::TruncatedBody), b""),
            ),
            (
                BodyFraming::CloseDelimited,
                b"",
                outcome(b"", true, None, b""),
            ),
            (
                BodyFraming::CloseDelimited,
                b"all of it",
                outcome(b"all of it", true, None, b""),
            ),
            (
                BodyFraming::Chunked,
                b"3\r\nabc\r\n0\r\n\r\nnext",
                outcome(b"abc", true, None, b"next"),
            ),
            (
                BodyFraming::Chunked,
                b"3\r\nabc\r\n",
                outcome(b"abc", false, Some(HttpError::TruncatedBody), b""),
            ),
        ];
        for (framing, input, expected) in cases {
            let got = feed_every_way(input, || BodyDecoder::new(framing));
            assert_eq!(
                &got,
                expected,
                "{framing:?} {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn eof_rules() {
        assert_eq!(BodyDecoder::new(&BodyFraming::None).on_eof(), Ok(()));
        assert_eq!(
            BodyDecoder::new(&BodyFraming::Length(1)).on_eof(),
            Err(HttpError::TruncatedBody)
        );
        assert_eq!(BodyDecoder::new(&BodyFraming::Length(0)).on_eof(), Ok(()));
        assert_eq!(
            BodyDecoder::new(&BodyFraming::Chunked).on_eof(),
            Err(HttpError::TruncatedBody)
        );
        let mut close = BodyDecoder::new(&BodyFraming::CloseDelimited);
        assert!(!close.is_done());
        assert_eq!(close.on_eof(), Ok(()));
        assert!(close.is_done());
    }

    #[test]
    fn encoders() {
        let mut out = Vec::new();
        let mut chunked = BodyEncoder::new(&BodyFraming::Chunked);
        chunked.encode(b"hello", &mut out).unwrap();
        chunked.encode(b"", &mut out).unwrap();
        chunked.encode(&[b'x'; 17], &mut out).unwrap();
        chunked.finish(&mut out).unwrap();
        chunked.finish(&mut out).unwrap();
        assert_eq!(
            out,
            [&b"5\r\nhello\r\n11\r\n"[..], &[b'x'; 17], b"\r\n0\r\n\r\n"].concat()
        );
        assert_eq!(
            chunked.encode(b"late", &mut out),
            Err(HttpError::BodyTooLong)
        );

        let mut out = Vec::new();
        let mut length = BodyEncoder::new(&BodyFraming::Length(5));
        length.encode(b"hel", &mut out).unwrap();
        assert_eq!(length.encode(b"lo!", &mut out), Err(HttpError::BodyTooLong));
        assert_eq!(out, b"hel");
        assert_eq!(
            length.clone().finish(&mut out),
            Err(HttpError::TruncatedBody)
        );
        length.encode(b"lo", &mut out).unwrap();
        assert_eq!(length.finish(&mut out), Ok(()));
        assert_eq!(out, b"hello");

        let mut none = BodyEncoder::new(&BodyFraming::None);
        assert_eq!(none.encode(b"", &mut out), Ok(()));
        assert_eq!(none.encode(b"x", &mut out), Err(HttpError::BodyTooLong));
        let mut close = BodyEncoder::new(&BodyFraming::CloseDelimited);
        let mut out = Vec::new();
        close.encode(b"raw", &mut out).unwrap();
        close.finish(&mut out).unwrap();
        assert_eq!(out, b"raw");
    }

    #[test]
    fn encode_then_decode_round_trips() {
        let payloads: &[&[&[u8]]] = &[
            &[],
            &[b"a"],
            &[b"hello", b" ", b"world"],
            &[&[0u8; 300], b"", &[255u8; 70000]],
        ];
        for pieces in payloads {
            let whole: Vec<u8> = pieces.concat();
            for framing in [
                BodyFraming::Chunked,
                BodyFraming::Length(whole.len() as u64),
                BodyFraming::CloseDelimited,
            ] {
                let mut encoder = BodyEncoder::new(&framing);
                let mut wire = Vec::new();
                for piece in pieces.iter() {
                    encoder.encode(piece, &mut wire).unwrap();
                }
                encoder.finish(&mut wire).unwrap();
                let got = crate::http::v1::testing::feed_whole_and_bytewise(&wire, || {
                    BodyDecoder::new(&framing)
                });
                assert_eq!(got, outcome(&whole, true, None, b""), "{framing:?}");
            }
        }
    }
}
