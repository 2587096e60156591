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
