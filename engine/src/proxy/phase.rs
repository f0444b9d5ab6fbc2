//! The phase API: Pingora's `ProxyHttp` shape, `async fn` and no `Send` bounds, built once per
//! core by a factory so implementations may hold `Rc`/`RefCell` state.
//!
//! The chart of when each phase runs is in `docs/phases.md`.

use std::borrow::Cow;

use ringway_protocols::http::v1::{RequestHead, ResponseHead};

use super::error::{Error, ErrorKind, Result, Retry};
use super::session::Session;
use crate::upstream::HttpPeer;

/// What `fail_to_proxy` decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailToProxy {
    /// The status sent downstream, or 0 when nothing could be sent (a response had started).
    pub error_code: u16,
    /// Whether the downstream connection may carry another request.
    pub can_reuse_downstream: bool,
}

/// A proxy application: the phases every request goes through.
///
/// One value is built per core (see `Server::new`'s factory), so `&self` methods may use
/// interior mutability without locks. Every phase runs under `catch_unwind`: a panic becomes an
/// internal error for that request only.
#[allow(async_fn_in_trait)]
pub trait ProxyHttp {
    /// Per-request state handed to every phase.
    type Ctx;

    /// Creates the per-request state. Runs once per request, before `request_filter`.
    fn new_ctx(&self) -> Self::Ctx;

    /// First look at a request, before any upstream is chosen. Return `Ok(true)` after
    /// `session.respond(..)` to answer directly (nothing is proxied); an error answers with
    /// its status via `fail_to_proxy`.
    ///
    /// By default does nothing and returns `Ok(false)`.
    async fn request_filter(&self, _session: &mut Session, _ctx: &mut Self::Ctx) -> Result<bool> {
        Ok(false)
    }

    /// Chooses the upstream for this attempt. Runs again on every retry (see
    /// `Session::retries`); no default: every application must route.
    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Self::Ctx) -> Result<HttpPeer>;

    /// Changes the request about to go upstream (after hop-by-hop headers were removed).
    /// Runs once per attempt. By default does nothing.
    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        _upstream_request: &mut RequestHead,
        _ctx: &mut Self::Ctx,
    ) -> Result<()> {
        Ok(())
    }

    /// Sees the upstream response head first, before `response_filter`. Runs for the final
    /// response only (1xx are relayed as they come). By default does nothing.
    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _upstream_response: &mut ResponseHead,
        _ctx: &mut Self::Ctx,
    ) -> Result<()> {
        Ok(())
    }

    /// Changes the response head about to go downstream (hop-by-hop headers already removed,
    /// framing regenerated after it). By default does nothing.
    async fn response_filter(
        &self,
        _session: &mut Session,
        _upstream_response: &mut ResponseHead,
        _ctx: &mut Self::Ctx,
    ) -> Result<()> {
        Ok(())
    }

    /// Sees (and may replace) the request body on its way upstream; `end_of_stream` is true on
    /// the last call, whose `body` may be empty. A body of up to 64 KiB
    /// (`REPLAY_BUFFER_BYTES`) is read before connecting and filtered whole, in one call, and
    /// goes upstream with the filtered length; a longer body is filtered piece by piece as it
    /// streams, and a Content-Length body must then keep its length (a change fails the
    /// request). By default does nothing.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Cow<'_, [u8]>,
        _end_of_stream: bool,
        _ctx: &mut Self::Ctx,
    ) -> Result<()> {
        Ok(())
    }

    /// Sees (and may replace) each piece of the response body on its way downstream;
    /// `end_of_stream` is true on the last call. A Content-Length response must keep its
    /// length (a change cuts the response); a chunked one may change freely. Synchronous, as
    /// in Pingora. By default does nothing.
    fn response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Cow<'_, [u8]>,
        _end_of_stream: bool,
        _ctx: &mut Self::Ctx,
    ) -> Result<()> {
        Ok(())
    }

    /// Runs exactly once per request that reached the phases, last, with the error that ended
    /// it if any. By default does nothing (the engine's own metrics are kept regardless).
    async fn logging(&self, _session: &mut Session, _error: Option<&Error>, _ctx: &mut Self::Ctx) {}

    /// Runs when connecting to `peer` failed. The returned error's retry policy decides whether
    /// `upstream_peer` runs again. By default returns `e` unchanged (connect failures are
    /// retryable).
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        _ctx: &mut Self::Ctx,
        e: Box<Error>,
    ) -> Box<Error> {
        e
    }

    /// Runs when an error happens after the upstream connection was established. By default
    /// allows a retry of an idempotent request and, for any request, when the connection was
    /// reused and failed before the origin could have seen the request (`Retry::IfReused`);
    /// the driver further requires that nothing went downstream and the body can be replayed.
    fn error_while_proxy(
        &self,
        _peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        _ctx: &mut Self::Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let _ = client_reused;
        if e.retry == Retry::No
            && session.req_header().method.is_idempotent()
            && is_transport_error(&e)
        {
            e.set_retry(Retry::Yes)
        } else {
            e
        }
    }

    /// Decides the error response. By default sends [`Error::default_status`] when nothing
    /// was sent downstream yet, and never reuses the downstream connection after an error.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        _ctx: &mut Self::Ctx,
    ) -> FailToProxy {
        let error_code = if session.response_started() {
            0
        } else {
            e.default_status()
        };
        FailToProxy {
            error_code,
            can_reuse_downstream: false,
        }
    }
}

/// Whether `e` is an upstream connection failure (reset, closed, broken pipe) as opposed to a
/// protocol error, a timeout or a phase's decision: the kind a retry on another connection can
/// cure. Timeouts are left out on purpose: retrying a slow origin multiplies the wait.
pub fn is_transport_error(e: &Error) -> bool {
    matches!(
        e.kind,
        ErrorKind::ReadError | ErrorKind::WriteError | ErrorKind::ConnectionClosed
    )
}
