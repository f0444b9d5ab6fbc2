//! Running out of file descriptors: accept fails with EMFILE, the core backs off instead of
//! spinning or dying, and serves again once descriptors are free.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ringway_tests::{get, Client};

const BIN: &str = env!("CARGO_BIN_EXE_ringway");

#[test]
fn accept_backs_off_at_emfile_and_recovers() {
    let o = ringway_tests::origin();
    let addr: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("ringway-emfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("c.toml");
    std::fs::File::create(&cfg)
        .unwrap()
        .write_all(
            format!(
                "[server]\ncpus = [0]\n[[listeners]]\naddress = \"{addr}\"\n[[upstreams]]\nname = \"a\"\npeers = [\"{}\"]\n[[routes]]\nupstream = \"a\"\n",
                o.addr()
            )
            .as_bytes(),
        )
        .unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--config"])
        .arg(&cfg)
        .stderr(Stdio::null());
    // SAFETY: setrlimit between fork and exec touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            let rl = libc::rlimit {
                rlim_cur: 64,
                rlim_max: 64,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    // 1. Exhaust the proxy's 64 descriptors with idle connections.
    let hogs: Vec<TcpStream> = (0..100)
        .filter_map(|_| TcpStream::connect(addr).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // 2. The process is alive (not crashed by EMFILE).
    assert!(
        child.try_wait().unwrap().is_none(),
        "ringway died at EMFILE"
    );
    // 3. Free them: a fresh request is served again.
    drop(hogs);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = Client::connect(addr);
        c.send(&get("/"));
        if c.read_response("GET").is_some_and(|r| r.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "never recovered from EMFILE");
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}
