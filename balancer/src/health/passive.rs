//! Passive health: a backend that fails `max_fails` times in a row on a core is skipped by that
//! core for `fail_timeout`, then given one trial request; a success restores it.
//!
//! Each core judges on its own from the outcomes of its own requests, so ejection needs no
//! coordination and costs nothing on other cores. Active checks (the [`Health`](super::Health)
//! snapshot) remain the process-wide signal.

use std::time::{Duration, Instant};

use crate::error::HealthConfigError;

/// The longest `fail_timeout` accepted, so a deadline can never overflow an `Instant`.
pub const MAX_FAIL_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// Passive health settings for one upstream, like nginx's `max_fails` and `fail_timeout`.
///
/// Only connect errors and timeouts count as failures
/// ([`FailureKind::counts_as_failure`](crate::FailureKind::counts_as_failure)); any success
/// resets the count. After `max_fails` consecutive failures the backend is skipped on that core
/// until `fail_timeout` has passed; then exactly one request is let through as a trial (the next
/// is held back until the trial's outcome, or another `fail_timeout`, whichever comes first). A
/// successful trial restores the backend; a failed one ejects it for another `fail_timeout`.
///
/// By default `max_fails` is 3 and `fail_timeout` 10 s. nginx counts a single failure (`max_fails
/// = 1`), but Ringway retries connect failures by default, so one transient refusal (a full
/// accept backlog, a restart) costs the client nothing, while ejecting on it would shift a whole
/// core's load for ten seconds; three consecutive failures is a strong signal. `max_fails = 0`
/// turns passive health off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassiveHealth {
    /// Consecutive failures that eject a backend on a core; 0 disables passive health.
    pub max_fails: u32,
    /// How long an ejected backend is skipped before its trial request.
    pub fail_timeout: Duration,
}

impl Default for PassiveHealth {
    fn default() -> Self {
        Self {
            max_fails: 3,
            fail_timeout: Duration::from_secs(10),
        }
    }
}

impl PassiveHealth {
    /// Passive health switched off: no backend is ever ejected by request outcomes.
    pub fn disabled() -> Self {
        Self {
            max_fails: 0,
            ..Self::default()
        }
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// [`HealthConfigError::FailTimeoutOutOfRange`] when `fail_timeout` is zero or above
    /// [`MAX_FAIL_TIMEOUT`].
    pub fn validate(&self) -> Result<(), HealthConfigError> {
        if self.fail_timeout.is_zero() || self.fail_timeout > MAX_FAIL_TIMEOUT {
            return Err(HealthConfigError::FailTimeoutOutOfRange);
        }
        Ok(())
    }

    fn enabled(&self) -> bool {
        self.max_fails > 0
    }

    fn deadline(&self, now: Instant) -> Instant {
        // Clamped so the addition cannot overflow; an Instant this close to its end is theoretical.
        now.checked_add(self.fail_timeout.min(MAX_FAIL_TIMEOUT))
            .unwrap_or(now)
    }
}

/// One backend's passive-health state on one core.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PassiveState {
    /// Consecutive counted failures.
    failures: u32,
    /// Skipped until this instant, if set.
    blocked_until: Option<Instant>,
}

impl PassiveState {
    /// Whether the backend may be picked at `now`.
    #[inline]
    pub(crate) fn allows(&self, now: Instant) -> bool {
        match self.blocked_until {
            None => true,
            Some(until) => now >= until,
        }
    }

    /// Whether the backend has a deadline at all (ejected, on trial, or due for a trial): picks
    /// must then check [`allows`](Self::allows).
    #[inline]
    pub(crate) fn has_deadline(&self) -> bool {
        self.blocked_until.is_some()
    }

    /// Whether the backend is currently ejected at `now`.
    pub(crate) fn is_ejected(&self, now: Instant) -> bool {
        !self.allows(now)
    }

    /// The backend was picked at `now`. If it was ejected, this pick is its trial: hold further
    /// picks back until the trial's outcome (or another `fail_timeout`).
    #[inline]
    pub(crate) fn on_picked(&mut self, now: Instant, config: &PassiveHealth) {
        if config.enabled() && self.failures >= config.max_fails {
            self.blocked_until = Some(config.deadline(now));
        }
    }

    /// A request to the backend succeeded: forget past failures.
    pub(crate) fn on_success(&mut self) {
        self.failures = 0;
        self.blocked_until = None;
    }

    /// A request to the backend failed in a way that counts (connect error, timeout) at `now`.
    pub(crate) fn on_failure(&mut self, now: Instant, config: &PassiveHealth) {
        if !config.enabled() {
            return;
        }
        self.failures = self.failures.saturating_add(1);
        if self.failures >= config.max_fails {
            self.blocked_until = Some(config.deadline(now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: PassiveHealth = PassiveHealth {
        max_fails: 3,
        fail_timeout: Duration::from_secs(10),
    };

    #[test]
    fn ejects_after_max_fails_consecutive_failures() {
        let t0 = Instant::now();
        let mut s = PassiveState::default();
        s.on_failure(t0, &CONFIG);
        s.on_failure(t0, &CONFIG);
        assert!(s.allows(t0));
        s.on_failure(t0, &CONFIG);
        assert!(!s.allows(t0));
        assert!(!s.allows(t0 + Duration::from_secs(9)));
        assert!(s.allows(t0 + Duration::from_secs(10)));
    }

    #[test]
    fn success_resets_the_count() {
        let t0 = Instant::now();
        let mut s = PassiveState::default();
        s.on_failure(t0, &CONFIG);
        s.on_failure(t0, &CONFIG);
        s.on_success();
        s.on_failure(t0, &CONFIG);
        s.on_failure(t0, &CONFIG);
        assert!(s.allows(t0));
    }

    #[test]
    fn one_trial_after_fail_timeout() {
        let t0 = Instant::now();
        let mut s = PassiveState::default();
        for _ in 0..3 {
            s.on_failure(t0, &CONFIG);
        }
        let t1 = t0 + Duration::from_secs(10);
        assert!(s.allows(t1));
        s.on_picked(t1, &CONFIG);
        // The trial is in flight: nobody else gets through.
        assert!(!s.allows(t1 + Duration::from_secs(1)));
        // It failed: ejected for another fail_timeout from the failure.
        let t2 = t1 + Duration::from_secs(2);
        s.on_failure(t2, &CONFIG);
        assert!(!s.allows(t2 + Duration::from_secs(9)));
        assert!(s.allows(t2 + Duration::from_secs(10)));
        // The next trial succeeds: fully restored.
        let t3 = t2 + Duration::from_secs(10);
        s.on_picked(t3, &CONFIG);
        s.on_success();
        s.on_picked(t3, &CONFIG);
        assert!(s.allows(t3));
    }

    #[test]
    fn a_lost_trial_expires() {
        let t0 = Instant::now();
        let mut s = PassiveState::default();
        for _ in 0..3 {
            s.on_failure(t0, &CONFIG);
        }
        let t1 = t0 + Duration::from_secs(10);
        s.on_picked(t1, &CONFIG);
        // The trial's outcome never arrives: another trial after fail_timeout.
        assert!(s.allows(t1 + Duration::from_secs(10)));
    }

    #[test]
    fn max_fails_zero_disables() {
        let t0 = Instant::now();
        let mut s = PassiveState::default();
        let off = PassiveHealth::disabled();
        for _ in 0..100 {
            s.on_failure(t0, &off);
            s.on_picked(t0, &off);
        }
        assert!(s.allows(t0));
    }

    #[test]
    fn validate_bounds_fail_timeout() {
        assert_eq!(PassiveHealth::default().validate(), Ok(()));
        let zero = PassiveHealth {
            fail_timeout: Duration::ZERO,
            ..PassiveHealth::default()
        };
        assert_eq!(
            zero.validate(),
            Err(HealthConfigError::FailTimeoutOutOfRange)
        );
    }
}
