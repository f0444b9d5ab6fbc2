//! The one error type of the HTTP/1.1 codec: every variant names the offence, and
//! [`HttpError::status`] gives the answer Ringway's bad-input policy sends downstream.

use std::fmt;

/// Everything the HTTP/1.1 codec can reject, named for the offence.
///
/// After any of these the connection is closed, never reused (see `shared/http-defaults.md`).
/// Match on the variant, never on the `Display` text: the text is for logs, not an API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HttpError {
    // ---- start line ----
    /// The request line is not `method SP request-target SP HTTP-version CRLF`.
    InvalidRequestLine,
    /// The method is not a token (RFC 9110 section 9.1).
    InvalidMethod,
    /// The request-target is not in a form allowed for the method, holds a byte outside
    /// printable ASCII, a fragment or userinfo (RFC 9112 section 3.2).
    InvalidTarget,
    /// The status line is not `HTTP-version SP 3DIGIT SP reason CRLF`, or the code is outside
    /// 100..=599 (RFC 9112 section 4, RFC 9110 section 15).
    InvalidStatusLine,
    /// The version is not `HTTP/DIGIT.DIGIT` (RFC 9112 section 2.3).
    InvalidVersion,
    /// A well-formed version other than HTTP/1.0 and HTTP/1.1.
    UnsupportedVersion,
    /// The request line is longer than the configured limit.
    RequestLineTooLong,
    /// A line of the head ends with a bare LF instead of CRLF (RFC 9112 section 2.2).
    BareLineFeed,

    // ---- header fields ----
    /// A field line starts with whitespace: obsolete line folding (RFC 9112 section 5.2).
    ObsFold,
    /// Whitespace between a field name and its colon (RFC 9112 section 5.1).
    WhitespaceBeforeColon,
    /// A field name is empty, holds a non-token byte, or the line has no colon.
    InvalidHeaderName,
    /// A field value holds NUL, CR, LF or another control byte (RFC 9110 section 5.5).
    InvalidHeaderValue,
    /// More header fields than the configured limit.
    TooManyHeaders,
    /// The head is larger than the configured limit.
    HeadTooLarge,
    /// An HTTP/1.1 request without a Host field (RFC 9112 section 3.2).
    MissingHost,
    /// More than one Host field line (RFC 9112 section 3.2).
    DuplicateHost,
    /// The Host value is not `uri-host [ ":" port ]` (RFC 9112 section 3.2).
    InvalidHost,
    /// An absolute-form target whose authority disagrees with the Host field.
    HostMismatch,

    // ---- framing ----
    /// Content-Length and Transfer-Encoding in one message (RFC 9112 section 6.1).
    ContentLengthWithTransferEncoding,
    /// More than one Content-Length, equal or not, or a list such as `1, 1`.
    DuplicateContentLength,
    /// Content-Length that is not 1*DIGIT or does not fit in 64 bits (RFC 9110 section 8.6).
    InvalidContentLength,
    /// Transfer-Encoding in an HTTP/1.0 message (RFC 9112 section 6.1).
    TransferEncodingOnHttp10,
    /// A request whose final transfer coding is not `chunked` (RFC 9112 section 6.3 item 4).
    FinalCodingNotChunked,
    /// `chunked` preceded by a coding we do not implement, such as `gzip, chunked`.
    UnsupportedTransferCoding,
    /// A Transfer-Encoding list that is malformed: empty elements, `chunked` twice,
    /// parameters, quotes or control bytes.
    InvalidTransferEncoding,

    // ---- chunked coding ----
    /// A chunk-size that is empty, not hex, signed, `0x`-prefixed, or preceded by whitespace.
    InvalidChunkSize,
    /// A chunk-size of more than 16 hex digits.
    ChunkSizeTooLong,
    /// A chunk extension that breaks the grammar of RFC 9112 section 7.1.1.
    InvalidChunkExtension,
    /// A chunk-size line (with extensions) longer than the limit.
    ChunkLineTooLong,
    /// Chunk data not followed by CRLF (RFC 9112 section 7.1).
    MissingChunkCrlf,
    /// A malformed trailer section (RFC 9112 section 7.1.2).
    InvalidTrailer,
    /// A trailer section larger than the limit.
    TrailerTooLarge,

    // ---- body ----
    /// The body ended (EOF) before its framing said it would.
    TruncatedBody,
    /// More body bytes than the framing allows (encoder side).
    BodyTooLong,
}

impl HttpError {
    /// The status code Ringway answers with when the offending message came from downstream.
    ///
    /// By default 400; 414 for a long request line; 431 for too many or too large fields;
    /// 501 for a transfer coding we do not implement; 505 for an unsupported version.
    /// Errors that only an upstream response can cause ([`HttpError::InvalidStatusLine`])
    /// give 502, and encoder misuse ([`HttpError::BodyTooLong`]) gives 500. The engine maps
    /// any error on the upstream side to 502 regardless.
    pub fn status(&self) -> u16 {
        match self {
            Self::RequestLineTooLong => 414,
            Self::TooManyHeaders | Self::HeadTooLarge | Self::TrailerTooLarge => 431,
            Self::UnsupportedTransferCoding => 501,
            Self::UnsupportedVersion => 505,
            Self::InvalidStatusLine => 502,
            Self::BodyTooLong => 500,
            _ => 400,
        }
    }

    fn description(&self) -> &'static str {
        match self {
            Self::InvalidRequestLine => "invalid request line",
            Self::InvalidMethod => "invalid method",
            Self::InvalidTarget => "invalid request target",
            Self::InvalidStatusLine => "invalid status line",
            Self::InvalidVersion => "invalid HTTP version",
            Self::UnsupportedVersion => "unsupported HTTP version",
            Self::RequestLineTooLong => "request line too long",
            Self::BareLineFeed => "bare LF line terminator",
            Self::ObsFold => "obsolete line folding",
            Self::WhitespaceBeforeColon => "whitespace before colon in field line",
            Self::InvalidHeaderName => "invalid header field name",
            Self::InvalidHeaderValue => "invalid header field value",
            Self::TooManyHeaders => "too many header fields",
            Self::HeadTooLarge => "message head too large",
            Self::MissingHost => "HTTP/1.1 request without Host",
            Self::DuplicateHost => "more than one Host field",
            Self::InvalidHost => "invalid Host value",
            Self::HostMismatch => "absolute-form authority disagrees with Host",
            Self::ContentLengthWithTransferEncoding => "Content-Length with Transfer-Encoding",
            Self::DuplicateContentLength => "more than one Content-Length",
            Self::InvalidContentLength => "invalid Content-Length",
            Self::TransferEncodingOnHttp10 => "Transfer-Encoding in an HTTP/1.0 message",
            Self::FinalCodingNotChunked => "final transfer coding is not chunked",
            Self::UnsupportedTransferCoding => "unsupported transfer coding",
            Self::InvalidTransferEncoding => "malformed Transfer-Encoding",
            Self::InvalidChunkSize => "invalid chunk size",
            Self::ChunkSizeTooLong => "chunk size has more than 16 hex digits",
            Self::InvalidChunkExtension => "invalid chunk extension",
            Self::ChunkLineTooLong => "chunk size line too long",
            Self::MissingChunkCrlf => "chunk data not followed by CRLF",
            Self::InvalidTrailer => "invalid trailer section",
            Self::TrailerTooLarge => "trailer section too large",
            Self::TruncatedBody => "body ended before its framing said",
            Self::BodyTooLong => "body longer than its framing allows",
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

impl std::error::Error for HttpError {}

#[cfg(test)]
mod tests {
    use super::HttpError::*;

    #[test]
    fn statuses_follow_the_policy_table() {
        let table = [
            (ContentLengthWithTransferEncoding, 400),
            (DuplicateContentLength, 400),
            (InvalidContentLength, 400),
            (TransferEncodingOnHttp10, 400),
            (FinalCodingNotChunked, 400),
            (UnsupportedTransferCoding, 501),
            (InvalidTransferEncoding, 400),
            (InvalidChunkSize, 400),
            (ObsFold, 400),
            (MissingHost, 400),
            (UnsupportedVersion, 505),
            (InvalidVersion, 400),
            (TooManyHeaders, 431),
            (HeadTooLarge, 431),
            (RequestLineTooLong, 414),
        ];
        for (error, status) in table {
            assert_eq!(error.status(), status, "{error:?}");
        }
    }
}
