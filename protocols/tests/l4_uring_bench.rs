//! Measures the server side of a small request/response exchange on each backend: CPU µs and
//! syscalls per exchange on one pinned server core, with 50 connections and with 1.
//!
//! Ignored by default (it takes about a minute and wants two idle cores). Run it with
//! `cargo test --release -p ringway-protocols --test l4_uring_bench -- --ignored --nocapture`.
//! `RINGWAY_BENCH_SECS` sets the measured window per run (default 3), `RINGWAY_BENCH_RUNS` the
//! runs per cell (default 3, the median is printed). Syscalls are counted by
//! `perf stat -e raw_syscalls:sys_enter -t <server thread>` when `perf` is installed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::Cell;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};
use ringway_protocols::l4::glommio::GlommioBackend;
use ringway_protocols::l4::uring::{self, UringBackend};
use ringway_protocols::l4::{Backend, Listener, Stream};

/// Server core and load core.
const SERVER_CPU: usize = 1;
const CLIENT_CPU: usize = 0;

const REQUEST: &[u8] = b"GET /bench HTTP/1.1\r\nHost: bench\r\nUser-Agent: ringway-bench\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, world!";

fn listening_socket() -> (OwnedFd, SocketAddr) {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_reuse_port(true).unwrap();
    s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    s.listen(1024).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    (OwnedFd::from(s), addr)
}

fn thread_cpu() -> Duration {
    // SAFETY: zeroed rusage is a valid out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_THREAD with a valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

struct Sample {
    exchanges: u64,
    cpu: Duration,
    /// Syscalls counted by perf, and the exchanges served while it counted.
    syscalls: Option<(u64, u64)>,
    enters: u64,
    parks: u64,
}

/// Starts `perf stat` on thread `tid`; returns the child and its output file.
fn start_perf(tid: i32) -> Option<(std::process::Child, std::path::PathBuf)> {
    let out = std::env::temp_dir().join(format!("ringway-bench-perf-{tid}.csv"));
    let child = Command::new("perf")
        .args(["stat", "-x", ",", "-e", "raw_syscalls:sys_enter", "-t"])
        .arg(tid.to_string())
        .arg("-o")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    Some((child, out))
}

fn stop_perf(perf: Option<(std::process::Child, std::path::PathBuf)>) -> Option<u64> {
    let (mut child, out) = perf?;
    // SAFETY: SIGINT to the perf process this test started, by its own pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    child.wait().ok()?;
    let text = std::fs::read_to_string(&out).ok()?;
    let _ = std::fs::remove_file(&out);
    text.lines()
        .find(|l| l.contains("raw_syscalls:sys_enter"))
        .and_then(|l| l.split(',').next())
        .and_then(|n| n.trim().parse().ok())
}

/// Serves the exchange on `B` (pinned to SERVER_CPU) while a uring client on CLIENT_CPU drives
/// `conns` connections; measures the server thread over `window`.
fn run<B: Backend>(conns: usize, window: Duration) -> Sample {
    let (fd, addr) = listening_socket();
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (result_tx, result_rx) = mpsc::channel::<Sample>();
    let server_stop = stop.clone();
    let server = LocalExecutorBuilder::new(Placement::Fixed(SERVER_CPU))
        .spawn(move || async move {
            let listener = B::adopt_listener(fd).unwrap();
            let count = Rc::new(Cell::new(0u64));
            for _ in 0..conns {
                let (mut s, _) = listener.accept().await.unwrap();
                let count = count.clone();
                glommio::spawn_local(async move {
                    while let Ok(Some(buf)) = s.read().await {
                        drop(buf);
                        let (res, _) = s.write_all(RESPONSE).await;
                        if res.is_err() {
                            break;
                        }
                        count.set(count.get() + 1);
                    }
                })
                .detach();
            }
            ready_tx.send(()).unwrap();
            // Warm up, then measure the window.
            glommio::timer::sleep(Duration::from_millis(500)).await;
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            let perf = start_perf(tid);
            let perf_c0 = count.get();
            // Let perf attach before the window opens.
            glommio::timer::sleep(Duration::from_millis(300)).await;
            let (c0, cpu0, st0) = (count.get(), thread_cpu(), uring::stats());
            glommio::timer::sleep(window).await;
            let (c1, cpu1, st1) = (count.get(), thread_cpu(), uring::stats());
            // perf's count covers its own lifetime (a little wider than the window): keep the
            // exchanges of that lifetime beside it.
            let syscalls = stop_perf(perf).map(|n| (n, count.get() - perf_c0));
            result_tx
                .send(Sample {
                    exchanges: c1 - c0,
                    cpu: cpu1 - cpu0,
                    syscalls,
                    enters: st1.enters - st0.enters,
                    parks: st1.parks - st0.parks,
                })
                .unwrap();
            server_stop.store(true, Ordering::Relaxed);
        })
        .unwrap();
    let client_stop = stop.clone();
    let client = LocalExecutorBuilder::new(Placement::Fixed(CLIENT_CPU))
        .spawn(move || async move {
            for _ in 0..conns {
                let stop = client_stop.clone();
                glommio::spawn_local(async move {
                    let mut s = UringBackend::connect(addr, Duration::from_secs(5))
                        .await
                        .unwrap();
                    while !stop.load(Ordering::Relaxed) {
                        let (res, _) = s.write_all(REQUEST).await;
                        if res.is_err() {
                            return;
                        }
                        let mut got = 0;
                        while got < RESPONSE.len() {
                            match s.read().await {
                                Ok(Some(b)) => got += b.len(),
                                _ => return,
                            }
                        }
                    }
                })
                .detach();
            }
            // The executor's exit, not the connections' EOF, ends the load: glommio does not
            // close the sockets of tasks still pending when an executor stops.
            while !client_stop.load(Ordering::Relaxed) {
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        })
        .unwrap();
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let sample = result_rx
        .recv_timeout(window + Duration::from_secs(30))
        .unwrap();
    client.join().unwrap();
    server.join().unwrap();
    sample
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

#[test]
#[ignore = "benchmark: run explicitly with --ignored --nocapture"]
fn server_cpu_and_syscalls_per_exchange() {
    let secs: u64 = std::env::var("RINGWAY_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let runs: usize = std::env::var("RINGWAY_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let window = Duration::from_secs(secs);
    println!(
        "server on cpu {SERVER_CPU}, uring client on cpu {CLIENT_CPU}, {secs} s window, median of {runs}"
    );
    println!(
        "| backend | conns | exchanges/s | CPU µs/exchange | syscalls/exchange | enters/exchange | parks/exchange |"
    );
    println!("|---|---|---|---|---|---|---|");
    // Cells are interleaved run by run, so drifting background load hits each alike.
    let cells = [
        (50usize, "glommio"),
        (50, "uring"),
        (1, "glommio"),
        (1, "uring"),
    ];
    let mut samples: Vec<Vec<Sample>> = cells.iter().map(|_| Vec::new()).collect();
    for _ in 0..runs {
        for (i, (conns, name)) in cells.iter().enumerate() {
            samples[i].push(match *name {
                "glommio" => run::<GlommioBackend>(*conns, window),
                _ => run::<UringBackend>(*conns, window),
            });
        }
    }
    for ((conns, name), cell) in cells.iter().zip(samples) {
        let per = |f: &dyn Fn(&Sample) -> f64| median(cell.iter().map(f).collect());
        let n = |s: &Sample| s.exchanges.max(1) as f64;
        let sys: Vec<f64> = cell
            .iter()
            .filter_map(|s| s.syscalls.map(|(c, d)| c as f64 / d.max(1) as f64))
            .collect();
        let sys = if sys.is_empty() {
            "n/a".to_string()
        } else {
            format!("{:.2}", median(sys))
        };
        println!(
            "| {name} | {conns} | {:.0} | {:.2} | {sys} | {:.2} | {:.2} |",
            per(&|s| s.exchanges as f64 / window.as_secs_f64()),
            per(&|s| s.cpu.as_secs_f64() * 1e6 / n(s)),
            per(&|s| s.enters as f64 / n(s)),
            per(&|s| s.parks as f64 / n(s)),
        );
    }
}

/// Round trips of one blocking client against a server on `B`; returns the median RTT.
fn ping_pong<B: Backend>(rounds: usize, with_timer: bool) -> Duration {
    let (fd, addr) = listening_socket();
    let server = LocalExecutorBuilder::new(Placement::Fixed(SERVER_CPU))
        .spawn(move || async move {
            let listener = B::adopt_listener(fd).unwrap();
            if with_timer {
                // A periodic timer on the core, as the engine's timeouts and metrics keep.
                glommio::spawn_local(async {
                    loop {
                        glommio::timer::sleep(Duration::from_millis(10)).await;
                    }
                })
                .detach();
            }
            let (mut s, _) = listener.accept().await.unwrap();
            while let Ok(Some(buf)) = s.read().await {
                drop(buf);
                let (res, _) = s.write_all(RESPONSE).await;
                if res.is_err() {
                    break;
                }
            }
        })
        .unwrap();
    let mut rtts = Vec::with_capacity(rounds);
    {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.set_nodelay(true).unwrap();
        let mut buf = [0u8; 256];
        for _ in 0..rounds {
            let t = std::time::Instant::now();
            c.write_all(REQUEST).unwrap();
            let mut got = 0;
            while got < RESPONSE.len() {
                got += c.read(&mut buf).unwrap();
            }
            rtts.push(t.elapsed());
        }
    }
    server.join().unwrap();
    rtts.sort();
    rtts[rtts.len() / 2]
}

#[test]
#[ignore = "benchmark: run explicitly with --ignored --nocapture"]
fn one_connection_round_trip_latency() {
    // SAFETY: pins the calling (client) thread to CLIENT_CPU; a plain syscall.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(CLIENT_CPU, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
    for with_timer in [false, true] {
        for _ in 0..3 {
            let g = ping_pong::<GlommioBackend>(5000, with_timer);
            let u = ping_pong::<UringBackend>(5000, with_timer);
            println!(
                "median RTT, blocking client, timer task {with_timer}: glommio {g:?}, uring {u:?}"
            );
        }
    }
}
