//! Classification: what a call's result means for the breaker and for retries.

use std::any::Any;
use std::error::Error as StdError;
use std::time::Duration;

use crate::error::{BulkheadFull, CircuitOpen, RateLimited};

/// What a call's result means.
///
/// Components recognise limitpal's own rejections coming back from an inner layer *before*
/// asking the classifier: a [`RateLimited`] is never recorded by a breaker and is retried
/// after its `retry_after`; a [`CircuitOpen`] is never recorded and never retried; a
/// [`BulkheadFull`] is never recorded and is retried after the usual backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The call worked: the breaker records a success.
    Success,
    /// The call failed: the breaker records a failure.
    Failure {
        /// Whether retrying may help.
        retryable: bool,
        /// A wait the callee asked for (`Retry-After`, or our own `RateLimited`).
        retry_after: Option<Duration>,
    },
    /// Says nothing about the callee's health: not recorded by the breaker, not retried.
    Ignore,
}

impl Outcome {
    /// A retryable failure with no requested wait.
    pub const RETRYABLE: Self = Self::Failure {
        retryable: true,
        retry_after: None,
    };
    /// A failure that retrying will not fix.
    pub const FATAL: Self = Self::Failure {
        retryable: false,
        retry_after: None,
    };
}

/// Classifies a call's result: `Fn(Result<&Res, &Err>) -> Outcome`.
///
/// Closures implement it; [`DefaultClassifier`] is what every component uses unless told
/// otherwise.
///
/// ```
/// use limitpal_core::{Classify, Outcome};
///
/// // Treat HTTP-like status codes: 5xx failed, anything else worked.
/// let by_status = |r: Result<&u16, &std::io::Error>| match r {
///     Ok(status) if *status >= 500 => Outcome::RETRYABLE,
///     Ok(_) => Outcome::Success,
///     Err(_) => Outcome::RETRYABLE,
/// };
/// assert_eq!(by_status.classify(Ok(&503)), Outcome::RETRYABLE);
/// assert_eq!(by_status.classify(Ok(&200)), Outcome::Success);
/// ```
pub trait Classify<Res, Err>: Clone + Send + Sync + 'static {
    /// What `result` means.
    fn classify(&self, result: Result<&Res, &Err>) -> Outcome;

    /// The full verdict, for results whose meaning to the breaker and to retries differ (an
    /// HTTP 429: the callee is protecting itself, so retry after its `Retry-After` but do not
    /// count it against its health). By default derived from [`classify`](Self::classify).
    fn verdict(&self, result: Result<&Res, &Err>) -> Verdict {
        Verdict::from(self.classify(result))
    }

    /// [`verdict`](Self::verdict), told whether the `retry_after` of a result that is not
    /// retried will be used: the pipeline passes `pushback: false` when it would hold
    /// nothing with it (`respect_pushback` off, or no limiter in the run), and a classifier
    /// may then leave that wait unread (the HTTP classifiers read no header of a `2xx`).
    /// A retried result's `retry_after` is always used. By default `verdict`.
    #[inline(always)]
    fn verdict_with(&self, result: Result<&Res, &Err>, pushback: bool) -> Verdict {
        let _ = pushback;
        self.verdict(result)
    }

    /// The substitute answer for a run that ended in `error`, if there is one: `None` by
    /// default. A pipeline given `.fallback(f)` classifies with a [`WithFallback`](crate::pipeline::WithFallback)
    /// whose `fallback` is `f`; the step machine asks it once, where the run ends.
    #[inline(always)]
    fn fallback(&self, error: &crate::Error<Err>) -> Option<Res> {
        let _ = error;
        None
    }
}

/// What a result means to the breaker and to retries, separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// What the breaker records: `Success`, `Failure`, or nothing for `Ignore`.
    pub breaker: Outcome,
    /// Whether retrying may help.
    pub retry: bool,
    /// A wait the callee asked for before a retry, or (on a result that is not retried)
    /// before the next call for the same key: pushback, held in the limiter with
    /// `respect_pushback`.
    pub retry_after: Option<Duration>,
}

impl Verdict {
    /// The single [`Outcome`] that stands for this verdict where only one fits (a
    /// classifier's `classify`): a result the breaker ignores but retries (an HTTP 429) is a
    /// retryable failure with its wait; anything else is the breaker's outcome.
    #[must_use]
    pub fn outcome(self) -> Outcome {
        match self.breaker {
            Outcome::Ignore if self.retry => Outcome::Failure {
                retryable: true,
                retry_after: self.retry_after,
            },
            other => other,
        }
    }
}

impl From<Outcome> for Verdict {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Failure {
                retryable,
                retry_after,
            } => Self {
                breaker: outcome,
                retry: retryable,
                retry_after,
            },
            other => Self {
                breaker: other,
                retry: false,
                retry_after: None,
            },
        }
    }
}

impl<F, Res, Err> Classify<Res, Err> for F
where
    F: Fn(Result<&Res, &Err>) -> Outcome + Clone + Send + Sync + 'static,
{
    #[inline]
    fn classify(&self, result: Result<&Res, &Err>) -> Outcome {
        self(result)
    }
}

/// The default classifier: `Ok` is a success, any `Err` a retryable failure. limitpal's own
/// errors ([`RateLimited`], [`CircuitOpen`], directly or inside tower's `BoxError`) read as
/// [`Outcome::Ignore`] — though components handle those before any classifier is asked.
///
/// ```
/// use limitpal_core::{Classify, DefaultClassifier, Outcome};
///
/// let io = std::io::Error::other("connection reset");
/// assert_eq!(DefaultClassifier.classify(Err::<&(), _>(&io)), Outcome::RETRYABLE);
/// assert_eq!(DefaultClassifier.classify(Ok::<_, &std::io::Error>(&())), Outcome::Success);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefaultClassifier;

type BoxError = Box<dyn StdError + Send + Sync>;

/// One of limitpal's own rejections, found in an error coming back from an inner layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnRejection {
    /// An inner limiter denied the call; it may pass after this wait.
    RateLimited(Duration),
    /// An inner breaker is open: retrying cannot help now.
    CircuitOpen,
    /// An inner bulkhead or adaptive limit had no slot: retryable after a backoff.
    BulkheadFull,
}

impl OwnRejection {
    /// Recognises our own rejections in `err`, directly or inside a `BoxError`.
    #[inline]
    pub fn find<E: 'static>(err: &E) -> Option<Self> {
        if let Some(limited) = find::<RateLimited, E>(err) {
            Some(Self::RateLimited(limited.retry_after))
        } else if find::<CircuitOpen, E>(err).is_some() {
            Some(Self::CircuitOpen)
        } else if find::<BulkheadFull, E>(err).is_some() {
            Some(Self::BulkheadFull)
        } else {
            None
        }
    }
}

fn find<T: StdError + 'static, E: 'static>(err: &E) -> Option<&T> {
    let any: &dyn Any = err;
    if let Some(t) = any.downcast_ref::<T>() {
        return Some(t);
    }
    any.downcast_ref::<BoxError>()?.downcast_ref::<T>()
}

impl<Res, Err: 'static> Classify<Res, Err> for DefaultClassifier {
    #[inline]
    fn classify(&self, result: Result<&Res, &Err>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(e) if OwnRejection::find(e).is_some() => Outcome::Ignore,
            Err(_) => Outcome::RETRYABLE,
        }
    }
}
