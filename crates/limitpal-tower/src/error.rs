//! The layers' own error structs; users downcast a `BoxError` to them.

use std::fmt;

use tower::BoxError;

/// Every attempt a retrying layer was allowed failed (or the retry budget refused the next
/// one). `source()` is the last attempt's error.
///
/// ```
/// use limitpal_tower::RetryExhausted;
/// use std::error::Error;
///
/// let err = RetryExhausted::new(3, "connection refused".into());
/// assert_eq!(err.attempts, 3);
/// assert_eq!(err.source().unwrap().to_string(), "connection refused");
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct RetryExhausted {
    /// Attempts made, the first one included.
    pub attempts: u32,
    last: BoxError,
}

impl RetryExhausted {
    /// `attempts` were made; `last` is the last one's error.
    #[must_use]
    pub fn new(attempts: u32, last: BoxError) -> Self {
        Self { attempts, last }
    }

    /// The last attempt's error.
    #[must_use]
    pub fn last(&self) -> &BoxError {
        &self.last
    }

    /// The last attempt's error, owned.
    #[must_use]
    pub fn into_last(self) -> BoxError {
        self.last
    }
}

impl fmt::Display for RetryExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gave up after {} attempt{}: {}",
            self.attempts,
            if self.attempts == 1 { "" } else { "s" },
            self.last
        )
    }
}

impl std::error::Error for RetryExhausted {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.last)
    }
}

/// The total deadline passed before the run could finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TimedOut {
    /// Attempts started.
    pub attempts: u32,
}

impl TimedOut {
    /// A deadline passed after `attempts` attempts.
    #[must_use]
    pub const fn new(attempts: u32) -> Self {
        Self { attempts }
    }
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "deadline passed after {} attempts", self.attempts)
    }
}

impl std::error::Error for TimedOut {}

/// A pipeline [`Error`](limitpal_core::Error) as tower's `BoxError`: limitpal's own errors as
/// their structs, the callee's error as it is (or inside [`RetryExhausted`]).
pub(crate) fn boxed<E: Into<BoxError>>(error: limitpal_core::Error<E>) -> BoxError {
    use limitpal_core::Error;
    match error {
        Error::RateLimited(e) => Box::new(e),
        Error::CircuitOpen(e) => Box::new(e),
        Error::RetryExhausted { attempts, last } => {
            Box::new(RetryExhausted::new(attempts, last.into()))
        }
        Error::Failed(e) => e.into(),
        Error::TimedOut { attempts } => Box::new(TimedOut::new(attempts)),
        Error::BulkheadFull(e) => Box::new(e),
        _ => "unknown pipeline error".into(),
    }
}

/// A permit that learns from the call it admitted: a breaker's or a bulkhead's.
pub(crate) trait Permit {
    /// Records the outcome and gives the permit back.
    fn record(self, outcome: limitpal_core::Outcome);
}

impl Permit for limitpal_core::CallPermit {
    fn record(self, outcome: limitpal_core::Outcome) {
        limitpal_core::CallPermit::record(self, outcome);
    }
}

impl Permit for limitpal_core::BulkheadPermit {
    fn record(self, outcome: limitpal_core::Outcome) {
        limitpal_core::BulkheadPermit::record(self, outcome);
    }
}

/// Settles `permit` with what `result` means: limitpal's own rejections from inner layers
/// say nothing about the callee (the permit is released unrecorded), anything else is
/// classified.
pub(crate) fn settle<P, T, E, Cl>(permit: P, classifier: &Cl, result: &Result<T, E>)
where
    P: Permit,
    E: 'static,
    Cl: limitpal_core::Classify<T, E>,
{
    match result {
        Err(e) if limitpal_core::OwnRejection::find(e).is_some() => drop(permit),
        _ => permit.record(classifier.verdict(result.as_ref()).breaker),
    }
}
