//! Sans-IO, strict HTTP/1.1: parse heads, decide body framing, decode and encode bodies, and
//! serialize heads. The engine feeds it bytes and writes what it returns; nothing here does
//! I/O. Bad input is refused as `shared/http-defaults.md` says, each offence its own
//! [`HttpError`] variant.
//!
//! The request path through this module: [`parse_request`] -> [`request_framing`] ->
//! [`BodyDecoder`]; then [`remove_hop_by_hop`] -> [`encode_request_head`] -> [`BodyEncoder`]
//! toward the upstream; the response comes back through [`parse_response`] ->
//! [`response_framing`] and the same decoder and encoder pair.
//!
//! # Examples
//!
//! ```
//! use ringway_protocols::http::v1::*;
//!
//! let wire = b"POST /upload HTTP/1.1\r\nHost: example.com\r\nConnection: X-Trace\r\nX-Trace: 1\r\n\
//!              Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
//! let Ok(Parsed::Complete { mut head, len }) = parse_request(wire, &Limits::default()) else {
//!     panic!("a complete, valid head");
//! };
//! let framing = request_framing(&head)?;
//! assert_eq!(framing, BodyFraming::Chunked);
//!
//! // Decode the body as it arrives (here all at once), collecting the payload.
//! let mut decoder = BodyDecoder::new(&framing);
//! let mut rest = &wire[len..];
//! let mut payload = Vec::new();
//! while !decoder.is_done() {
//!     let decoded = decoder.decode(rest)?;
//!     payload.extend_from_slice(&rest[decoded.data.clone()]);
//!     rest = &rest[decoded.consumed..];
//! }
//! assert_eq!(payload, b"hello");
//!
//! // Forward: strip hop-by-hop fields, re-frame with a known length.
//! remove_hop_by_hop(&mut head.headers);
//! let mut out = Vec::new();
//! encode_request_head(&head, &BodyFraming::Length(5), None, &mut out);
//! BodyEncoder::new(&BodyFraming::Length(5)).encode(&payload, &mut out)?;
//! assert_eq!(out, b"POST /upload HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\r\nhello");
//! # Ok::<(), HttpError>(())
//! ```

mod body;
mod chunked;
mod encode;
mod error;
mod fast;
mod framing;
pub mod fuzz_checks;
mod head;
mod headers;

pub use body::{BodyDecoder, BodyEncoder};
pub use chunked::{
    encode_chunk_header, ChunkedDecoder, Decoded, MAX_CHUNK_LINE_BYTES, MAX_CHUNK_SIZE_DIGITS,
    MAX_TRAILER_BYTES,
};
pub use encode::{encode_request_head, encode_response_head};
pub use error::HttpError;
pub use framing::{
    expects_continue, remove_hop_by_hop, request_framing, request_keep_alive, response_framing,
    response_keep_alive, BodyFraming,
};
pub use head::{
    canonical_reason, parse_request, parse_response, Limits, Method, Parsed, RequestHead,
    ResponseHead, Version, MAX_HEADERS, MAX_HEAD_BYTES, MAX_REQUEST_LINE_BYTES,
};
pub use headers::{is_valid_name, is_valid_value, Headers};

#[cfg(test)]
use fuzz_checks as testing;

/// Replays the committed fuzz corpus (`fuzz/corpus/<target>/*`) through the fuzz targets'
/// checks, so every `cargo test` runs them (Envoy's rule).
#[cfg(test)]
mod corpus_replay {
    use std::path::PathBuf;

    fn replay(target: &str, check: fn(&[u8])) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut files: Vec<PathBuf> = entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(
            files.len() >= 10,
            "{}: only {} seed files",
            dir.display(),
            files.len()
        );
        for file in files {
            let data = std::fs::read(&file).unwrap();
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(outcome.is_ok(), "{} failed its checks", file.display());
        }
    }

    #[test]
    fn request_head_corpus() {
        replay("request_head", super::fuzz_checks::check_request_head);
    }

    #[test]
    fn response_head_corpus() {
        replay("response_head", super::fuzz_checks::check_response_head);
    }

    #[test]
    fn chunked_corpus() {
        replay("chunked", super::fuzz_checks::check_chunked);
    }

    #[test]
    fn framing_corpus() {
        replay("framing", super::fuzz_checks::check_framing);
    }
}
