//! Active health checks as pure state: the configuration (`[upstreams.health]`), the per-backend
//! up/down state machine, and the per-upstream table that turns probe results into the
//! [`Health`] snapshot published to every core.
//!
//! The control plane runs the probes themselves (a TCP connect, or an HTTP `GET path`), once per
//! process rather than once per core, and feeds each result to [`ActiveHealth::record`]; when a
//! backend flips it publishes `set.with_health(active.snapshot())`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use crate::backend::BackendSet;
use crate::error::HealthConfigError;
use crate::health::Health;

/// How a backend is probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckKind {
    /// A TCP connect within `timeout` is healthy.
    #[default]
    Tcp,
    /// An HTTP/1.1 `GET path` answered within `timeout` with the expected status is healthy.
    Http,
}

impl FromStr for CheckKind {
    type Err = HealthConfigError;

    /// Accepts exactly `"tcp"` and `"http"`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tcp" => Ok(Self::Tcp),
            "http" => Ok(Self::Http),
            other => Err(HealthConfigError::UnknownKind(other.to_owned())),
        }
    }
}

/// Active health check settings for one upstream (`[upstreams.health]` in config).
///
/// By default: TCP checks every 5 s with a 2 s timeout; a backend is marked down after 3
/// consecutive failed probes and up again after 2 consecutive good ones (HAProxy's `fall 3` and
/// `rise 2`); HTTP checks request `/` and accept any 2xx or 3xx status (nginx's rule) unless
/// `expect_status` names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    /// TCP connect or HTTP request.
    pub kind: CheckKind,
    /// The HTTP request path (HTTP checks only). By default `/`.
    pub path: String,
    /// The one status an HTTP check accepts; `None` accepts any 2xx or 3xx. By default `None`.
    pub expect_status: Option<u16>,
    /// Time between the starts of two probes of one backend. By default 5 s.
    pub interval: Duration,
    /// How long a probe may take before it counts as failed. By default 2 s.
    pub timeout: Duration,
    /// Consecutive good probes that bring a down backend back. By default 2.
    pub healthy_after: u32,
    /// Consecutive failed probes that take an up backend out. By default 3.
    pub unhealthy_after: u32,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self {
            kind: CheckKind::Tcp,
            path: "/".to_owned(),
            expect_status: None,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            healthy_after: 2,
            unhealthy_after: 3,
        }
    }
}

impl HealthCheckConfig {
    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// A [`HealthConfigError`] naming the first problem: a zero interval, timeout or threshold, a
    /// timeout longer than the interval, an HTTP path not starting with `/`, or an
    /// `expect_status` outside 100..=599.
    pub fn validate(&self) -> Result<(), HealthConfigError> {
        if self.interval.is_zero() {
            return Err(HealthConfigError::ZeroInterval);
        }
        if self.timeout.is_zero() {
            return Err(HealthConfigError::ZeroTimeout);
        }
        if self.timeout > self.interval {
            return Err(HealthConfigError::TimeoutExceedsInterval);
        }
        if self.healthy_after == 0 || self.unhealthy_after == 0 {
            return Err(HealthConfigError::ZeroThreshold);
        }
        if self.kind == CheckKind::Http && !self.path.starts_with('/') {
            return Err(HealthConfigError::InvalidPath);
        }
        if let Some(status) = self.expect_status {
            if !(100..=599).contains(&status) {
                return Err(HealthConfigError::InvalidStatus(status));
            }
        }
        Ok(())
    }

    /// Whether an HTTP probe answered with `status` passes.
    pub fn status_is_healthy(&self, status: u16) -> bool {
        match self.expect_status {
            Some(expected) => status == expected,
            None => (200..400).contains(&status),
        }
    }
}

/// A change of a backend's active-health state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The backend was down and passed `healthy_after` probes in a row.
    BecameHealthy,
    /// The backend was up and failed `unhealthy_after` probes in a row.
    BecameUnhealthy,
}

/// One backend's active-health state machine: up or down, flipped by a run of consecutive probe
/// results that disagree with the current state; a single agreeing result resets the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthTracker {
    up: bool,
    /// Consecutive results contradicting `up`.
    streak: u32,
}

impl Default for HealthTracker {
    /// Up, as a backend is before its first probe.
    fn default() -> Self {
        Self::new(true)
    }
}

impl HealthTracker {
    /// A tracker starting up or down.
    ///
    /// New backends start up (as in HAProxy): they take traffic before their first probe, and if
    /// they are in fact down, retries and passive health cover the gap until `unhealthy_after`
    /// probes have failed.
    pub fn new(up: bool) -> Self {
        Self { up, streak: 0 }
    }

    /// Whether the backend is currently considered up.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Feeds one probe result; returns the transition if this result flipped the state.
    pub fn record(&mut self, probe_ok: bool, config: &HealthCheckConfig) -> Option<Transition> {
        if probe_ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak = self.streak.saturating_add(1);
        let needed = if self.up {
            config.unhealthy_after
        } else {
            config.healthy_after
        };
        if self.streak < needed.max(1) {
            return None;
        }
        self.up = probe_ok;
        self.streak = 0;
        Some(if probe_ok {
            Transition::BecameHealthy
        } else {
            Transition::BecameUnhealthy
        })
    }
}

/// The active-health state of every backend of one upstream, kept by the control plane.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use ringway_balancer::{ActiveHealth, Backend, BackendSet, HealthCheckConfig};
///
/// let set = BackendSet::new(vec![Backend::new("127.0.0.1:9001".parse().unwrap())]).unwrap();
/// let mut active = ActiveHealth::new(HealthCheckConfig::default(), &set);
/// for _ in 0..3 {
///     if active.record(0, false).is_some() {
///         let next = Arc::new(set.with_health(active.snapshot()).unwrap());
///         assert!(!next.health().is_up(0)); // publish `next` to every core
///     }
/// }
/// ```
#[derive(Debug, Clone)]
pub struct ActiveHealth {
    config: HealthCheckConfig,
    addrs: Vec<SocketAddr>,
    trackers: Vec<HealthTracker>,
}

impl ActiveHealth {
    /// Trackers for every backend of `set`, all starting up.
    pub fn new(config: HealthCheckConfig, set: &BackendSet) -> Self {
        Self {
            config,
            addrs: set.backends().iter().map(|b| b.addr).collect(),
            trackers: vec![HealthTracker::default(); set.len()],
        }
    }

    /// The check settings.
    pub fn config(&self) -> &HealthCheckConfig {
        &self.config
    }

    /// The addresses to probe, indexed like the set the trackers follow.
    pub fn targets(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Feeds a probe result for backend `index`; returns the transition if it flipped (publish a
    /// new snapshot then). Out-of-range indices are ignored.
    pub fn record(&mut self, index: usize, probe_ok: bool) -> Option<Transition> {
        let config = &self.config;
        self.trackers
            .get_mut(index)
            .and_then(|t| t.record(probe_ok, config))
    }

    /// Like [`record`](Self::record), addressing the backend by address (for a probe that
    /// finished after the set changed).
    pub fn record_addr(&mut self, addr: SocketAddr, probe_ok: bool) -> Option<Transition> {
        let index = self.addrs.iter().position(|a| *a == addr)?;
        self.record(index, probe_ok)
    }

    /// Follows a new backend list: trackers of surviving addresses keep their state, new backends
    /// start up.
    pub fn update(&mut self, set: &BackendSet) {
        let old: HashMap<SocketAddr, HealthTracker> = self
            .addrs
            .iter()
            .copied()
            .zip(self.trackers.iter().copied())
            .collect();
        let trackers = set
            .backends()
            .iter()
            .map(|b| old.get(&b.addr).copied().unwrap_or_default())
            .collect();
        self.trackers = trackers;
        self.addrs = set.backends().iter().map(|b| b.addr).collect();
    }

    /// The current flags, indexed like the set last given to [`new`](Self::new) or
    /// [`update`](Self::update).
    pub fn snapshot(&self) -> Health {
        Health::from_flags(
            self.trackers
                .iter()
                .map(HealthTracker::is_up)
                .collect::<Vec<_>>(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Backend;

    fn cfg() -> HealthCheckConfig {
        HealthCheckConfig::default()
    }

    #[test]
    fn flips_down_after_unhealthy_after_failures() {
        let mut t = HealthTracker::default();
        assert_eq!(t.record(false, &cfg()), None);
        assert_eq!(t.record(false, &cfg()), None);
        assert_eq!(t.record(false, &cfg()), Some(Transition::BecameUnhealthy));
        assert!(!t.is_up());
        assert_eq!(t.record(false, &cfg()), None);
    }

    #[test]
    fn interrupted_runs_do_not_flip() {
        let mut t = HealthTracker::default();
        for _ in 0..10 {
            assert_eq!(t.record(false, &cfg()), None);
            assert_eq!(t.record(false, &cfg()), None);
            assert_eq!(t.record(true, &cfg()), None);
        }
        assert!(t.is_up());
    }

    #[test]
    fn flips_up_after_healthy_after_successes() {
        let mut t = HealthTracker::new(false);
        assert_eq!(t.record(true, &cfg()), None);
        assert_eq!(t.record(false, &cfg()), None);
        assert_eq!(t.record(true, &cfg()), None);
        assert_eq!(t.record(true, &cfg()), Some(Transition::BecameHealthy));
        assert!(t.is_up());
    }

    #[test]
    fn validate_catches_each_problem() {
        let cases: Vec<(HealthCheckConfig, HealthConfigError)> = vec![
            (
                HealthCheckConfig {
                    interval: Duration::ZERO,
                    ..cfg()
                },
                HealthConfigError::ZeroInterval,
            ),
            (
                HealthCheckConfig {
                    timeout: Duration::ZERO,
                    ..cfg()
                },
                HealthConfigError::ZeroTimeout,
            ),
            (
                HealthCheckConfig {
                    timeout: Duration::from_secs(6),
                    ..cfg()
                },
                HealthConfigError::TimeoutExceedsInterval,
            ),
            (
                HealthCheckConfig {
                    healthy_after: 0,
                    ..cfg()
                },
                HealthConfigError::ZeroThreshold,
            ),
            (
                HealthCheckConfig {
                    kind: CheckKind::Http,
                    path: "health".to_owned(),
                    ..cfg()
                },
                HealthConfigError::InvalidPath,
            ),
            (
                HealthCheckConfig {
                    expect_status: Some(42),
                    ..cfg()
                },
                HealthConfigError::InvalidStatus(42),
            ),
        ];
        assert_eq!(cfg().validate(), Ok(()));
        for (config, want) in cases {
            assert_eq!(config.validate(), Err(want));
        }
    }

    #[test]
    fn status_rule() {
        let any = cfg();
        assert!(any.status_is_healthy(200) && any.status_is_healthy(302));
        assert!(!any.status_is_healthy(404) && !any.status_is_healthy(503));
        let exact = HealthCheckConfig {
            expect_status: Some(204),
            ..cfg()
        };
        assert!(exact.status_is_healthy(204) && !exact.status_is_healthy(200));
    }

    #[test]
    fn check_kind_parses_exact_names() {
        assert_eq!("tcp".parse::<CheckKind>(), Ok(CheckKind::Tcp));
        assert_eq!("http".parse::<CheckKind>(), Ok(CheckKind::Http));
        assert!("HTTP".parse::<CheckKind>().is_err());
    }

    #[test]
    fn active_health_snapshot_and_update_keep_state() {
        let a = |p| SocketAddr::from(([127, 0, 0, 1], p));
        let set = BackendSet::new(vec![Backend::new(a(1)), Backend::new(a(2))]).unwrap();
        let mut active = ActiveHealth::new(cfg(), &set);
        for _ in 0..3 {
            active.record(1, false);
        }
        assert_eq!(active.snapshot(), Health::from_flags(vec![true, false]));
        // Backend 1 survives at a new index; backend 0 leaves; a new one arrives (up).
        let next = BackendSet::new(vec![Backend::new(a(2)), Backend::new(a(3))]).unwrap();
        active.update(&next);
        assert_eq!(active.snapshot(), Health::from_flags(vec![false, true]));
        assert!(next.with_health(active.snapshot()).is_ok());
        assert_eq!(active.record_addr(a(2), true), None);
        assert_eq!(
            active.record_addr(a(2), true),
            Some(Transition::BecameHealthy)
        );
    }
}
