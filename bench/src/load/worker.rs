//! One load executor: its connection tasks (one outstanding request each), the ticker that
//! enforces per-request timeouts and the end of the run, and the counters it hands back.
//!
//! Nothing here allocates per request: requests are pre-serialized and their buffers go back
//! and forth through the owned-buffer writes, responses are parsed in the transport's pooled
//! read buffers, and timeouts cost two `Cell` stores per request (the ticker shuts down the
//! socket of an overdue request, which ends its pending read) instead of a timer each.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::timer::Timer;
use hdrhistogram::Histogram;
use ringway_protocols::l4::{Backend, Stream};

use super::plan::Plan;
use super::response::{Response, ResponseReader};
use super::{ErrorCounts, ErrorKind};
use crate::runtime::StopSignal;

/// Interval of the ticker's rounds after the deadline, until every connection task ended.
const AFTER_HALT_TICK: Duration = Duration::from_millis(20);

/// Longest interval between two ticker rounds (timeouts, progress counters).
const MAX_TICK: Duration = Duration::from_millis(100);

/// Stand-in for "no time limit" when only `max_requests` bounds the run.
const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// One executor's counters for the progress display, on their own cache line.
#[repr(align(128))]
#[derive(Debug, Default)]
pub(crate) struct Published {
    pub(crate) requests: AtomicU64,
    pub(crate) errors: AtomicU64,
}

/// What one executor is asked to do.
#[derive(Debug, Clone)]
pub(crate) struct Assignment {
    /// Global indices of its connections (they stagger the open-loop schedule).
    pub(crate) conns: Vec<usize>,
    /// Its share of `max_requests`.
    pub(crate) budget: Option<u64>,
}

/// What one executor hands back.
#[derive(Debug)]
pub(crate) struct CoreOutput {
    pub(crate) requests: u64,
    pub(crate) bytes: u64,
    pub(crate) errors: ErrorCounts,
    pub(crate) latency: Histogram<u64>,
    /// When this executor stopped measuring (at most the deadline).
    pub(crate) end: Option<Instant>,
}

/// The in-flight request of one connection task, as the ticker sees it.
struct Slot {
    fd: Cell<RawFd>,
    deadline: Cell<Option<Instant>>,
    fired: Cell<bool>,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            fd: Cell::new(-1),
            deadline: Cell::new(None),
            fired: Cell::new(false),
        }
    }

    fn arm(&self, fd: RawFd, deadline: Instant) {
        self.fd.set(fd);
        self.deadline.set(Some(deadline));
        self.fired.set(false);
    }

    /// Ends the request; true when the ticker timed it out (its socket is then shut down).
    fn disarm(&self) -> bool {
        self.fd.set(-1);
        self.deadline.set(None);
        self.fired.get()
    }

    fn shutdown(&self) {
        let fd = self.fd.get();
        if fd >= 0 {
            // SAFETY: an armed slot's fd belongs to a stream its task owns and keeps open until it
            // disarms the slot (same thread, so no race); shutdown only ends pending I/O on it.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
    }
}

/// One executor's state, shared by its tasks.
struct Core {
    plan: Arc<Plan>,
    start: Instant,
    measure_start: Instant,
    deadline: Instant,
    stop: Rc<StopSignal>,
    budget: Cell<Option<u64>>,
    slots: RefCell<Vec<Rc<Slot>>>,
    requests: Cell<u64>,
    bytes: Cell<u64>,
    errors: Cell<ErrorCounts>,
    latency: RefCell<Histogram<u64>>,
    published: Arc<Published>,
}

impl Core {
    fn take_ticket(&self) -> bool {
        match self.budget.get() {
            None => true,
            Some(0) => false,
            Some(n) => {
                self.budget.set(Some(n - 1));
                true
            }
        }
    }

    /// Records a complete response that ended at `now`.
    fn record(&self, intended: Instant, now: Instant, resp: Response) {
        self.requests.set(self.requests.get() + 1);
        self.bytes.set(self.bytes.get() + resp.bytes);
        if !(200..400).contains(&resp.status) {
            self.record_error(ErrorKind::Status);
        }
        let us =
            u64::try_from(now.saturating_duration_since(intended).as_micros()).unwrap_or(u64::MAX);
        self.latency.borrow_mut().saturating_record(us);
    }

    fn record_error(&self, kind: ErrorKind) {
        let mut e = self.errors.get();
        e.add(kind, 1);
        self.errors.set(e);
    }

    fn publish(&self) {
        self.published
            .requests
            .store(self.requests.get(), Ordering::Relaxed);
        self.published
            .errors
            .store(self.errors.get().total(), Ordering::Relaxed);
    }

    /// Shuts down the socket of every request past its deadline.
    fn expire(&self, now: Instant) {
        for slot in self.slots.borrow().iter() {
            if let Some(d) = slot.deadline.get() {
                if d <= now && !slot.fired.get() {
                    slot.fired.set(true);
                    slot.shutdown();
                }
            }
        }
    }

    /// Ends the run: wakes every waiter and cuts every in-flight request.
    fn halt(&self) {
        self.stop.fire();
        for slot in self.slots.borrow().iter() {
            slot.shutdown();
        }
    }
}

/// The open-loop schedule of one connection: intended send times `start + phase + k * interval`,
/// phases spread evenly over the connections so the aggregate rate is constant.
struct Schedule {
    start: Instant,
    phase_ns: u64,
    interval_ns: u64,
    k: u64,
}

impl Schedule {
    fn new(start: Instant, interval: Duration, index: usize, connections: usize) -> Schedule {
        let interval_ns = u64::try_from(interval.as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        let phase = u128::from(interval_ns) * index as u128 / connections.max(1) as u128;
        Schedule {
            start,
            phase_ns: u64::try_from(phase).unwrap_or(0),
            interval_ns,
            k: 0,
        }
    }

    fn next(&mut self) -> Instant {
        let offset = self
            .phase_ns
            .saturating_add(self.interval_ns.saturating_mul(self.k));
        self.k += 1;
        self.start
            .checked_add(Duration::from_nanos(offset))
            .unwrap_or(self.start + FOREVER)
    }
}

/// Why an exchange produced no response.
enum Failure {
    /// The run ended while it was in flight: not counted.
    Stopped,
    /// Counted as this kind of error.
    Error(ErrorKind),
}

/// The body of one executor: waits for the common start instant, runs its connections to the
/// end of the run and returns its counters.
pub(crate) async fn executor_main<B: Backend>(
    plan: Arc<Plan>,
    assignment: Assignment,
    histogram: Histogram<u64>,
    published: Arc<Published>,
    ready: mpsc::Sender<()>,
    go: mpsc::Receiver<Instant>,
) -> CoreOutput
where
    B::Stream: AsRawFd + 'static,
{
    crate::runtime::block_stop_signals();
    let empty = |latency| CoreOutput {
        requests: 0,
        bytes: 0,
        errors: ErrorCounts::default(),
        latency,
        end: None,
    };
    if ready.send(()).is_err() {
        return empty(histogram);
    }
    drop(ready);
    // Blocks this executor thread, which has nothing else to do until the run starts.
    let Ok(start) = go.recv() else {
        return empty(histogram);
    };
    let measure_start = start + plan.warmup;
    let deadline = match plan.duration {
        Some(d) => measure_start + d,
        None => measure_start.checked_add(FOREVER).unwrap_or(measure_start),
    };
    let core = Rc::new(Core {
        plan: plan.clone(),
        start,
        measure_start,
        deadline,
        stop: Rc::new(StopSignal::default()),
        budget: Cell::new(assignment.budget),
        slots: RefCell::new(Vec::new()),
        requests: Cell::new(0),
        bytes: Cell::new(0),
        errors: Cell::new(ErrorCounts::default()),
        latency: RefCell::new(histogram),
        published,
    });
    let ticker = glommio::spawn_local(ticker(core.clone()));
    let mut tasks = Vec::with_capacity(assignment.conns.len());
    for &index in &assignment.conns {
        let slot = Rc::new(Slot::new());
        core.slots.borrow_mut().push(slot.clone());
        tasks.push(glommio::spawn_local(connection::<B>(
            core.clone(),
            index,
            slot,
        )));
    }
    for t in tasks {
        t.await;
    }
    drop(ticker);
    let end = Instant::now().min(deadline);
    core.publish();
    let latency = core.latency.borrow().clone();
    CoreOutput {
        requests: core.requests.get(),
        bytes: core.bytes.get(),
        errors: core.errors.get(),
        latency,
        end: Some(end),
    }
}

/// Publishes counters, times out overdue requests, and halts everything at the deadline.
async fn ticker(core: Rc<Core>) {
    let tick = (core.plan.timeout / 4).clamp(Duration::from_millis(1), MAX_TICK);
    let mut timer = Timer::new(tick);
    loop {
        let now = Instant::now();
        core.publish();
        if now >= core.deadline {
            // Halt, and keep halting until the connection tasks have all ended (the executor
            // drops this task then): a socket armed after a halt is cut by the next one, and a
            // live timer bounds every park of the executor. Seen without it: `load --close`
            // parked in io_uring_enter for good after its deadline, about one run in four.
            core.halt();
            timer.reset(AFTER_HALT_TICK);
        } else {
            core.expire(now);
            timer.reset(tick.min(core.deadline - now));
        }
        (&mut timer).await;
    }
}

/// One connection task: sends requests one at a time, closed or open loop, until the run ends
/// or its executor's share of `max_requests` is used up.
async fn connection<B: Backend>(core: Rc<Core>, index: usize, slot: Rc<Slot>)
where
    B::Stream: AsRawFd,
{
    let plan = core.plan.clone();
    let n = plan.targets.len();
    let mut reqs: Vec<Vec<u8>> = plan.targets.iter().map(|t| t.request.clone()).collect();
    let mut streams: Vec<Option<B::Stream>> = plan.addrs.iter().map(|_| None).collect();
    let mut readers: Vec<ResponseReader> = plan
        .addrs
        .iter()
        .map(|_| ResponseReader::default())
        .collect();
    let mut next = index % n;
    let mut schedule = plan
        .conn_interval
        .map(|iv| Schedule::new(core.start, iv, index, plan.connections));
    let mut timer: Option<Timer> = None;
    // Closed loop: when the previous response just ended, its end is this request's start (one
    // clock read per request instead of two).
    let mut last_end: Option<Instant> = None;
    loop {
        if core.stop.is_fired() {
            break;
        }
        // When the request is due (open loop) or starts (closed loop), and when it is sent.
        let (intended, sent) = match schedule.as_mut() {
            Some(s) => {
                let t = s.next();
                if t >= core.deadline || core.budget.get() == Some(0) {
                    break;
                }
                let mut now = Instant::now();
                if t > now {
                    let wait = t - now;
                    match timer.as_mut() {
                        Some(tm) => tm.reset(wait),
                        None => timer = Some(Timer::new(wait)),
                    }
                    if let Some(tm) = timer.as_mut() {
                        tm.await;
                    }
                    if core.stop.is_fired() {
                        break;
                    }
                    now = t;
                }
                (t, now)
            }
            None => {
                let now = last_end.take().unwrap_or_else(Instant::now);
                (now, now)
            }
        };
        let measured = intended >= core.measure_start;
        if measured && !core.take_ticket() {
            break;
        }
        let ti = next;
        next = if next + 1 == n { 0 } else { next + 1 };
        let ai = plan.targets[ti].addr_index;
        let result = exchange::<B>(
            &core,
            &slot,
            &mut streams[ai],
            &mut readers[ai],
            &mut reqs[ti],
            plan.addrs[ai],
            sent,
        )
        .await;
        match result {
            Ok(resp) => {
                let now = Instant::now();
                if measured {
                    core.record(intended, now, resp);
                }
                last_end = Some(now);
            }
            Err(Failure::Stopped) => break,
            Err(Failure::Error(kind)) => {
                if core.stop.is_fired() {
                    break;
                }
                if measured {
                    core.record_error(kind);
                }
            }
        }
    }
    slot.disarm();
}

/// One request and its response on the connection to `addr`, opening it first if needed;
/// `sent` (about now) starts the request's timeout.
async fn exchange<B: Backend>(
    core: &Core,
    slot: &Slot,
    stream: &mut Option<B::Stream>,
    reader: &mut ResponseReader,
    request: &mut Vec<u8>,
    addr: SocketAddr,
    sent: Instant,
) -> Result<Response, Failure>
where
    B::Stream: AsRawFd,
{
    let plan = &core.plan;
    if stream.is_none() {
        let connected = future::or(
            async { Some(B::connect(addr, plan.timeout).await) },
            async {
                core.stop.wait().await;
                None
            },
        )
        .await;
        match connected {
            None => return Err(Failure::Stopped),
            Some(Err(_)) => return Err(Failure::Error(ErrorKind::Connect)),
            Some(Ok(s)) => {
                *stream = Some(s);
                reader.reset();
            }
        }
    }
    let Some(s) = stream.as_mut() else {
        return Err(Failure::Error(ErrorKind::Connect));
    };
    slot.arm(s.as_raw_fd(), sent + plan.timeout);
    // The ticker halts the run once and then exits: a socket armed after that halt would have
    // nobody to cut it, and a request the peer never answers would hang the run. Halting fires
    // `stop` before cutting the armed sockets, and this task runs on the same thread, so either
    // the halt saw this socket armed or `stop` is visible here.
    if core.stop.is_fired() {
        slot.disarm();
        *stream = None;
        return Err(Failure::Stopped);
    }
    let (written, buf) = s.write_all(std::mem::take(request)).await;
    *request = buf;
    let outcome = match written {
        Ok(()) => reader.read(s, plan.head_method).await,
        Err(_) => Err(ErrorKind::Write),
    };
    let timed_out = slot.disarm();
    match outcome {
        Ok(resp) if !timed_out => {
            if resp.close || plan.close {
                *stream = None;
            }
            Ok(resp)
        }
        Ok(_) => {
            *stream = None;
            Err(Failure::Error(ErrorKind::Timeout))
        }
        Err(kind) => {
            *stream = None;
            Err(Failure::Error(if timed_out {
                ErrorKind::Timeout
            } else {
                kind
            }))
        }
    }
}
