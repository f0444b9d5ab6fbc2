//! Ringway: a thread-per-core, io_uring HTTP proxy engine.
//!
//! One pinned executor per core runs the whole proxy on its own: its own SO_REUSEPORT
//! listener, its own upstream connection pool, its own counters. Applications implement
//! [`ProxyHttp`] (Pingora's phase shape, `async fn`, no `Send` bounds) and hand a per-core
//! factory to [`Server`]:
//!
//! ```no_run
//! use ringway::{HttpPeer, ProxyHttp, Result, Server, ServerConf, Session};
//!
//! struct Hello;
//! impl ProxyHttp for Hello {
//!     type Ctx = ();
//!     fn new_ctx(&self) {}
//!     async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> Result<HttpPeer> {
//!         Ok(HttpPeer::new("127.0.0.1:9001".parse().unwrap()))
//!     }
//! }
//!
//! let conf = ServerConf::single("127.0.0.1:8080".parse().unwrap());
//! Server::new(conf, |_core| Hello).run().unwrap();
//! ```

pub mod config;
pub mod gateway;
pub mod health;
pub mod listen;
pub mod metrics;
pub mod proxy;
pub mod runtime;
pub mod server;
pub mod upstream;

pub use proxy::{
    Error, ErrorKind, FailToProxy, HttpSettings, ProxyHttp, Result, Retry, Session, Side,
};
pub use runtime::{CoreId, CpuList};
pub use server::{
    IoBackend, ListenerConf, RunOptions, Server, ServerConf, ServerError, ServerHandle,
};
pub use upstream::HttpPeer;

/// The HTTP/1.1 types phases work with, re-exported from `ringway-protocols`.
pub mod http {
    pub use ringway_protocols::http::v1::{Headers, Method, RequestHead, ResponseHead, Version};
}
