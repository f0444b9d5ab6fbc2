//! Per-core executors: which CPUs to run on, what locked memory and descriptors they need, and
//! the small runtime helpers (deadlines, local signals) the request path uses on its own core.

mod limits;
mod signal;

use std::fmt;
use std::future::Future;
use std::io;
use std::time::Duration;

pub use limits::{
    check_memlock, has_cap_ipc_lock, raise_nofile, MemlockReport, RINGS_PER_EXECUTOR,
};
pub use signal::{LocalNotify, LocalSignal, Notified, WaitSlot};

/// Sleeps in `poll` until one of `fds` is readable or `timeout` passes (`None`: no bound), on a
/// control-plane thread (never a core). Says which are readable: none after the timeout or an
/// interruption. A negative descriptor is left out.
pub(crate) fn poll_readable<const N: usize>(
    fds: [std::os::fd::RawFd; N],
    timeout: Option<Duration>,
) -> [bool; N] {
    let mut polled = fds.map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    let timeout_ms = timeout.map_or(-1, |t| {
        libc::c_int::try_from(t.as_millis().max(1)).unwrap_or(libc::c_int::MAX)
    });
    // SAFETY: N initialized pollfds on the stack (the kernel ignores negative descriptors).
    let n = unsafe { libc::poll(polled.as_mut_ptr(), N as libc::nfds_t, timeout_ms) };
    polled.map(|p| n > 0 && p.revents != 0)
}

/// Memory glommio registers on each of an executor's rings; networking does not use it, so it
/// is kept small (glommio's default of 10 MiB would not fit an 8 MiB RLIMIT_MEMLOCK).
pub const IO_MEMORY: usize = 64 * 1024;

/// The CPU an executor is pinned to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CoreId(pub usize);

impl fmt::Display for CoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cpu{}", self.0)
    }
}

/// Which CPUs to run executors on.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum CpuList {
    /// Every online CPU the process may run on. The default.
    #[default]
    All,
    /// Exactly these CPUs, one executor each.
    List(Vec<usize>),
}

/// Why the runtime cannot start.
#[derive(Debug)]
pub enum RuntimeError {
    /// A configured CPU is not online or not in the process's affinity mask.
    CpuUnavailable {
        /// The CPU asked for.
        cpu: usize,
        /// The CPUs that are available.
        available: Vec<usize>,
    },
    /// The CPU list is empty.
    NoCpus,
    /// Locked-memory budget too small and no CAP_IPC_LOCK.
    Memlock(MemlockReport),
    /// A system call failed.
    Io(io::Error),
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeError::CpuUnavailable { cpu, available } => {
                write!(f, "cpu {cpu} is not available to this process (available: {available:?})")
            }
            RuntimeError::NoCpus => write!(f, "no CPUs to run on"),
            RuntimeError::Memlock(r) => write!(
                f,
                "RLIMIT_MEMLOCK is {} bytes but {} executors need {} bytes ({} rings x {} bytes of io_memory) \
                 and the process lacks CAP_IPC_LOCK: raise it with `ulimit -l {}` (KiB), \
                 LimitMEMLOCK={} in the systemd unit, or run with fewer cpus",
                r.limit,
                r.executors,
                r.needed,
                r.executors * RINGS_PER_EXECUTOR,
                IO_MEMORY,
                r.needed.div_ceil(1024),
                r.needed
            ),
            RuntimeError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for RuntimeError {}

/// The CPUs this process may run on, in order.
pub fn available_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is this thread; the size matches the set.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
    }
    // SAFETY: CPU_ISSET reads the set filled above.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Resolves a CPU list against what the process may use.
///
/// # Errors
/// [`RuntimeError::CpuUnavailable`] for a CPU outside the affinity mask, `NoCpus` for an empty
/// list.
pub fn resolve_cpus(list: &CpuList) -> Result<Vec<usize>, RuntimeError> {
    let available = available_cpus();
    let cpus = match list {
        CpuList::All => available.clone(),
        CpuList::List(v) => {
            for &cpu in v {
                if !available.contains(&cpu) {
                    return Err(RuntimeError::CpuUnavailable { cpu, available });
                }
            }
            v.clone()
        }
    };
    if cpus.is_empty() {
        return Err(RuntimeError::NoCpus);
    }
    Ok(cpus)
}

/// Runs `fut` with a deadline; `TimedOut` if it does not finish within `dur`. The timer lives
/// on this core's executor (the lean io_uring loop or glommio's, see `ringway_protocols::rt`).
///
/// # Cancellation
/// On timeout `fut` is dropped, cancelling whatever it was waiting for.
pub fn timeout<T, F: Future<Output = io::Result<T>>>(
    dur: Duration,
    fut: F,
) -> ringway_protocols::rt::Timeout<F> {
    ringway_protocols::rt::timeout(dur, fut)
}
