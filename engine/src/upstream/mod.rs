//! The upstream side: peers, connecting, and the per-core connection pool.

mod peer;
mod pool;

pub use peer::{HttpPeer, DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT, DEFAULT_WRITE_TIMEOUT};
pub use pool::{Pool, PoolStats, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_IDLE_PER_PEER};
