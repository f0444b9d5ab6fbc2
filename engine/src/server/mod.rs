//! The server lifecycle: build listeners, start one pinned executor per core, serve, and shut
//! down gracefully on request or on SIGTERM/SIGINT.
//!
//! The calling thread is the control plane: it owns the signal handling and talks to the
//! cores through [`ServerHandle`]. Nothing here runs on a timer while the server is idle: the
//! control plane rings a core's doorbell ([`rt::Doorbell`]) when it sets a flag or wants the
//! core's counters, a core sweeps its upstream pool only while the pool holds connections,
//! and the control thread sleeps in `poll` on its signals, its doorbell (rung by cores as
//! they end) and the upgrade socket.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use ringway_protocols::l4::glommio::GlommioBackend;
use ringway_protocols::l4::uring::{self, UringBackend};
use ringway_protocols::l4::{probe, Backend, Listener};
use ringway_protocols::rt;

use crate::listen::{reuseport_sockets, DEFAULT_BACKLOG};
use crate::metrics::{bump, CoreMetrics, CoreStats, ServerStats};
use crate::proxy::panic::{caught_panics, guard, install_hook, Guarded, PanicHookMode};
use crate::proxy::{serve_connection, CoreCtx, HttpSettings, ProxyHttp};
use crate::runtime::{
    check_memlock, poll_readable, raise_nofile, resolve_cpus, CoreId, CpuList, LocalNotify,
    LocalSignal, RuntimeError, WaitSlot, IO_MEMORY,
};
use crate::upstream::{Pool, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_IDLE_PER_PEER};

/// Default time in-flight requests get to finish after shutdown begins.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10);
/// Default retries after the first attempt.
pub const DEFAULT_MAX_RETRIES: usize = 2;
/// Default connection cap per listener per core.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// How long [`ServerHandle::stats`] waits for a core to publish fresh counters before it
/// reports the ones the core last published.
const STATS_WAIT: Duration = Duration::from_millis(100);
/// How often a core that cannot watch its doorbell looks at the control plane's flags.
const FALLBACK_TICK: Duration = Duration::from_millis(100);
/// How often a core sweeps its upstream pool while the pool holds idle connections: those
/// idle past the idle timeout, or closed by their peer, are closed within this much more
/// (HAProxy's `pool-purge-delay` defaults to the same).
const POOL_SWEEP: Duration = Duration::from_secs(5);
/// How long the control thread leaves the upgrade socket alone after accepting on it failed.
const UPGRADE_RETRY: Duration = Duration::from_millis(200);
/// How long a core waits for its connection tasks to close their streams after the grace period.
const CLOSE_WAIT: Duration = Duration::from_millis(200);
/// Back-off after an accept failed for lack of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// One listening address and its HTTP settings.
#[derive(Clone, Debug)]
pub struct ListenerConf {
    /// Address to bind (port 0 picks one; every core shares it).
    pub addr: SocketAddr,
    /// Listen backlog per core.
    pub backlog: i32,
    /// Connections served at once per core on this listener; accepting pauses at the cap.
    pub max_connections: usize,
    /// Limits and timeouts.
    pub http: HttpSettings,
}

impl ListenerConf {
    /// A listener on `addr` with default settings.
    pub fn new(addr: SocketAddr) -> ListenerConf {
        ListenerConf {
            addr,
            backlog: DEFAULT_BACKLOG,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            http: HttpSettings::default(),
        }
    }
}

/// How to run the server.
#[derive(Clone, Debug)]
pub struct ServerConf {
    /// CPUs to run on, one executor each. By default all.
    pub cpus: CpuList,
    /// Listening addresses.
    pub listeners: Vec<ListenerConf>,
    /// Time in-flight requests get after shutdown begins. By default 10 s.
    pub grace_period: Duration,
    /// Retries after the first attempt (the phases may refuse any). By default 2.
    pub max_retries: usize,
    /// Idle upstream connections kept per peer per core. By default 32.
    pub pool_max_idle_per_peer: usize,
    /// How long an idle upstream connection is kept. By default 60 s.
    pub pool_idle_timeout: Duration,
    /// What the panic hook does with caught phase panics. By default quiet.
    pub panic_hook: PanicHookMode,
    /// Address of the admin endpoint (`/metrics`, `/healthz`). By default none.
    pub admin: Option<SocketAddr>,
    /// Which transport backend the cores use. By default `Auto`.
    pub io: IoBackend,
}

/// The transport backend of the request cores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IoBackend {
    /// The completion-based io_uring backend where the start-up probe finds what it needs,
    /// glommio streams otherwise (logged). The default.
    #[default]
    Auto,
    /// The completion-based io_uring backend; refuse to start without it.
    Uring,
    /// glommio's readiness-based streams.
    Glommio,
}

impl Default for ServerConf {
    fn default() -> Self {
        ServerConf {
            cpus: CpuList::All,
            listeners: Vec::new(),
            grace_period: DEFAULT_GRACE_PERIOD,
            max_retries: DEFAULT_MAX_RETRIES,
            pool_max_idle_per_peer: DEFAULT_MAX_IDLE_PER_PEER,
            pool_idle_timeout: DEFAULT_IDLE_TIMEOUT,
            panic_hook: PanicHookMode::Quiet,
            admin: None,
            io: IoBackend::Auto,
        }
    }
}

impl ServerConf {
    /// One listener on `addr`, everything else default.
    pub fn single(addr: SocketAddr) -> ServerConf {
        ServerConf {
            listeners: vec![ListenerConf::new(addr)],
            ..ServerConf::default()
        }
    }
}

/// Why the server could not start or did not stop cleanly. Non-exhaustive: new causes may
/// come with new ways to fail.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServerError {
    /// No listener configured.
    NoListeners,
    /// CPUs or locked memory.
    Runtime(RuntimeError),
    /// Binding a listener failed.
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: io::Error,
    },
    /// An executor could not start or ended abnormally.
    Executor(String),
    /// Signal handling could not be set up.
    Signals(io::Error),
    /// The control plane's wake-ups (eventfds) could not be created.
    ControlPlane(io::Error),
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::NoListeners => write!(f, "no listeners configured"),
            ServerError::Runtime(e) => write!(f, "{e}"),
            ServerError::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            ServerError::Executor(e) => write!(f, "executor failed: {e}"),
            ServerError::Signals(e) => write!(f, "cannot set up signal handling: {e}"),
            ServerError::ControlPlane(e) => write!(f, "cannot set up the control plane: {e}"),
        }
    }
}

impl std::error::Error for ServerError {}

impl From<RuntimeError> for ServerError {
    fn from(e: RuntimeError) -> Self {
        ServerError::Runtime(e)
    }
}

/// What the control plane and the cores share: flags written rarely, counters published when
/// asked.
struct Shared {
    shutdown: AtomicBool,
    /// Set by a second signal: stop waiting for in-flight requests.
    force: AtomicBool,
    running: AtomicUsize,
    /// Rung by each core as it ends, for the control thread.
    ended: rt::Doorbell,
    cores: Vec<CoreShared>,
}

/// One core's side of [`Shared`].
struct CoreShared {
    /// Rung to make the core look at the flags and publish its counters.
    bell: rt::Doorbell,
    published: Mutex<Published>,
    /// Notified at each publication.
    fresh: Condvar,
}

impl CoreShared {
    /// The core's publication, read through a poisoned lock (a panic elsewhere leaves the
    /// counters as they were, which is what a reader wants).
    fn published(&self) -> MutexGuard<'_, Published> {
        self.published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Changes the publication with `f` and wakes whoever waits for it.
    fn update(&self, f: impl FnOnce(&mut Published)) {
        f(&mut self.published());
        self.fresh.notify_all();
    }
}

/// A core's counters as it last published them.
struct Published {
    stats: CoreStats,
    /// Counts publications.
    generation: u64,
    /// The core answers its bell (false before it starts serving and once it has ended).
    serving: bool,
}

impl Shared {
    fn new(cpus: &[usize]) -> io::Result<Shared> {
        let cores = cpus
            .iter()
            .map(|&c| {
                Ok(CoreShared {
                    bell: rt::Doorbell::new()?,
                    published: Mutex::new(Published {
                        stats: CoreStats {
                            core: c,
                            ..CoreStats::default()
                        },
                        generation: 0,
                        serving: false,
                    }),
                    fresh: Condvar::new(),
                })
            })
            .collect::<io::Result<_>>()?;
        Ok(Shared {
            shutdown: AtomicBool::new(false),
            force: AtomicBool::new(false),
            running: AtomicUsize::new(cpus.len()),
            ended: rt::Doorbell::new()?,
            cores,
        })
    }

    /// Every core's counters, fresh: each serving core is asked to publish and waited for up
    /// to [`STATS_WAIT`] (all at once); one that does not answer in time is reported as it
    /// last published.
    fn stats(&self) -> ServerStats {
        let asked: Vec<Option<u64>> = self
            .cores
            .iter()
            .map(|c| {
                let p = c.published();
                let generation = p.serving.then_some(p.generation);
                drop(p);
                if generation.is_some() {
                    c.bell.ring();
                }
                generation
            })
            .collect();
        let deadline = Instant::now() + STATS_WAIT;
        let cores = self
            .cores
            .iter()
            .zip(asked)
            .map(|(c, asked)| {
                let mut p = c.published();
                while asked.is_some_and(|g| p.serving && p.generation == g) {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    p = match c.fresh.wait_timeout(p, left) {
                        Ok((p, _)) => p,
                        Err(poisoned) => poisoned.into_inner().0,
                    };
                }
                p.stats.clone()
            })
            .collect();
        ServerStats { cores }
    }

    /// Sets the shutdown flag and wakes every core to see it.
    fn begin_shutdown(&self) {
        self.shutdown.store(true, Ordering::Release);
        for c in &self.cores {
            c.bell.ring();
        }
    }

    /// Publishes core `slot`'s counters and wakes whoever waits for them.
    fn publish(&self, slot: usize, stats: CoreStats, serving: bool) {
        self.cores[slot].update(|p| {
            p.stats = stats;
            p.generation += 1;
            p.serving = serving;
        });
    }
}

/// Ends a core's life in [`Shared`] however its thread ends: not serving any more, counted
/// out, and the control thread woken. Built before the core's executor, so that an executor
/// that never starts (glommio drops the closure it was given) counts out too.
struct CoreExit {
    shared: Arc<Shared>,
    slot: usize,
}

impl Drop for CoreExit {
    fn drop(&mut self) {
        self.shared.cores[self.slot].update(|p| p.serving = false);
        self.shared.running.fetch_sub(1, Ordering::AcqRel);
        self.shared.ended.ring();
    }
}

/// A proxy server: a configuration and a per-core application factory.
pub struct Server<F> {
    conf: ServerConf,
    factory: Arc<F>,
    inherited: Vec<(SocketAddr, OwnedFd)>,
}

/// How [`Server::run_with`] runs beyond the configuration.
#[derive(Default)]
pub struct RunOptions {
    /// Listen on this Unix socket for a newer process asking for the listeners (zero-downtime
    /// upgrade). After handing them over, this process stops accepting and drains.
    pub upgrade_socket: Option<std::path::PathBuf>,
    /// Listeners received from an older process ([`crate::listen::handover::receive`]): they
    /// are adopted first, and the older process is told to drain once this one accepts.
    pub handover: Option<crate::listen::handover::Handover>,
}

impl<F, P> Server<F>
where
    F: Fn(CoreId) -> P + Send + Sync + 'static,
    P: ProxyHttp + 'static,
{
    /// A server that builds its application once per core with `factory`.
    pub fn new(conf: ServerConf, factory: F) -> Server<F> {
        Server {
            conf,
            factory: Arc::new(factory),
            inherited: Vec::new(),
        }
    }

    /// Starts every core and returns at once; the listeners are bound and queueing when this
    /// returns.
    ///
    /// # Errors
    /// No listeners, unavailable CPUs, a locked-memory budget too small, a bind failure, or an
    /// executor that could not start.
    pub fn start(mut self) -> Result<ServerHandle, ServerError> {
        if self.conf.listeners.is_empty() {
            return Err(ServerError::NoListeners);
        }
        let cpus = resolve_cpus(&self.conf.cpus)?;
        let memlock = check_memlock(cpus.len()).map_err(RuntimeError::Io)?;
        if !memlock.fits() {
            return Err(RuntimeError::Memlock(memlock).into());
        }
        log::info!(
            "locked memory: need {} bytes for {} executors ({} rings x {} bytes), limit {}{}",
            memlock.needed,
            cpus.len(),
            cpus.len() * crate::runtime::RINGS_PER_EXECUTOR,
            IO_MEMORY,
            if memlock.limit == u64::MAX {
                "unlimited".to_string()
            } else {
                memlock.limit.to_string()
            },
            if memlock.cap_ipc_lock {
                " (CAP_IPC_LOCK: not enforced)"
            } else {
                ""
            }
        );
        match raise_nofile() {
            Ok(n) => log::info!("RLIMIT_NOFILE {n}"),
            Err(e) => log::warn!("cannot raise RLIMIT_NOFILE: {e}"),
        }
        let io = choose_backend(self.conf.io)?;
        install_hook(self.conf.panic_hook);

        // Every core's sockets: inherited ones first (an upgrade), then new ones bound here so
        // port 0 resolves once and errors surface early. Socket i goes to core i % cores, and a
        // core accepts on every socket it gets, so no inherited socket (nor any connection
        // queued on it) is dropped. Duplicates are kept for the next handover.
        let mut inherited = std::mem::take(&mut self.inherited);
        let mut per_core_send: Vec<Vec<(OwnedFd, HttpSettings, usize)>> =
            (0..cpus.len()).map(|_| Vec::new()).collect();
        let mut addrs = Vec::new();
        let mut listen_fds = Vec::new();
        for l in &self.conf.listeners {
            let (mine, rest): (Vec<_>, Vec<_>) =
                inherited.into_iter().partition(|(a, _)| *a == l.addr);
            inherited = rest;
            let mut bound = l.addr;
            let mut fds: Vec<OwnedFd> = mine.into_iter().map(|(_, fd)| fd).collect();
            if !fds.is_empty() {
                log::info!(
                    "{}: adopted {} inherited listening sockets",
                    l.addr,
                    fds.len()
                );
            }
            if fds.len() < cpus.len() {
                let (more, b) = reuseport_sockets(l.addr, cpus.len() - fds.len(), l.backlog)
                    .map_err(|source| ServerError::Bind {
                        addr: l.addr,
                        source,
                    })?;
                bound = b;
                fds.extend(more);
            }
            for (i, fd) in fds.into_iter().enumerate() {
                let dup = fd.try_clone().map_err(|source| ServerError::Bind {
                    addr: bound,
                    source,
                })?;
                listen_fds.push((bound, dup));
                per_core_send[i % cpus.len()].push((fd, l.http.clone(), l.max_connections));
            }
            addrs.push(bound);
        }
        for (a, _) in &inherited {
            log::warn!("inherited listener {a} is not in the configuration any more: closing it");
        }

        let shared = Arc::new(Shared::new(&cpus).map_err(ServerError::ControlPlane)?);
        let admin = match self.conf.admin {
            Some(addr) => {
                let shared = Arc::clone(&shared);
                let server =
                    crate::metrics::admin::AdminServer::start(addr, move || shared.stats())
                        .map_err(|source| ServerError::Bind { addr, source })?;
                Some(server)
            }
            None => None,
        };
        let mut threads = Vec::new();
        for (slot, (&cpu, listeners)) in cpus.iter().zip(per_core_send).enumerate() {
            let factory = Arc::clone(&self.factory);
            let shared = Arc::clone(&shared);
            let conf = self.conf.clone();
            let exit = CoreExit {
                shared: Arc::clone(&shared),
                slot,
            };
            log::info!(
                "core {slot}: executor pinned to cpu {cpu} ({} listeners)",
                listeners.len()
            );
            let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
                .name(&format!("ringway-{cpu}"))
                .io_memory(IO_MEMORY)
                .spawn(move || async move {
                    let _exit = exit;
                    let (core, factory) = (CoreId(cpu), factory.as_ref());
                    let r = match io {
                        // The lean loop: this core's connections, timers and ring, sleeping
                        // in io_uring_enter on the ring itself (docs/internals.md).
                        IoBackend::Uring => uring::exec::block_on(run_core::<UringBackend, P>(
                            core, slot, &conf, factory, listeners, &shared,
                        ))
                        .unwrap_or_else(|e| {
                            Err(ServerError::Executor(format!(
                                "the io_uring executor on {core} did not start: {e}"
                            )))
                        }),
                        _ => {
                            run_core::<GlommioBackend, P>(
                                core, slot, &conf, factory, listeners, &shared,
                            )
                            .await
                        }
                    };
                    r
                })
                .map_err(|e| ServerError::Executor(e.to_string()))?;
            threads.push(handle);
        }
        Ok(ServerHandle {
            addrs,
            shared,
            threads,
            grace: self.conf.grace_period,
            admin,
            listen_fds: Mutex::new(listen_fds),
        })
    }

    /// Starts, then serves until SIGTERM or SIGINT, drains in-flight requests within the grace
    /// period (a second signal stops waiting), and returns. Never exits the process.
    ///
    /// SIGTERM and SIGINT are blocked in the calling thread (and so in the executors it starts)
    /// and taken through a signalfd; the thread sleeps in `poll` until a signal, a core ending
    /// or an upgrade request (no timer).
    ///
    /// # Errors
    /// As [`Server::start`], plus signal set-up failures and executors that ended abnormally.
    pub fn run(self) -> Result<(), ServerError> {
        self.run_with(RunOptions::default())
    }

    /// [`Server::run`], plus the zero-downtime upgrade: adopt listeners handed over by an
    /// older process, and/or offer this process's listeners to a newer one on a Unix socket.
    ///
    /// # Errors
    /// As [`Server::run`], plus a failure to bind the upgrade socket.
    pub fn run_with(mut self, opts: RunOptions) -> Result<(), ServerError> {
        let set = block_signals().map_err(ServerError::Signals)?;
        let signals = signal_fd(&set).map_err(ServerError::Signals)?;
        let handover = opts.handover.map(|mut h| {
            self.inherited = std::mem::take(&mut h.listeners);
            h
        });
        let handle = self.start()?;
        if let Some(h) = handover {
            match h.ready() {
                Ok(()) => {
                    log::info!("accepting on the inherited listeners; the old process drains")
                }
                Err(e) => log::warn!("the old process went away during the handover: {e}"),
            }
        }
        let mut upgrade = match &opts.upgrade_socket {
            Some(path) => Some(
                UpgradeSocket::bind(path).map_err(|source| ServerError::Bind {
                    addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                    source,
                })?,
            ),
            None => None,
        };
        let mut signalled = false;
        // While accepting on the upgrade socket fails (out of descriptors, say), the pending
        // request stays readable: the socket is left out of the poll until this instant.
        let mut upgrade_retry: Option<Instant> = None;
        while handle.shared.running.load(Ordering::Acquire) > 0 {
            let now = Instant::now();
            let paused = upgrade_retry.filter(|&t| now < t);
            let offering = upgrade.as_ref().filter(|_| !signalled && paused.is_none());
            let timeout = paused
                .filter(|_| !signalled)
                .map(|t| t.saturating_duration_since(now));
            match wait_control(&signals, &handle.shared.ended, offering, timeout) {
                Some(sig) if !signalled => {
                    log::info!(
                        "signal {sig}: graceful shutdown, grace period {:?}",
                        handle.grace
                    );
                    handle.shutdown();
                    signalled = true;
                }
                Some(sig) => {
                    log::warn!("signal {sig} again: closing in-flight connections now");
                    handle.shared.force.store(true, Ordering::Release);
                }
                None => {}
            }
            if signalled {
                continue;
            }
            if let Some(u) = &mut upgrade {
                if upgrade_retry.is_some_and(|t| Instant::now() < t) {
                    continue;
                }
                let fds = handle
                    .listen_fds
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let handed = match u.try_handover(&fds) {
                    Ok(handed) => {
                        upgrade_retry = None;
                        handed
                    }
                    Err(e) => {
                        if upgrade_retry.is_none() {
                            log::warn!(
                                "upgrade socket: accept failed ({e}); retrying every {UPGRADE_RETRY:?}"
                            );
                        }
                        upgrade_retry = Some(Instant::now() + UPGRADE_RETRY);
                        false
                    }
                };
                drop(fds);
                if handed {
                    log::info!(
                        "listeners handed over to a new process: draining, grace period {:?}",
                        handle.grace
                    );
                    handle.shutdown();
                    signalled = true;
                    upgrade = None;
                }
            }
        }
        handle.join()
    }
}

/// The Unix socket a running server offers its listeners on.
struct UpgradeSocket {
    path: std::path::PathBuf,
    listener: std::os::unix::net::UnixListener,
}

impl UpgradeSocket {
    fn bind(path: &std::path::Path) -> io::Result<UpgradeSocket> {
        // A stale socket file from a process that is gone would make bind fail.
        let _ = std::fs::remove_file(path);
        let listener = std::os::unix::net::UnixListener::bind(path)?;
        listener.set_nonblocking(true)?;
        log::info!("upgrade socket at {}", path.display());
        Ok(UpgradeSocket {
            path: path.to_path_buf(),
            listener,
        })
    }

    /// Serves one pending handover request, if any; true when the new process took over. An
    /// error when one may be pending but could not be accepted.
    fn try_handover(&mut self, fds: &[(SocketAddr, OwnedFd)]) -> io::Result<bool> {
        let mut stream = match self.listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        };
        // The path is the new process's to bind from now on.
        let _ = std::fs::remove_file(&self.path);
        let list: Vec<(SocketAddr, std::os::fd::RawFd)> = fds
            .iter()
            .map(|(a, fd)| (*a, std::os::fd::AsRawFd::as_raw_fd(fd)))
            .collect();
        let ok = stream.set_nonblocking(false).is_ok()
            && crate::listen::handover::send(&mut stream, &list).unwrap_or_else(|e| {
                log::warn!("handover failed: {e}");
                false
            });
        if !ok {
            log::warn!("the new process did not take over; still serving");
            if let Ok(again) = UpgradeSocket::bind(&self.path) {
                *self = again;
            }
        }
        Ok(ok)
    }
}

/// Probes io_uring and settles `Auto`: the completion backend where the kernel has what it
/// needs, glommio streams otherwise (logged).
fn choose_backend(asked: IoBackend) -> Result<IoBackend, ServerError> {
    let caps = probe::probe_off_thread();
    log::info!("{caps}");
    let io = match asked {
        IoBackend::Auto if caps.supports_completion_backend() => IoBackend::Uring,
        IoBackend::Auto => {
            log::warn!("io = \"auto\": this kernel lacks what the io_uring backend needs ({caps}); using glommio streams");
            IoBackend::Glommio
        }
        IoBackend::Uring if !caps.supports_completion_backend() => {
            return Err(ServerError::Executor(format!("io = \"uring\" but {caps}")));
        }
        chosen => chosen,
    };
    let name = if io == IoBackend::Uring {
        UringBackend::NAME
    } else {
        GlommioBackend::NAME
    };
    log::info!("I/O backend: {name}");
    Ok(io)
}

/// Blocks SIGTERM and SIGINT in this thread (threads started later inherit the mask).
fn block_signals() -> io::Result<libc::sigset_t> {
    // SAFETY: sigset_t manipulation on a local set; pthread_sigmask on this thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(set)
    }
}

/// A signalfd for `set` (blocked already), non-blocking.
fn signal_fd(set: &libc::sigset_t) -> io::Result<OwnedFd> {
    // SAFETY: set is initialized; -1 asks for a new descriptor.
    let fd = unsafe { libc::signalfd(-1, set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// The control thread's sleep: `poll` on the signalfd, the doorbell cores ring as they end,
/// and the upgrade socket while one is offered, with no timeout unless one is given (a retry
/// of the upgrade socket). Returns the signal taken, if one was.
fn wait_control(
    signals: &OwnedFd,
    ended: &rt::Doorbell,
    upgrade: Option<&UpgradeSocket>,
    timeout: Option<Duration>,
) -> Option<i32> {
    use std::os::fd::{AsFd, AsRawFd};
    // Interrupted, timed out or not, the caller looks at its state and comes back.
    let [signalled, _, _] = poll_readable(
        [
            signals.as_raw_fd(),
            ended.as_fd().as_raw_fd(),
            upgrade.map_or(-1, |u| u.listener.as_raw_fd()),
        ],
        timeout,
    );
    ended.take();
    if !signalled {
        return None;
    }
    // SAFETY: all-zero bytes are a valid signalfd_siginfo.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: a read of one record into a signalfd_siginfo on the stack.
    let got = unsafe {
        libc::read(
            signals.as_raw_fd(),
            (&mut info as *mut libc::signalfd_siginfo).cast(),
            size,
        )
    };
    (got == size as isize).then_some(info.ssi_signo as i32)
}

/// A running server: its addresses, its counters, and the way to stop it.
pub struct ServerHandle {
    addrs: Vec<SocketAddr>,
    shared: Arc<Shared>,
    threads: Vec<glommio::ExecutorJoinHandle<Result<(), ServerError>>>,
    grace: Duration,
    /// The admin endpoint, while the server runs.
    admin: Option<crate::metrics::admin::AdminServer>,
    /// Duplicates of every listening socket, for a handover to a newer process; closed when
    /// shutdown begins, so the kernel stops queueing connections nobody will accept.
    listen_fds: Mutex<Vec<(SocketAddr, OwnedFd)>>,
}

impl ServerHandle {
    /// The admin endpoint's bound address, when one is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
            .as_ref()
            .map(crate::metrics::admin::AdminServer::addr)
    }

    /// The bound address of each listener, in configuration order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Begins graceful shutdown: cores stop accepting, close idle connections, and finish
    /// in-flight requests within the grace period.
    pub fn shutdown(&self) {
        if let Ok(mut fds) = self.listen_fds.lock() {
            fds.clear();
        }
        self.shared.begin_shutdown();
    }

    /// Every core's counters as of this call: each serving core is asked to publish them and
    /// answers within a pass of its loop; one that does not answer within 100 ms is reported
    /// as it last published. Blocks the calling thread meanwhile, so call it off the cores
    /// (the admin endpoint calls it on its own thread).
    pub fn stats(&self) -> ServerStats {
        self.shared.stats()
    }

    /// Waits for every core to finish.
    ///
    /// # Errors
    /// When a core failed to start serving or its thread ended abnormally.
    pub fn join(self) -> Result<(), ServerError> {
        let mut first_err = None;
        for t in self.threads {
            let r = match t.join() {
                Ok(r) => r,
                Err(e) => Err(ServerError::Executor(e.to_string())),
            };
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// Decrements the active-connection count when a connection task ends, however it ends.
struct ActiveGuard<S> {
    core: Rc<CoreCtx<S>>,
    listener_active: Rc<std::cell::Cell<usize>>,
    slot_freed: LocalNotify,
}

impl<S> Drop for ActiveGuard<S> {
    fn drop(&mut self) {
        let m = &self.core.metrics.active;
        m.set(m.get().saturating_sub(1));
        self.listener_active
            .set(self.listener_active.get().saturating_sub(1));
        self.slot_freed.notify();
    }
}

async fn run_core<B: Backend, P: ProxyHttp + 'static>(
    core_id: CoreId,
    slot: usize,
    conf: &ServerConf,
    factory: &(impl Fn(CoreId) -> P + ?Sized),
    listeners: Vec<(OwnedFd, HttpSettings, usize)>,
    shared: &Shared,
) -> Result<(), ServerError> {
    let app = match guard(async { factory(core_id) }).await {
        Ok(app) => Rc::new(app),
        Err(_) => {
            return Err(ServerError::Executor(format!(
                "the application factory panicked on {core_id}"
            )))
        }
    };
    let core = Rc::new(CoreCtx::<B::Stream> {
        core: core_id,
        pool: Pool::new(conf.pool_max_idle_per_peer, conf.pool_idle_timeout),
        metrics: CoreMetrics::default(),
        shutdown: LocalSignal::new(),
        closing: LocalSignal::new(),
        max_retries: conf.max_retries,
    });
    let mut accept_tasks = Vec::new();
    for (fd, http, max_connections) in listeners {
        let listener = B::adopt_listener(fd)
            .map_err(|e| ServerError::Executor(format!("adopting a listener on {core_id}: {e}")))?;
        let settings = Rc::new(http);
        let app = Rc::clone(&app);
        let core = Rc::clone(&core);
        accept_tasks.push(rt::spawn_local(accept_loop::<B, P>(
            listener,
            app,
            core,
            settings,
            max_connections,
        )));
    }

    let publish = |core: &CoreCtx<B::Stream>, serving: bool| {
        shared.publish(
            slot,
            core.metrics.snapshot(core_id.0, caught_panics()),
            serving,
        );
    };
    control_loop(&core, &shared.cores[slot].bell, &shared.shutdown, || {
        publish(&core, true)
    })
    .await;
    // Stop accepting (the listeners close with their tasks), wake idle connections.
    core.shutdown.set();
    for t in accept_tasks {
        t.await;
    }
    core.pool.clear();
    let deadline = Instant::now() + conf.grace_period;
    while core.metrics.active.get() > 0
        && Instant::now() < deadline
        && !shared.force.load(Ordering::Acquire)
    {
        rt::sleep(Duration::from_millis(10)).await;
        // The control task has ended: counters asked for meanwhile come from here.
        publish(&core, true);
    }
    if core.metrics.active.get() > 0 {
        log::warn!(
            "{core_id}: closing {} connections still open after the grace period",
            core.metrics.active.get()
        );
        core.closing.set();
        // Let the tasks run once more to drop their streams (a backend may close through its
        // ring, which needs the executor).
        let deadline = Instant::now() + CLOSE_WAIT;
        while core.metrics.active.get() > 0 && Instant::now() < deadline {
            rt::sleep(Duration::from_millis(5)).await;
            publish(&core, true);
        }
    }
    publish(&core, false);
    Ok(())
}

/// A core's control task until shutdown begins: wakes when the control plane rings `bell` (to
/// publish counters or to stop), and to sweep the upstream pool while it holds connections.
/// An idle core with an empty pool never wakes.
async fn control_loop<S: ringway_protocols::l4::Stream>(
    core: &CoreCtx<S>,
    bell: &rt::Doorbell,
    shutdown: &AtomicBool,
    publish: impl Fn(),
) {
    let mut next_sweep: Option<Instant> = None;
    let mut deaf = false;
    loop {
        publish();
        if shutdown.load(Ordering::Acquire) {
            return;
        }
        let now = Instant::now();
        if next_sweep.is_some_and(|at| now >= at) {
            core.pool.sweep(now);
            next_sweep = None;
        }
        if next_sweep.is_none() && !core.pool.is_empty() {
            next_sweep = Some(now + POOL_SWEEP);
        }
        let rung = futures_lite::future::or(bell.rung(), async {
            match next_sweep {
                Some(at) => rt::sleep(at.saturating_duration_since(now)).await,
                None => core.pool.filled().await,
            }
            Ok(())
        })
        .await;
        match rung {
            Ok(()) => deaf = false,
            Err(e) => {
                // Out of descriptors, most likely: look on a timer until the bell works again.
                if !deaf {
                    log::error!(
                        "{}: cannot watch the control plane's doorbell ({e}); looking every {FALLBACK_TICK:?}",
                        core.core
                    );
                    deaf = true;
                }
                rt::sleep(FALLBACK_TICK).await;
            }
        }
    }
}

/// Bundles what a connection task needs, so the accept loop and the shutdown drain spawn
/// connections the same way.
struct Spawner<B: Backend, P> {
    app: Rc<P>,
    core: Rc<CoreCtx<B::Stream>>,
    settings: Rc<HttpSettings>,
    active: Rc<std::cell::Cell<usize>>,
    slot_freed: LocalNotify,
}

impl<B: Backend, P: ProxyHttp + 'static> Spawner<B, P> {
    /// Spawns the task of an accepted connection (the session reads the client's address from
    /// the stream).
    fn spawn(&self, stream: B::Stream) {
        bump(&self.core.metrics.accepted);
        bump(&self.core.metrics.active);
        self.active.set(self.active.get() + 1);
        let guard_state = ActiveGuard {
            core: Rc::clone(&self.core),
            listener_active: Rc::clone(&self.active),
            slot_freed: self.slot_freed.clone(),
        };
        let closing = self.core.closing.clone();
        let fut = guard(serve_connection::<B, P>(
            Rc::clone(&self.app),
            Rc::clone(&self.core),
            Rc::clone(&self.settings),
            stream,
        ));
        let task = ConnTask {
            fut,
            closing,
            slot: WaitSlot::default(),
            _active: guard_state,
        };
        rt::spawn_detached(task);
    }
}

/// One connection's task: its future under a panic guard (a backstop: phases are guarded one
/// by one; this catches a bug in the driver itself so it ends one connection, not the core),
/// raced against the core's closing signal (at the end of the grace period the stream is
/// dropped, and so closed, with the future: glommio would otherwise leave the task, and its
/// connection, open after the executor returns), holding the active-connection count.
///
/// A plain struct rather than an `async` block: a block would keep the values it captured next
/// to the future built from them, and every connection would pay both for its whole life.
struct ConnTask<F, S> {
    fut: Guarded<F>,
    closing: LocalSignal,
    slot: WaitSlot,
    _active: ActiveGuard<S>,
}

impl<F: Future<Output = ()>, S> Future for ConnTask<F, S> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // SAFETY: `fut` is structurally pinned and never moved out; the other fields are not
        // pinned and are only used through `&mut`.
        let this = unsafe { self.get_unchecked_mut() };
        // The task's root future: its waker never changes, so the slot is registered once.
        if this.closing.poll_wait_stable(&mut this.slot, cx).is_ready() {
            return Poll::Ready(());
        }
        // SAFETY: as above.
        match unsafe { Pin::new_unchecked(&mut this.fut) }.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => {
                this.closing.forget(&mut this.slot);
                if let Err(p) = r {
                    log::error!(
                        "connection task panicked: {}",
                        crate::proxy::panic::payload_str(&*p)
                    );
                }
                Poll::Ready(())
            }
        }
    }
}

impl<F, S> Drop for ConnTask<F, S> {
    fn drop(&mut self) {
        self.closing.forget(&mut self.slot);
    }
}

async fn accept_loop<B: Backend, P: ProxyHttp + 'static>(
    listener: B::Listener,
    app: Rc<P>,
    core: Rc<CoreCtx<B::Stream>>,
    settings: Rc<HttpSettings>,
    max_connections: usize,
) {
    let spawner = Spawner::<B, P> {
        app,
        core: Rc::clone(&core),
        settings,
        active: Rc::new(std::cell::Cell::new(0usize)),
        slot_freed: LocalNotify::new(),
    };
    // Pending accepts survive loop turns: none is dropped while it may complete. Up to the
    // backend's ACCEPTS_IN_FLIGHT wait at once, never more than the connection cap leaves room
    // for (so the cap holds whichever of them completes).
    let mut pending = Vec::with_capacity(B::ACCEPTS_IN_FLIGHT);
    loop {
        // At the cap, stop accepting (the kernel queues) until a connection ends; no spinning.
        while pending.is_empty()
            && spawner.active.get() >= max_connections
            && !core.shutdown.is_set()
        {
            futures_lite::future::or(spawner.slot_freed.notified(), core.shutdown.wait()).await;
        }
        while pending.len() < B::ACCEPTS_IN_FLIGHT
            && spawner.active.get() + pending.len() < max_connections
        {
            pending.push(Box::pin(listener.accept()));
        }
        let accepted =
            futures_lite::future::or(async { Some(first_ready(&mut pending).await) }, async {
                core.shutdown.wait().await;
                None
            })
            .await;
        let (stream, _) = match accepted {
            None => {
                finish_pending_accepts(&listener, pending, &spawner).await;
                return;
            }
            Some(r) => match r {
                Ok(a) => a,
                Err(e) => {
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    ) {
                        log::warn!("accept: {e}; backing off {ACCEPT_BACKOFF:?}");
                        rt::sleep(ACCEPT_BACKOFF).await;
                    } else {
                        log::debug!("accept: {e}");
                    }
                    continue;
                }
            },
        };
        spawner.spawn(stream);
    }
}

/// Waits for the first of `pending` to complete, removes it and returns its output.
async fn first_ready<F: std::future::Future + Unpin>(pending: &mut Vec<F>) -> F::Output {
    std::future::poll_fn(|cx| {
        for i in 0..pending.len() {
            if let std::task::Poll::Ready(r) = std::pin::Pin::new(&mut pending[i]).poll(cx) {
                pending.swap_remove(i);
                return std::task::Poll::Ready(r);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// Rounds of pill connections tried at shutdown before giving up on the pending accepts.
const MAX_PILLS: usize = 200;

/// Completes the accepts that were pending when shutdown began, instead of dropping them: a
/// dropped io_uring accept that the kernel completes anyway leaves an accepted connection
/// nobody serves (and, during an upgrade, the listening socket is shared with the new
/// process, so connections keep arriving). Each round makes one loopback "pill" connection
/// per accept still waiting, then collects what completes within 20 ms: a real connection is
/// served (told to close), a pill (any of them: the kernel hands connections to the waiting
/// accepts in its own order) is closed. Pills the new process accepts are empty connections it
/// closes.
async fn finish_pending_accepts<B: Backend, P: ProxyHttp + 'static, F>(
    listener: &B::Listener,
    mut pending: Vec<std::pin::Pin<Box<F>>>,
    spawner: &Spawner<B, P>,
) where
    F: std::future::Future<Output = io::Result<(B::Stream, SocketAddr)>>,
{
    if pending.is_empty() {
        return;
    }
    let Ok(addr) = listener.local_addr() else {
        return;
    };
    let mut pills = Vec::new();
    for _ in 0..MAX_PILLS {
        pills.extend(
            (0..pending.len())
                .filter_map(|_| pill_connect(addr))
                .filter_map(|p| p.local_addr().ok()?.as_socket().map(|a| (p, a))),
        );
        loop {
            match crate::runtime::timeout(Duration::from_millis(20), first_ready(&mut pending))
                .await
            {
                Ok((stream, peer)) => {
                    if !pills.iter().any(|(_, a)| *a == peer) {
                        spawner.spawn(stream);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => break,
                // That accept failed (and is gone from `pending`).
                Err(_) => {}
            }
            if pending.is_empty() {
                return;
            }
        }
    }
    log::warn!(
        "{} pending accepts on {addr} did not complete at shutdown",
        pending.len()
    );
}

/// Starts a non-blocking loopback connection to `addr`.
fn pill_connect(addr: SocketAddr) -> Option<socket2::Socket> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM.cloexec(),
        None,
    )
    .ok()?;
    s.set_nonblocking(true).ok()?;
    match s.connect(&addr.into()) {
        Ok(()) => Some(s),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Some(s),
        Err(_) => None,
    }
}
