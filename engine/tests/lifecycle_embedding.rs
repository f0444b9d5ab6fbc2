//! Embedding manners: starting a server must not disturb the embedding program's own thread.
//! io_uring rings torn down on a thread queue task work there, which turns a blocking socket
//! read with a timeout into EINTR; the start-up probe must therefore not run on the caller's
//! thread.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::time::Duration;

use ringway_tests::{gateway, gateway_config, get, origin};

#[test]
fn starting_servers_never_interrupts_the_callers_blocking_reads() {
    for io in ["glommio", "uring", "glommio", "uring"] {
        let o = origin();
        let text = gateway_config(&[o.addr()], "")
            .replace("[server]\n", &format!("[server]\nio = \"{io}\"\n"));
        let gw = gateway(&text);
        // A plain blocking read with a timeout on the thread that called Server::start.
        let mut s = std::net::TcpStream::connect(gw.local_addrs()[0]).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&get("/")).unwrap();
        let mut buf = [0u8; 1024];
        let n = s
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("{io}: the caller's read failed: {e}"));
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{io}");
    }
}

#[test]
fn connections_left_after_the_grace_period_are_closed_when_join_returns() {
    for io in ["glommio", "uring"] {
        // An origin that takes 5 s; a grace period of 300 ms.
        let o = ringway_tests::origin_with(ringway_bench::origin::OriginConfig {
            delay: Duration::from_secs(5),
            ..Default::default()
        });
        let text = gateway_config(&[o.addr()], "")
            .replace("[server]\n", &format!("[server]\nio = \"{io}\"\n"))
            .replace("grace_period = \"2s\"", "grace_period = \"300ms\"");
        let gw = gateway(&text);
        let mut s = std::net::TcpStream::connect(gw.local_addrs()[0]).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(4))).unwrap();
        s.write_all(&get("/")).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let started = std::time::Instant::now();
        gw.shutdown();
        gw.join().unwrap();
        // The in-flight connection is closed, not left open in a returned executor.
        let mut buf = [0u8; 64];
        let r = s.read(&mut buf);
        assert!(
            matches!(r, Ok(0))
                || r.as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "{io}: {r:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{io}: {:?}",
            started.elapsed()
        );
    }
}
