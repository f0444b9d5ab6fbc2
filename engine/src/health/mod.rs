//! The balancer's control plane: one plain thread per process, beside the request cores, that
//! re-resolves `host:port` peers ([`Discovery`]) and runs active health checks ([`probe`]),
//! then publishes each upstream's new `Arc<BackendSet>` snapshot.
//!
//! Publication is a [`Published`] slot per upstream: a generation counter on its own cache line
//! that request cores read once per request (one relaxed load; the line is written only when a
//! snapshot changes), and the snapshot itself behind a lock taken only after the generation
//! moved. Health is thus judged once per process, not once per core, and no core writes memory
//! another core reads on the request path.

pub mod probe;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringway_balancer::{
    ActiveHealth, Algorithm, BackendSet, Discovery, HealthCheckConfig, Transition,
};

/// The most probes one control plane runs at once (each a blocking socket on its own thread).
pub const MAX_PROBE_THREADS: usize = 16;

/// How long the control plane sleeps at most when it has nothing scheduled.
const IDLE_WAIT: Duration = Duration::from_secs(3600);

/// The generation counter, alone on its cache line: cores read it on every request and it is
/// written only when a snapshot changes.
#[repr(align(128))]
#[derive(Debug)]
struct Generation(AtomicU64);

#[derive(Debug)]
struct Snapshot {
    generation: u64,
    set: Arc<BackendSet>,
}

/// One upstream's current snapshot, written by the control plane and read by every core.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use ringway::health::Published;
/// use ringway_balancer::{Backend, BackendSet};
///
/// let set = BackendSet::new(vec![Backend::new("127.0.0.1:9001".parse().unwrap())]).unwrap();
/// let slot = Published::new(Arc::new(set.clone()));
/// let seen = slot.generation();
/// slot.publish(Arc::new(set));
/// assert_ne!(slot.generation(), seen); // a core notices and calls `load`
/// let (generation, _set) = slot.load();
/// assert_eq!(generation, slot.generation());
/// ```
#[derive(Debug)]
pub struct Published {
    generation: Generation,
    current: Mutex<Snapshot>,
}

impl Published {
    /// A slot holding `set` as generation 0.
    pub fn new(set: Arc<BackendSet>) -> Published {
        Published {
            generation: Generation(AtomicU64::new(0)),
            current: Mutex::new(Snapshot { generation: 0, set }),
        }
    }

    /// The generation of the latest snapshot: one relaxed load, for the request path. When it
    /// differs from the one a core last saw, the core calls [`load`](Self::load).
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.0.load(Ordering::Relaxed)
    }

    /// The latest snapshot and its generation (takes the slot's lock: call it when
    /// [`generation`](Self::generation) moved, not on every request).
    pub fn load(&self) -> (u64, Arc<BackendSet>) {
        let s = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        (s.generation, Arc::clone(&s.set))
    }

    /// Replaces the snapshot; returns its generation.
    pub fn publish(&self, set: Arc<BackendSet>) -> u64 {
        let mut s = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        s.generation += 1;
        s.set = set;
        // Release pairs with the lock a reader takes after seeing the new value.
        self.generation.0.store(s.generation, Ordering::Release);
        s.generation
    }
}

/// What the control plane maintains for one upstream.
pub struct UpstreamPlan {
    /// The upstream's name, for logs.
    pub name: String,
    /// Its algorithm: new snapshots get its hash table built before they are published.
    pub algorithm: Algorithm,
    /// Where its snapshots go; holds the first one.
    pub published: Arc<Published>,
    /// Where new backend lists come from, when they can change (see
    /// [`Discovery::resolve_interval`]).
    pub discovery: Option<Box<dyn Discovery + Send>>,
    /// Active health checks, if any.
    pub health: Option<HealthCheckConfig>,
}

impl std::fmt::Debug for UpstreamPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPlan")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("discovery", &self.discovery.is_some())
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

/// The running control plane thread.
///
/// Dropping it stops the thread: it notices at once when idle, or after the probes in flight
/// end (each bounded by its check's `timeout`); the drop does not wait. [`stop`](Self::stop)
/// also waits.
#[derive(Debug)]
pub struct ControlPlane {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ControlPlane {
    /// Starts the thread for `plans`, or returns `None` when no upstream has anything to do
    /// (only static peers, no health checks).
    ///
    /// SIGTERM and SIGINT are blocked in the thread, so they reach the thread that waits for
    /// them (`Server::run`) even though this one may start first.
    ///
    /// # Errors
    /// The thread cannot be spawned.
    pub fn start(plans: Vec<UpstreamPlan>) -> io::Result<Option<ControlPlane>> {
        let now = Instant::now();
        let tracked: Vec<Tracked> = plans
            .into_iter()
            .filter_map(|p| Tracked::new(p, now))
            .collect();
        if tracked.is_empty() {
            return Ok(None);
        }
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("ringway-control".into())
            .spawn(move || run(tracked, &rx))?;
        Ok(Some(ControlPlane {
            stop: Some(tx),
            thread: Some(thread),
        }))
    }

    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Closing the channel wakes the thread's wait with `Disconnected`.
        self.stop.take();
    }
}

/// The control plane's state for one upstream.
struct Tracked {
    name: String,
    algorithm: Algorithm,
    published: Arc<Published>,
    discovery: Option<Box<dyn Discovery + Send>>,
    next_resolve: Option<Instant>,
    /// The current backend list, all marked up; published with `active`'s flags applied.
    base: BackendSet,
    active: Option<ActiveHealth>,
    next_probe: Instant,
}

impl Tracked {
    fn new(plan: UpstreamPlan, now: Instant) -> Option<Tracked> {
        let next_resolve = plan
            .discovery
            .as_ref()
            .and_then(|d| d.resolve_interval())
            .map(|i| now + i);
        if next_resolve.is_none() && plan.health.is_none() {
            return None;
        }
        // The first snapshot has every backend up: it is the base health flags are applied to.
        let base = (*plan.published.load().1).clone();
        let active = plan.health.map(|h| ActiveHealth::new(h, &base));
        Some(Tracked {
            name: plan.name,
            algorithm: plan.algorithm,
            published: plan.published,
            discovery: plan.discovery,
            next_resolve,
            base,
            active,
            next_probe: now,
        })
    }

    fn interval(&self) -> Option<Duration> {
        self.active.as_ref().map(|a| a.config().interval)
    }

    fn resolve(&mut self, now: Instant) {
        let Some(d) = self.discovery.as_mut() else {
            return;
        };
        self.next_resolve = d.resolve_interval().map(|i| now + i);
        let backends = match d.discover() {
            Ok(b) => b,
            Err(e) => {
                log::warn!("upstream {}: keeping its backends: {e}", self.name);
                return;
            }
        };
        if backends.as_slice() == self.base.backends() {
            return;
        }
        let set = match BackendSet::new(backends) {
            Ok(s) => s,
            Err(e) => {
                log::warn!("upstream {}: ignoring a discovered list: {e}", self.name);
                return;
            }
        };
        set.prepare(self.algorithm);
        log::info!(
            "upstream {}: {} backends after re-resolving",
            self.name,
            set.len()
        );
        if let Some(a) = self.active.as_mut() {
            a.update(&set);
        }
        self.base = set;
        self.publish();
    }

    fn publish(&self) {
        let set = match &self.active {
            Some(a) => match self.base.with_health(a.snapshot()) {
                Ok(s) => s,
                Err(e) => {
                    log::error!("upstream {}: {e}", self.name);
                    return;
                }
            },
            None => self.base.clone(),
        };
        self.published.publish(Arc::new(set));
    }

    /// Applies one round of probe results; publishes if a backend flipped.
    fn record(&mut self, results: &[(SocketAddr, bool)]) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mut changed = false;
        for &(addr, ok) in results {
            match active.record_addr(addr, ok) {
                Some(Transition::BecameUnhealthy) => {
                    log::warn!("upstream {}: {addr} is down (health check)", self.name);
                    changed = true;
                }
                Some(Transition::BecameHealthy) => {
                    log::info!("upstream {}: {addr} is up again (health check)", self.name);
                    changed = true;
                }
                None => {}
            }
        }
        if changed {
            self.publish();
        }
    }
}

fn run(mut tracked: Vec<Tracked>, stop: &mpsc::Receiver<()>) {
    block_stop_signals();
    loop {
        let now = Instant::now();
        for t in &mut tracked {
            if t.next_resolve.is_some_and(|at| at <= now) {
                t.resolve(now);
            }
        }
        let due: Vec<usize> = (0..tracked.len())
            .filter(|&i| tracked[i].active.is_some() && tracked[i].next_probe <= now)
            .collect();
        if !due.is_empty() {
            let jobs: Vec<(usize, SocketAddr, HealthCheckConfig)> = due
                .iter()
                .flat_map(|&i| {
                    let a = tracked[i].active.as_ref();
                    let targets = a.map(|a| a.targets().to_vec()).unwrap_or_default();
                    let config = a.map(|a| a.config().clone()).unwrap_or_default();
                    targets
                        .into_iter()
                        .map(move |addr| (i, addr, config.clone()))
                })
                .collect();
            let results = run_probes(&jobs);
            for &i in &due {
                let mine: Vec<(SocketAddr, bool)> = jobs
                    .iter()
                    .zip(&results)
                    .filter(|((j, _, _), _)| *j == i)
                    .map(|((_, addr, _), ok)| (*addr, *ok))
                    .collect();
                let t = &mut tracked[i];
                t.record(&mine);
                let interval = t.interval().unwrap_or(IDLE_WAIT);
                // Keep the cadence, unless the round overran it.
                t.next_probe = (t.next_probe + interval).max(Instant::now());
            }
        }
        let next = tracked
            .iter()
            .flat_map(|t| [t.next_resolve, t.active.as_ref().map(|_| t.next_probe)])
            .flatten()
            .min();
        let wait = next.map_or(IDLE_WAIT, |at| at.saturating_duration_since(Instant::now()));
        match stop.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Runs every probe, at most [`MAX_PROBE_THREADS`] at once; results in `jobs` order.
fn run_probes(jobs: &[(usize, SocketAddr, HealthCheckConfig)]) -> Vec<bool> {
    let next = AtomicUsize::new(0);
    let work = || {
        let mut out = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some((_, addr, config)) = jobs.get(i) else {
                return out;
            };
            out.push((i, probe::probe(*addr, config)));
        }
    };
    let mut results = vec![false; jobs.len()];
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..jobs.len().min(MAX_PROBE_THREADS))
            .filter_map(|n| {
                std::thread::Builder::new()
                    .name(format!("ringway-probe-{n}"))
                    .spawn_scoped(s, work)
                    .ok()
            })
            .collect();
        // Whatever no thread could be spawned for, this thread does itself.
        let mut done = work();
        for h in handles {
            if let Ok(r) = h.join() {
                done.extend(r);
            }
        }
        for (i, ok) in done {
            results[i] = ok;
        }
    });
    results
}

/// Blocks SIGTERM and SIGINT in the calling thread, so the process-directed signals go to the
/// thread that waits for them.
fn block_stop_signals() {
    // SAFETY: sigset_t manipulation on a local set; pthread_sigmask on this thread only.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringway_balancer::{Backend, CheckKind, StaticDiscovery};

    fn set(addrs: &[SocketAddr]) -> Arc<BackendSet> {
        Arc::new(BackendSet::new(addrs.iter().map(|a| Backend::new(*a)).collect()).unwrap())
    }

    fn closed_port() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    #[test]
    fn nothing_to_do_starts_no_thread() {
        let plan = UpstreamPlan {
            name: "a".into(),
            algorithm: Algorithm::RoundRobin,
            published: Arc::new(Published::new(set(&[closed_port()]))),
            discovery: Some(Box::new(StaticDiscovery::new(Vec::new()))),
            health: None,
        };
        assert!(ControlPlane::start(vec![plan]).unwrap().is_none());
    }

    #[test]
    fn health_checks_publish_a_down_backend_and_stop_on_drop() {
        let live = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (up, down) = (live.local_addr().unwrap(), closed_port());
        let published = Arc::new(Published::new(set(&[up, down])));
        let plan = UpstreamPlan {
            name: "a".into(),
            algorithm: Algorithm::Maglev,
            published: Arc::clone(&published),
            discovery: None,
            health: Some(HealthCheckConfig {
                kind: CheckKind::Tcp,
                interval: Duration::from_millis(20),
                timeout: Duration::from_millis(20),
                unhealthy_after: 2,
                ..HealthCheckConfig::default()
            }),
        };
        let control = ControlPlane::start(vec![plan]).unwrap().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while published.generation() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let (generation, snapshot) = published.load();
        assert_eq!(generation, 1);
        assert!(snapshot.health().is_up(0) && !snapshot.health().is_up(1));
        control.stop();
    }

    /// A discovery whose list changes on every call.
    struct Growing(Vec<Backend>);

    impl Discovery for Growing {
        fn discover(&mut self) -> Result<Vec<Backend>, ringway_balancer::DiscoveryError> {
            let port = 20_000 + self.0.len() as u16;
            self.0
                .push(Backend::new(SocketAddr::from(([127, 0, 0, 1], port))));
            Ok(self.0.clone())
        }

        fn resolve_interval(&self) -> Option<Duration> {
            Some(Duration::from_millis(10))
        }
    }

    #[test]
    fn discovery_publishes_new_lists() {
        let published = Arc::new(Published::new(set(&[])));
        let plan = UpstreamPlan {
            name: "a".into(),
            algorithm: Algorithm::Ketama,
            published: Arc::clone(&published),
            discovery: Some(Box::new(Growing(Vec::new()))),
            health: None,
        };
        let control = ControlPlane::start(vec![plan]).unwrap().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while published.load().1.len() < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(published.load().1.len() >= 3);
        drop(control);
    }
}
