//! What became of one attempt on a backend, as fed back to the selector after the attempt ends:
//! it drives the in-flight count, the latency average and passive health.

use std::time::Duration;

/// Why an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The TCP (or TLS) connection could not be established. Counts toward passive ejection.
    Connect,
    /// The connect or the response timed out. Counts toward passive ejection, and the latency
    /// (the time waited) feeds the latency average.
    Timeout,
    /// Anything else: a reset mid-response, an invalid response head. The backend answered, so
    /// this neither counts toward ejection nor resets the count.
    Other,
}

impl FailureKind {
    /// Whether this failure counts toward passive health's `max_fails` (connect errors and
    /// timeouts, as the issue and nginx's `proxy_next_upstream error timeout` define it).
    pub fn counts_as_failure(self) -> bool {
        matches!(self, Self::Connect | Self::Timeout)
    }
}

/// The result of one attempt, given to [`Selector::on_finish`](crate::Selector::on_finish).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Time from the start of the attempt (connect or pool checkout) to its end (response head
    /// received, or failure).
    pub latency: Duration,
    /// `None` on success; why it failed otherwise.
    pub failure: Option<FailureKind>,
}

impl Outcome {
    /// A successful attempt that took `latency`.
    pub fn success(latency: Duration) -> Self {
        Self {
            latency,
            failure: None,
        }
    }

    /// An attempt that failed with `kind` after `latency`.
    pub fn failure(kind: FailureKind, latency: Duration) -> Self {
        Self {
            latency,
            failure: Some(kind),
        }
    }

    /// Whether the attempt succeeded.
    pub fn is_ok(&self) -> bool {
        self.failure.is_none()
    }
}
