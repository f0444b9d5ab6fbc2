//! Request and response heads: their owned types and the strict parsers that build them from
//! bytes (httparse underneath, plus the checks httparse leaves out). First step of the request
//! path (read the head) and of the response path (read the upstream head).

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::mem::MaybeUninit;
use std::str::FromStr;

use super::error::HttpError;
use super::headers::{is_field_vchar_or_ws, is_tchar, Headers};

/// Most header fields accepted in one head (policy: 431 beyond).
pub const MAX_HEADERS: usize = 100;
/// Most bytes in one head, start line and final CRLF included (policy: 431 beyond).
pub const MAX_HEAD_BYTES: usize = 32 * 1024;
/// Most bytes in a request line, CRLF excluded (policy: 414 beyond).
pub const MAX_REQUEST_LINE_BYTES: usize = 8 * 1024;

/// The limits a parser enforces on one head.
///
/// By default [`MAX_HEADERS`], [`MAX_HEAD_BYTES`] and [`MAX_REQUEST_LINE_BYTES`]. Raising
/// `max_headers` above [`MAX_HEADERS`] moves the parser's field array from the stack to the heap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most header fields in one head.
    pub max_headers: usize,
    /// Most bytes in one head.
    pub max_head_bytes: usize,
    /// Most bytes in a request line, CRLF excluded (not used for responses).
    pub max_request_line_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_headers: MAX_HEADERS,
            max_head_bytes: MAX_HEAD_BYTES,
            max_request_line_bytes: MAX_REQUEST_LINE_BYTES,
        }
    }
}

/// The HTTP versions Ringway speaks on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    /// HTTP/1.0
    Http10,
    /// HTTP/1.1
    Http11,
}

impl Version {
    /// `"HTTP/1.0"` or `"HTTP/1.1"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum MethodRepr {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
    Extension(Box<str>),
}

/// A request method: a case-sensitive token (RFC 9110 section 9.1).
///
/// The registered methods cost no allocation; an extension method holds its token.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Method(MethodRepr);

impl Method {
    /// `GET`
    pub const GET: Method = Method(MethodRepr::Get);
    /// `HEAD`
    pub const HEAD: Method = Method(MethodRepr::Head);
    /// `POST`
    pub const POST: Method = Method(MethodRepr::Post);
    /// `PUT`
    pub const PUT: Method = Method(MethodRepr::Put);
    /// `DELETE`
    pub const DELETE: Method = Method(MethodRepr::Delete);
    /// `CONNECT`
    pub const CONNECT: Method = Method(MethodRepr::Connect);
    /// `OPTIONS`
    pub const OPTIONS: Method = Method(MethodRepr::Options);
    /// `TRACE`
    pub const TRACE: Method = Method(MethodRepr::Trace);
    /// `PATCH`
    pub const PATCH: Method = Method(MethodRepr::Patch);

    /// Builds a method from a token already known to be valid (the parser checked it).
    pub(super) fn from_token(token: &str) -> Method {
        Method(match token {
            "GET" => MethodRepr::Get,
            "HEAD" => MethodRepr::Head,
            "POST" => MethodRepr::Post,
            "PUT" => MethodRepr::Put,
            "DELETE" => MethodRepr::Delete,
            "CONNECT" => MethodRepr::Connect,
            "OPTIONS" => MethodRepr::Options,
            "TRACE" => MethodRepr::Trace,
            "PATCH" => MethodRepr::Patch,
            other => MethodRepr::Extension(other.into()),
        })
    }

    /// The method token as sent on the wire.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            MethodRepr::Get => "GET",
            MethodRepr::Head => "HEAD",
            MethodRepr::Post => "POST",
            MethodRepr::Put => "PUT",
            MethodRepr::Delete => "DELETE",
            MethodRepr::Connect => "CONNECT",
            MethodRepr::Options => "OPTIONS",
            MethodRepr::Trace => "TRACE",
            MethodRepr::Patch => "PATCH",
            MethodRepr::Extension(token) => token,
        }
    }

    /// Whether the method is idempotent: GET, HEAD, OPTIONS, TRACE, PUT, DELETE
    /// (RFC 9110 section 9.2.2). Extension methods are not.
    pub fn is_idempotent(&self) -> bool {
        matches!(
            self.0,
            MethodRepr::Get
                | MethodRepr::Head
                | MethodRepr::Options
                | MethodRepr::Trace
                | MethodRepr::Put
                | MethodRepr::Delete
        )
    }

    /// Whether this is HEAD (its response never has a body, RFC 9112 section 6.3).
    pub fn is_head(&self) -> bool {
        self.0 == MethodRepr::Head
    }

    /// Whether this is CONNECT (authority-form target, RFC 9110 section 9.3.6).
    pub fn is_connect(&self) -> bool {
        self.0 == MethodRepr::Connect
    }
}

impl fmt::Debug for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Method {
    type Err = HttpError;

    /// Parses a method token, case-sensitively.
    ///
    /// # Errors
    /// [`HttpError::InvalidMethod`] if `s` is empty or holds a non-token byte.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || !s.bytes().all(is_tchar) {
            return Err(HttpError::InvalidMethod);
        }
        Ok(Method::from_token(s))
    }
}

impl TryFrom<&str> for Method {
    type Error = HttpError;

    /// Same as [`Method::from_str`]: fallible, since a method must be a token.
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// A request head: request line and header fields.
///
/// Its target's `String` comes from, and goes back to, a few kept per thread: a proxied request
/// builds two heads, parsed and copied.
#[derive(Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// The method.
    pub method: Method,
    /// The request-target as received (origin-, absolute-, authority- or asterisk-form).
    pub target: String,
    /// The protocol version.
    pub version: Version,
    /// The header fields, in order.
    pub headers: Headers,
}

impl RequestHead {
    /// An HTTP/1.1 request with no header field.
    pub fn new(method: Method, target: impl Into<String>) -> Self {
        Self {
            method,
            target: target.into(),
            version: Version::Http11,
            headers: Headers::new(),
        }
    }

    /// A copy whose fields have room for `fields` more fields and `bytes` more bytes (see
    /// [`Headers::clone_with_room`]): the head a proxy forwards, which a filter may add to.
    pub fn clone_with_room(&self, fields: usize, bytes: usize) -> Self {
        Self {
            method: self.method.clone(),
            target: spare_target(&self.target),
            version: self.version,
            headers: self.headers.clone_with_room(fields, bytes),
        }
    }
}

impl RequestHead {
    /// What either parser returns for a complete, valid request head `len` bytes long.
    pub(super) fn parsed(
        method: Method,
        target: &str,
        version: Version,
        headers: Headers,
        len: usize,
    ) -> Parsed<RequestHead> {
        Parsed::Complete {
            head: RequestHead {
                method,
                target: spare_target(target),
                version,
                headers,
            },
            len,
        }
    }
}

impl ResponseHead {
    /// What either parser returns for a complete, valid response head `len` bytes long; the
    /// reason is borrowed when it is the registered one.
    pub(super) fn parsed(
        version: Version,
        status: u16,
        reason: &str,
        headers: Headers,
        len: usize,
    ) -> Parsed<ResponseHead> {
        Parsed::Complete {
            head: ResponseHead {
                version,
                status,
                reason: match canonical_reason(status) {
                    Some(c) if c == reason => Cow::Borrowed(c),
                    _ => Cow::Owned(reason.to_owned()),
                },
                headers,
            },
            len,
        }
    }
}

impl Clone for RequestHead {
    fn clone(&self) -> Self {
        self.clone_with_room(0, 0)
    }
}

/// Targets kept per thread, and the longest kept: a target costs a `malloc` and a `free` per
/// head otherwise, about 190 instructions each time (callgrind).
const SPARE_TARGETS_KEEP: usize = 64;
const SPARE_TARGET_MAX: usize = 256;

thread_local! {
    /// The target strings of dropped heads, for the next ones.
    static SPARE_TARGETS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// `target` in a string of this thread's spares, or a new one.
fn spare_target(target: &str) -> String {
    let mut s = SPARE_TARGETS
        .try_with(|s| s.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_default();
    s.push_str(target);
    s
}

impl Drop for RequestHead {
    fn drop(&mut self) {
        let mut target = std::mem::take(&mut self.target);
        if target.capacity() == 0 || target.capacity() > SPARE_TARGET_MAX {
            return;
        }
        target.clear();
        let _ = SPARE_TARGETS.try_with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < SPARE_TARGETS_KEEP {
                s.push(target);
            }
        });
    }
}

/// A response head: status line and header fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    /// The protocol version.
    pub version: Version,
    /// The status code, 100..=599.
    pub status: u16,
    /// The reason phrase (empty if the peer sent none, or sent non-ASCII bytes). Borrowed
    /// from [`canonical_reason`] when it is the registered one, as it nearly always is: no
    /// allocation per response for it.
    pub reason: Cow<'static, str>,
    /// The header fields, in order.
    pub headers: Headers,
}

impl ResponseHead {
    /// An HTTP/1.1 response with the canonical reason phrase for `status` (empty if none is
    /// registered) and no header field.
    pub fn new(status: u16) -> Self {
        Self {
            version: Version::Http11,
            status,
            reason: Cow::Borrowed(canonical_reason(status).unwrap_or("")),
            headers: Headers::new(),
        }
    }
}

/// The registered reason phrase for `status` (RFC 9110 section 15), if any.
pub fn canonical_reason(status: u16) -> Option<&'static str> {
    Some(match status {
        100 => "Continue",
        101 => "Switching Protocols",
        102 => "Processing",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        207 => "Multi-Status",
        208 => "Already Reported",
        226 => "IM Used",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        305 => "Use Proxy",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        423 => "Locked",
        424 => "Failed Dependency",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        510 => "Not Extended",
        511 => "Network Authentication Required",
        _ => return None,
    })
}

/// What a head parser found in the buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed<T> {
    /// A whole head.
    Complete {
        /// The head.
        head: T,
        /// Bytes of the buffer the head took; the body (or next message) starts here.
        len: usize,
    },
    /// The head is not complete yet: read more and parse again from the start.
    Partial,
}

/// httparse with every leniency switched off (they are all off by default; spelled out here so
/// a dependency upgrade that changes a default cannot loosen Ringway).
fn strict_config() -> httparse::ParserConfig {
    let mut config = httparse::ParserConfig::default();
    config
        .allow_spaces_after_header_name_in_responses(false)
        .allow_obsolete_multiline_headers_in_responses(false)
        .allow_multiple_spaces_in_request_line_delimiters(false)
        .allow_multiple_spaces_in_response_status_delimiters(false)
        .allow_space_before_first_header_name(false)
        .ignore_invalid_headers_in_requests(false)
        .ignore_invalid_headers_in_responses(false);
    config
}

/// The part of `buf` worth parsing: nothing past the head limit can belong to an acceptable
/// head.
fn head_window<'b>(buf: &'b [u8], limits: &Limits) -> &'b [u8] {
    &buf[..buf.len().min(limits.max_head_bytes.saturating_add(1))]
}

/// Lends `f` room for `max` header fields: on the stack up to [`MAX_HEADERS`], on the heap for
/// a raised limit.
fn with_header_slots<'b, R>(
    max: usize,
    f: impl FnOnce(&mut [MaybeUninit<httparse::Header<'b>>]) -> R,
) -> R {
    if max <= MAX_HEADERS {
        let mut stack = [const { MaybeUninit::<httparse::Header<'b>>::uninit() }; MAX_HEADERS];
        f(&mut stack[..max])
    } else {
        let mut heap: Vec<MaybeUninit<httparse::Header<'b>>> =
            (0..max).map(|_| MaybeUninit::uninit()).collect();
        f(&mut heap)
    }
}

/// Parses a request head from the start of `buf`, strictly.
///
/// Returns [`Parsed::Partial`] while the head is incomplete and within the limits; the caller
/// reads more and calls again with the whole buffer. On success `len` is where the body
/// starts. The head is validated for everything the policy rejects at the head: the request
/// line (method token, target form, version), field syntax, Host. Body framing is decided
/// separately by [`super::request_framing`].
///
/// Leading empty lines (CRLF) before the request line are skipped (RFC 9112 section 2.2) and
/// count toward `max_head_bytes`.
///
/// # Errors
/// [`HttpError::RequestLineTooLong`] as soon as the request line exceeds the limit, even
/// before it ends; [`HttpError::HeadTooLarge`] as soon as more than `max_head_bytes` are
/// buffered without a complete head; [`HttpError::TooManyHeaders`]; and every variant named
/// for a malformed request line, field line or Host.
pub fn parse_request(buf: &[u8], limits: &Limits) -> Result<Parsed<RequestHead>, HttpError> {
    let window = head_window(buf, limits);
    match super::fast::request(window, limits) {
        Some(parsed) => Ok(parsed),
        None => parse_request_general(window, limits),
    }
}

/// [`parse_request`] through httparse, for every head: what decides whenever the one-pass
/// parser (`fast`) does not take a head.
pub(super) fn parse_request_general(
    buf: &[u8],
    limits: &Limits,
) -> Result<Parsed<RequestHead>, HttpError> {
    let window = head_window(buf, limits);
    with_header_slots(limits.max_headers, |slots| {
        let mut req = httparse::Request::new(&mut []);
        match strict_config().parse_request_with_uninit_headers(&mut req, window, slots) {
            Ok(httparse::Status::Complete(len)) => {
                let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version)
                else {
                    return Err(HttpError::InvalidRequestLine);
                };
                // request-line = method SP request-target SP HTTP-version (RFC 9112 section 3)
                if method.len() + target.len() + 10 > limits.max_request_line_bytes {
                    return Err(HttpError::RequestLineTooLong);
                }
                if len > limits.max_head_bytes {
                    return Err(HttpError::HeadTooLarge);
                }
                check_line_endings(&window[..len])?;
                let method = Method::from_token(method);
                let version = if minor == 0 {
                    Version::Http10
                } else {
                    Version::Http11
                };
                let authority = check_target(&method, target)?;
                check_host(version, req.headers, authority)?;
                let headers = Headers::from_parsed(window, req.headers);
                Ok(RequestHead::parsed(method, target, version, headers, len))
            }
            Ok(httparse::Status::Partial) => {
                check_partial_request(window, limits)?;
                Ok(Parsed::Partial)
            }
            Err(httparse::Error::TooManyHeaders) => Err(HttpError::TooManyHeaders),
            Err(error) => {
                check_partial_request(window, limits)?;
                diagnose_request(window, error)
            }
        }
    })
}

/// Parses a response head from the start of `buf`, strictly.
///
/// Same contract as [`parse_request`], for a status line; `max_request_line_bytes` is not
/// used. A status line without a reason phrase (`HTTP/1.1 200\r\n`) is accepted; a reason
/// with non-ASCII bytes is kept as an empty string.
///
/// # Errors
/// [`HttpError::HeadTooLarge`], [`HttpError::TooManyHeaders`], [`HttpError::InvalidStatusLine`]
/// (including a code outside 100..=599), the version variants, and every field-line variant.
pub fn parse_response(buf: &[u8], limits: &Limits) -> Result<Parsed<ResponseHead>, HttpError> {
    let window = head_window(buf, limits);
    match super::fast::response(window, limits) {
        Some(parsed) => Ok(parsed),
        None => parse_response_general(window, limits),
    }
}

/// [`parse_response`] through httparse, for every head (see [`parse_request_general`]).
pub(super) fn parse_response_general(
    buf: &[u8],
    limits: &Limits,
) -> Result<Parsed<ResponseHead>, HttpError> {
    let window = head_window(buf, limits);
    with_header_slots(limits.max_headers, |slots| {
        let mut res = httparse::Response::new(&mut []);
        match strict_config().parse_response_with_uninit_headers(&mut res, window, slots) {
            Ok(httparse::Status::Complete(len)) => {
                let (Some(minor), Some(status), Some(reason)) = (res.version, res.code, res.reason)
                else {
                    return Err(HttpError::InvalidStatusLine);
                };
                if len > limits.max_head_bytes {
                    return Err(HttpError::HeadTooLarge);
                }
                // status codes are 100..=599 (RFC 9110 section 15)
                if !(100..=599).contains(&status) {
                    return Err(HttpError::InvalidStatusLine);
                }
                check_line_endings(&window[..len])?;
                let version = if minor == 0 {
                    Version::Http10
                } else {
                    Version::Http11
                };
                let headers = Headers::from_parsed(window, res.headers);
                Ok(ResponseHead::parsed(version, status, reason, headers, len))
            }
            Ok(httparse::Status::Partial) => {
                if window.len() > limits.max_head_bytes {
                    return Err(HttpError::HeadTooLarge);
                }
                Ok(Parsed::Partial)
            }
            Err(httparse::Error::TooManyHeaders) => Err(HttpError::TooManyHeaders),
            Err(error) => {
                if window.len() > limits.max_head_bytes {
                    return Err(HttpError::HeadTooLarge);
                }
                diagnose_response(window, error)
            }
        }
    })
}

/// Every line of a complete head ends in CRLF, never a bare LF (RFC 9112 section 2.2 allows a
/// recipient to accept bare LF; a proxy that did would disagree with stricter peers).
///
/// httparse has already refused any CR not followed by LF, so the head has a bare LF exactly
/// when it has more LF than CR. Counted 32 bytes at a time into byte-wide sums, which the
/// compiler turns into vector compares (a fold over the whole head into `usize` sums was not
/// vectorized: about 5 instructions per byte).
fn check_line_endings(head: &[u8]) -> Result<(), HttpError> {
    let (mut cr, mut lf) = (0usize, 0usize);
    for chunk in head.chunks(32) {
        let (mut c, mut l) = (0u8, 0u8);
        for &b in chunk {
            c += u8::from(b == b'\r');
            l += u8::from(b == b'\n');
        }
        cr += usize::from(c);
        lf += usize::from(l);
    }
    if lf != cr {
        return Err(HttpError::BareLineFeed);
    }
    Ok(())
}

/// Limits that apply before the head is complete: the request line, then the head size.
fn check_partial_request(window: &[u8], limits: &Limits) -> Result<(), HttpError> {
    if request_line_too_long(window, limits.max_request_line_bytes) {
        return Err(HttpError::RequestLineTooLong);
    }
    if window.len() > limits.max_head_bytes {
        return Err(HttpError::HeadTooLarge);
    }
    Ok(())
}

/// Whether the (possibly unfinished) request line in `buf` is already longer than `max`.
fn request_line_too_long(buf: &[u8], max: usize) -> bool {
    let start = skip_empty_lines(buf);
    let rest = &buf[start..];
    let scan = &rest[..rest.len().min(max.saturating_add(2))];
    let line = match scan.iter().position(|&b| b == b'\n') {
        Some(lf) => lf,
        None => scan.len(),
    };
    let line = if line > 0 && scan.get(line - 1) == Some(&b'\r') {
        line - 1
    } else {
        line
    };
    line > max
}

/// Index of the first byte after the empty lines (CRLF or LF) that may precede a start line.
fn skip_empty_lines(buf: &[u8]) -> usize {
    let mut i = 0;
    loop {
        match buf.get(i..) {
            Some([b'\r', b'\n', ..]) => i += 2,
            Some([b'\n', ..]) => i += 1,
            _ => return i,
        }
    }
}

/// The authority of an absolute-form target and its scheme's default port.
pub(super) struct TargetAuthority<'t> {
    authority: &'t str,
    default_port: &'static [u8],
}

/// Checks the request-target form against the method (RFC 9112 section 3.2); returns the
/// authority of an absolute-form target, for the Host comparison.
pub(super) fn check_target<'t>(
    method: &Method,
    target: &'t str,
) -> Result<Option<TargetAuthority<'t>>, HttpError> {
    // Printable ASCII only (RFC 3986 section 2): httparse lets UTF-8 through. No fragment
    // (RFC 9112 section 3.2: request-target has none).
    if !target
        .bytes()
        .all(|b| (0x21..=0x7e).contains(&b) && b != b'#')
    {
        return Err(HttpError::InvalidTarget);
    }
    if method.is_connect() {
        // authority-form = uri-host ":" port, port required (RFC 9112 section 3.2.3,
        // RFC 9110 section 9.3.6)
        return match split_host_port(target.as_bytes()) {
            Some((host, Some(port))) if !host.is_empty() && !port.is_empty() => Ok(None),
            _ => Err(HttpError::InvalidTarget),
        };
    }
    if target.starts_with('/') {
        return Ok(None); // origin-form (RFC 9112 section 3.2.1)
    }
    if target == "*" {
        // asterisk-form is for OPTIONS only (RFC 9112 section 3.2.4)
        return if method == &Method::OPTIONS {
            Ok(None)
        } else {
            Err(HttpError::InvalidTarget)
        };
    }
    // absolute-form = absolute-URI (RFC 9112 section 3.2.2)
    let (scheme, rest) = target.split_once(':').ok_or(HttpError::InvalidTarget)?;
    let valid_scheme = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !valid_scheme {
        return Err(HttpError::InvalidTarget);
    }
    let is_http = scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https");
    let Some(after) = rest.strip_prefix("//") else {
        // http(s) URIs always have an authority (RFC 9110 section 4.2.1)
        return if is_http {
            Err(HttpError::InvalidTarget)
        } else {
            Ok(None)
        };
    };
    let end = after.find(['/', '?']).unwrap_or(after.len());
    let authority = &after[..end];
    // userinfo is deprecated and treated as an error (RFC 9110 section 4.2.4)
    if authority.contains('@') {
        return Err(HttpError::InvalidTarget);
    }
    match split_host_port(authority.as_bytes()) {
        // an empty host in an http(s) URI is invalid (RFC 9110 section 4.2.1)
        Some((host, _)) if is_http && host.is_empty() => Err(HttpError::InvalidTarget),
        Some(_) => {
            let default_port: &[u8] = if scheme.eq_ignore_ascii_case("http") {
                b"80"
            } else if scheme.eq_ignore_ascii_case("https") {
                b"443"
            } else {
                b""
            };
            Ok(Some(TargetAuthority {
                authority,
                default_port,
            }))
        }
        None => Err(HttpError::InvalidTarget),
    }
}

/// unreserved / pct-encoded / sub-delims: the bytes of a reg-name (RFC 3986 section 3.2.2).
/// A table: searching the punctuation list per byte was a `memchr` call per byte of every Host.
fn is_reg_name_byte(b: u8) -> bool {
    REG_NAME_BYTES[usize::from(b)]
}

/// [`is_reg_name_byte`] for every byte value.
static REG_NAME_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric();
        b += 1;
    }
    let punctuation = b"-._~%!$&'()*+,;=";
    let mut i = 0;
    while i < punctuation.len() {
        table[punctuation[i] as usize] = true;
        i += 1;
    }
    table
};

/// Splits `uri-host [ ":" port ]` (RFC 3986 section 3.2) and checks its bytes; `None` if the
/// syntax is wrong.
fn split_host_port(authority: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let (host, rest) = if authority.first() == Some(&b'[') {
        // IP-literal
        let close = authority.iter().position(|&b| b == b']')?;
        let inside = &authority[1..close];
        if inside.is_empty()
            || !inside
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.' | b'v' | b'V'))
        {
            return None;
        }
        authority.split_at(close + 1)
    } else {
        // reg-name / IPv4address: unreserved / pct-encoded / sub-delims
        let end = authority
            .iter()
            .position(|&b| b == b':')
            .unwrap_or(authority.len());
        let host = &authority[..end];
        let valid = host.iter().all(|&b| is_reg_name_byte(b));
        if !valid {
            return None;
        }
        authority.split_at(end)
    };
    match rest {
        [] => Some((host, None)),
        [b':', port @ ..] if port.iter().all(u8::is_ascii_digit) => Some((host, Some(port))),
        _ => None,
    }
}

/// Host rules for requests (RFC 9112 section 3.2): exactly one Host in HTTP/1.1, at most one in
/// HTTP/1.0, a valid value, and agreement with an absolute-form target's authority.
fn check_host(
    version: Version,
    fields: &[httparse::Header<'_>],
    target: Option<TargetAuthority<'_>>,
) -> Result<(), HttpError> {
    let mut host = None;
    for field in fields {
        if field.name.eq_ignore_ascii_case("host") {
            if host.is_some() {
                return Err(HttpError::DuplicateHost);
            }
            host = Some(field.value);
        }
    }
    check_host_value(version, host, target)
}

/// [`check_host`] once the one Host value (if any) has been found.
pub(super) fn check_host_value(
    version: Version,
    host: Option<&[u8]>,
    target: Option<TargetAuthority<'_>>,
) -> Result<(), HttpError> {
    let Some(host) = host else {
        return if version == Version::Http11 {
            Err(HttpError::MissingHost)
        } else {
            Ok(())
        };
    };
    let (host_name, host_port) = split_host_port(host).ok_or(HttpError::InvalidHost)?;
    if let Some(target) = target {
        // Policy: a proxy must not route on one authority and forward another. Host takes
        // the target's scheme, so an elided port is that scheme's default on both sides.
        let (target_name, target_port) =
            split_host_port(target.authority.as_bytes()).ok_or(HttpError::InvalidTarget)?;
        if !target_name.eq_ignore_ascii_case(host_name)
            || port_number(target_port, target.default_port)
                != port_number(host_port, target.default_port)
        {
            return Err(HttpError::HostMismatch);
        }
    }
    Ok(())
}

/// A port without leading zeros, `default` when absent or empty (RFC 3986 section 3.2.3).
fn port_number<'p>(port: Option<&'p [u8]>, default: &'static [u8]) -> &'p [u8] {
    let port = match port {
        Some(p) if !p.is_empty() => p,
        _ => default,
    };
    let zeros = port.iter().take_while(|&&b| b == b'0').count();
    if zeros == port.len() && !port.is_empty() {
        b"0"
    } else {
        &port[zeros..]
    }
}

/// How a version token compares to `HTTP-version = HTTP-name "/" DIGIT "." DIGIT`
/// (RFC 9112 section 2.3).
enum VersionToken {
    /// HTTP/1.0 or HTTP/1.1.
    Supported,
    /// Well-formed, another version: 505.
    Unsupported,
    /// Not `HTTP/DIGIT.DIGIT`: 400.
    Malformed,
    /// Unfinished and still a possible prefix of a well-formed version.
    Incomplete,
}

fn classify_version(token: &[u8], terminated: bool) -> VersionToken {
    const PATTERN: &[u8] = b"HTTP/";
    let prefix_ok = token.len() <= 8
        && token.iter().enumerate().all(|(i, &b)| match i {
            0..=4 => b == PATTERN[i],
            5 | 7 => b.is_ascii_digit(),
            _ => b == b'.',
        });
    match (prefix_ok, token.len() == 8, terminated) {
        (false, _, _) => VersionToken::Malformed,
        (true, false, false) => VersionToken::Incomplete,
        (true, false, true) => VersionToken::Malformed,
        (true, true, _) if token == b"HTTP/1.1" || token == b"HTTP/1.0" => VersionToken::Supported,
        (true, true, false) => VersionToken::Incomplete,
        (true, true, true) => VersionToken::Unsupported,
    }
}

/// What a diagnosis of a rejected head concluded.
enum Verdict {
    /// The offence.
    Reject(HttpError),
    /// Nothing wrong in the bytes so far: more input decides.
    NeedMore,
    /// Nothing found: fall back to httparse's own error kind.
    Unknown,
}

/// Names the offence in a request head httparse rejected. httparse reports one kind for
/// several offences (HeaderName covers obs-fold, whitespace before the colon and empty names;
/// Version covers 1.2 and garbage), so we re-read the head and classify.
fn diagnose_request(buf: &[u8], error: httparse::Error) -> Result<Parsed<RequestHead>, HttpError> {
    let verdict = match request_line_verdict(buf) {
        Ok(fields_start) => field_lines_verdict(&buf[fields_start..]),
        Err(verdict) => verdict,
    };
    match verdict {
        Verdict::Reject(offence) => Err(offence),
        Verdict::NeedMore => Ok(Parsed::Partial),
        Verdict::Unknown => Err(match error {
            httparse::Error::HeaderName => HttpError::InvalidHeaderName,
            httparse::Error::HeaderValue => HttpError::InvalidHeaderValue,
            httparse::Error::TooManyHeaders => HttpError::TooManyHeaders,
            httparse::Error::Version => HttpError::InvalidVersion,
            httparse::Error::Token => HttpError::InvalidTarget,
            httparse::Error::NewLine | httparse::Error::Status => HttpError::InvalidRequestLine,
        }),
    }
}

/// Reads the request line; `Ok(start of the field lines)` if it has no fault.
fn request_line_verdict(buf: &[u8]) -> Result<usize, Verdict> {
    let start = skip_empty_lines(buf);
    if check_line_endings(&buf[..start]).is_err() {
        return Err(Verdict::Reject(HttpError::BareLineFeed));
    }
    let line = &buf[start..];
    // method = token, then one SP (RFC 9112 section 3)
    let method_end = line
        .iter()
        .position(|&b| !is_tchar(b))
        .ok_or(Verdict::NeedMore)?;
    if line[method_end] != b' ' {
        return Err(Verdict::Reject(match line[method_end] {
            b'\r' | b'\n' | b'\t' => HttpError::InvalidRequestLine,
            _ => HttpError::InvalidMethod,
        }));
    }
    if method_end == 0 {
        return Err(Verdict::Reject(HttpError::InvalidRequestLine));
    }
    // request-target, then one SP
    let target_start = method_end + 1;
    let target_len = line[target_start..]
        .iter()
        .position(|&b| !(b > b' ' && b != 0x7f))
        .ok_or(Verdict::NeedMore)?;
    let target_end = target_start + target_len;
    if target_len == 0 || line[target_end] != b' ' {
        return Err(Verdict::Reject(match line[target_end] {
            b' ' | b'\r' | b'\n' => HttpError::InvalidRequestLine,
            _ => HttpError::InvalidTarget,
        }));
    }
    if std::str::from_utf8(&line[target_start..target_end]).is_err() {
        return Err(Verdict::Reject(HttpError::InvalidTarget));
    }
    // HTTP-version, then CRLF
    let version_start = target_end + 1;
    let rest = &line[version_start..];
    let version_len = rest.iter().position(|&b| b == b'\r' || b == b'\n');
    let token = &rest[..version_len.unwrap_or(rest.len())];
    match classify_version(token, version_len.is_some()) {
        VersionToken::Malformed => return Err(Verdict::Reject(HttpError::InvalidVersion)),
        VersionToken::Unsupported => return Err(Verdict::Reject(HttpError::UnsupportedVersion)),
        VersionToken::Incomplete => return Err(Verdict::NeedMore),
        VersionToken::Supported => {}
    }
    let eol = version_start + token.len();
    match line.get(eol..) {
        Some([b'\r', b'\n', ..]) => Ok(start + eol + 2),
        Some([b'\n', ..]) => Err(Verdict::Reject(HttpError::BareLineFeed)),
        Some([b'\r']) | Some([]) | None => Err(Verdict::NeedMore),
        Some(_) => Err(Verdict::Reject(HttpError::InvalidRequestLine)),
    }
}

/// Names the offence in a response head httparse rejected.
fn diagnose_response(
    buf: &[u8],
    error: httparse::Error,
) -> Result<Parsed<ResponseHead>, HttpError> {
    let verdict = match status_line_verdict(buf) {
        Ok(fields_start) => field_lines_verdict(&buf[fields_start..]),
        Err(verdict) => verdict,
    };
    match verdict {
        Verdict::Reject(offence) => Err(offence),
        Verdict::NeedMore => Ok(Parsed::Partial),
        Verdict::Unknown => Err(match error {
            httparse::Error::HeaderName => HttpError::InvalidHeaderName,
            httparse::Error::HeaderValue => HttpError::InvalidHeaderValue,
            httparse::Error::TooManyHeaders => HttpError::TooManyHeaders,
            httparse::Error::Version => HttpError::InvalidVersion,
            httparse::Error::Token | httparse::Error::NewLine | httparse::Error::Status => {
                HttpError::InvalidStatusLine
            }
        }),
    }
}

/// Reads the status line; `Ok(start of the field lines)` if it has no fault.
fn status_line_verdict(buf: &[u8]) -> Result<usize, Verdict> {
    let start = skip_empty_lines(buf);
    if check_line_endings(&buf[..start]).is_err() {
        return Err(Verdict::Reject(HttpError::BareLineFeed));
    }
    let line = &buf[start..];
    // status-line = HTTP-version SP status-code SP [ reason-phrase ] (RFC 9112 section 4)
    let version_len = line.iter().position(|&b| matches!(b, b' ' | b'\r' | b'\n'));
    let token = &line[..version_len.unwrap_or(line.len())];
    match classify_version(token, version_len.is_some()) {
        VersionToken::Malformed => return Err(Verdict::Reject(HttpError::InvalidVersion)),
        VersionToken::Unsupported => return Err(Verdict::Reject(HttpError::UnsupportedVersion)),
        VersionToken::Incomplete => return Err(Verdict::NeedMore),
        VersionToken::Supported => {}
    }
    let mut i = token.len();
    match line.get(i) {
        Some(b' ') => i += 1,
        Some(_) => return Err(Verdict::Reject(HttpError::InvalidStatusLine)),
        None => return Err(Verdict::NeedMore),
    }
    for _ in 0..3 {
        match line.get(i) {
            Some(b) if b.is_ascii_digit() => i += 1,
            Some(_) => return Err(Verdict::Reject(HttpError::InvalidStatusLine)),
            None => return Err(Verdict::NeedMore),
        }
    }
    match line.get(i) {
        Some(b' ') => i += 1,
        Some(b'\r') => {}
        Some(b'\n') => return Err(Verdict::Reject(HttpError::BareLineFeed)),
        Some(_) => return Err(Verdict::Reject(HttpError::InvalidStatusLine)),
        None => return Err(Verdict::NeedMore),
    }
    // reason-phrase = 1*( HTAB / SP / VCHAR / obs-text )
    while let Some(&b) = line.get(i) {
        match b {
            b'\r' => {
                return match line.get(i + 1) {
                    Some(b'\n') => Ok(start + i + 2),
                    Some(_) => Err(Verdict::Reject(HttpError::InvalidStatusLine)),
                    None => Err(Verdict::NeedMore),
                }
            }
            b'\n' => return Err(Verdict::Reject(HttpError::BareLineFeed)),
            b if is_field_vchar_or_ws(b) => i += 1,
            _ => return Err(Verdict::Reject(HttpError::InvalidStatusLine)),
        }
    }
    Err(Verdict::NeedMore)
}

/// Reads field lines up to the empty line and names the first offence (RFC 9112 section 5).
fn field_lines_verdict(buf: &[u8]) -> Verdict {
    let mut i = 0;
    loop {
        // line start: end of head, or a field name
        match buf.get(i) {
            None => return Verdict::NeedMore,
            Some(b'\r') => {
                return match buf.get(i + 1) {
                    Some(b'\n') => Verdict::Unknown,
                    Some(_) => Verdict::Reject(HttpError::InvalidHeaderName),
                    None => Verdict::NeedMore,
                }
            }
            Some(b'\n') => return Verdict::Reject(HttpError::BareLineFeed),
            // a line starting with whitespace is obs-fold (RFC 9112 section 5.2); before the
            // first field it is the same attack (RFC 9112 section 2.2)
            Some(b' ' | b'\t') => return Verdict::Reject(HttpError::ObsFold),
            Some(_) => {}
        }
        let name_start = i;
        while buf.get(i).is_some_and(|&b| is_tchar(b)) {
            i += 1;
        }
        match buf.get(i) {
            None => return Verdict::NeedMore,
            Some(b':') if i > name_start => i += 1,
            Some(b' ' | b'\t') if i > name_start => {
                // no whitespace between field name and colon (RFC 9112 section 5.1)
                while buf.get(i).is_some_and(|&b| b == b' ' || b == b'\t') {
                    i += 1;
                }
                return match buf.get(i) {
                    None => Verdict::NeedMore,
                    Some(b':') => Verdict::Reject(HttpError::WhitespaceBeforeColon),
                    Some(_) => Verdict::Reject(HttpError::InvalidHeaderName),
                };
            }
            Some(_) => return Verdict::Reject(HttpError::InvalidHeaderName),
        }
        // field-value: no CTL but HTAB (RFC 9110 section 5.5)
        loop {
            match buf.get(i) {
                None => return Verdict::NeedMore,
                Some(b'\r') => match buf.get(i + 1) {
                    Some(b'\n') => {
                        i += 2;
                        break;
                    }
                    Some(_) => return Verdict::Reject(HttpError::InvalidHeaderValue),
                    None => return Verdict::NeedMore,
                },
                Some(b'\n') => return Verdict::Reject(HttpError::BareLineFeed),
                Some(&b) if is_field_vchar_or_ws(b) => i += 1,
                Some(_) => return Verdict::Reject(HttpError::InvalidHeaderValue),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reg_name_table_is_the_rfc_set() {
        for b in 0..=255u8 {
            let expected = b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(&b);
            assert_eq!(is_reg_name_byte(b), expected, "byte {b}");
        }
    }

    #[test]
    fn line_endings_are_counted_across_chunk_boundaries() {
        // Every length around the 32-byte chunks, every position of one bare LF.
        for len in 1..100usize {
            let crlf: Vec<u8> = (0..len)
                .map(|i| if i % 2 == 0 { b'\r' } else { b'\n' })
                .chain(std::iter::once(b'x'))
                .collect();
            let balanced = &crlf[..len - len % 2];
            assert!(check_line_endings(balanced).is_ok(), "len {len}");
            for at in 0..=balanced.len() {
                let mut bare = balanced.to_vec();
                bare.insert(at, b'\n');
                assert_eq!(
                    check_line_endings(&bare),
                    Err(HttpError::BareLineFeed),
                    "len {len}, LF at {at}"
                );
            }
        }
        assert!(check_line_endings(&[b'a'; 300]).is_ok());
        assert!(check_line_endings(&[b'\n'; 255]).is_err());
    }
    use HttpError::*;

    /// `Ok(Some(len))` complete, `Ok(None)` partial, or the error.
    type Outcome = Result<Option<usize>, HttpError>;

    /// The verdict on a buffer: `Ok(Some(len))` complete, `Ok(None)` partial, or the error.
    fn request_verdict(raw: &[u8], limits: &Limits) -> Outcome {
        parse_request(raw, limits).map(|p| match p {
            Parsed::Complete { len, .. } => Some(len),
            Parsed::Partial => None,
        })
    }

    fn response_verdict(raw: &[u8]) -> Outcome {
        parse_response(raw, &Limits::default()).map(|p| match p {
            Parsed::Complete { len, .. } => Some(len),
            Parsed::Partial => None,
        })
    }

    /// Every row: bytes in, verdict out. Every shorter prefix must be partial or the same
    /// error, since the engine re-parses its growing buffer.
    macro_rules! req {
        ($($raw:expr => $verdict:expr),* $(,)?) => {{
            let limits = Limits::default();
            $(
                let raw: &[u8] = $raw.as_ref();
                let verdict: Result<(), HttpError> = $verdict;
                let got = request_verdict(raw, &limits);
                match verdict {
                    Ok(()) => assert_eq!(got, Ok(Some(raw.len())), "{:?}", String::from_utf8_lossy(raw)),
                    Err(e) => assert_eq!(got, Err(e), "{:?}", String::from_utf8_lossy(raw)),
                }
                for at in 0..raw.len() {
                    let prefix = request_verdict(&raw[..at], &limits);
                    assert!(
                        prefix == Ok(None) || prefix == got,
                        "prefix {at} of {:?} gave {prefix:?}",
                        String::from_utf8_lossy(raw)
                    );
                }
            )*
        }};
    }

    const OK: Result<(), HttpError> = Ok(());

    #[test]
    fn valid_requests() {
        req! {
            "GET / HTTP/1.1\r\nHost: a\r\n\r\n" => OK,
            "GET / HTTP/1.0\r\n\r\n" => OK,
            "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n" => OK,
            "GET /a?b=c&d=%20 HTTP/1.1\r\nHost: example.com:8080\r\nX-Empty:\r\nX-Tab:\ta\tb\t\r\n\r\n" => OK,
            "GET / HTTP/1.1\r\nHost: \r\n\r\n" => OK,
            "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n" => OK,
            "GET / HTTP/1.1\r\nHost: a\r\nX-Obs: caf\u{e9}\r\n\r\n" => OK,
            "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n" => OK,
            "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n" => OK,
            "CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n" => OK,
            "GET http://example.com/x HTTP/1.1\r\nHost: example.com\r\n\r\n" => OK,
            "GET http://EXAMPLE.com:80/x HTTP/1.1\r\nHost: example.COM\r\n\r\n" => OK,
            "GET https://example.com HTTP/1.1\r\nHost: example.com:443\r\n\r\n" => OK,
            "GET http://example.com:0080?q HTTP/1.1\r\nHost: example.com:80\r\n\r\n" => OK,
            "GET urn:isbn:123 HTTP/1.1\r\nHost: \r\n\r\n" => OK,
            "GET http://example.com/x HTTP/1.0\r\n\r\n" => OK,
            "M-SEARCH * HTTP/1.1\r\nHost: a\r\n\r\n" => Err(InvalidTarget),
            "PURGE /x HTTP/1.1\r\nHost: a\r\n\r\n" => OK,
        }
    }

    /// The fields of a head laid out as their wire form are copied in one piece, others one by
    /// one: either way the same names and values, in order, and the same wire form out.
    #[test]
    fn fields_are_the_same_whichever_way_they_were_copied() {
        let rows: &[(&str, &[(&str, &str)])] = &[
            ("Host: a\r\n", &[("Host", "a")]),
            (
                "Host: a\r\nX-A: 1\r\nx-b: two words\r\n",
                &[("Host", "a"), ("X-A", "1"), ("x-b", "two words")],
            ),
            // Not the wire form: no space, two spaces, a tab, trailing whitespace, empty values.
            ("Host:a\r\nX-A: 1\r\n", &[("Host", "a"), ("X-A", "1")]),
            ("Host: a\r\nX-A:  1\r\n", &[("Host", "a"), ("X-A", "1")]),
            ("Host: a\r\nX-A:\t1\r\n", &[("Host", "a"), ("X-A", "1")]),
            ("Host: a \r\nX-A: 1\r\n", &[("Host", "a"), ("X-A", "1")]),
            (
                "Host: a\r\nX-E:\r\nX-F: \r\n",
                &[("Host", "a"), ("X-E", ""), ("X-F", "")],
            ),
            (
                "Host: a\r\nX-In: a\tb c\r\n",
                &[("Host", "a"), ("X-In", "a\tb c")],
            ),
        ];
        for (fields, expected) in rows {
            let raw = format!("GET / HTTP/1.1\r\n{fields}\r\n");
            let head = match parse_request(raw.as_bytes(), &Limits::default()) {
                Ok(Parsed::Complete { head, .. }) => head,
                other => panic!("{raw:?}: {other:?}"),
            };
            let got: Vec<_> = head
                .headers
                .iter()
                .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v).into_owned()))
                .collect();
            let want: Vec<_> = expected
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            assert_eq!(got, want, "{raw:?}");
            let mut wire = Vec::new();
            head.headers.write_wire(0, &mut wire);
            let want_wire: String = expected
                .iter()
                .map(|(n, v)| format!("{n}: {v}\r\n"))
                .collect();
            assert_eq!(String::from_utf8_lossy(&wire), want_wire, "{raw:?}");
            assert_eq!(head.headers.get_str("host"), Some("a"), "{raw:?}");
        }
    }

    /// Every head row of the request table in http-defaults.md.
    #[test]
    fn policy_table_rows() {
        req! {
            // obs-fold, also before the first field
            "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n" => Err(ObsFold),
            "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n" => Err(ObsFold),
            "GET / HTTP/1.1\r\n Host: a\r\n\r\n" => Err(ObsFold),
            // whitespace before the colon
            "GET / HTTP/1.1\r\nHost : a\r\n\r\n" => Err(WhitespaceBeforeColon),
            "GET / HTTP/1.1\r\nHost: a\r\nX\t: a\r\n\r\n" => Err(WhitespaceBeforeColon),
            // empty header name
            "GET / HTTP/1.1\r\nHost: a\r\n: a\r\n\r\n" => Err(InvalidHeaderName),
            // NUL / CR / LF (and other controls) in a value
            "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n" => Err(InvalidHeaderValue),
            "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n" => Err(InvalidHeaderValue),
            "GET / HTTP/1.1\r\nHost: a\r\nX: a\nb: c\r\n\r\n" => Err(BareLineFeed),
            "GET / HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n" => Err(InvalidHeaderValue),
            "GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n" => Err(InvalidHeaderValue),
            // invalid name bytes, no colon
            "GET / HTTP/1.1\r\nHost: a\r\nX(: a\r\n\r\n" => Err(InvalidHeaderName),
            "GET / HTTP/1.1\r\nHost: a\r\nX@Y: a\r\n\r\n" => Err(InvalidHeaderName),
            "GET / HTTP/1.1\r\nHost: a\r\nX\0: a\r\n\r\n" => Err(InvalidHeaderName),
            "GET / HTTP/1.1\r\nHost: a\r\n\u{e9}: a\r\n\r\n" => Err(InvalidHeaderName),
            "GET / HTTP/1.1\r\nHost: a\r\nFoo Bar: a\r\n\r\n" => Err(InvalidHeaderName),
            "GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n" => Err(InvalidHeaderName),
            "GET / HTTP/1.1\r\nHost: a\r\n\rX" => Err(InvalidHeaderName),
            // Host
            "GET / HTTP/1.1\r\n\r\n" => Err(MissingHost),
            "GET / HTTP/1.1\r\nX: a\r\n\r\n" => Err(MissingHost),
            "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n" => Err(DuplicateHost),
            "GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n" => Err(DuplicateHost),
            "GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n" => Err(DuplicateHost),
            "GET http://a/ HTTP/1.1\r\nHost: b\r\n\r\n" => Err(HostMismatch),
            "GET http://a/ HTTP/1.1\r\nHost: a:8080\r\n\r\n" => Err(HostMismatch),
            "GET http://a:8080/ HTTP/1.1\r\nHost: a\r\n\r\n" => Err(HostMismatch),
            "GET https://a/ HTTP/1.1\r\nHost: a:80\r\n\r\n" => Err(HostMismatch),
            "GET http://a/ HTTP/1.0\r\nHost: b\r\n\r\n" => Err(HostMismatch),
            "GET http://a/ HTTP/1.1\r\n\r\n" => Err(MissingHost),
            "GET / HTTP/1.1\r\nHost: a b\r\n\r\n" => Err(InvalidHost),
            "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n" => Err(InvalidHost),
            "GET / HTTP/1.1\r\nHost: a:http\r\n\r\n" => Err(InvalidHost),
            "GET / HTTP/1.1\r\nHost: user@a\r\n\r\n" => Err(InvalidHost),
            "GET / HTTP/1.1\r\nHost: [zz]\r\n\r\n" => Err(InvalidHost),
            // versions: well-formed other than 1.0/1.1 -> 505; malformed -> 400
            "GET / HTTP/1.2\r\nHost: a\r\n\r\n" => Err(UnsupportedVersion),
            "GET / HTTP/2.0\r\nHost: a\r\n\r\n" => Err(UnsupportedVersion),
            "GET / HTTP/0.9\r\n\r\n" => Err(UnsupportedVersion),
            "GET / HTTP/9.9\r\n\r\n" => Err(UnsupportedVersion),
            "GET / HTTP/1\r\nHost: a\r\n\r\n" => Err(InvalidVersion),
            "GET / HTTP/2\r\nHost: a\r\n\r\n" => Err(InvalidVersion),
            "GET / http/1.1\r\nHost: a\r\n\r\n" => Err(InvalidVersion),
            "GET / HTTP/1.1x\r\nHost: a\r\n\r\n" => Err(InvalidVersion),
            "GET / HTTP/1.10\r\nHost: a\r\n\r\n" => Err(InvalidVersion),
            "GET / HTTP/11.1\r\nHost: a\r\n\r\n" => Err(InvalidVersion),
            "GET / HTTP/1.1 \r\nHost: a\r\n\r\n" => Err(InvalidVersion),
            "GET / HTTPS/1.1\r\nHost: a\r\n\r\n" => Err(InvalidVersion),
            "GET / HTTP/1.\r\n\r\n" => Err(InvalidVersion),
            // request line
            "GET /\r\n\r\n" => Err(InvalidRequestLine),
            "GET  / HTTP/1.1\r\nHost: a\r\n\r\n" => Err(InvalidRequestLine),
            "GET / HTTP/1.1\rHost: a\r\n\r\n" => Err(InvalidRequestLine),
            "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n" => Err(InvalidRequestLine),
            " GET / HTTP/1.1\r\nHost: a\r\n\r\n" => Err(InvalidRequestLine),
            "G(T / HTTP/1.1\r\nHost: a\r\n\r\n" => Err(InvalidMethod),
            // targets
            "GET /caf\u{e9} HTTP/1.1\r\nHost: a\r\n\r\n" => Err(InvalidTarget),
            b"GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n" => Err(InvalidTarget),
            "GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n" => Err(InvalidTarget),
            "GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n" => Err(InvalidTarget),
            "GET * HTTP/1.1\r\nHost: a\r\n\r\n" => Err(InvalidTarget),
            "GET foo HTTP/1.1\r\nHost: a\r\n\r\n" => Err(InvalidTarget),
            "GET 1http://a/ HTTP/1.1\r\nHost: a\r\n\r\n" => Err(InvalidTarget),
            "GET http://user@a/ HTTP/1.1\r\nHost: a\r\n\r\n" => Err(InvalidTarget),
            "GET http:///x HTTP/1.1\r\nHost: \r\n\r\n" => Err(InvalidTarget),
            "GET http:x HTTP/1.1\r\nHost: a\r\n\r\n" => Err(InvalidTarget),
            "CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n" => Err(InvalidTarget),
            "CONNECT example.com HTTP/1.1\r\nHost: example.com\r\n\r\n" => Err(InvalidTarget),
            "CONNECT example.com: HTTP/1.1\r\nHost: example.com\r\n\r\n" => Err(InvalidTarget),
            "CONNECT http://example.com:443/ HTTP/1.1\r\nHost: example.com\r\n\r\n" => Err(InvalidTarget),
            // bare LF anywhere in the head
            "GET / HTTP/1.1\nHost: a\r\n\r\n" => Err(BareLineFeed),
            "GET / HTTP/1.1\r\nHost: a\n\r\n" => Err(BareLineFeed),
            "GET / HTTP/1.1\r\nHost: a\r\n\n" => Err(BareLineFeed),
            "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n" => Err(BareLineFeed),
        }
    }

    #[test]
    fn partial_heads() {
        let limits = Limits::default();
        for raw in [
            "",
            "G",
            "GET",
            "GET / HTTP/1.1",
            "GET / HTTP/1.1\r\nHost: a\r\n",
            "GET / HTTP/2.0",
            "\r\n",
        ] {
            assert_eq!(
                request_verdict(raw.as_bytes(), &limits),
                Ok(None),
                "{raw:?}"
            );
        }
        // bytes after the head are not part of it
        let raw = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhiGET";
        assert_eq!(request_verdict(raw, &limits), Ok(Some(raw.len() - 5)));
    }

    #[test]
    fn parsed_request_contents() {
        let raw =
            b"PURGE /x?y HTTP/1.0\r\nHost: Example.com\r\nX-Case: MiXeD \r\nx-case: two\r\n\r\n";
        let Ok(Parsed::Complete { head, len }) = parse_request(raw, &Limits::default()) else {
            panic!()
        };
        assert_eq!(len, raw.len());
        assert_eq!(head.method.as_str(), "PURGE");
        assert!(!head.method.is_idempotent());
        assert_eq!(head.target, "/x?y");
        assert_eq!(head.version, Version::Http10);
        let fields: Vec<(&str, &[u8])> = head.headers.iter().collect();
        assert_eq!(
            fields,
            vec![
                ("Host", &b"Example.com"[..]),
                ("X-Case", b"MiXeD"),
                ("x-case", b"two")
            ]
        );
    }

    #[test]
    fn methods() {
        for (token, idempotent) in [
            ("GET", true),
            ("HEAD", true),
            ("OPTIONS", true),
            ("TRACE", true),
            ("PUT", true),
            ("DELETE", true),
            ("POST", false),
            ("PATCH", false),
            ("CONNECT", false),
            ("get", false),
            ("X-CUSTOM", false),
        ] {
            let method: Method = token.parse().unwrap();
            assert_eq!(method.as_str(), token);
            assert_eq!(method.is_idempotent(), idempotent, "{token}");
        }
        assert_eq!("GET".parse::<Method>(), Ok(Method::GET));
        assert!(Method::HEAD.is_head() && !Method::GET.is_head());
        assert!(Method::CONNECT.is_connect());
        assert_eq!(Method::try_from(""), Err(InvalidMethod));
        assert_eq!(Method::try_from("G T"), Err(InvalidMethod));
        assert_eq!(Method::try_from("GET\r\n"), Err(InvalidMethod));
        assert_eq!(format!("{}", Method::PATCH), "PATCH");
    }

    #[test]
    fn heads_built_in_code() {
        let req = RequestHead::new(Method::GET, "/");
        assert_eq!((req.version, req.headers.len()), (Version::Http11, 0));
        let res = ResponseHead::new(404);
        assert_eq!(
            (res.version, res.status, &*res.reason),
            (Version::Http11, 404, "Not Found")
        );
        assert_eq!(ResponseHead::new(299).reason, "");
        assert_eq!(Version::Http10.to_string(), "HTTP/1.0");
    }

    fn head_with_fields(n: usize) -> Vec<u8> {
        let mut raw = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 1..n {
            raw.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        raw
    }

    #[test]
    fn max_headers_boundary() {
        let limits = Limits::default();
        for (n, expected) in [
            (MAX_HEADERS - 1, None),
            (MAX_HEADERS, None),
            (MAX_HEADERS + 1, Some(TooManyHeaders)),
        ] {
            let raw = head_with_fields(n);
            let got = request_verdict(&raw, &limits);
            match expected {
                None => assert_eq!(got, Ok(Some(raw.len())), "{n}"),
                Some(e) => assert_eq!(got, Err(e), "{n}"),
            }
        }
        // the excess is detected before the head ends
        let raw = head_with_fields(MAX_HEADERS + 1);
        assert_eq!(
            request_verdict(&raw[..raw.len() - 2], &limits),
            Err(TooManyHeaders)
        );
        // a raised limit moves the field array to the heap
        let limits = Limits {
            max_headers: 150,
            ..Limits::default()
        };
        assert_eq!(
            request_verdict(&head_with_fields(150), &limits).map(|l| l.is_some()),
            Ok(true)
        );
        assert_eq!(
            request_verdict(&head_with_fields(151), &limits),
            Err(TooManyHeaders)
        );
        let limits = Limits {
            max_headers: 3,
            ..Limits::default()
        };
        assert_eq!(
            request_verdict(&head_with_fields(3), &limits).map(|l| l.is_some()),
            Ok(true)
        );
        assert_eq!(
            request_verdict(&head_with_fields(4), &limits),
            Err(TooManyHeaders)
        );
    }

    /// A complete head of exactly `total` bytes.
    fn head_of_size(total: usize) -> Vec<u8> {
        let base = b"GET / HTTP/1.1\r\nHost: a\r\nX: \r\n\r\n".len();
        let mut raw = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
        raw.resize(raw.len() + total - base, b'v');
        raw.extend_from_slice(b"\r\n\r\n");
        assert_eq!(raw.len(), total);
        raw
    }

    #[test]
    fn max_head_bytes_boundary() {
        let limits = Limits::default();
        for n in [MAX_HEAD_BYTES - 1, MAX_HEAD_BYTES] {
            let raw = head_of_size(n);
            assert_eq!(request_verdict(&raw, &limits), Ok(Some(n)), "{n}");
            // the buffer may hold more than the head (a body); only the head counts
            let mut with_body = raw.clone();
            with_body.extend_from_slice(b"body");
            assert_eq!(
                request_verdict(&with_body, &limits),
                Ok(Some(n)),
                "{n} with body"
            );
        }
        assert_eq!(
            request_verdict(&head_of_size(MAX_HEAD_BYTES + 1), &limits),
            Err(HeadTooLarge)
        );
        // incomplete: N buffered bytes wait for more, N + 1 are refused
        let raw = head_of_size(MAX_HEAD_BYTES + 10);
        assert_eq!(
            request_verdict(&raw[..MAX_HEAD_BYTES - 1], &limits),
            Ok(None)
        );
        assert_eq!(request_verdict(&raw[..MAX_HEAD_BYTES], &limits), Ok(None));
        assert_eq!(
            request_verdict(&raw[..MAX_HEAD_BYTES + 1], &limits),
            Err(HeadTooLarge)
        );
        // responses share the head limit
        let mut res = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        res.resize(MAX_HEAD_BYTES - 4, b'v');
        res.extend_from_slice(b"\r\n\r\n");
        assert_eq!(response_verdict(&res), Ok(Some(MAX_HEAD_BYTES)));
        res.insert(20, b'v');
        assert_eq!(response_verdict(&res), Err(HeadTooLarge));
        assert_eq!(
            response_verdict(&res[..MAX_HEAD_BYTES + 1]),
            Err(HeadTooLarge)
        );
        assert_eq!(response_verdict(&res[..MAX_HEAD_BYTES]), Ok(None));
    }

    /// A request line of exactly `len` bytes (CRLF excluded).
    fn request_line_of(len: usize) -> Vec<u8> {
        let mut raw = b"GET /".to_vec();
        raw.resize(len - b" HTTP/1.1".len(), b'a');
        raw.extend_from_slice(b" HTTP/1.1");
        assert_eq!(raw.len(), len);
        raw
    }

    #[test]
    fn max_request_line_bytes_boundary() {
        let limits = Limits::default();
        for n in [MAX_REQUEST_LINE_BYTES - 1, MAX_REQUEST_LINE_BYTES] {
            let mut raw = request_line_of(n);
            raw.extend_from_slice(b"\r\nHost: a\r\n\r\n");
            assert_eq!(request_verdict(&raw, &limits), Ok(Some(raw.len())), "{n}");
            // unfinished lines of that length wait for more
            assert_eq!(
                request_verdict(&raw[..n], &limits),
                Ok(None),
                "{n} unfinished"
            );
            assert_eq!(
                request_verdict(&raw[..n + 1], &limits),
                Ok(None),
                "{n} + CR"
            );
        }
        let mut raw = request_line_of(MAX_REQUEST_LINE_BYTES + 1);
        raw.extend_from_slice(b"\r\nHost: a\r\n\r\n");
        assert_eq!(request_verdict(&raw, &limits), Err(RequestLineTooLong));
        // refused before the line ends: a target longer than the limit, no CRLF yet
        assert_eq!(
            request_verdict(&raw[..MAX_REQUEST_LINE_BYTES + 1], &limits),
            Err(RequestLineTooLong)
        );
        assert_eq!(
            request_verdict(&raw[..MAX_REQUEST_LINE_BYTES - 12], &limits),
            Ok(None)
        );
        // leading empty lines do not count toward the request line
        let mut lead = b"\r\n\r\n".to_vec();
        lead.extend_from_slice(&request_line_of(MAX_REQUEST_LINE_BYTES));
        assert_eq!(request_verdict(&lead, &limits), Ok(None));
        // a malformed long line still answers 414
        let mut bad = request_line_of(MAX_REQUEST_LINE_BYTES + 1);
        bad[6] = 0x01;
        assert_eq!(request_verdict(&bad, &limits), Err(RequestLineTooLong));
    }

    #[test]
    fn responses() {
        let cases: &[(&[u8], Outcome)] = &[
            (b"HTTP/1.1 200 OK\r\n\r\n", Ok(Some(19))),
            (b"HTTP/1.1 200\r\n\r\n", Ok(Some(16))),
            (b"HTTP/1.1 200 \r\n\r\n", Ok(Some(17))),
            (b"HTTP/1.0 599 Whatever it is\r\nX: y\r\n\r\n", Ok(Some(37))),
            (b"\r\nHTTP/1.1 100 Continue\r\n\r\n", Ok(Some(27))),
            (b"HTTP/1.1 200 OK\r\n", Ok(None)),
            (b"HTTP/2.0", Ok(None)),
            (b"HTTP/1.1 099 Low\r\n\r\n", Err(InvalidStatusLine)),
            (b"HTTP/1.1 600 High\r\n\r\n", Err(InvalidStatusLine)),
            (b"HTTP/1.1 20 OK\r\n\r\n", Err(InvalidStatusLine)),
            (b"HTTP/1.1 2000 OK\r\n\r\n", Err(InvalidStatusLine)),
            (b"HTTP/1.1  200 OK\r\n\r\n", Err(InvalidStatusLine)),
            (b"HTTP/1.1 200 O\x01K\r\n\r\n", Err(InvalidStatusLine)),
            (b"HTTP/1.1\r\n\r\n", Err(InvalidStatusLine)),
            (b"HTTP/2.0 200 OK\r\n\r\n", Err(UnsupportedVersion)),
            (b"HTTP/2 200 OK\r\n\r\n", Err(InvalidVersion)),
            (b"ICY 200 OK\r\n\r\n", Err(InvalidVersion)),
            (b"HTTP/1.1 200 OK\r\nServer: a\r\n b\r\n\r\n", Err(ObsFold)),
            (
                b"HTTP/1.1 200 OK\r\nServer : a\r\n\r\n",
                Err(WhitespaceBeforeColon),
            ),
            (b"HTTP/1.1 200 OK\r\nX: \0\r\n\r\n", Err(InvalidHeaderValue)),
            (b"HTTP/1.1 200 OK\r\n: x\r\n\r\n", Err(InvalidHeaderName)),
            (b"HTTP/1.1 200 OK\nX: y\r\n\r\n", Err(BareLineFeed)),
            (b"HTTP/1.1 200 OK\r\nX: y\r\n\n", Err(BareLineFeed)),
        ];
        for (raw, expected) in cases {
            assert_eq!(
                &response_verdict(raw),
                expected,
                "{:?}",
                String::from_utf8_lossy(raw)
            );
            for at in 0..raw.len() {
                let prefix = response_verdict(&raw[..at]);
                assert!(
                    prefix == Ok(None) || &prefix == expected,
                    "prefix {at} of {:?}: {prefix:?}",
                    String::from_utf8_lossy(raw)
                );
            }
        }
        let Ok(Parsed::Complete { head, .. }) = parse_response(
            b"HTTP/1.1 200 caf\xc3\xa9\r\nA: b\r\n\r\n",
            &Limits::default(),
        ) else {
            panic!()
        };
        assert_eq!(
            (head.status, &*head.reason, head.headers.get_str("a")),
            (200, "", Some("b"))
        );
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(response_verdict(&many), Err(TooManyHeaders));
    }
}
