//! Process limits the executors depend on: locked memory for glommio's rings and the
//! descriptor limit.

use std::io;

use super::IO_MEMORY;

/// Rings glommio creates per executor (main, latency, poll), each registering `io_memory`.
pub const RINGS_PER_EXECUTOR: usize = 3;
/// glommio refuses to start an executor below this locked-memory budget.
const GLOMMIO_MIN_MEMLOCK: u64 = 512 * 1024;
/// Linux capability number of CAP_IPC_LOCK.
const CAP_IPC_LOCK: u32 = 14;

/// The locked-memory budget against what the executors need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemlockReport {
    /// RLIMIT_MEMLOCK soft limit in bytes (`u64::MAX` for unlimited).
    pub limit: u64,
    /// Bytes the executors need.
    pub needed: u64,
    /// Number of executors.
    pub executors: usize,
    /// Whether the process has CAP_IPC_LOCK (the limit then does not apply).
    pub cap_ipc_lock: bool,
}

impl MemlockReport {
    /// Whether the executors can register their memory.
    pub fn fits(&self) -> bool {
        self.cap_ipc_lock || self.limit >= self.needed
    }
}

/// Whether the process's effective capabilities include CAP_IPC_LOCK.
pub fn has_cap_ipc_lock() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// Checks RLIMIT_MEMLOCK for `executors` executors.
///
/// # Errors
/// When `getrlimit` fails.
pub fn check_memlock(executors: usize) -> io::Result<MemlockReport> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: rl is a valid out-parameter.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut rl) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let limit = if rl.rlim_cur == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        rl.rlim_cur
    };
    let needed = ((executors * RINGS_PER_EXECUTOR * IO_MEMORY) as u64).max(GLOMMIO_MIN_MEMLOCK);
    Ok(MemlockReport {
        limit,
        needed,
        executors,
        cap_ipc_lock: has_cap_ipc_lock(),
    })
}

/// Raises RLIMIT_NOFILE's soft limit to its hard limit; returns the new soft limit.
///
/// # Errors
/// When `getrlimit`/`setrlimit` fail.
pub fn raise_nofile() -> io::Result<u64> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: rl is a valid out-parameter.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if rl.rlim_cur < rl.rlim_max {
        rl.rlim_cur = rl.rlim_max;
        // SAFETY: rl holds valid limits (soft <= hard).
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(rl.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memlock_need_scales_with_executors() {
        let one = check_memlock(1).unwrap();
        let eight = check_memlock(8).unwrap();
        assert_eq!(one.needed, GLOMMIO_MIN_MEMLOCK);
        assert_eq!(eight.needed, (8 * RINGS_PER_EXECUTOR * IO_MEMORY) as u64);
        let tight = MemlockReport {
            limit: 1,
            needed: 2,
            executors: 1,
            cap_ipc_lock: false,
        };
        assert!(!tight.fits());
        assert!(MemlockReport {
            cap_ipc_lock: true,
            ..tight
        }
        .fits());
    }

    #[test]
    fn nofile_is_raised_to_the_hard_limit() {
        let soft = raise_nofile().unwrap();
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
        assert_eq!(soft, rl.rlim_max);
    }
}
