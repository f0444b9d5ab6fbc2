//! The phase API end to end: every phase runs, in order, `logging` exactly once per request,
//! a filter can answer directly, and a connect failure runs `fail_to_connect` then
//! `upstream_peer` again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use ringway::http::{Headers, RequestHead, ResponseHead};
use ringway::{Error, HttpPeer, ProxyHttp, Result, Server, Session};
use ringway_tests::*;

type Log = Arc<Mutex<Vec<String>>>;

struct Recorder {
    log: Log,
    peers: Vec<SocketAddr>,
}

impl Recorder {
    fn note(&self, s: impl Into<String>) {
        self.log.lock().unwrap().push(s.into());
    }
}

impl ProxyHttp for Recorder {
    type Ctx = usize;

    fn new_ctx(&self) -> usize {
        self.note("new_ctx");
        0
    }

    async fn request_filter(&self, session: &mut Session, _ctx: &mut usize) -> Result<bool> {
        self.note("request_filter");
        if session.req_header().target == "/direct" {
            session.respond(299, Headers::new(), b"direct".to_vec());
            return Ok(true);
        }
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut usize) -> Result<HttpPeer> {
        self.note("upstream_peer");
        let p = self.peers[(*ctx).min(self.peers.len() - 1)];
        *ctx += 1;
        Ok(HttpPeer::new(p))
    }

    async fn upstream_request_filter(
        &self,
        _s: &mut Session,
        req: &mut RequestHead,
        _c: &mut usize,
    ) -> Result<()> {
        self.note("upstream_request_filter");
        req.headers.insert("X-Phase", "added");
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _s: &mut Session,
        body: &mut Cow<'_, [u8]>,
        eos: bool,
        _c: &mut usize,
    ) -> Result<()> {
        self.note(format!("request_body_filter({},{eos})", body.len()));
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _s: &mut Session,
        _r: &mut ResponseHead,
        _c: &mut usize,
    ) -> Result<()> {
        self.note("upstream_response_filter");
        Ok(())
    }

    async fn response_filter(
        &self,
        _s: &mut Session,
        resp: &mut ResponseHead,
        _c: &mut usize,
    ) -> Result<()> {
        self.note("response_filter");
        resp.headers.insert("X-Seen", "yes");
        Ok(())
    }

    fn response_body_filter(
        &self,
        _s: &mut Session,
        body: &mut Cow<'_, [u8]>,
        eos: bool,
        _c: &mut usize,
    ) -> Result<()> {
        if !body.is_empty() || eos {
            self.note(format!("response_body_filter({},{eos})", body.len()));
        }
        if !body.is_empty() {
            *body = Cow::Owned(body.to_ascii_uppercase());
        }
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, _c: &mut usize) {
        self.note(format!(
            "logging({:?},{})",
            session.response_status(),
            e.is_some()
        ));
    }

    fn fail_to_connect(
        &self,
        _s: &mut Session,
        _p: &HttpPeer,
        _c: &mut usize,
        e: Box<Error>,
    ) -> Box<Error> {
        self.note("fail_to_connect");
        e
    }
}

fn start(peers: Vec<SocketAddr>) -> (ringway::ServerHandle, Log) {
    let log: Log = Arc::default();
    let conf = server_conf();
    let log2 = Arc::clone(&log);
    let h = Server::new(conf, move |_| Recorder {
        log: Arc::clone(&log2),
        peers: peers.clone(),
    })
    .start()
    .unwrap();
    (h, log)
}

fn take(log: &Log) -> Vec<String> {
    std::mem::take(&mut *log.lock().unwrap())
}

#[test]
fn every_phase_runs_in_order_and_logging_once() {
    for_each_backend(every_phase_runs_in_order_and_logging_once_on);
}

fn every_phase_runs_in_order_and_logging_once_on() {
    let o = origin();
    let (gw, log) = start(vec![o.addr()]);
    let mut c = Client::connect(gw.local_addrs()[0]);
    let r = c
        .request(
            "POST",
            b"POST /sink HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
        )
        .unwrap();
    assert_eq!((r.status(), r.header("x-seen")), (200, Some("yes")));
    assert!(eventually(|| log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.starts_with("logging"))));
    assert_eq!(
        take(&log),
        [
            "new_ctx",
            "request_filter",
            "request_body_filter(5,true)",
            "upstream_peer",
            "upstream_request_filter",
            "upstream_response_filter",
            "response_filter",
            "response_body_filter(13,true)",
            "logging(Some(200),false)",
        ]
    );
    // The body filter's change reaches the client.
    let r = c.request("GET", &get("/")).unwrap();
    assert_eq!(r.body, b"XXXXXXXXXXXXX");
    // Ten more requests: ten logging calls.
    for _ in 0..10 {
        c.request("GET", &get("/")).unwrap();
    }
    assert!(eventually(|| log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("logging"))
        .count()
        == 11));
}

#[test]
fn request_filter_can_answer_directly() {
    for_each_backend(request_filter_can_answer_directly_on);
}

fn request_filter_can_answer_directly_on() {
    let o = origin();
    let (gw, log) = start(vec![o.addr()]);
    let mut c = Client::connect(gw.local_addrs()[0]);
    let r = c.request("GET", &get("/direct")).unwrap();
    assert_eq!((r.status(), r.body.as_slice()), (299, &b"direct"[..]));
    assert!(eventually(|| log.lock().unwrap().len() == 3));
    assert_eq!(
        take(&log),
        ["new_ctx", "request_filter", "logging(Some(299),false)"]
    );
    assert_eq!(o.stats().requests, 0);
    // The connection is still usable.
    assert_eq!(c.request("GET", &get("/")).unwrap().status(), 200);
}

#[test]
fn a_connect_failure_runs_fail_to_connect_then_upstream_peer_again() {
    for_each_backend(a_connect_failure_runs_fail_to_connect_then_upstream_peer_again_on);
}

fn a_connect_failure_runs_fail_to_connect_then_upstream_peer_again_on() {
    let o = origin();
    let (gw, log) = start(vec![dead_addr(), o.addr()]);
    let mut c = Client::connect(gw.local_addrs()[0]);
    assert_eq!(c.request("GET", &get("/")).unwrap().status(), 200);
    assert!(eventually(|| log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.starts_with("logging"))));
    let got = take(&log);
    let phases: Vec<&str> = got
        .iter()
        .map(String::as_str)
        .filter(|p| !p.starts_with("response_body"))
        .collect();
    assert_eq!(
        phases,
        [
            "new_ctx",
            "request_filter",
            "upstream_peer",
            "fail_to_connect",
            "upstream_peer",
            "upstream_request_filter",
            "upstream_response_filter",
            "response_filter",
            "logging(Some(200),false)",
        ]
    );
}

#[test]
fn the_upstream_request_filter_changes_what_the_origin_sees() {
    for_each_backend(the_upstream_request_filter_changes_what_the_origin_sees_on);
}

fn the_upstream_request_filter_changes_what_the_origin_sees_on() {
    let o = origin();
    let (gw, _log) = start(vec![o.addr()]);
    let mut c = Client::connect(gw.local_addrs()[0]);
    let r = c.request("GET", &get("/headers")).unwrap();
    let seen = String::from_utf8_lossy(&r.body).to_ascii_lowercase();
    assert!(seen.contains("x-phase: added"), "{seen}");
}
