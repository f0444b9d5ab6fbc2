//! Changing a response on its way through: headers in `response_filter`, body bytes in
//! `response_body_filter`, and a request answered without any upstream in `request_filter`.
//!
//! ```sh
//! cargo run --release -- origin --listen 127.0.0.1:9001 &
//! cargo run -p ringway --example modify_response -- 127.0.0.1:9001
//! curl -i http://127.0.0.1:6190/        # body upper-cased, X-Origin-Conn removed
//! curl -i http://127.0.0.1:6190/health  # answered by the proxy itself
//! ```

use std::borrow::Cow;
use std::net::SocketAddr;

use ringway::http::{Headers, ResponseHead};
use ringway::{HttpPeer, ProxyHttp, Result, Server, ServerConf, Session};

struct Modify {
    origin: SocketAddr,
}

/// Per-request state: how many body bytes went through.
#[derive(Default)]
struct Ctx {
    bytes: usize,
}

impl ProxyHttp for Modify {
    type Ctx = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    async fn request_filter(&self, session: &mut Session, _ctx: &mut Ctx) -> Result<bool> {
        if session.req_header().target == "/health" {
            let mut h = Headers::new();
            h.insert("Content-Type", "text/plain");
            session.respond(200, h, b"ok\n".to_vec());
            return Ok(true);
        }
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut Ctx) -> Result<HttpPeer> {
        Ok(HttpPeer::new(self.origin))
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHead,
        _ctx: &mut Ctx,
    ) -> Result<()> {
        resp.headers.remove("X-Origin-Conn");
        resp.headers.insert("Via", "1.1 ringway-example");
        Ok(())
    }

    fn response_body_filter(
        &self,
        _s: &mut Session,
        body: &mut Cow<'_, [u8]>,
        end: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // Same length in, same length out: a Content-Length response stays valid.
        ctx.bytes += body.len();
        if !body.is_empty() {
            *body = Cow::Owned(body.to_ascii_uppercase());
        }
        if end {
            log::debug!("{} body bytes upper-cased", ctx.bytes);
        }
        Ok(())
    }
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let origin: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".into())
        .parse()?;
    let conf = ServerConf::single("127.0.0.1:6190".parse()?);
    Server::new(conf, move |_core| Modify { origin }).run()?;
    Ok(())
}
