//! The retry decision of one request, shared by every component that retries.

use std::time::Duration;

use super::{RetryBudget, RetryRng, RetrySchedule};

/// What follows a retryable failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryStep {
    /// Wait this long, then make the next attempt (already counted).
    Retry(Duration),
    /// No retry: attempts used up or the budget refused. Report "retries exhausted".
    Exhausted,
    /// No retry: the callee asked for a wait longer than `max_delay` (or than the time
    /// left). Return the last outcome as it is.
    GiveUp,
}

/// The retry bookkeeping of one request: attempts made and its random stream, created only
/// if the request ever retries. 24 bytes, no allocation.
///
/// ```
/// use limitpal_core::{Jitter, RetryPolicy, RetryState, RetryStep};
/// use std::time::Duration;
///
/// let policy = RetryPolicy::builder()
///     .max_attempts(2)
///     .base_delay(Duration::from_millis(500))
///     .jitter(Jitter::None)
///     .build()?;
/// let mut state = RetryState::new(policy.new_stream_seed());
/// let step = state.after_failure(&policy.schedule(), None, None, Duration::ZERO, None);
/// assert_eq!(step, RetryStep::Retry(Duration::from_millis(500)));
/// assert_eq!(state.attempts(), 2);
/// let step = state.after_failure(&policy.schedule(), None, None, Duration::ZERO, None);
/// assert_eq!(step, RetryStep::Exhausted);
/// # Ok::<(), limitpal_core::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct RetryState {
    attempts: u32,
    stream: u64,
    rng: Option<RetryRng>,
}

impl RetryState {
    /// The state of a request whose first attempt is under way; `stream` seeds its jitter.
    #[must_use]
    pub fn new(stream: u64) -> Self {
        Self {
            attempts: 1,
            stream,
            rng: None,
        }
    }

    /// Attempts made so far, the one under way included.
    #[must_use]
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Decides what follows a retryable failure of the current attempt.
    ///
    /// `retry_after` is a wait the callee asked for; the delay is the longer of it and the
    /// backoff. A `retry_after` beyond `max_delay`, or beyond `time_left` when a deadline
    /// applies, gives [`RetryStep::GiveUp`] at once. The budget, if any, is asked last, so
    /// a refused retry costs nothing.
    pub fn after_failure(
        &mut self,
        schedule: &RetrySchedule,
        retry_after: Option<Duration>,
        budget: Option<&RetryBudget>,
        now: Duration,
        time_left: Option<Duration>,
    ) -> RetryStep {
        if self.attempts >= schedule.max_attempts() {
            return RetryStep::Exhausted;
        }
        let asked = retry_after.unwrap_or(Duration::ZERO);
        if asked > schedule.max_delay() || time_left.is_some_and(|left| asked > left) {
            return RetryStep::GiveUp;
        }
        let stream = self.stream;
        let rng = self.rng.get_or_insert_with(|| RetryRng::new(stream));
        let delay = schedule.delay(self.attempts, rng).max(asked);
        if budget.is_some_and(|b| !b.withdraw(now)) {
            #[cfg(feature = "tracing")]
            tracing::info!(
                target: "limitpal::retry",
                attempts = self.attempts,
                "retry budget exhausted: not retrying"
            );
            return RetryStep::Exhausted;
        }
        self.attempts = self.attempts.saturating_add(1);
        #[cfg(feature = "tracing")]
        tracing::debug!(
            target: "limitpal::retry",
            attempt = self.attempts,
            delay = ?delay,
            retry_after = ?retry_after,
            "retrying"
        );
        RetryStep::Retry(delay)
    }
}
