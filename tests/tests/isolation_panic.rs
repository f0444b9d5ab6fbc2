//! Panic isolation: a phase that panics on some requests costs those requests a 500 (or a cut
//! connection once the response started) and nothing else: concurrent requests on the same
//! core all succeed, the core keeps serving, and the panics are counted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::borrow::Cow;
use std::net::SocketAddr;

use ringway::http::ResponseHead;
use ringway::{HttpPeer, ProxyHttp, Result, Server, Session};
use ringway_tests::*;

struct Panicky {
    peer: SocketAddr,
}

impl ProxyHttp for Panicky {
    type Ctx = ();

    fn new_ctx(&self) {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<bool> {
        if session.req_header().target == "/panic-early" {
            panic!("request_filter exploded");
        }
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<HttpPeer> {
        Ok(HttpPeer::new(self.peer))
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        _r: &mut ResponseHead,
        _c: &mut (),
    ) -> Result<()> {
        if session.req_header().target == "/panic-late" {
            panic!("response_filter exploded");
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Cow<'_, [u8]>,
        _e: bool,
        _c: &mut (),
    ) -> Result<()> {
        if session.req_header().target == "/panic-body" && !body.is_empty() {
            panic!("response_body_filter exploded");
        }
        Ok(())
    }
}

#[test]
fn panics_cost_only_their_own_requests() {
    for_each_backend(panics_cost_only_their_own_requests_on);
}

fn panics_cost_only_their_own_requests_on() {
    let o = origin();
    let conf = server_conf(); // one core: every request shares it
    let peer = o.addr();
    let gw = Server::new(conf, move |_| Panicky { peer })
        .start()
        .unwrap();
    let addr = gw.local_addrs()[0];

    let workers: Vec<_> = (0..6)
        .map(|w| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                for i in 0..100 {
                    let r = c
                        .request("GET", &get("/ok"))
                        .expect("a healthy request is answered");
                    assert_eq!(r.status(), 200, "worker {w} request {i}");
                }
            })
        })
        .collect();
    let mut panics = 0;
    for i in 0..30 {
        let path = ["/panic-early", "/panic-late", "/panic-body"][i % 3];
        let (r, closed) = one_shot(addr, "GET", &get(path));
        match path {
            // Nothing was sent yet: a 500, then the connection closes.
            "/panic-early" | "/panic-late" => {
                assert_eq!(r.map(|r| r.status()), Some(500), "{path}")
            }
            // The head was already sent: the connection is cut mid-body (the client sees an
            // incomplete response, never a complete-looking one).
            _ => assert!(
                r.is_none() || r.is_some_and(|r| r.body.len() < 13),
                "{path}"
            ),
        }
        assert!(closed, "{path}");
        panics += 1;
    }
    for w in workers {
        w.join().expect("every healthy request succeeded");
    }
    // The core is still serving, and counted every panic.
    let mut c = Client::connect(addr);
    assert_eq!(c.request("GET", &get("/ok")).unwrap().status(), 200);
    assert!(
        eventually(|| gw.stats().total(|c| c.panics) == panics),
        "{:?}",
        gw.stats()
    );
    gw.shutdown();
    gw.join().unwrap();
}

/// An application whose failure phase itself panics.
struct PanickyFailure {
    dead: SocketAddr,
    live: SocketAddr,
}

impl ProxyHttp for PanickyFailure {
    type Ctx = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, session: &mut Session, _ctx: &mut ()) -> Result<HttpPeer> {
        let dead = session.req_header().target == "/dead";
        Ok(HttpPeer::new(if dead { self.dead } else { self.live }))
    }

    fn fail_to_connect(
        &self,
        _s: &mut Session,
        _p: &HttpPeer,
        _c: &mut (),
        _e: Box<ringway::Error>,
    ) -> Box<ringway::Error> {
        panic!("fail_to_connect exploded");
    }
}

#[test]
fn a_panic_in_a_failure_phase_is_isolated_too() {
    for_each_backend(a_panic_in_a_failure_phase_is_isolated_too_on);
}

fn a_panic_in_a_failure_phase_is_isolated_too_on() {
    let o = origin();
    let conf = server_conf();
    let (dead, live) = (dead_addr(), o.addr());
    let gw = Server::new(conf, move |_| PanickyFailure { dead, live })
        .start()
        .unwrap();
    let addr = gw.local_addrs()[0];
    let (r, closed) = one_shot(addr, "GET", &get("/dead"));
    assert_eq!(r.map(|r| r.status()), Some(500));
    assert!(closed);
    let mut c = Client::connect(addr);
    assert_eq!(c.request("GET", &get("/ok")).unwrap().status(), 200);
    assert!(eventually(|| gw.stats().total(|c| c.panics) == 1));
}
