//! The Pingora peer of Ringway's comparison runner (`perf/run`): the smallest fair reverse proxy
//! on the crates.io `pingora` crates. Every request goes to one upstream over Pingora's pooled
//! keep-alive connections; nothing else is done to it.
//!
//! Usage: `pingora-peer --listen 127.0.0.1:8080 --upstream 127.0.0.1:9001 [--threads 1]`.
//! The runner pins the whole process to the proxy core with `taskset`.

use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::Result;
use pingora_http::RequestHeader;
use pingora_proxy::{http_proxy_service, ProxyHttp, Session};

/// Forwards everything to one upstream.
struct Forward {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Forward {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }

    /// Drops the client's `Connection` header: forwarded as is, a client's `Connection: close`
    /// makes the origin close the upstream connection, and Pingora then opens a new one per
    /// request (nginx gets the same treatment with `proxy_set_header Connection ""`).
    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut (),
    ) -> Result<()> {
        upstream_request.remove_header("Connection");
        Ok(())
    }
}

fn usage() -> ! {
    eprintln!("usage: pingora-peer --listen ADDR --upstream ADDR [--threads N]");
    std::process::exit(2)
}

fn main() {
    let mut listen = None;
    let mut upstream = None;
    let mut threads = 1usize;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--listen" => listen = Some(value),
            "--upstream" => upstream = Some(value),
            "--threads" => threads = value.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    let (Some(listen), Some(upstream)) = (listen, upstream) else {
        usage()
    };

    let conf = ServerConf {
        threads,
        work_stealing: false,
        // Tear-down is the runner's SIGTERM: leave at once.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        pid_file: format!("/tmp/ringway-peer-pingora-{}.pid", std::process::id()),
        upgrade_sock: format!("/tmp/ringway-peer-pingora-{}.sock", std::process::id()),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let conf: Arc<ServerConf> = server.configuration.clone();
    let mut proxy = http_proxy_service(&conf, Forward { upstream });
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    eprintln!("pingora peer listening on {listen}");
    server.run_forever();
}
