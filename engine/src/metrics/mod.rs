//! Per-core counters and a latency histogram, written only by their core, published as
//! snapshots off the request path (when the control plane asks for them) and merged when read.

pub mod admin;

use std::cell::{Cell, RefCell};

use hdrhistogram::Histogram;
use ringway_protocols::l4::uring::UringStats;

/// Highest latency the histogram records, in microseconds (one hour); larger values saturate.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Counters of one core, updated without atomics.
pub struct CoreMetrics {
    /// Connections accepted.
    pub accepted: Cell<u64>,
    /// Connections open now.
    pub active: Cell<u64>,
    /// Requests whose head was parsed.
    pub requests: Cell<u64>,
    /// Responses by class: index 1..=5 for 1xx..5xx.
    pub responses: [Cell<u64>; 6],
    /// Requests that ended in an error (any side).
    pub errors: Cell<u64>,
    /// Retries taken.
    pub retries: Cell<u64>,
    /// New upstream connections opened.
    pub upstream_connects: Cell<u64>,
    /// Upstream connections taken from the pool.
    pub upstream_reused: Cell<u64>,
    latency: RefCell<Option<Histogram<u64>>>,
}

impl Default for CoreMetrics {
    fn default() -> Self {
        CoreMetrics {
            accepted: Cell::new(0),
            active: Cell::new(0),
            requests: Cell::new(0),
            responses: Default::default(),
            errors: Cell::new(0),
            retries: Cell::new(0),
            upstream_connects: Cell::new(0),
            upstream_reused: Cell::new(0),
            latency: RefCell::new(Histogram::new_with_bounds(1, MAX_LATENCY_US, 2).ok()),
        }
    }
}

/// Adds one to a counter.
pub fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

impl CoreMetrics {
    /// Records a finished request's status and latency.
    pub fn record_response(&self, status: u16, latency_us: u64) {
        let class = usize::from(status / 100).min(5);
        bump(&self.responses[class]);
        if let Some(h) = self.latency.borrow_mut().as_mut() {
            h.saturating_record(latency_us.max(1));
        }
    }

    /// A copy of the counters that can cross threads. `panics` is this core's caught-panic count.
    pub fn snapshot(&self, core: usize, panics: u64) -> CoreStats {
        let latency = self.latency.borrow();
        let q = |p: f64| latency.as_ref().map_or(0, |h| h.value_at_quantile(p));
        CoreStats {
            core,
            accepted: self.accepted.get(),
            active: self.active.get(),
            requests: self.requests.get(),
            responses: std::array::from_fn(|i| self.responses[i].get()),
            errors: self.errors.get(),
            retries: self.retries.get(),
            upstream_connects: self.upstream_connects.get(),
            upstream_reused: self.upstream_reused.get(),
            panics,
            read_buffers_in_use: ringway_protocols::l4::pool_stats().in_use,
            uring: ringway_protocols::l4::uring::stats(),
            latency_p50_us: q(0.5),
            latency_p99_us: q(0.99),
        }
    }
}

/// One core's counters at a point in time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoreStats {
    /// The CPU.
    pub core: usize,
    /// Connections accepted.
    pub accepted: u64,
    /// Connections open.
    pub active: u64,
    /// Requests parsed.
    pub requests: u64,
    /// Responses by class (index 1..=5).
    pub responses: [u64; 6],
    /// Requests that ended in an error.
    pub errors: u64,
    /// Retries.
    pub retries: u64,
    /// Upstream connections opened.
    pub upstream_connects: u64,
    /// Upstream connections reused from the pool.
    pub upstream_reused: u64,
    /// Panics caught in phases.
    pub panics: u64,
    /// Read buffers this core's pool has handed out and not got back (bytes held in user
    /// space = at most this x 64 KiB).
    pub read_buffers_in_use: usize,
    /// This core's io_uring counters (all zero when it runs the glommio backend).
    pub uring: UringStats,
    /// Median request latency, microseconds.
    pub latency_p50_us: u64,
    /// 99th percentile request latency, microseconds.
    pub latency_p99_us: u64,
}

/// Reads one counter of a core's stats.
type Counter = fn(&CoreStats) -> u64;

/// Every core's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// One entry per core, in CPU order.
    pub cores: Vec<CoreStats>,
}

impl ServerStats {
    /// Sum of a counter over cores.
    pub fn total(&self, f: impl Fn(&CoreStats) -> u64) -> u64 {
        self.cores.iter().map(f).sum()
    }

    /// Renders the counters in Prometheus' text format.
    pub fn to_prometheus(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let write = |out: &mut String, counters: &[(&str, Counter)]| {
            for (name, f) in counters {
                for c in &self.cores {
                    let _ = writeln!(out, "{name}{{core=\"{}\"}} {}", c.core, f(c));
                }
            }
        };
        write(
            &mut out,
            &[
                ("ringway_connections_accepted_total", |c| c.accepted),
                ("ringway_connections_active", |c| c.active),
                ("ringway_requests_total", |c| c.requests),
                ("ringway_errors_total", |c| c.errors),
                ("ringway_retries_total", |c| c.retries),
                ("ringway_upstream_connects_total", |c| c.upstream_connects),
                ("ringway_upstream_reused_total", |c| c.upstream_reused),
                ("ringway_panics_total", |c| c.panics),
                ("ringway_latency_p99_microseconds", |c| c.latency_p99_us),
            ],
        );
        // The rings' counters, when a core has one (none under the glommio backend).
        if self.cores.iter().any(|c| c.uring.enters > 0) {
            write(
                &mut out,
                &[
                    ("ringway_uring_enters_total", |c| c.uring.enters),
                    ("ringway_uring_completions_total", |c| c.uring.completions),
                    ("ringway_uring_parks_total", |c| c.uring.parks),
                    ("ringway_uring_ops_in_flight", |c| c.uring.in_flight as u64),
                    ("ringway_uring_cancels_total", |c| c.uring.cancels),
                    ("ringway_uring_recv_buffer_fallbacks_total", |c| {
                        c.uring.recv_buffer_fallbacks
                    }),
                    ("ringway_uring_ring_buffers_lent", |c| {
                        c.uring.ring_buffers_lent as u64
                    }),
                    ("ringway_uring_short_sends_total", |c| c.uring.short_sends),
                    ("ringway_uring_stale_completions_total", |c| {
                        c.uring.stale_completions
                    }),
                    ("ringway_uring_registered_files_total", |c| {
                        c.uring.registered_files
                    }),
                    ("ringway_uring_registered_file_failures_total", |c| {
                        c.uring.registered_file_failures
                    }),
                ],
            );
        }
        for c in &self.cores {
            for class in 1..=5 {
                let _ = writeln!(
                    out,
                    "ringway_responses_total{{core=\"{}\",class=\"{class}xx\"}} {}",
                    c.core, c.responses[class]
                );
            }
        }
        out
    }
}
