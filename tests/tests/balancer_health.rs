//! Health and failover end to end: an origin killed under steady load is taken out by active
//! health checks with zero failed requests and comes back when restarted on the same port; HTTP
//! checks judge by status; passive health ejects a refusing peer on a core; the per-peer
//! connection cap fails over, waits, or answers 503; `host:port` peers are resolved.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringway::config;
use ringway::gateway::{Gateway, GatewayShared};
use ringway::{Server, ServerHandle};
use ringway_bench::origin::{self as bench_origin, OriginConfig, OriginHandle};
use ringway_tests::*;

/// A one-core gateway config with one upstream of `peers`, `keys` added to the upstream table
/// and `tables` (such as `[upstreams.health]`) after it.
fn config(peers: &[SocketAddr], keys: &str, tables: &str) -> String {
    let peers: Vec<String> = peers.iter().map(|p| format!("\"{p}\"")).collect();
    format!(
        "[server]\ncpus = [0]\ngrace_period = \"2s\"\n\n[[listeners]]\naddress = \"127.0.0.1:0\"\n\n[[upstreams]]\nname = \"app\"\npeers = [{}]\nconnect_timeout = \"1s\"\nread_timeout = \"5s\"\n{keys}\n{tables}\n[[routes]]\npath_prefix = \"/\"\nupstream = \"app\"\n",
        peers.join(", ")
    )
}

/// Starts the gateway and keeps its shared half, to look at the published health.
fn start(text: &str) -> (ServerHandle, Arc<GatewayShared>) {
    let cfg = config::parse(text, "<test>").expect("valid test config");
    let shared = GatewayShared::start(&cfg).expect("control plane starts");
    let per_core = Arc::clone(&shared);
    let handle = Server::new(cfg.server.clone(), move |_core| Gateway::new(&per_core))
        .start()
        .expect("gateway starts");
    (handle, shared)
}

fn stop(gw: ServerHandle) {
    gw.shutdown();
    gw.join().unwrap();
}

/// Whether the control plane currently publishes `addr` as up.
fn is_up(shared: &GatewayShared, addr: SocketAddr) -> bool {
    let set = shared.backends("app").unwrap();
    let i = set.index_of(addr).expect("a configured backend");
    set.health().is_up(i)
}

/// Idempotent GETs in a loop from `threads` clients until stopped; counts every answer.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..threads)
            .map(|_| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                std::thread::spawn(move || {
                    let mut c = Client::connect(addr);
                    while !stop.load(Ordering::Acquire) {
                        match c.request("GET", &get("/")) {
                            Some(r) if r.status() == 200 => {
                                ok.fetch_add(1, Ordering::AcqRel);
                            }
                            Some(r) => {
                                failed
                                    .lock()
                                    .unwrap()
                                    .push(format!("status {}", r.status()));
                                c = Client::connect(addr);
                            }
                            None => {
                                failed.lock().unwrap().push("no response".into());
                                c = Client::connect(addr);
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            threads,
        }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Acquire)
    }

    /// Waits until `n` more requests succeeded (at most 5 s).
    fn advance(&self, n: u64) {
        let target = self.ok() + n;
        assert!(eventually(|| self.ok() >= target), "the load stalled");
    }

    /// Stops the clients; returns (succeeded, failures).
    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads {
            t.join().unwrap();
        }
        let failed = self.failed.lock().unwrap().clone();
        (self.ok.load(Ordering::Acquire), failed)
    }
}

const FAST_CHECKS: &str = "[upstreams.health]\nkind = \"tcp\"\ninterval = \"50ms\"\ntimeout = \"50ms\"\nunhealthy_after = 2\nhealthy_after = 2\n";

#[test]
fn an_origin_killed_under_load_is_taken_out_without_a_failed_request_and_comes_back() {
    for_each_backend(
        an_origin_killed_under_load_is_taken_out_without_a_failed_request_and_comes_back_on,
    );
}

fn an_origin_killed_under_load_is_taken_out_without_a_failed_request_and_comes_back_on() {
    // 1. Three origins behind round robin, with fast TCP health checks and retries (default 2).
    let mut origins: Vec<OriginHandle> = (0..3).map(|_| origin()).collect();
    let addrs: Vec<SocketAddr> = origins.iter().map(OriginHandle::addr).collect();
    let (gw, shared) = start(&config(&addrs, "fail_timeout = \"300ms\"", FAST_CHECKS));
    let load = Load::start(gw.local_addrs()[0], 4);
    load.advance(300);

    // 2. Kill the middle origin mid-run: requests in flight on it, pooled connections to it and
    //    new connects to it all fail, and are retried on the others.
    let victim = origins.remove(1);
    let victim_addr = victim.addr();
    victim.stop().unwrap();
    assert!(
        eventually(|| !is_up(&shared, victim_addr)),
        "health checks mark the killed origin down"
    );
    let before: Vec<u64> = origins.iter().map(|o| o.stats().requests).collect();
    load.advance(300);
    let after: Vec<u64> = origins.iter().map(|o| o.stats().requests).collect();
    assert!(
        after.iter().zip(&before).all(|(a, b)| a > b),
        "the survivors take the load: {before:?} -> {after:?}"
    );

    // 3. Restart it on the same port: checks bring it back and it receives traffic again.
    let reborn = bench_origin::start(OriginConfig {
        listen: victim_addr,
        ..OriginConfig::default()
    })
    .expect("the origin restarts on its old port");
    assert!(
        eventually(|| is_up(&shared, victim_addr)),
        "health checks mark the restarted origin up"
    );
    assert!(
        eventually(|| reborn.stats().requests > 20),
        "the restarted origin receives traffic again"
    );
    load.advance(100);

    let (ok, failed) = load.finish();
    assert!(
        failed.is_empty(),
        "{} failed of {}: {failed:?}",
        failed.len(),
        ok
    );
    assert!(ok >= 700, "{ok}");
    // The kill was felt, and absorbed by retries.
    assert!(eventually(|| gw.stats().total(|c| c.retries) > 0));
    stop(gw);
}

#[test]
fn an_http_check_takes_out_a_backend_answering_the_wrong_status() {
    for_each_backend(an_http_check_takes_out_a_backend_answering_the_wrong_status_on);
}

fn an_http_check_takes_out_a_backend_answering_the_wrong_status_on() {
    // The scripted origin accepts connections (a TCP check would pass) but answers 500.
    let sick = ScriptedOrigin::start(|mut s| {
        use std::io::Write;
        while read_head_raw(&mut s).is_some() {
            let _ = s.write_all(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let good = origin();
    let checks = "[upstreams.health]\nkind = \"http\"\npath = \"/status/200\"\nexpect_status = 200\ninterval = \"50ms\"\ntimeout = \"50ms\"\nunhealthy_after = 1\n";
    let (gw, shared) = start(&config(&[sick.addr(), good.addr()], "", checks));
    assert!(eventually(|| !is_up(&shared, sick.addr())));
    assert!(is_up(&shared, good.addr()));
    let mut c = Client::connect(gw.local_addrs()[0]);
    // A request reaching the sick origin would come back 500 (500 is not retried).
    for _ in 0..10 {
        assert_eq!(c.request("GET", &get("/")).unwrap().status(), 200);
    }
    // The good origin also answers the checks' own requests.
    assert!(good.stats().requests >= 10);
    stop(gw);
}

#[test]
fn every_backend_down_answers_503() {
    for_each_backend(every_backend_down_answers_503_on);
}

fn every_backend_down_answers_503_on() {
    let checks =
        "[upstreams.health]\ninterval = \"50ms\"\ntimeout = \"50ms\"\nunhealthy_after = 1\n";
    let (dead1, dead2) = (dead_addr(), dead_addr());
    let (gw, shared) = start(&config(&[dead1, dead2], "", checks));
    assert!(eventually(
        || !is_up(&shared, dead1) && !is_up(&shared, dead2)
    ));
    let mut c = Client::connect(gw.local_addrs()[0]);
    assert_eq!(c.request("GET", &get("/")).unwrap().status(), 503);
    stop(gw);
}

/// Sends `n` GETs on one connection, all expected to succeed; returns the engine's retry count
/// once its counters have settled.
fn retries_after(gw: &ServerHandle, n: usize) -> u64 {
    let mut c = Client::connect(gw.local_addrs()[0]);
    for i in 0..n {
        assert_eq!(
            c.request("GET", &get("/")).unwrap().status(),
            200,
            "request {i}"
        );
    }
    // Counters are published on the cores' 100 ms tick.
    std::thread::sleep(Duration::from_millis(300));
    gw.stats().total(|c| c.retries)
}

#[test]
fn passive_health_stops_trying_a_refusing_peer_on_a_core() {
    for_each_backend(passive_health_stops_trying_a_refusing_peer_on_a_core_on);
}

fn passive_health_stops_trying_a_refusing_peer_on_a_core_on() {
    // Round robin over [dead, live]: without passive health every request tries the dead peer
    // first and is retried.
    let live = origin();
    let (gw, _shared) = start(&config(&[dead_addr(), live.addr()], "max_fails = 0", ""));
    assert_eq!(retries_after(&gw, 20), 20);
    stop(gw);

    // With max_fails = 2, two refused connects eject it on this core: no retries after that.
    let live = origin();
    let keys = "max_fails = 2\nfail_timeout = \"60s\"";
    let (gw, _shared) = start(&config(&[dead_addr(), live.addr()], keys, ""));
    assert_eq!(retries_after(&gw, 20), 2);
    assert_eq!(retries_after(&gw, 20), 2, "still ejected");
    assert_eq!(live.stats().requests, 40);
    stop(gw);
}

#[test]
fn passive_ejection_ends_after_fail_timeout() {
    for_each_backend(passive_ejection_ends_after_fail_timeout_on);
}

fn passive_ejection_ends_after_fail_timeout_on() {
    // The peer refuses at first, then comes up on the same port: after fail_timeout one trial
    // request reaches it and it takes its share again.
    let live = origin();
    let flaky_addr = dead_addr();
    let keys = "max_fails = 1\nfail_timeout = \"200ms\"";
    let (gw, _shared) = start(&config(&[flaky_addr, live.addr()], keys, ""));
    assert_eq!(retries_after(&gw, 10), 1);
    let flaky = bench_origin::start(OriginConfig {
        listen: flaky_addr,
        ..OriginConfig::default()
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(250));
    retries_after(&gw, 10);
    assert!(flaky.stats().requests >= 4, "{:?}", flaky.stats());
    stop(gw);
}

/// Starts `n` clients that each send one GET at once; returns their statuses.
fn concurrent_gets(addr: SocketAddr, n: usize) -> Vec<u16> {
    let clients: Vec<_> = (0..n)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                c.request("GET", &get("/")).map_or(0, |r| r.status())
            })
        })
        .collect();
    let mut statuses: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    statuses.sort_unstable();
    statuses
}

#[test]
fn the_connection_cap_fails_over_then_answers_503() {
    for_each_backend(the_connection_cap_fails_over_then_answers_503_on);
}

fn the_connection_cap_fails_over_then_answers_503_on() {
    // Two slow origins, one request in flight each at most: a third concurrent request finds
    // both at the cap, waits briefly, and gets 503; neither origin ever sees two at once.
    let slow = || {
        origin_with(OriginConfig {
            delay: Duration::from_millis(500),
            ..OriginConfig::default()
        })
    };
    let (a, b) = (slow(), slow());
    let (gw, _shared) = start(&config(
        &[a.addr(), b.addr()],
        "max_connections_per_peer = 1",
        "",
    ));
    let statuses = concurrent_gets(gw.local_addrs()[0], 3);
    assert_eq!(statuses, vec![200, 200, 503]);
    assert_eq!((a.stats().requests, b.stats().requests), (1, 1));
    stop(gw);
}

#[test]
fn the_connection_cap_waits_for_a_slot() {
    for_each_backend(the_connection_cap_waits_for_a_slot_on);
}

fn the_connection_cap_waits_for_a_slot_on() {
    // One origin answering in 10 ms, capped at one request in flight: a second concurrent request
    // waits for the first to end (within the 100 ms bound) instead of failing.
    let o = origin_with(OriginConfig {
        delay: Duration::from_millis(10),
        ..OriginConfig::default()
    });
    let (gw, _shared) = start(&config(&[o.addr()], "max_connections_per_peer = 1", ""));
    let statuses = concurrent_gets(gw.local_addrs()[0], 2);
    assert_eq!(statuses, vec![200, 200]);
    assert_eq!(o.stats().requests, 2);
    stop(gw);
}

#[test]
fn host_port_peers_are_resolved() {
    for_each_backend(host_port_peers_are_resolved_on);
}

fn host_port_peers_are_resolved_on() {
    let o = origin();
    let text = config(&[], "", "").replace(
        "peers = []",
        &format!(
            "peers = [\"localhost:{}\"]\nresolve_interval = \"100ms\"",
            o.addr().port()
        ),
    );
    let (gw, shared) = start(&text);
    assert!(shared
        .backends("app")
        .unwrap()
        .backends()
        .iter()
        .any(|b| b.addr == o.addr()));
    let mut c = Client::connect(gw.local_addrs()[0]);
    for _ in 0..10 {
        // `localhost` may also resolve to ::1, where nothing listens: retries cover it.
        assert_eq!(c.request("GET", &get("/")).unwrap().status(), 200);
    }
    // Re-resolution keeps the same list (no new snapshot, the same backends).
    std::thread::sleep(Duration::from_millis(300));
    assert!(shared
        .backends("app")
        .unwrap()
        .backends()
        .iter()
        .any(|b| b.addr == o.addr()));
    assert_eq!(o.stats().requests, 10);
    stop(gw);
}
