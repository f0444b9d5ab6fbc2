//! The benchmark origin: a small, fast HTTP/1.1 server that proxies under test forward to.
//!
//! One glommio executor per configured CPU, each accepting on its own `SO_REUSEPORT` socket
//! (built here with socket2 and adopted through the transport seam), serving keep-alive and
//! pipelined requests. Paths:
//!
//! | path          | response                                                              |
//! |---------------|-----------------------------------------------------------------------|
//! | anything else | 200 with the fixed body (`body_size` bytes of `x`)                    |
//! | `/echo`       | 200 echoing the request body (Content-Length, or chunked if it was)   |
//! | `/sink`       | 200 with the fixed body, after consuming the request body             |
//! | `/headers`    | 200 whose body is the raw request head, as the origin received it     |
//! | `/status/NNN` | status NNN (200-599) with the fixed body                              |
//! | `/close`      | 200 with the fixed body and `Connection: close`, then closes          |
//!
//! Every response carries `X-Origin-Conn: N` (the connection's sequence number at this origin,
//! from 1); a request with a body (other than `/echo`) is answered with `X-Body-Len` and
//! `X-Body-Fnv` (the body's 64-bit FNV-1a, 16 hex digits, see [`fnv1a64`]).
//!
//! ```no_run
//! use ringway_bench::origin::{self, OriginConfig};
//!
//! let cfg = OriginConfig { listen: "127.0.0.1:0".parse().unwrap(), ..OriginConfig::default() };
//! let origin = origin::start(cfg).unwrap();
//! println!("listening on {}", origin.addr());
//! origin.stop().unwrap();
//! ```

mod conn;
mod request;

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use futures_lite::future;
use glommio::ExecutorJoinHandle;
use ringway_protocols::l4::glommio::GlommioBackend;
use ringway_protocols::l4::uring::UringBackend;
use ringway_protocols::l4::{Backend, Listener};
use socket2::{Domain, Socket, Type};

pub use crate::fnv::fnv1a64;
use crate::runtime::{placements, spawn_executor, StopSignal};
use conn::{Conn, CoreCtx};

/// Listen backlog of every origin socket.
const BACKLOG: i32 = 4096;

/// How long [`start`] waits for the executors to come up.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a stopping executor waits for its connections to wind down.
const DRAIN_ROUNDS: usize = 1000;

/// How the origin listens and answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginConfig {
    /// Address to listen on; port 0 picks a free port (see [`OriginHandle::addr`]).
    /// By default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// One pinned executor per listed CPU, each with its own `SO_REUSEPORT` socket; empty means
    /// one unpinned executor. By default empty.
    pub cpus: Vec<usize>,
    /// Size of the fixed body, bytes of `x`. By default 13.
    pub body_size: usize,
    /// Wait this long before answering each request. By default zero.
    pub delay: Duration,
    /// Answer with `Transfer-Encoding: chunked` instead of Content-Length. By default false.
    pub chunked: bool,
}

impl Default for OriginConfig {
    fn default() -> Self {
        OriginConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            cpus: Vec::new(),
            body_size: 13,
            delay: Duration::ZERO,
            chunked: false,
        }
    }
}

/// Counters since the origin started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OriginStats {
    /// Connections accepted.
    pub connections: u64,
    /// Request heads received (counted before the response is sent).
    pub requests: u64,
}

/// One core's counter, on its own cache line.
#[repr(align(128))]
#[derive(Default)]
pub(crate) struct Counter(pub(crate) AtomicU64);

/// State shared by the handle and the executors.
pub(crate) struct Shared {
    stop: AtomicBool,
    connections: AtomicU64,
    pub(crate) requests: Box<[Counter]>,
    /// Executors still running.
    alive: AtomicUsize,
    /// Duplicates of the listening sockets: shutting one down wakes its executor's accept.
    listeners: Vec<OwnedFd>,
}

impl Shared {
    fn stop(&self) {
        if self.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        for fd in &self.listeners {
            // SAFETY: `fd` is an open socket we own (a dup of the listener); shutting down a
            // listening socket makes pending and future accepts fail, which ends the accept loop.
            unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RDWR) };
        }
    }
}

/// Stops an origin from another thread, e.g. while one thread blocks in [`OriginHandle::wait`].
#[derive(Clone)]
pub struct OriginStopper {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for OriginStopper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OriginStopper").finish_non_exhaustive()
    }
}

impl OriginStopper {
    /// Stops accepting and closes every connection; idempotent. Does not wait for the
    /// executors (the handle's [`OriginHandle::wait`] returns once they are gone).
    pub fn stop(&self) {
        self.shared.stop();
    }
}

/// A running origin. Dropping it stops it and joins its threads.
pub struct OriginHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<ExecutorJoinHandle<()>>,
}

impl std::fmt::Debug for OriginHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OriginHandle")
            .field("addr", &self.addr)
            .field("executors", &self.threads.len())
            .finish()
    }
}

impl OriginHandle {
    /// The address the origin listens on (with the real port when configured with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections and requests seen so far, over all executors.
    pub fn stats(&self) -> OriginStats {
        OriginStats {
            connections: self.shared.connections.load(Ordering::Relaxed),
            requests: self
                .shared
                .requests
                .iter()
                .map(|c| c.0.load(Ordering::Relaxed))
                .sum(),
        }
    }

    /// A handle that can stop this origin from another thread.
    pub fn stopper(&self) -> OriginStopper {
        OriginStopper {
            shared: self.shared.clone(),
        }
    }

    /// Stops accepting, closes every connection and joins the executor threads.
    ///
    /// # Errors
    /// When an executor thread failed (it could not start, or panicked).
    pub fn stop(mut self) -> io::Result<()> {
        self.shared.stop();
        self.join()
    }

    /// Blocks until the origin stops: through an [`OriginStopper`], or because every executor
    /// ended.
    ///
    /// # Errors
    /// As [`OriginHandle::stop`].
    pub fn wait(mut self) -> io::Result<()> {
        self.join()
    }

    /// Blocks until SIGINT or SIGTERM arrives (or the executors end), then stops; for the CLI.
    ///
    /// Installs handlers for both signals for the duration of the call and restores the
    /// previous ones before returning.
    ///
    /// # Errors
    /// As [`OriginHandle::stop`], or when the handlers cannot be installed.
    pub fn run_until_signal(self) -> io::Result<()> {
        let guard = signals::install()?;
        while !signals::received() && self.shared.alive.load(Ordering::SeqCst) > 0 {
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(guard);
        self.stop()
    }

    fn join(&mut self) -> io::Result<()> {
        let mut result = Ok(());
        for t in self.threads.drain(..) {
            if let Err(e) = t.join() {
                if result.is_ok() {
                    result = Err(io::Error::other(format!("origin executor failed: {e}")));
                }
            }
        }
        result
    }
}

impl Drop for OriginHandle {
    fn drop(&mut self) {
        self.shared.stop();
        let _ = self.join();
    }
}

fn bind_listener(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket)
}

/// Binds the origin's sockets, starts its executors and returns once they accept.
///
/// Binding happens on the calling thread, so errors such as `AddrInUse` come back here and a
/// port-0 address is resolved before this returns.
///
/// # Errors
/// Binding fails, an executor cannot start (a CPU that does not exist, RLIMIT_MEMLOCK), or an
/// executor cannot adopt its socket.
pub fn start(cfg: OriginConfig) -> io::Result<OriginHandle> {
    let cores = placements(&cfg.cpus);
    let mut addr = cfg.listen;
    let mut sockets = Vec::with_capacity(cores.len());
    for _ in &cores {
        let s = bind_listener(addr)?;
        if addr.port() == 0 {
            addr = s.local_addr()?.as_socket().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "listener has no IP address")
            })?;
        }
        sockets.push(OwnedFd::from(s));
    }
    let listeners = sockets
        .iter()
        .map(OwnedFd::try_clone)
        .collect::<io::Result<Vec<_>>>()?;
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        connections: AtomicU64::new(0),
        requests: (0..cores.len()).map(|_| Counter::default()).collect(),
        alive: AtomicUsize::new(cores.len()),
        listeners,
    });
    let mut handle = OriginHandle {
        addr,
        shared: shared.clone(),
        threads: Vec::new(),
    };
    // The completion-based io_uring transport where the kernel has what it needs.
    let uring = ringway_protocols::l4::probe::probe_off_thread().supports_completion_backend();
    let (ready_tx, ready_rx) = mpsc::channel::<io::Result<()>>();
    for (index, (cpu, fd)) in cores.into_iter().zip(sockets).enumerate() {
        let shared = shared.clone();
        let ready = ready_tx.clone();
        let (body_size, chunked, delay) = (cfg.body_size, cfg.chunked, cfg.delay);
        let name = match cpu {
            Some(c) => format!("origin-cpu{c}"),
            None => "origin".to_string(),
        };
        let spawned = spawn_executor(&name, cpu, move || async move {
            crate::runtime::block_stop_signals();
            let _alive = AliveGuard(shared.clone());
            let ctx = Rc::new(CoreCtx::new(body_size, chunked, delay, shared, index));
            if uring {
                adopt_and_serve::<UringBackend>(fd, ready, ctx).await;
            } else {
                adopt_and_serve::<GlommioBackend>(fd, ready, ctx).await;
            }
        });
        match spawned {
            Ok(t) => handle.threads.push(t),
            Err(e) => return Err(e), // `handle` drops: stops and joins what started
        }
    }
    drop(ready_tx);
    let wanted = handle.threads.len();
    for _ in 0..wanted {
        match ready_rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                // An executor died before adopting its socket: report its own error if it has one.
                handle.shared.stop();
                handle.join()?;
                return Err(io::Error::other("an origin executor did not start"));
            }
        }
    }
    Ok(handle)
}

/// Marks its executor as ended when dropped.
struct AliveGuard(Arc<Shared>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.alive.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One executor's accept loop; on stop, closes every connection it spawned and returns.
/// Adopts this executor's socket with backend `B`, reports start-up, and serves.
async fn adopt_and_serve<B: Backend>(
    fd: OwnedFd,
    ready: mpsc::Sender<io::Result<()>>,
    ctx: Rc<CoreCtx>,
) {
    let listener = match B::adopt_listener(fd) {
        Ok(l) => {
            let _ = ready.send(Ok(()));
            drop(ready);
            l
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    serve(listener, ctx).await;
}

async fn serve<L: Listener>(listener: L, ctx: Rc<CoreCtx>)
where
    L::Stream: 'static,
{
    let stop = Rc::new(StopSignal::default());
    let live = Rc::new(std::cell::Cell::new(0usize));
    loop {
        if ctx.shared.stop.load(Ordering::Relaxed) {
            break;
        }
        match listener.accept().await {
            Ok((stream, _peer)) => {
                if ctx.shared.stop.load(Ordering::Relaxed) {
                    break;
                }
                let seq = ctx.shared.connections.fetch_add(1, Ordering::Relaxed) + 1;
                let conn = Conn::new(stream, seq, ctx.clone());
                let (stop, live) = (stop.clone(), live.clone());
                live.set(live.get() + 1);
                glommio::spawn_local(async move {
                    let served = future::or(async { Some(conn.run().await) }, async {
                        stop.wait().await;
                        None
                    })
                    .await;
                    if let Some(Err(e)) = served {
                        log::debug!("origin connection {seq}: {e}");
                    }
                    live.set(live.get() - 1);
                })
                .detach();
            }
            Err(e) => {
                if ctx.shared.stop.load(Ordering::Relaxed) {
                    break;
                }
                match e.raw_os_error() {
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                        log::warn!("origin accept: {e}; backing off");
                        glommio::timer::sleep(Duration::from_millis(10)).await;
                    }
                    Some(libc::EINVAL | libc::EBADF | libc::ENOTSOCK) => {
                        log::error!("origin accept: {e}; listener unusable");
                        break;
                    }
                    _ => log::debug!("origin accept: {e}"),
                }
            }
        }
    }
    drop(listener);
    stop.fire();
    for _ in 0..DRAIN_ROUNDS {
        if live.get() == 0 {
            break;
        }
        future::yield_now().await;
    }
}

/// Process-wide SIGINT/SIGTERM flag for [`OriginHandle::run_until_signal`].
mod signals {
    use std::io;
    use std::sync::atomic::{AtomicBool, Ordering};

    static RECEIVED: AtomicBool = AtomicBool::new(false);

    extern "C" fn on_signal(_: libc::c_int) {
        RECEIVED.store(true, Ordering::SeqCst);
    }

    pub(super) fn received() -> bool {
        RECEIVED.load(Ordering::SeqCst)
    }

    /// Restores the previous handlers when dropped.
    pub(super) struct Guard {
        old: Vec<(libc::c_int, libc::sigaction)>,
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            for (sig, old) in &self.old {
                // SAFETY: restoring a sigaction previously returned by the kernel.
                unsafe { libc::sigaction(*sig, old, std::ptr::null_mut()) };
            }
        }
    }

    pub(super) fn install() -> io::Result<Guard> {
        RECEIVED.store(false, Ordering::SeqCst);
        let mut guard = Guard { old: Vec::new() };
        for sig in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: a zeroed sigaction is valid; the handler only stores to an atomic, which is
            // async-signal-safe.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
                libc::sigemptyset(&mut sa.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, &sa, &mut old) != 0 {
                    return Err(io::Error::last_os_error());
                }
                guard.old.push((sig, old));
            }
        }
        Ok(guard)
    }
}
