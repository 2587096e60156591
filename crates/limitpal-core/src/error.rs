//! Error types shared by every component.
//!
//! "Not now" and "never" are different answers: [`RateLimited`] carries the exact time until the
//! request would pass, [`CheckNError::InsufficientCapacity`] says no amount of waiting helps.

use std::time::Duration;

/// A configuration value was rejected by a constructor or `build()`.
///
/// Every variant names the field, so the message reads like "`capacity` must be greater than
/// zero". Nothing in limitpal panics on configuration: bad input ends up here.
///
/// ```
/// use limitpal_core::{ConfigError, TokenBucket};
///
/// let err = TokenBucket::new(0, 1.0).unwrap_err();
/// assert_eq!(err.field(), "capacity");
/// assert_eq!(err.to_string(), "`capacity` must be greater than zero");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The field must be greater than zero.
    #[error("`{field}` must be greater than zero")]
    Zero {
        /// The field that was zero.
        field: &'static str,
    },
    /// The field's value is outside the accepted range.
    #[error("`{field}` is {value}, but must be {expected}")]
    OutOfRange {
        /// The offending field.
        field: &'static str,
        /// The value given, rendered.
        value: String,
        /// What the field accepts.
        expected: &'static str,
    },
}

impl ConfigError {
    /// The name of the field that was rejected.
    #[must_use]
    pub fn field(&self) -> &'static str {
        match self {
            Self::Zero { field } | Self::OutOfRange { field, .. } => field,
        }
    }

    pub(crate) fn out_of_range(
        field: &'static str,
        value: impl std::fmt::Display,
        expected: &'static str,
    ) -> Self {
        Self::OutOfRange {
            field,
            value: value.to_string(),
            expected,
        }
    }
}

/// A rate limiter denied the request; it would be admitted after `retry_after`.
///
/// `retry_after` is exact: checking again after that long (with nothing else consuming the
/// same key) succeeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("rate limited: retry after {retry_after:?}")]
#[non_exhaustive]
pub struct RateLimited {
    /// Time until the request would be admitted.
    pub retry_after: Duration,
}

impl RateLimited {
    /// A denial that would pass after `retry_after`.
    #[must_use]
    pub const fn new(retry_after: Duration) -> Self {
        Self { retry_after }
    }
}

/// The circuit breaker is open; a call may be attempted after `retry_after`.
///
/// `retry_after` is the remaining recovery time, or zero when the breaker is half-open and only
/// its probe slots are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("circuit open: retry after {retry_after:?}")]
#[non_exhaustive]
pub struct CircuitOpen {
    /// Time until the breaker admits a probe.
    pub retry_after: Duration,
}

impl CircuitOpen {
    /// An open-circuit rejection that may pass after `retry_after`.
    #[must_use]
    pub const fn new(retry_after: Duration) -> Self {
        Self { retry_after }
    }
}

/// No slot was free and no room to wait for one (or the wait timed out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("bulkhead full: {limit} calls in flight")]
#[non_exhaustive]
pub struct BulkheadFull {
    /// The limit in force when the call was refused.
    pub limit: u32,
}

impl BulkheadFull {
    /// A refusal under `limit`.
    #[must_use]
    pub const fn new(limit: u32) -> Self {
        Self { limit }
    }
}

/// Why [`RateLimiter::check_n`](crate::RateLimiter::check_n) refused a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckNError {
    /// Not now: the batch fits the capacity and will pass after `retry_after`.
    #[error(transparent)]
    RateLimited(RateLimited),
    /// Never: the batch is larger than the limiter can ever admit at once.
    #[error("a batch of this size can never be admitted: at most {max} at once")]
    InsufficientCapacity {
        /// The largest batch the limiter can admit.
        max: u32,
    },
}

impl From<RateLimited> for CheckNError {
    fn from(e: RateLimited) -> Self {
        Self::RateLimited(e)
    }
}

/// What a resilient executor returns when a run does not succeed.
///
/// Only `Err` is wrapped: a final `Ok` response that the classifier called a failure (an
/// HTTP 503 after the last retry) comes back unchanged as `Ok`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error<E> {
    /// The executor's own limiter denied an attempt.
    RateLimited(RateLimited),
    /// The executor's own breaker is open.
    CircuitOpen(CircuitOpen),
    /// Every allowed attempt failed, or the retry budget refused the next one.
    RetryExhausted {
        /// Attempts made, the first one included.
        attempts: u32,
        /// The last attempt's error.
        last: E,
    },
    /// The call failed and is not retryable (or no retry is configured).
    Failed(E),
    /// The total deadline passed (or the last attempt timed out).
    TimedOut {
        /// Attempts started.
        attempts: u32,
    },
    /// The executor's own bulkhead or adaptive limit had no slot (nor room to wait).
    BulkheadFull(crate::BulkheadFull),
}

impl<E> Error<E> {
    /// What ended the run, as a metric label: `rate_limited`, `circuit_open`,
    /// `retry_exhausted`, `failed`, `timed_out` or `bulkhead_full`.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::RateLimited(_) => "rate_limited",
            Self::CircuitOpen(_) => "circuit_open",
            Self::RetryExhausted { .. } => "retry_exhausted",
            Self::Failed(_) => "failed",
            Self::TimedOut { .. } => "timed_out",
            Self::BulkheadFull(_) => "bulkhead_full",
        }
    }

    /// The callee's error, if this is one: `Failed` or `RetryExhausted`'s `last`.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Self::Failed(e) | Self::RetryExhausted { last: e, .. } => Some(e),
            _ => None,
        }
    }
}

impl<E: std::fmt::Display> std::fmt::Display for Error<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::RateLimited(e) => e.fmt(f),
            Self::CircuitOpen(e) => e.fmt(f),
            Self::RetryExhausted { attempts, last } => {
                write!(f, "gave up after {attempts} attempts: {last}")
            }
            Self::Failed(e) => e.fmt(f),
            Self::TimedOut { attempts } => {
                write!(f, "deadline passed after {attempts} attempts")
            }
            Self::BulkheadFull(e) => e.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for Error<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::RateLimited(e) => Some(e),
            Self::CircuitOpen(e) => Some(e),
            Self::RetryExhausted { last, .. } | Self::Failed(last) => Some(last),
            Self::BulkheadFull(e) => Some(e),
            Self::TimedOut { .. } => None,
        }
    }
}
