//! The load generator: HTTP/1.1 requests over keep-alive (or fresh) connections from pinned
//! glommio executors, with latency in an HdrHistogram.
//!
//! Two modes:
//! - **closed loop** (default): each connection sends its next request as soon as the previous
//!   response is complete, like wrk;
//! - **open loop** (`rate`): requests are due at a constant aggregate rate and latency is
//!   measured from each request's *intended* send time, so a stalled server is charged for every
//!   request it delayed, not only for the one it held (coordinated omission corrected, as wrk2
//!   does).
//!
//! Each connection has at most one request in flight. Connections are split across the
//! executors; requests cycle through the URLs.
//!
//! ```no_run
//! use std::time::Duration;
//! use ringway_bench::load::{self, LoadConfig};
//!
//! let cfg = LoadConfig {
//!     urls: vec!["http://127.0.0.1:8080/".into()],
//!     connections: 50,
//!     duration: Duration::from_secs(10),
//!     ..LoadConfig::default()
//! };
//! let report = load::run(&cfg, None).unwrap();
//! println!("{}", report.to_text());
//! ```

mod plan;
mod plot;
mod report;
mod response;
mod worker;

use std::fmt;
use std::io;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringway_protocols::l4::glommio::GlommioBackend;
use ringway_protocols::l4::probe::probe_off_thread;
use ringway_protocols::l4::uring::UringBackend;

pub use report::{ExecutorReport, LoadReport, Percentiles};

use crate::runtime::{placements, spawn_executor};
use worker::{Assignment, CoreOutput, Published};

/// Highest latency the histogram tracks, in microseconds (one hour); longer ones saturate.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Significant decimal digits of the latency histogram.
const LATENCY_SIGFIGS: u8 = 3;

/// How long [`run`] waits for its executors to come up.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Interval between two progress callbacks.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// What to send, how hard and for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadConfig {
    /// Target URLs, `http://host[:port][/path]`; each connection cycles through them request by
    /// request (keeping one connection per distinct address). No default: at least one is needed.
    pub urls: Vec<String>,
    /// Concurrent connections, split across the executors. By default 50.
    pub connections: usize,
    /// Measured duration, after the warm-up. Zero means no time limit, allowed only with
    /// `max_requests`. By default 10 s.
    pub duration: Duration,
    /// Warm-up before measuring: requests intended to start during it are sent but not recorded.
    /// By default zero.
    pub warmup: Duration,
    /// One pinned executor per listed CPU; empty means one unpinned executor. Never more
    /// executors than connections. By default empty.
    pub cpus: Vec<usize>,
    /// Open loop at this aggregate rate, requests per second (see the module docs). By default
    /// `None`: closed loop.
    pub rate: Option<f64>,
    /// Open a new connection for every request (sending `Connection: close`). By default false.
    pub close: bool,
    /// Request method. By default `GET`.
    pub method: String,
    /// Extra request headers. A `Host` here replaces the default one. By default none.
    pub headers: Vec<(String, String)>,
    /// Request body size in bytes of `x`, sent with Content-Length. By default 0.
    pub body_size: usize,
    /// Per-request timeout, from the write to the end of the response; also the connect timeout.
    /// By default 10 s.
    pub timeout: Duration,
    /// Stop after exactly this many measured requests (responses plus errors other than
    /// `status`), unless the duration ends first. By default `None`.
    pub max_requests: Option<u64>,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            urls: Vec::new(),
            connections: 50,
            duration: Duration::from_secs(10),
            warmup: Duration::ZERO,
            cpus: Vec::new(),
            rate: None,
            close: false,
            method: "GET".to_string(),
            headers: Vec::new(),
            body_size: 0,
            timeout: Duration::from_secs(10),
            max_requests: None,
        }
    }
}

/// What went wrong with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The connection could not be opened (refused, unreachable, connect timeout).
    Connect,
    /// Reading the response failed, or the peer closed before it was complete.
    Read,
    /// Writing the request failed.
    Write,
    /// No complete response within the timeout.
    Timeout,
    /// A complete response whose status is not 2xx or 3xx (it is also counted as a request).
    Status,
    /// The response was not valid HTTP/1.x.
    Parse,
}

impl ErrorKind {
    /// Every kind, in report order.
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::Connect,
        ErrorKind::Read,
        ErrorKind::Write,
        ErrorKind::Timeout,
        ErrorKind::Status,
        ErrorKind::Parse,
    ];

    /// The kind's name, as used in the JSON report.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Read => "read",
            ErrorKind::Write => "write",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Status => "status",
            ErrorKind::Parse => "parse",
        }
    }
}

/// Error counts by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorCounts {
    /// See [`ErrorKind::Connect`].
    pub connect: u64,
    /// See [`ErrorKind::Read`].
    pub read: u64,
    /// See [`ErrorKind::Write`].
    pub write: u64,
    /// See [`ErrorKind::Timeout`].
    pub timeout: u64,
    /// See [`ErrorKind::Status`].
    pub status: u64,
    /// See [`ErrorKind::Parse`].
    pub parse: u64,
}

impl ErrorCounts {
    /// The count of one kind.
    pub fn get(&self, kind: ErrorKind) -> u64 {
        match kind {
            ErrorKind::Connect => self.connect,
            ErrorKind::Read => self.read,
            ErrorKind::Write => self.write,
            ErrorKind::Timeout => self.timeout,
            ErrorKind::Status => self.status,
            ErrorKind::Parse => self.parse,
        }
    }

    /// Adds `n` errors of `kind`.
    pub fn add(&mut self, kind: ErrorKind, n: u64) {
        let c = match kind {
            ErrorKind::Connect => &mut self.connect,
            ErrorKind::Read => &mut self.read,
            ErrorKind::Write => &mut self.write,
            ErrorKind::Timeout => &mut self.timeout,
            ErrorKind::Status => &mut self.status,
            ErrorKind::Parse => &mut self.parse,
        };
        *c += n;
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &ErrorCounts) {
        for kind in ErrorKind::ALL {
            self.add(kind, other.get(kind));
        }
    }

    /// All errors together.
    pub fn total(&self) -> u64 {
        ErrorKind::ALL.iter().map(|&k| self.get(k)).sum()
    }
}

/// A snapshot passed to the progress callback about once a second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Time since the run started, warm-up included.
    pub elapsed: Duration,
    /// Planned length of the run, warm-up included (`None` when only `max_requests` bounds it).
    pub total: Option<Duration>,
    /// Still in the warm-up.
    pub warming_up: bool,
    /// Requests recorded so far.
    pub requests: u64,
    /// Errors recorded so far.
    pub errors: u64,
    /// The configured `max_requests`.
    pub max_requests: Option<u64>,
}

/// Why a load run could not run.
#[derive(Debug)]
#[non_exhaustive]
pub enum LoadError {
    /// The configuration is unusable; the text says which setting.
    InvalidConfig(&'static str),
    /// A URL could not be parsed.
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A URL's host did not resolve.
    Resolve {
        /// The URL as given.
        url: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// An executor could not be started (a CPU that does not exist, RLIMIT_MEMLOCK, ...).
    Executor(io::Error),
    /// An executor ended abnormally; the text is its error.
    ExecutorFailed(String),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::InvalidConfig(what) => write!(f, "invalid load configuration: {what}"),
            LoadError::InvalidUrl { url, reason } => write!(f, "invalid URL {url:?}: {reason}"),
            LoadError::Resolve { url, source } => write!(f, "cannot resolve {url:?}: {source}"),
            LoadError::Executor(e) => write!(f, "cannot start a load executor: {e}"),
            LoadError::ExecutorFailed(e) => write!(f, "a load executor failed: {e}"),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Resolve { source, .. } => Some(source),
            LoadError::Executor(e) => Some(e),
            _ => None,
        }
    }
}

/// Splits `total` in proportion to `weights` (which sum to `sum`), exactly.
fn split_budget(total: u64, weights: &[usize], sum: usize) -> Vec<u64> {
    let mut shares: Vec<u64> = weights
        .iter()
        .map(|&w| (u128::from(total) * w as u128 / sum.max(1) as u128) as u64)
        .collect();
    let mut left = total - shares.iter().sum::<u64>();
    for s in shares.iter_mut() {
        if left == 0 {
            break;
        }
        *s += 1;
        left -= 1;
    }
    shares
}

/// Runs a load test and reports on it; blocks until it is over.
///
/// Starts one executor per CPU in `cfg.cpus` (or one unpinned), opens `cfg.connections`
/// connections and sends requests until `cfg.warmup + cfg.duration` has passed or
/// `cfg.max_requests` requests were made. Requests in flight when the time is up are abandoned
/// and not counted. `progress`, when given, is called on this thread about once a second.
///
/// # Errors
/// An invalid configuration or URL, a host that does not resolve, or an executor that cannot
/// start or fails. Errors of individual requests are not errors of the run: they are counted
/// in the report.
pub fn run(cfg: &LoadConfig, progress: Option<&dyn Fn(Progress)>) -> Result<LoadReport, LoadError> {
    let plan = Arc::new(plan::build(cfg)?);
    // The completion-based io_uring transport where the kernel has what it needs: glommio's
    // streams cost the loader ~40% more CPU per request than wrk (cross-core wake-ups).
    let uring = probe_off_thread().supports_completion_backend();
    let histogram = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, LATENCY_SIGFIGS)
        .map_err(|_| LoadError::InvalidConfig("latency histogram bounds"))?;
    let mut cores = placements(&cfg.cpus);
    cores.truncate(cfg.connections);
    let n = cores.len();
    let assignments: Vec<Vec<usize>> = (0..n)
        .map(|e| (e..cfg.connections).step_by(n).collect())
        .collect();
    let weights: Vec<usize> = assignments.iter().map(Vec::len).collect();
    let budgets = cfg
        .max_requests
        .map(|m| split_budget(m, &weights, cfg.connections));

    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let mut threads = Vec::with_capacity(n);
    let mut go = Vec::with_capacity(n);
    let mut published = Vec::with_capacity(n);
    for (e, (cpu, conns)) in cores.iter().zip(assignments).enumerate() {
        let (go_tx, go_rx) = mpsc::channel::<Instant>();
        let pubs = Arc::new(Published::default());
        let assignment = Assignment {
            conns,
            budget: budgets.as_ref().map(|b| b[e]),
        };
        let (plan, histogram, ready, done, p) = (
            plan.clone(),
            histogram.clone(),
            ready_tx.clone(),
            done_tx.clone(),
            pubs.clone(),
        );
        let name = match cpu {
            Some(c) => format!("load-cpu{c}"),
            None => "load".to_string(),
        };
        let spawned = spawn_executor(&name, *cpu, move || async move {
            let out = if uring {
                worker::executor_main::<UringBackend>(plan, assignment, histogram, p, ready, go_rx)
                    .await
            } else {
                worker::executor_main::<GlommioBackend>(
                    plan, assignment, histogram, p, ready, go_rx,
                )
                .await
            };
            let _ = done.send(());
            out
        });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                drop(go); // executors already started see the run called off
                for t in threads {
                    let _ = t.join();
                }
                return Err(LoadError::Executor(e));
            }
        }
        go.push(go_tx);
        published.push(pubs);
    }
    drop((ready_tx, done_tx));

    for _ in 0..n {
        if ready_rx.recv_timeout(STARTUP_TIMEOUT).is_err() {
            drop(go);
            let mut failure = String::from("an executor did not start");
            for t in threads {
                if let Err(e) = t.join() {
                    failure = e.to_string();
                }
            }
            return Err(LoadError::ExecutorFailed(failure));
        }
    }
    let start = Instant::now();
    for g in &go {
        let _ = g.send(start);
    }

    let total = (!cfg.duration.is_zero()).then(|| cfg.warmup + cfg.duration);
    let mut finished = 0;
    let mut next_progress = start + PROGRESS_INTERVAL;
    while finished < n {
        let wait = next_progress.saturating_duration_since(Instant::now());
        match done_rx.recv_timeout(wait) {
            Ok(()) => finished += 1,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Some(cb) = progress {
                    let elapsed = start.elapsed();
                    cb(Progress {
                        elapsed,
                        total,
                        warming_up: elapsed < cfg.warmup,
                        requests: published
                            .iter()
                            .map(|p| p.requests.load(std::sync::atomic::Ordering::Relaxed))
                            .sum(),
                        errors: published
                            .iter()
                            .map(|p| p.errors.load(std::sync::atomic::Ordering::Relaxed))
                            .sum(),
                        max_requests: cfg.max_requests,
                    });
                }
                next_progress += PROGRESS_INTERVAL;
            }
        }
    }

    let mut outputs: Vec<(Option<usize>, usize, CoreOutput)> = Vec::with_capacity(n);
    let mut failure = None;
    for ((t, cpu), conns) in threads.into_iter().zip(cores).zip(weights) {
        match t.join() {
            Ok(out) => outputs.push((cpu, conns, out)),
            Err(e) => failure = Some(e.to_string()),
        }
    }
    if let Some(e) = failure {
        return Err(LoadError::ExecutorFailed(e));
    }
    let measure_start = start + cfg.warmup;
    let mut report = LoadReport::empty(cfg, histogram);
    let mut end = measure_start;
    for (cpu, connections, out) in outputs {
        report.requests += out.requests;
        report.bytes += out.bytes;
        report.errors.merge(&out.errors);
        report
            .latency
            .add(&out.latency)
            .map_err(|_| LoadError::ExecutorFailed("latency histograms do not merge".into()))?;
        report.executors.push(ExecutorReport {
            cpu,
            connections,
            requests: out.requests,
        });
        if let Some(e) = out.end {
            end = end.max(e);
        }
    }
    report.duration = end.saturating_duration_since(measure_start);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_split_exactly() {
        assert_eq!(split_budget(1000, &[25, 25], 50), vec![500, 500]);
        assert_eq!(split_budget(10, &[1, 1, 1], 3), vec![4, 3, 3]);
        assert_eq!(split_budget(7, &[3, 1], 4), vec![6, 1]);
        assert_eq!(split_budget(0, &[1], 1), vec![0]);
    }

    #[test]
    fn error_counts() {
        let mut e = ErrorCounts::default();
        e.add(ErrorKind::Timeout, 2);
        e.add(ErrorKind::Status, 1);
        let mut f = ErrorCounts::default();
        f.merge(&e);
        f.merge(&e);
        assert_eq!((f.timeout, f.status, f.total()), (4, 2, 6));
    }
}
