//! The one error type of the request path: what happened (kind) x who caused it (side) x
//! whether a retry may follow (retry), plus context and an optional cause.
//!
//! Exactly one function, [`Error::default_status`], maps an error to the status sent downstream;
//! the `fail_to_proxy` phase uses it by default.

use std::borrow::Cow;
use std::fmt;
use std::io;

use ringway_protocols::http::v1::HttpError;

/// Phase results: errors are boxed so `Result` stays one word wide on the happy path.
pub type Result<T, E = Box<Error>> = std::result::Result<T, E>;

/// What went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The peer refused the TCP connection.
    ConnectRefused,
    /// The TCP connection was not established within `connect_timeout`.
    ConnectTimeout,
    /// Any other failure to connect (unreachable, out of descriptors).
    ConnectError,
    /// A read failed (reset, broken pipe).
    ReadError,
    /// A write failed.
    WriteError,
    /// No bytes arrived within the read deadline.
    ReadTimeout,
    /// The peer did not take bytes within the write deadline.
    WriteTimeout,
    /// The peer closed the connection before the exchange was complete.
    ConnectionClosed,
    /// The peer's bytes are not valid HTTP/1.1 under Ringway's strict rules.
    InvalidHttp(HttpError),
    /// The method is not allowed on this listener (CONNECT unless enabled).
    MethodNotAllowed,
    /// A phase panicked; the panic was caught.
    Panic,
    /// A phase chose to fail with this HTTP status.
    HttpStatus(u16),
    /// No upstream peer could be chosen.
    NoPeer,
    /// Anything else inside Ringway or the application.
    Internal,
}

/// Who caused the error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The client.
    Downstream,
    /// The origin.
    Upstream,
    /// Ringway or the application's phases.
    Internal,
}

/// Whether the request may be retried on (another) upstream after this error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Retrying is safe.
    Yes,
    /// Do not retry.
    No,
    /// Retry only if the failed upstream connection was reused from the pool: a stale keep-alive
    /// connection that fails on its first write proves the origin never saw the request.
    IfReused,
}

/// A request-path error.
pub struct Error {
    /// What happened.
    pub kind: ErrorKind,
    /// Who caused it.
    pub side: Side,
    /// Whether a retry may follow.
    pub retry: Retry,
    context: Option<Cow<'static, str>>,
    cause: Option<Box<dyn std::error::Error + 'static>>,
}

impl Error {
    /// A new error with no context and no cause; retry defaults by kind (connect failures
    /// `Yes`, everything else `No`).
    pub fn new(kind: ErrorKind, side: Side) -> Box<Error> {
        let retry = match kind {
            ErrorKind::ConnectRefused | ErrorKind::ConnectTimeout | ErrorKind::ConnectError => {
                Retry::Yes
            }
            _ => Retry::No,
        };
        Box::new(Error {
            kind,
            side,
            retry,
            context: None,
            cause: None,
        })
    }

    /// An upstream error of `kind`.
    pub fn upstream(kind: ErrorKind) -> Box<Error> {
        Error::new(kind, Side::Upstream)
    }

    /// A downstream error of `kind`.
    pub fn downstream(kind: ErrorKind) -> Box<Error> {
        Error::new(kind, Side::Downstream)
    }

    /// An internal error with context.
    pub fn internal(context: impl Into<Cow<'static, str>>) -> Box<Error> {
        Error::new(ErrorKind::Internal, Side::Internal).context(context)
    }

    /// A phase's deliberate failure with an HTTP status.
    pub fn status(status: u16) -> Box<Error> {
        Error::new(ErrorKind::HttpStatus(status), Side::Internal)
    }

    /// Classifies an I/O error on `side` during a read (`reading`) or a write.
    pub fn io(side: Side, reading: bool, e: io::Error) -> Box<Error> {
        let kind = match e.kind() {
            io::ErrorKind::TimedOut => {
                if reading {
                    ErrorKind::ReadTimeout
                } else {
                    ErrorKind::WriteTimeout
                }
            }
            io::ErrorKind::UnexpectedEof => ErrorKind::ConnectionClosed,
            _ if reading => ErrorKind::ReadError,
            _ => ErrorKind::WriteError,
        };
        Error::new(kind, side).cause(e)
    }

    /// Classifies a failed connect.
    pub fn connect(e: io::Error) -> Box<Error> {
        let kind = match e.kind() {
            io::ErrorKind::ConnectionRefused => ErrorKind::ConnectRefused,
            io::ErrorKind::TimedOut => ErrorKind::ConnectTimeout,
            _ => ErrorKind::ConnectError,
        };
        Error::upstream(kind).cause(e)
    }

    /// Adds context (what Ringway was doing).
    pub fn context(mut self: Box<Self>, context: impl Into<Cow<'static, str>>) -> Box<Error> {
        self.context = Some(context.into());
        self
    }

    /// Attaches the underlying cause.
    pub fn cause(mut self: Box<Self>, cause: impl std::error::Error + 'static) -> Box<Error> {
        self.cause = Some(Box::new(cause));
        self
    }

    /// Sets the retry policy.
    pub fn set_retry(mut self: Box<Self>, retry: Retry) -> Box<Error> {
        self.retry = retry;
        self
    }

    /// Whether the policy allows a retry given whether the failed connection was reused.
    pub fn retry_allowed(&self, reused: bool) -> bool {
        match self.retry {
            Retry::Yes => true,
            Retry::No => false,
            Retry::IfReused => reused,
        }
    }

    /// The context string, if any.
    pub fn context_str(&self) -> Option<&str> {
        self.context.as_deref()
    }

    /// The status Ringway sends for this error when nothing was sent downstream yet.
    ///
    /// Downstream protocol errors answer the status the policy names (400, 413, 414, 431, 501,
    /// 505); a CONNECT refused answers 405; upstream timeouts 504; any other upstream failure 502;
    /// panics and internal errors 500; a phase's `HttpStatus(n)` answers `n`.
    pub fn default_status(&self) -> u16 {
        match (self.kind, self.side) {
            (ErrorKind::HttpStatus(s), _) => s,
            (ErrorKind::MethodNotAllowed, _) => 405,
            (ErrorKind::InvalidHttp(h), Side::Downstream) => h.status(),
            (ErrorKind::ReadTimeout, Side::Downstream) => 408,
            (
                ErrorKind::ConnectTimeout | ErrorKind::ReadTimeout | ErrorKind::WriteTimeout,
                Side::Upstream,
            ) => 504,
            (_, Side::Upstream) => 502,
            (ErrorKind::NoPeer, _) => 502,
            (_, Side::Downstream) => 400,
            (_, Side::Internal) => 500,
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} ({:?})", self.kind, self.side)?;
        if let Some(c) = &self.context {
            write!(f, " while {c}")?;
        }
        if let Some(c) = &self.cause {
            write!(f, ": {c}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_mapping() {
        let cases: &[(Box<Error>, u16)] = &[
            (Error::upstream(ErrorKind::ConnectRefused), 502),
            (Error::upstream(ErrorKind::ConnectTimeout), 504),
            (Error::upstream(ErrorKind::ReadTimeout), 504),
            (Error::upstream(ErrorKind::ReadError), 502),
            (
                Error::upstream(ErrorKind::InvalidHttp(HttpError::HeadTooLarge)),
                502,
            ),
            (
                Error::downstream(ErrorKind::InvalidHttp(HttpError::HeadTooLarge)),
                431,
            ),
            (Error::downstream(ErrorKind::MethodNotAllowed), 405),
            (Error::new(ErrorKind::Panic, Side::Internal), 500),
            (Error::status(418), 418),
            (Error::new(ErrorKind::NoPeer, Side::Internal), 502),
        ];
        for (e, s) in cases {
            assert_eq!(e.default_status(), *s, "{e}");
        }
    }

    #[test]
    fn retry_defaults_and_reuse() {
        assert!(Error::upstream(ErrorKind::ConnectRefused).retry_allowed(false));
        assert!(!Error::upstream(ErrorKind::ReadError).retry_allowed(true));
        let e = Error::upstream(ErrorKind::WriteError).set_retry(Retry::IfReused);
        assert!(e.retry_allowed(true));
        assert!(!e.retry_allowed(false));
    }
}
