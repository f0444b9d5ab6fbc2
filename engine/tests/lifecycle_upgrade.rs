//! Zero-downtime upgrade in the real binary: process A serves; process B starts with
//! `--upgrade`, takes A's listening sockets over a Unix socket; A drains and exits 0. A client
//! opening a new connection per request throughout sees no failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringway_tests::{get, Client};

const BIN: &str = env!("CARGO_BIN_EXE_ringway");

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "process did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn listeners_move_to_the_new_process_without_a_failed_request() {
    let o = ringway_tests::origin();
    let addr: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("ringway-upgrade-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("c.toml");
    let sock = dir.join("upgrade.sock");
    std::fs::File::create(&cfg)
        .unwrap()
        .write_all(
            format!(
                "[server]\ncpus = \"all\"\ngrace_period = \"5s\"\n[[listeners]]\naddress = \"{addr}\"\n[[upstreams]]\nname = \"a\"\npeers = [\"{}\"]\n[[routes]]\nupstream = \"a\"\n",
                o.addr()
            )
            .as_bytes(),
        )
        .unwrap();
    let spawn = |upgrade: bool| {
        let mut c = Command::new(BIN);
        c.args(["serve", "--config"])
            .arg(&cfg)
            .arg("--upgrade-socket")
            .arg(&sock)
            .stderr(Stdio::null());
        if upgrade {
            c.arg("--upgrade");
        }
        Proc(c.spawn().unwrap())
    };
    // 1. Process A serves and offers its listeners on the upgrade socket.
    let mut a = spawn(false);
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() || !sock.exists() {
        assert!(Instant::now() < deadline, "A never came up");
        std::thread::sleep(Duration::from_millis(20));
    }
    // 2. A client opens a new connection for every request, continuously.
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let client = std::thread::spawn(move || {
        let (mut ok, mut failed) = (0u32, Vec::new());
        while !stop2.load(Ordering::Acquire) {
            let mut c = Client::connect(addr);
            match c.request("GET", &get("/")).map(|r| r.status()) {
                Some(200) => ok += 1,
                other => failed.push(other),
            }
        }
        (ok, failed)
    });
    std::thread::sleep(Duration::from_millis(300));
    // 3. B takes over; A hands its sockets over, drains and exits 0.
    let _b = spawn(true);
    let status = wait_exit(&mut a.0, Duration::from_secs(15));
    assert!(status.success(), "A exited with {status:?}");
    // 4. B keeps serving alone for a while.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Release);
    let (ok, failed) = client.join().unwrap();
    eprintln!("{ok} requests across the upgrade, {} failed", failed.len());
    assert!(ok > 50, "only {ok} requests went through");
    assert!(
        failed.is_empty(),
        "{} failed requests across the upgrade: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    // 5. B also offers the upgrade socket for the next upgrade.
    assert!(sock.exists());
}
