//! Failover to a backup origin: `fail_to_connect` and `error_while_proxy` decide whether a
//! retry may happen, and `upstream_peer` picks the backup on a retry.
//!
//! ```sh
//! cargo run --release -- origin --listen 127.0.0.1:9002 &   # only the backup is up
//! cargo run -p ringway --example failover -- 127.0.0.1:9001 127.0.0.1:9002
//! curl -i http://127.0.0.1:6191/    # 200 from the backup after a refused connect to the primary
//! ```

use std::net::SocketAddr;

use ringway::{Error, HttpPeer, ProxyHttp, Result, Retry, Server, ServerConf, Session};

struct Failover {
    primary: SocketAddr,
    backup: SocketAddr,
}

impl ProxyHttp for Failover {
    type Ctx = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, session: &mut Session, _ctx: &mut ()) -> Result<HttpPeer> {
        // The first attempt goes to the primary, every retry to the backup.
        let addr = if session.retries() == 0 {
            self.primary
        } else {
            self.backup
        };
        Ok(HttpPeer::new(addr))
    }

    fn fail_to_connect(
        &self,
        _s: &mut Session,
        peer: &HttpPeer,
        _c: &mut (),
        e: Box<Error>,
    ) -> Box<Error> {
        log::warn!("cannot connect to {}: {e}; failing over", peer.addr);
        e.set_retry(Retry::Yes)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        s: &mut Session,
        e: Box<Error>,
        _c: &mut (),
        reused: bool,
    ) -> Box<Error> {
        // Only idempotent requests may be sent twice once the origin could have seen them.
        let retry = if s.req_header().method.is_idempotent() {
            Retry::Yes
        } else {
            Retry::IfReused
        };
        log::warn!(
            "error with {} (reused connection: {reused}): {e}",
            peer.addr
        );
        e.set_retry(retry)
    }
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut args = std::env::args().skip(1);
    let primary = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:9001".into())
        .parse()?;
    let backup = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:9002".into())
        .parse()?;
    let conf = ServerConf::single("127.0.0.1:6191".parse()?);
    Server::new(conf, move |_core| Failover { primary, backup }).run()?;
    Ok(())
}
