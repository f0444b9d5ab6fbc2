//! The `ringway` binary's lifecycle: `check` exit codes, `serve` answering, SIGTERM draining
//! an in-flight request before a clean exit 0 (a second signal cutting it), and an idle server
//! sleeping without timers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringway_bench::origin::OriginConfig;
use ringway_tests::{get, origin_with, Client};

const BIN: &str = env!("CARGO_BIN_EXE_ringway");

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ringway-lifecycle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::File::create(&p)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    p
}

/// Kills the child on drop, so a failing test leaves no process behind.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `ringway serve` (its log discarded) on a free port with `server` as its `[server]`
/// section and one route to `upstream`.
fn serve_quietly(name: &str, server: &str, upstream: SocketAddr) -> (Proc, SocketAddr) {
    let addr = free_port();
    let cfg = write_config(
        name,
        &format!("[server]\n{server}\n[[listeners]]\naddress = \"{addr}\"\n[[upstreams]]\nname = \"a\"\npeers = [\"{upstream}\"]\n[[routes]]\nupstream = \"a\"\n"),
    );
    let child = Proc(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&cfg)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    (child, addr)
}

fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "ringway never listened on {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn check_accepts_a_valid_config_and_rejects_an_invalid_one_with_its_line() {
    let good = write_config("good.toml", ringway::config::EXAMPLE);
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = write_config(
        "bad.toml",
        "[[listeners]]\naddress = \"127.0.0.1:1\"\nbogus = 1\n",
    );
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:3:"),
        "the error names file and line: {err}"
    );
    assert!(err.contains("bogus"), "{err}");
}

#[test]
fn sigterm_drains_in_flight_requests_then_exits_zero() {
    // 1. An origin that takes 1.5 s per answer, and the binary in front of it.
    let o = origin_with(OriginConfig {
        delay: Duration::from_millis(1500),
        ..OriginConfig::default()
    });
    let addr = free_port();
    let cfg = write_config(
        "drain.toml",
        &format!(
            "[server]\ncpus = [0]\ngrace_period = \"5s\"\n[[listeners]]\naddress = \"{addr}\"\n[[upstreams]]\nname = \"a\"\npeers = [\"{}\"]\n[[routes]]\nupstream = \"a\"\n",
            o.addr()
        ),
    );
    // Its log goes to a file, read once it has exited.
    let log_path = cfg.with_extension("log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Proc(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    wait_listening(addr);
    // 2. A request is in flight (the origin is sleeping on it)...
    let inflight = std::thread::spawn(move || {
        let mut c = Client::connect(addr);
        let r = c
            .request("GET", &get("/"))
            .expect("the in-flight request is answered");
        (
            r.status(),
            r.header("connection").map(str::to_owned),
            c.is_closed(),
        )
    });
    std::thread::sleep(Duration::from_millis(400));
    // 3. ...when SIGTERM arrives.
    let sent = Instant::now();
    // SAFETY: signalling our own child by pid.
    assert_eq!(unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) }, 0);
    // 4. New connections are refused soon after (the listeners are closed).
    let deadline = Instant::now() + Duration::from_secs(2);
    while TcpStream::connect(addr).is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    // 5. The in-flight request completes, told to close.
    let (status, connection, closed) = inflight.join().unwrap();
    assert_eq!(status, 200);
    assert_eq!(connection.as_deref(), Some("close"));
    assert!(closed);
    // 6. And the process exits 0 well within the grace period.
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "did not exit within the grace period"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    assert!(sent.elapsed() < Duration::from_secs(4));
    // 7. Every accept still waiting when shutdown began (the io_uring backend keeps several
    //    per listener) was completed, none dropped or given up on.
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("I/O backend"), "the log was captured: {log}");
    assert!(
        !log.contains("did not complete at shutdown"),
        "a pending accept was given up on: {log}"
    );
}

#[test]
fn serve_proxies_through_the_binary() {
    let o = ringway_tests::origin();
    let (_child, addr) = serve_quietly("serve.toml", "cpus = \"all\"", o.addr());
    wait_listening(addr);
    let mut c = Client::connect(addr);
    for _ in 0..5 {
        assert_eq!(c.request("GET", &get("/")).unwrap().status(), 200);
    }
}

#[test]
fn a_second_signal_stops_waiting_for_in_flight_requests() {
    // An origin that takes 5 s, a grace period of 10 s, one request in flight.
    let o = origin_with(OriginConfig {
        delay: Duration::from_secs(5),
        ..OriginConfig::default()
    });
    let (mut child, addr) =
        serve_quietly("force.toml", "cpus = [0]\ngrace_period = \"10s\"", o.addr());
    wait_listening(addr);
    let inflight = std::thread::spawn(move || {
        let mut c = Client::connect(addr);
        c.request("GET", &get("/")).map(|r| r.status())
    });
    std::thread::sleep(Duration::from_millis(400));
    // SIGTERM starts the drain; SIGINT, a second signal, ends the wait for the request (the
    // origin answers after 5 s).
    // SAFETY: signalling our own child by pid.
    assert_eq!(unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) }, 0);
    std::thread::sleep(Duration::from_millis(300));
    exits_zero_on(&mut child, libc::SIGINT, Duration::from_secs(3), "force");
    // The request in flight was cut, not answered.
    assert_eq!(inflight.join().unwrap(), None);
}

/// Sends `signal` to the child and checks that it exits 0 within `within`.
fn exits_zero_on(child: &mut Proc, signal: i32, within: Duration, case: &str) {
    let sent = Instant::now();
    // SAFETY: signalling our own child by pid.
    assert_eq!(unsafe { libc::kill(child.0.id() as i32, signal) }, 0);
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{case}: {status:?}");
    assert!(
        sent.elapsed() < within,
        "{case}: exited {:?} after signal {signal}",
        sent.elapsed()
    );
}

/// Voluntary context switches of each of `pid`'s threads (a thread blocks, then something
/// wakes it: one per wake-up).
/// Keyed by thread id and name, so that a thread that starts or ends shows as a change.
fn voluntary_switches(pid: u32) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        let n = status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let tid = dir.file_name().unwrap().to_string_lossy().into_owned();
        out.insert(format!("{tid} {}", name.trim()), n);
    }
    out
}

#[test]
fn an_idle_server_sleeps_until_something_happens() {
    for io in ["uring", "glommio"] {
        // 1. The binary on one core, with an upstream it has not used yet.
        let o = ringway_tests::origin();
        let admin = free_port();
        let (mut child, addr) = serve_quietly(
            &format!("idle-{io}.toml"),
            &format!("cpus = [0]\nio = \"{io}\"\nadmin = \"{admin}\""),
            o.addr(),
        );
        let pid = child.0.id();
        // 2. Serving (a connection accepted and closed), then left alone: settled once a
        //    300 ms look sees no thread wake (a busy machine may take its time to start). The
        //    probe's connection armed a 10 s header timer whose alarm stays in the ring after
        //    the connection closed: the window must end before it goes off.
        let started = Instant::now();
        wait_listening(addr);
        let mut before = voluntary_switches(pid);
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let now = voluntary_switches(pid);
            let settled = now == before;
            before = now;
            if settled {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(7),
                "io = {io}: still waking after {:?}: {before:?}",
                started.elapsed()
            );
        }
        std::thread::sleep(Duration::from_millis(1500));
        let after = voluntary_switches(pid);
        // 3. No thread woke: no tick on the cores (the control plane rings them), none on the
        //    control thread (it sleeps in poll on its signals and the cores' doorbell), none on
        //    the admin endpoint's (it sleeps in poll on its listener).
        let woke: Vec<_> = after
            .iter()
            .filter(|(t, n)| before.get(*t) != Some(n))
            .map(|(t, n)| format!("{t}: {n} switches, {:?} before", before.get(t)))
            .chain(
                before
                    .keys()
                    .filter(|t| !after.contains_key(*t))
                    .map(|t| format!("{t}: ended")),
            )
            .collect();
        assert!(woke.is_empty(), "io = {io}: {woke:?}");
        // 4. And it still serves, its admin endpoint answers with the request counted, and it
        //    stops at once on SIGTERM.
        let mut c = Client::connect(addr);
        assert_eq!(c.request("GET", &get("/")).unwrap().status(), 200);
        drop(c);
        let mut m = Client::connect(admin);
        let metrics = m.request("GET", &get("/metrics")).unwrap();
        assert_eq!(metrics.status(), 200);
        let text = String::from_utf8_lossy(&metrics.body).into_owned();
        assert!(
            text.lines()
                .any(|l| l.starts_with("ringway_requests_total") && l.ends_with(" 1")),
            "io = {io}: {text}"
        );
        exits_zero_on(&mut child, libc::SIGTERM, Duration::from_secs(2), io);
    }
}

#[test]
fn origin_and_load_subcommands_run_pinned() {
    let addr = free_port();
    let _origin = Proc(
        Command::new(BIN)
            .args([
                "origin",
                "--listen",
                &addr.to_string(),
                "--cpus",
                "0",
                "--body-size",
                "100",
            ])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(addr);
    let out = Command::new(BIN)
        .args([
            "load",
            &format!("http://{addr}/"),
            "-c",
            "4",
            "--cpus",
            "0",
            "--requests",
            "200",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(
        json.contains("\"requests\":200") || json.contains("\"requests\": 200"),
        "{json}"
    );
}
