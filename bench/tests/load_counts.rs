//! The load generator against the real benchmark origin: `max_requests` is exact (as the origin
//! counts too), close mode opens one connection per request, several executors split the work,
//! URLs rotate, request bodies arrive intact, and every response framing is read.

// Test helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::two_cpus;
use ringway_bench::load::{self, LoadConfig};
use ringway_bench::origin::{self, OriginConfig, OriginHandle};

fn origin_with(cfg: OriginConfig) -> OriginHandle {
    origin::start(OriginConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..cfg
    })
    .unwrap()
}

fn bounded(urls: Vec<String>, max: u64) -> LoadConfig {
    LoadConfig {
        urls,
        connections: 10,
        // A bound, not a timing assertion: each run ends by max_requests long before this.
        duration: Duration::from_secs(60),
        max_requests: Some(max),
        ..LoadConfig::default()
    }
}

#[test]
fn max_requests_is_exact_on_keep_alive_connections() {
    let o = origin_with(OriginConfig::default());
    let report = load::run(&bounded(vec![format!("http://{}/", o.addr())], 1000), None).unwrap();
    assert_eq!(report.requests, 1000);
    assert_eq!(report.errors.total(), 0, "{:?}", report.errors);
    assert_eq!(report.latency.len(), 1000);
    assert_eq!(o.stats().requests, 1000);
    assert!(
        o.stats().connections <= 10,
        "keep-alive: at most one connection each"
    );
    // 57 bytes of head with a one-digit connection number, 13 of body; one more for conn 10.
    assert!(
        (70_000..=71_000).contains(&report.bytes),
        "{}",
        report.bytes
    );
    let json = report.to_json();
    assert!(json.contains("\"requests\":1000"), "{json}");
}

#[test]
fn close_mode_opens_one_connection_per_request() {
    let o = origin_with(OriginConfig::default());
    let cfg = LoadConfig {
        close: true,
        ..bounded(vec![format!("http://{}/", o.addr())], 300)
    };
    let report = load::run(&cfg, None).unwrap();
    assert_eq!(report.requests, 300);
    assert_eq!(report.errors.total(), 0, "{:?}", report.errors);
    assert_eq!(o.stats().requests, 300);
    assert_eq!(o.stats().connections, 300);
}

#[test]
fn executors_split_connections_and_the_request_budget() {
    let cpus = two_cpus();
    let o = origin_with(OriginConfig::default());
    let cfg = LoadConfig {
        cpus: cpus.clone(),
        connections: 7,
        ..bounded(vec![format!("http://{}/", o.addr())], 1001)
    };
    let report = load::run(&cfg, None).unwrap();
    assert_eq!(report.requests, 1001);
    assert_eq!(o.stats().requests, 1001);
    assert_eq!(report.executors.len(), cpus.len());
    assert_eq!(
        report.executors.iter().map(|e| e.requests).sum::<u64>(),
        1001
    );
    assert_eq!(
        report
            .executors
            .iter()
            .map(|e| e.connections)
            .sum::<usize>(),
        7
    );
}

#[test]
fn urls_rotate_and_bodies_arrive() {
    let o = origin_with(OriginConfig::default());
    let base = format!("http://{}", o.addr());
    // /echo, /sink and chunked answers exercise every response framing the reader handles.
    let cfg = LoadConfig {
        method: "POST".into(),
        body_size: 5000,
        headers: vec![("X-Test".into(), "1".into())],
        ..bounded(
            vec![
                format!("{base}/echo"),
                format!("{base}/sink"),
                format!("{base}/status/302"),
            ],
            300,
        )
    };
    let report = load::run(&cfg, None).unwrap();
    assert_eq!(report.requests, 300);
    assert_eq!(report.errors.total(), 0, "{:?}", report.errors);
    assert_eq!(o.stats().requests, 300);
    // Every echo response carries the 5000-byte body back.
    assert!(report.bytes > 100 * 5000);
}

#[test]
fn chunked_and_large_responses_are_read_whole() {
    let o = origin_with(OriginConfig {
        chunked: true,
        body_size: 100_000,
        ..OriginConfig::default()
    });
    let report = load::run(&bounded(vec![format!("http://{}/", o.addr())], 200), None).unwrap();
    assert_eq!(report.requests, 200);
    assert_eq!(report.errors.total(), 0, "{:?}", report.errors);
    assert!(report.bytes >= 200 * 100_000);
    assert!(
        o.stats().connections <= 10,
        "chunked responses keep connections alive"
    );
}

#[test]
fn connection_close_responses_reconnect_without_errors() {
    let o = origin_with(OriginConfig::default());
    let report = load::run(
        &bounded(vec![format!("http://{}/close", o.addr())], 100),
        None,
    )
    .unwrap();
    assert_eq!(report.requests, 100);
    assert_eq!(report.errors.total(), 0, "{:?}", report.errors);
    assert_eq!(o.stats().connections, 100);
}

#[test]
fn warmup_requests_are_not_recorded() {
    let o = origin_with(OriginConfig::default());
    let cfg = LoadConfig {
        warmup: Duration::from_millis(200),
        ..bounded(vec![format!("http://{}/", o.addr())], 500)
    };
    let report = load::run(&cfg, None).unwrap();
    assert_eq!(report.requests, 500);
    assert!(o.stats().requests > 500, "the warm-up sent requests too");
}

#[test]
fn a_duration_bounded_run_reports_progress_and_ends() {
    let o = origin_with(OriginConfig::default());
    let cfg = LoadConfig {
        urls: vec![format!("http://{}/", o.addr())],
        connections: 4,
        duration: Duration::from_millis(1500),
        ..LoadConfig::default()
    };
    let calls = std::cell::Cell::new(0);
    let progress = |p: load::Progress| {
        calls.set(calls.get() + 1);
        assert_eq!(p.total, Some(Duration::from_millis(1500)));
    };
    let report = load::run(&cfg, Some(&progress)).unwrap();
    assert!(report.requests > 0);
    assert!(calls.get() >= 1, "progress is reported about once a second");
    assert!(report.duration <= Duration::from_millis(1500));
    assert!(o.stats().requests >= report.requests);
    let svg = report.svg_plot();
    assert!(svg.starts_with("<svg") && svg.contains("<polyline"));
}

#[test]
fn invalid_configurations_are_refused() {
    let bad = [
        LoadConfig::default(),
        LoadConfig {
            urls: vec!["https://127.0.0.1/".into()],
            ..LoadConfig::default()
        },
        LoadConfig {
            urls: vec!["http://127.0.0.1/".into()],
            connections: 0,
            ..LoadConfig::default()
        },
        LoadConfig {
            urls: vec!["http://127.0.0.1/".into()],
            rate: Some(-1.0),
            ..LoadConfig::default()
        },
        LoadConfig {
            urls: vec!["http://127.0.0.1/".into()],
            method: "G T".into(),
            ..LoadConfig::default()
        },
        LoadConfig {
            urls: vec!["http://127.0.0.1/".into()],
            duration: Duration::ZERO,
            ..LoadConfig::default()
        },
        LoadConfig {
            urls: vec!["http://127.0.0.1/".into()],
            headers: vec![("X".into(), "a\r\nb".into())],
            ..LoadConfig::default()
        },
    ];
    for cfg in bad {
        assert!(load::run(&cfg, None).is_err(), "{cfg:?}");
    }
}

#[test]
fn head_requests_expect_no_body() {
    let o = origin_with(OriginConfig::default());
    let cfg = LoadConfig {
        method: "HEAD".into(),
        ..bounded(vec![format!("http://{}/", o.addr())], 200)
    };
    let report = load::run(&cfg, None).unwrap();
    assert_eq!(report.requests, 200);
    assert_eq!(report.errors.total(), 0, "{:?}", report.errors);
    assert!(
        o.stats().connections <= 10,
        "HEAD responses keep connections alive"
    );
}

#[test]
fn a_cpu_that_does_not_exist_is_an_error() {
    let o = origin_with(OriginConfig::default());
    let cfg = LoadConfig {
        cpus: vec![4096],
        ..bounded(vec![format!("http://{}/", o.addr())], 10)
    };
    assert!(matches!(
        load::run(&cfg, None),
        Err(load::LoadError::Executor(_))
    ));
    let err = origin::start(OriginConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        cpus: vec![4096],
        ..OriginConfig::default()
    });
    assert!(err.is_err());
}
