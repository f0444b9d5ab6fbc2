//! A round-robin load balancer in a screenful: per-core state without locks.
//!
//! ```sh
//! cargo run --release -- origin --listen 127.0.0.1:9001 &
//! cargo run --release -- origin --listen 127.0.0.1:9002 &
//! cargo run -p ringway --example load_balancer -- 127.0.0.1:9001 127.0.0.1:9002
//! curl -i http://127.0.0.1:6188/
//! ```
//!
//! Each core builds its own `LoadBalancer` from the factory, so the round-robin counter is a
//! plain `Cell`: no atomics, no locks, no `Send`. Connect failures are retried on the next peer
//! (the default `fail_to_connect` keeps them retryable and `upstream_peer` runs again).

use std::cell::Cell;
use std::net::SocketAddr;

use ringway::{HttpPeer, ProxyHttp, Result, Server, ServerConf, Session};

struct LoadBalancer {
    peers: Vec<SocketAddr>,
    next: Cell<usize>,
}

impl ProxyHttp for LoadBalancer {
    type Ctx = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<HttpPeer> {
        let i = self.next.get();
        self.next.set((i + 1) % self.peers.len());
        Ok(HttpPeer::new(self.peers[i]))
    }
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut peers: Vec<SocketAddr> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<std::result::Result<_, _>>()?;
    if peers.is_empty() {
        peers = vec!["127.0.0.1:9001".parse()?, "127.0.0.1:9002".parse()?];
    }
    let conf = ServerConf::single("127.0.0.1:6188".parse()?);
    // The factory runs once per core, on that core's thread.
    Server::new(conf, move |_core| LoadBalancer {
        peers: peers.clone(),
        next: Cell::new(0),
    })
    .run()?;
    Ok(())
}
