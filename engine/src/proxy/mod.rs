//! The request path: the phase trait applications implement, the per-request [`Session`], the
//! error type, the driver that runs both ends of a proxied exchange, and panic isolation.

mod driver;
pub mod error;
pub mod panic;
mod phase;
mod recycle;
mod session;
mod settings;

pub use error::{Error, ErrorKind, Result, Retry, Side};
pub use phase::{is_transport_error, FailToProxy, ProxyHttp};
pub use session::{DirectResponse, Session};
pub use settings::{
    HttpSettings, DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT, DEFAULT_KEEPALIVE_TIMEOUT,
    DEFAULT_SEND_TIMEOUT, DEFAULT_TUNNEL_IDLE_TIMEOUT, DRAIN_LIMIT_BYTES, EXPECT_CONTINUE_WAIT,
    REPLAY_BUFFER_BYTES,
};

pub(crate) use driver::serve_connection;

use crate::metrics::CoreMetrics;
use crate::runtime::{CoreId, LocalSignal};
use crate::upstream::Pool;

/// Everything one core's connections share: its pool, counters and shutdown signal. Owned by
/// that core only (`Rc`), so nothing in it needs a lock.
pub(crate) struct CoreCtx<S> {
    pub(crate) core: CoreId,
    pub(crate) pool: Pool<S>,
    pub(crate) metrics: CoreMetrics,
    pub(crate) shutdown: LocalSignal,
    /// Set when the grace period is over: connection tasks still running drop their streams.
    pub(crate) closing: LocalSignal,
    pub(crate) max_retries: usize,
}
