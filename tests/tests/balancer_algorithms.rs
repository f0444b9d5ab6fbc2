//! Balancing algorithms end to end, through the gateway to real origins: smooth weighted round
//! robin's exact split, consistent hashing's stickiness (ketama and maglev, by header, cookie,
//! path and client IP, across cores), least-inflight steering away from a slow origin, and every
//! algorithm serving from its config.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use ringway_bench::origin::{OriginConfig, OriginHandle};
use ringway_tests::*;

/// A gateway config on `cpus` with one upstream of `peers` (TOML peer items) and `keys` added to
/// the upstream table.
fn config(cpus: &[usize], peers: &[String], keys: &str) -> String {
    let cpus: Vec<String> = cpus.iter().map(usize::to_string).collect();
    format!(
        "[server]\ncpus = [{}]\ngrace_period = \"2s\"\n\n[[listeners]]\naddress = \"127.0.0.1:0\"\n\n[[upstreams]]\nname = \"app\"\npeers = [{}]\nconnect_timeout = \"1s\"\nread_timeout = \"5s\"\n{keys}\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"app\"\n",
        cpus.join(", "),
        peers.join(", ")
    )
}

fn quoted(origins: &[OriginHandle]) -> Vec<String> {
    origins
        .iter()
        .map(|o| format!("\"{}\"", o.addr()))
        .collect()
}

fn origins(n: usize) -> Vec<OriginHandle> {
    (0..n).map(|_| origin()).collect()
}

fn counts(origins: &[OriginHandle]) -> Vec<u64> {
    origins.iter().map(|o| o.stats().requests).collect()
}

/// Up to two CPUs this process may run on, so requests spread over more than one core.
fn two_cpus() -> Vec<usize> {
    ringway::runtime::available_cpus()
        .into_iter()
        .take(2)
        .collect()
}

/// Sends `raw` on a fresh connection (so requests land on every core) and returns the index of
/// the origin that answered it.
fn which_origin(addr: SocketAddr, origins: &[OriginHandle], raw: &[u8]) -> usize {
    let before = counts(origins);
    let r = Client::connect(addr).request("GET", raw);
    assert_eq!(r.map(|r| r.status()), Some(200));
    let after = counts(origins);
    let moved: Vec<usize> = (0..origins.len())
        .filter(|&i| after[i] != before[i])
        .collect();
    assert_eq!(
        moved.len(),
        1,
        "exactly one origin answers: {before:?} -> {after:?}"
    );
    moved[0]
}

#[test]
fn weighted_round_robin_splits_traffic_exactly_by_weight() {
    for_each_backend(weighted_round_robin_splits_traffic_exactly_by_weight_on);
}

fn weighted_round_robin_splits_traffic_exactly_by_weight_on() {
    let o = origins(3);
    let peers: Vec<String> = o
        .iter()
        .zip([1, 2, 3])
        .map(|(o, w)| format!("{{ address = \"{}\", weight = {w} }}", o.addr()))
        .collect();
    let gw = gateway(&config(
        &[0],
        &peers,
        "algorithm = \"weighted_round_robin\"",
    ));
    let mut c = Client::connect(gw.local_addrs()[0]);
    for i in 0..600 {
        let r = c.request("GET", &get("/")).unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        if i % 6 == 5 {
            // Smooth WRR: every window of sum(weights) picks gives each peer exactly its weight.
            let n = (i as u64 + 1) / 6;
            assert_eq!(
                counts(&o),
                vec![n, 2 * n, 3 * n],
                "after {} requests",
                i + 1
            );
        }
    }
    assert_eq!(counts(&o), vec![100, 200, 300]);
}

#[test]
fn round_robin_ignores_weights_and_random_reaches_everyone() {
    for_each_backend(round_robin_ignores_weights_and_random_reaches_everyone_on);
}

fn round_robin_ignores_weights_and_random_reaches_everyone_on() {
    let o = origins(3);
    let peers: Vec<String> = o
        .iter()
        .zip([1, 2, 3])
        .map(|(o, w)| format!("{{ address = \"{}\", weight = {w} }}", o.addr()))
        .collect();
    let gw = gateway(&config(&[0], &peers, "algorithm = \"round_robin\""));
    let mut c = Client::connect(gw.local_addrs()[0]);
    for _ in 0..300 {
        assert_eq!(c.request("GET", &get("/")).unwrap().status(), 200);
    }
    assert_eq!(counts(&o), vec![100, 100, 100]);

    let o = origins(3);
    let gw = gateway(&config(&[0], &quoted(&o), "algorithm = \"random\""));
    let mut c = Client::connect(gw.local_addrs()[0]);
    for _ in 0..300 {
        assert_eq!(c.request("GET", &get("/")).unwrap().status(), 200);
    }
    // Uniform random over 300 draws: each share is 100 +- 8.2 (sd); 40 is beyond 7 sd.
    assert!(counts(&o).iter().all(|&n| n > 40), "{:?}", counts(&o));
}

/// Every request with the same key lands on the same origin, on every core; different keys use
/// more than one origin.
fn assert_sticky(algorithm: &str, hash_key: &str, request: impl Fn(usize) -> Vec<u8>) {
    let o = origins(3);
    let keys = format!("algorithm = \"{algorithm}\"\nhash_key = \"{hash_key}\"");
    let gw = gateway(&config(&two_cpus(), &quoted(&o), &keys));
    let addr = gw.local_addrs()[0];
    let users = 24;
    let mut home = vec![None; users];
    for round in 0..4 {
        for (user, home) in home.iter_mut().enumerate() {
            let at = which_origin(addr, &o, &request(user));
            match *home {
                None => *home = Some(at),
                Some(h) => assert_eq!(h, at, "{algorithm}: key {user} moved in round {round}"),
            }
        }
    }
    let mut used: Vec<usize> = home.iter().flatten().copied().collect();
    used.sort_unstable();
    used.dedup();
    assert!(
        used.len() >= 2,
        "{algorithm}: every key on one origin: {home:?}"
    );
}

#[test]
fn ketama_keeps_a_header_key_on_one_origin() {
    for_each_backend(ketama_keeps_a_header_key_on_one_origin_on);
}

fn ketama_keeps_a_header_key_on_one_origin_on() {
    assert_sticky("ketama", "header:X-User", |u| {
        format!("GET / HTTP/1.1\r\nHost: t\r\nX-User: user-{u}\r\n\r\n").into_bytes()
    });
}

#[test]
fn maglev_keeps_a_header_key_on_one_origin() {
    for_each_backend(maglev_keeps_a_header_key_on_one_origin_on);
}

fn maglev_keeps_a_header_key_on_one_origin_on() {
    assert_sticky("maglev", "header:X-User", |u| {
        format!("GET / HTTP/1.1\r\nHost: t\r\nx-user: user-{u}\r\n\r\n").into_bytes()
    });
}

#[test]
fn maglev_keeps_a_cookie_key_on_one_origin() {
    for_each_backend(maglev_keeps_a_cookie_key_on_one_origin_on);
}

fn maglev_keeps_a_cookie_key_on_one_origin_on() {
    assert_sticky("maglev", "cookie:sid", |u| {
        format!("GET / HTTP/1.1\r\nHost: t\r\nCookie: theme=dark; sid=s{u}; x=1\r\n\r\n")
            .into_bytes()
    });
}

#[test]
fn ketama_keeps_a_path_on_one_origin() {
    for_each_backend(ketama_keeps_a_path_on_one_origin_on);
}

fn ketama_keeps_a_path_on_one_origin_on() {
    assert_sticky("ketama", "path", |u| get(&format!("/items/{u}?v=1")));
}

#[test]
fn client_ip_hashing_sends_one_client_to_one_origin() {
    for_each_backend(client_ip_hashing_sends_one_client_to_one_origin_on);
}

fn client_ip_hashing_sends_one_client_to_one_origin_on() {
    for algorithm in ["ketama", "maglev"] {
        let o = origins(3);
        let keys = format!("algorithm = \"{algorithm}\"\nhash_key = \"client_ip\"");
        let gw = gateway(&config(&two_cpus(), &quoted(&o), &keys));
        let addr = gw.local_addrs()[0];
        let first = which_origin(addr, &o, &get("/"));
        for path in ["/a", "/b", "/c", "/d", "/e", "/f"] {
            assert_eq!(which_origin(addr, &o, &get(path)), first, "{algorithm}");
        }
    }
}

#[test]
fn requests_without_the_key_are_still_served() {
    for_each_backend(requests_without_the_key_are_still_served_on);
}

fn requests_without_the_key_are_still_served_on() {
    let o = origins(2);
    let keys = "algorithm = \"maglev\"\nhash_key = \"header:X-User\"";
    let gw = gateway(&config(&[0], &quoted(&o), keys));
    let mut c = Client::connect(gw.local_addrs()[0]);
    for _ in 0..10 {
        assert_eq!(c.request("GET", &get("/")).unwrap().status(), 200);
    }
    // Without a key the hash algorithms balance round robin.
    assert_eq!(counts(&o), vec![5, 5]);
}

#[test]
fn least_inflight_steers_away_from_a_slow_origin() {
    for_each_backend(least_inflight_steers_away_from_a_slow_origin_on);
}

fn least_inflight_steers_away_from_a_slow_origin_on() {
    let slow = origin_with(OriginConfig {
        delay: Duration::from_millis(100),
        ..OriginConfig::default()
    });
    let fast = origin();
    let peers = vec![
        format!("\"{}\"", slow.addr()),
        format!("\"{}\"", fast.addr()),
    ];
    let gw = gateway(&config(&[0], &peers, "algorithm = \"least_inflight\""));
    let addr = gw.local_addrs()[0];
    let clients: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                for _ in 0..15 {
                    assert_eq!(c.request("GET", &get("/")).unwrap().status(), 200);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let (s, f) = (slow.stats().requests, fast.stats().requests);
    assert_eq!(s + f, 120);
    // Round robin would send the slow origin 60; power of two choices on in-flight counts sends
    // it a request only while the fast one has more in flight.
    assert!(s < 30, "slow {s}, fast {f}");
}

#[test]
fn every_algorithm_serves_from_its_config() {
    for_each_backend(every_algorithm_serves_from_its_config_on);
}

fn every_algorithm_serves_from_its_config_on() {
    for (algorithm, extra) in [
        ("round_robin", ""),
        ("weighted_round_robin", ""),
        ("random", ""),
        ("least_inflight", ""),
        ("ketama", "hash_key = \"header:X-User\""),
        ("maglev", "hash_key = \"header:X-User\""),
    ] {
        let o = origins(3);
        let keys = format!("algorithm = \"{algorithm}\"\n{extra}");
        let gw = gateway(&config(&[0], &quoted(&o), &keys));
        let mut c = Client::connect(gw.local_addrs()[0]);
        for u in 0..60 {
            let raw = format!("GET / HTTP/1.1\r\nHost: t\r\nX-User: {u}\r\n\r\n");
            let r = c.request("GET", raw.as_bytes()).unwrap();
            assert_eq!(r.status(), 200, "{algorithm} request {u}");
        }
        let n = counts(&o);
        assert_eq!(n.iter().sum::<u64>(), 60, "{algorithm}");
        assert!(
            n.iter().filter(|&&c| c > 0).count() >= 2,
            "{algorithm}: {n:?}"
        );
        gw.shutdown();
        gw.join().unwrap();
    }
}
