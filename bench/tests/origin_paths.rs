//! The benchmark origin over real loopback sockets: every path, keep-alive and connection
//! numbering, bodies in both framings (multi-MiB echo included), pipelining, the chunked and
//! delay modes, several executors, and stopping with connections open.

// Test helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{connect, exchange, is_closed, read_response, read_response_to, two_cpus};
use ringway_bench::fnv1a64;
use ringway_bench::origin::{self, OriginConfig, OriginHandle};

fn start(cfg: OriginConfig) -> OriginHandle {
    origin::start(OriginConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..cfg
    })
    .unwrap()
}

fn default_origin() -> OriginHandle {
    start(OriginConfig::default())
}

#[test]
fn fixed_body_on_kept_alive_connections_numbered_per_connection() {
    let o = default_origin();
    assert_ne!(o.addr().port(), 0, "port 0 resolves to the bound port");
    let mut a = connect(o.addr());
    let mut buf = Vec::new();
    let mut conn_ids = Vec::new();
    for _ in 0..3 {
        a.write_all(b"GET /anything HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let r = read_response(&mut a, &mut buf);
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"xxxxxxxxxxxxx");
        assert_eq!(r.header("content-length"), Some("13"));
        assert!(r.header("x-body-len").is_none(), "no body, no body headers");
        conn_ids.push(r.header("x-origin-conn").unwrap().to_string());
    }
    assert!(
        conn_ids.iter().all(|c| *c == conn_ids[0]),
        "one connection, one number"
    );
    let r = exchange(o.addr(), b"GET / HTTP/1.1\r\n\r\n");
    assert_ne!(
        r.header("x-origin-conn").unwrap(),
        conn_ids[0],
        "a new connection gets a new number"
    );
    assert_eq!(
        o.stats(),
        origin::OriginStats {
            connections: 2,
            requests: 4
        }
    );
    o.stop().unwrap();
}

#[test]
fn sink_reports_length_and_hash_for_both_framings() {
    let o = default_origin();
    let r = exchange(
        o.addr(),
        b"POST /sink HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-body-len"), Some("11"));
    assert_eq!(
        r.header("x-body-fnv"),
        Some(format!("{:016x}", fnv1a64(b"hello world")).as_str())
    );
    assert_eq!(r.body, b"xxxxxxxxxxxxx");
    let r = exchange(
        o.addr(),
        b"POST /sink HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: t\r\n\r\n",
    );
    assert_eq!(r.header("x-body-len"), Some("11"));
    assert_eq!(
        r.header("x-body-fnv"),
        Some(format!("{:016x}", fnv1a64(b"hello world")).as_str())
    );
    // Any non-echo path hashes a request body too.
    let r = exchange(
        o.addr(),
        b"PUT /status/201 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    );
    assert_eq!(r.status, 201);
    assert_eq!(
        r.header("x-body-fnv"),
        Some(format!("{:016x}", fnv1a64(b"abc")).as_str())
    );
}

#[test]
fn badly_framed_chunked_request_closes_without_an_answer() {
    let o = default_origin();
    // 1. The chunk is longer than its size line says; 2. a size line ends with a bare LF;
    // 3. a chunk extension holds a space inside its name. Each is refused (RFC 9112 section
    // 7.1), the connection closes, and the next connection is served as usual.
    for body in [
        &b"5\r\nhelloX\r\n0\r\n\r\n"[..],
        b"5\nhello\r\n0\r\n\r\n",
        b"5;a b\r\nhello\r\n0\r\n\r\n",
    ] {
        for path in ["/sink", "/echo"] {
            let mut s = connect(o.addr());
            let head = format!("POST {path} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
            s.write_all(&[head.as_bytes(), body].concat()).unwrap();
            assert!(is_closed(&mut s), "{path} {body:?}");
        }
    }
    assert_eq!(exchange(o.addr(), b"GET / HTTP/1.1\r\n\r\n").status, 200);
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

#[test]
fn echo_streams_a_multi_mib_body_back_with_its_length() {
    let o = default_origin();
    let body = pattern(8 << 20);
    let mut s = connect(o.addr());
    let mut w = s.try_clone().unwrap();
    let sent = body.clone();
    // Write and read concurrently: the origin answers while the body still arrives.
    let writer = std::thread::spawn(move || {
        w.write_all(
            format!(
                "POST /echo HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
                sent.len()
            )
            .as_bytes(),
        )
        .unwrap();
        for piece in sent.chunks(100_000) {
            w.write_all(piece).unwrap();
        }
    });
    let r = read_response(&mut s, &mut Vec::new());
    writer.join().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-length"),
        Some((8usize << 20).to_string().as_str())
    );
    assert!(r.body == body, "echoed body differs");
}

#[test]
fn echo_of_a_chunked_body_is_chunked() {
    let o = default_origin();
    let body = pattern(300_000);
    let mut s = connect(o.addr());
    let mut w = s.try_clone().unwrap();
    let sent = body.clone();
    let writer = std::thread::spawn(move || {
        w.write_all(b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        for piece in sent.chunks(7_777) {
            w.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                .unwrap();
            w.write_all(piece).unwrap();
            w.write_all(b"\r\n").unwrap();
        }
        w.write_all(b"0\r\n\r\n").unwrap();
    });
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf);
    writer.join().unwrap();
    assert!(r.chunked);
    assert!(r.body == body, "echoed body differs");
    // The connection is still usable afterwards.
    s.write_all(b"POST /echo HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi")
        .unwrap();
    assert_eq!(read_response(&mut s, &mut buf).body, b"hi");
}

#[test]
fn headers_returns_the_raw_request_head() {
    let o = default_origin();
    let head = b"GET /headers?q=1 HTTP/1.1\r\nHost: example\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n";
    let r = exchange(o.addr(), head);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, head);
}

#[test]
fn status_close_head_and_http10() {
    let o = default_origin();
    let r = exchange(o.addr(), b"GET /status/503 HTTP/1.1\r\n\r\n");
    assert_eq!((r.status, &r.body[..]), (503, &b"xxxxxxxxxxxxx"[..]));
    let r = exchange(o.addr(), b"GET /status/204 HTTP/1.1\r\n\r\n");
    assert_eq!(r.status, 204);
    assert!(r.header("content-length").is_none());

    let mut s = connect(o.addr());
    s.write_all(b"GET /close HTTP/1.1\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(is_closed(&mut s), "/close closes after answering");

    let mut s = connect(o.addr());
    s.write_all(b"HEAD / HTTP/1.1\r\n\r\n").unwrap();
    let r = read_response_to(&mut s, &mut buf, true);
    assert_eq!(r.header("content-length"), Some("13"));
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(
        read_response(&mut s, &mut buf).body,
        b"xxxxxxxxxxxxx",
        "no body was sent after HEAD"
    );

    let mut s = connect(o.addr());
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let r = read_response(&mut s, &mut Vec::new());
    assert_eq!(r.status, 200);
    assert!(is_closed(&mut s), "HTTP/1.0 without keep-alive closes");

    let mut s = connect(o.addr());
    s.write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf);
    assert_eq!(r.header("connection"), Some("keep-alive"));
    s.write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut s, &mut buf).status, 200);

    let r = exchange(o.addr(), b"GET / HTTP/1.1\r\nContent-Length: nope\r\n\r\n");
    assert_eq!(r.status, 400);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let o = default_origin();
    let mut s = connect(o.addr());
    s.write_all(
        b"GET /status/201 HTTP/1.1\r\n\r\n\
          POST /sink HTTP/1.1\r\nContent-Length: 5\r\n\r\nabcde\
          GET /headers HTTP/1.1\r\nX-N: 3\r\n\r\n\
          POST /echo HTTP/1.1\r\nContent-Length: 4\r\n\r\nwxyz\
          GET /status/404 HTTP/1.1\r\n\r\n",
    )
    .unwrap();
    let mut buf = Vec::new();
    assert_eq!(read_response(&mut s, &mut buf).status, 201);
    assert_eq!(
        read_response(&mut s, &mut buf).header("x-body-len"),
        Some("5")
    );
    assert_eq!(
        read_response(&mut s, &mut buf).body,
        b"GET /headers HTTP/1.1\r\nX-N: 3\r\n\r\n"
    );
    assert_eq!(read_response(&mut s, &mut buf).body, b"wxyz");
    assert_eq!(read_response(&mut s, &mut buf).status, 404);
    // Many pipelined requests at once, more than one read's worth.
    let many: Vec<u8> = (0..2000)
        .flat_map(|i| format!("GET /status/{} HTTP/1.1\r\n\r\n", 200 + i % 300).into_bytes())
        .collect();
    s.write_all(&many).unwrap();
    for i in 0..2000 {
        assert_eq!(read_response(&mut s, &mut buf).status, 200 + i % 300);
    }
    assert_eq!(o.stats().requests, 5 + 2000);
}

#[test]
fn chunked_mode_and_body_size() {
    let o = start(OriginConfig {
        chunked: true,
        body_size: 1000,
        ..OriginConfig::default()
    });
    let mut s = connect(o.addr());
    let mut buf = Vec::new();
    for path in ["/", "/status/500", "/sink"] {
        s.write_all(format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes())
            .unwrap();
        let r = read_response(&mut s, &mut buf);
        assert!(r.chunked, "{path}");
        assert_eq!(r.body, vec![b'x'; 1000], "{path}");
    }
    let o = start(OriginConfig {
        chunked: true,
        body_size: 0,
        ..OriginConfig::default()
    });
    let r = exchange(o.addr(), b"GET / HTTP/1.1\r\n\r\n");
    assert!(r.chunked && r.body.is_empty());
}

#[test]
fn delay_mode_waits_before_answering() {
    let delay = Duration::from_millis(150);
    let o = start(OriginConfig {
        delay,
        ..OriginConfig::default()
    });
    let t = Instant::now();
    let r = exchange(o.addr(), b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(t.elapsed() >= delay, "answered before the delay");
}

#[test]
fn several_executors_share_the_port() {
    let cpus = two_cpus();
    let o = start(OriginConfig {
        cpus: cpus.clone(),
        ..OriginConfig::default()
    });
    for _ in 0..40 {
        assert_eq!(exchange(o.addr(), b"GET / HTTP/1.1\r\n\r\n").status, 200);
    }
    assert_eq!(o.stats().connections, 40);
    assert_eq!(o.stats().requests, 40);
}

#[test]
fn stop_closes_open_connections_and_releases_the_port() {
    let o = default_origin();
    let addr = o.addr();
    let mut idle = connect(addr);
    idle.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    read_response(&mut idle, &mut Vec::new());
    let mut mid_head = connect(addr);
    mid_head.write_all(b"GET / HTTP/1.1\r\nHost:").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    o.stop().unwrap();
    assert!(
        is_closed(&mut idle),
        "idle keep-alive connection closed on stop"
    );
    assert!(
        is_closed(&mut mid_head),
        "connection mid-head closed on stop"
    );
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "nothing listens after stop"
    );
}

#[test]
fn stopper_ends_wait_from_another_thread() {
    let o = default_origin();
    let stopper = o.stopper();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        stopper.stop();
    });
    o.wait().unwrap();
    t.join().unwrap();
}

#[test]
fn binding_a_taken_port_fails_synchronously() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = origin::start(OriginConfig {
        listen: held.local_addr().unwrap(),
        ..OriginConfig::default()
    })
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
}
