//! The io_uring capability probe, run once at start-up: which opcodes and setup flags this
//! kernel offers, so the engine can log them and pick a backend.

use std::fmt;

use io_uring::{opcode, IoUring, Probe};

/// What the running kernel's io_uring supports, as far as Ringway cares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UringCapabilities {
    /// A ring could be created at all (false under seccomp or `io_uring_disabled`).
    pub available: bool,
    /// Why not, when `available` is false.
    pub error: Option<String>,
    /// Opcodes the engine's backends use, with whether each is supported.
    pub opcodes: Vec<(&'static str, bool)>,
    /// IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN accepted.
    pub defer_taskrun: bool,
}

impl UringCapabilities {
    /// True when every opcode Ringway's completion backend needs is present.
    pub fn supports_completion_backend(&self) -> bool {
        self.available && self.defer_taskrun && self.opcodes.iter().all(|(_, ok)| *ok)
    }
}

impl fmt::Display for UringCapabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.available {
            return write!(
                f,
                "io_uring unavailable: {}",
                self.error.as_deref().unwrap_or("?")
            );
        }
        let missing: Vec<&str> = self
            .opcodes
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(n, _)| *n)
            .collect();
        write!(
            f,
            "io_uring: {} of {} opcodes, defer_taskrun={}",
            self.opcodes.len() - missing.len(),
            self.opcodes.len(),
            self.defer_taskrun
        )?;
        if !missing.is_empty() {
            write!(f, ", missing {}", missing.join(" "))?;
        }
        Ok(())
    }
}

/// [`probe`] on a short-lived thread of its own, leaving the calling thread untouched: tearing
/// down io_uring rings queues task work on the thread that created them, which makes that
/// thread's blocking socket calls with a timeout fail with EINTR.
pub fn probe_off_thread() -> UringCapabilities {
    std::thread::Builder::new()
        .name("ringway-probe".into())
        .spawn(probe)
        .ok()
        .and_then(|t| t.join().ok())
        .unwrap_or_default()
}

/// Probes the kernel by creating two small rings and asking for opcode support.
///
/// Creates rings on the calling thread: prefer [`probe_off_thread`] on a thread that does
/// blocking I/O of its own.
pub fn probe() -> UringCapabilities {
    let ring: IoUring = match IoUring::new(8) {
        Ok(r) => r,
        Err(e) => {
            return UringCapabilities {
                available: false,
                error: Some(e.to_string()),
                ..Default::default()
            }
        }
    };
    let mut p = Probe::new();
    if let Err(e) = ring.submitter().register_probe(&mut p) {
        return UringCapabilities {
            available: false,
            error: Some(e.to_string()),
            ..Default::default()
        };
    }
    let opcodes = vec![
        ("RECV", p.is_supported(opcode::Recv::CODE)),
        ("SEND", p.is_supported(opcode::Send::CODE)),
        ("ACCEPT", p.is_supported(opcode::Accept::CODE)),
        ("CONNECT", p.is_supported(opcode::Connect::CODE)),
        ("LINK_TIMEOUT", p.is_supported(opcode::LinkTimeout::CODE)),
        ("ASYNC_CANCEL", p.is_supported(opcode::AsyncCancel::CODE)),
        ("CLOSE", p.is_supported(opcode::Close::CODE)),
        ("SPLICE", p.is_supported(opcode::Splice::CODE)),
        ("POLL_ADD", p.is_supported(opcode::PollAdd::CODE)),
        ("SEND_ZC", p.is_supported(opcode::SendZc::CODE)),
    ];
    let defer_taskrun = IoUring::<io_uring::squeue::Entry, io_uring::cqueue::Entry>::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(8)
        .is_ok();
    UringCapabilities {
        available: true,
        error: None,
        opcodes,
        defer_taskrun,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn probe_reports_something_coherent() {
        let caps = super::probe();
        if caps.available {
            assert!(!caps.opcodes.is_empty());
        } else {
            assert!(caps.error.is_some());
        }
        assert!(!caps.to_string().is_empty());
    }
}
