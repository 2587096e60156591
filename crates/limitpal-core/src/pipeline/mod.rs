//! The pipeline state machine shared by the sync and async executors and the tower layer.
//!
//! Per attempt, always in this order:
//!
//! 1. deadline: past it → [`Error::TimedOut`];
//! 2. breaker admission: Open → [`Error::CircuitOpen`] at once, nothing else runs;
//! 3. rate limiter: denied → [`Error::RateLimited`], and the breaker permit is released
//!    unrecorded. Every attempt is charged unless `charge_retries(false)`. With
//!    `limiter_wait` the attempt reserves its slot instead (at most `limiter_wait` ahead,
//!    cut to the deadline), drops its breaker permit, waits, and asks the breaker again: an
//!    Open breaker then ends the run with [`Error::CircuitOpen`] and the reservation is
//!    cancelled. A key held by pushback (an outcome's `retry_after`, see `respect_pushback`)
//!    is waited for or denied the same way;
//! 4. bulkhead or adaptive limit: a slot, or [`Error::BulkheadFull`] when none is free within
//!    its `max_wait` cut to the deadline (the breaker permit is released unrecorded);
//! 5. the call, bounded by the attempt timeout cut to the deadline;
//! 6. classify and record the outcome in the breaker and the adaptive limit;
//! 7. retryable, attempts left, budget allows → wait `max(backoff, retry_after)` and go
//!    again; a `retry_after` beyond `max_delay` or the deadline stops the run with the last
//!    outcome; a breaker that will still be Open when the next attempt would start stops the
//!    run with `CircuitOpen` without sleeping.
//!
//! [`Pipeline::step`] makes every one of these decisions as a sans-IO step machine: it takes
//! what the driver saw ([`Event`]) and answers what to do next ([`Action`]: `CheckLimit`,
//! `WaitQuota`, `TakeSlot`, `Call`, `Sleep`, `Done`). It never sleeps, reads no limiter and
//! calls nothing; the drivers (the sync executor, the async executor, the tower layer's
//! response future) only perform those actions:
//!
//! ```
//! use limitpal_core::pipeline::{Action, Attempt, Event, PipelineParts};
//! use limitpal_core::{DefaultClassifier, Error, Jitter, ManualClock, RetryPolicy};
//! use std::sync::Arc;
//!
//! let clock = ManualClock::new();
//! let parts = PipelineParts {
//!     retry: Some(RetryPolicy::builder().max_attempts(2).jitter(Jitter::None).build()?),
//!     ..PipelineParts::default()
//! };
//! let pipeline = parts.build(DefaultClassifier, move || Arc::new(clock))?;
//! let mut run = pipeline.start(0, false);
//! let mut action = pipeline.step::<u32, &str>(&mut run, Event::Start);
//! let mut calls = 0;
//! let result = loop {
//!     action = match action {
//!         Action::Call { .. } => {
//!             calls += 1;
//!             let answer = if calls == 1 { Err("flaky") } else { Ok(7) };
//!             pipeline.step(&mut run, Event::Called(Attempt::Done(answer)))
//!         }
//!         Action::Sleep(_) => pipeline.step(&mut run, Event::Slept),
//!         Action::Done(result) => break result,
//!         _ => unreachable!("no limiter, no bulkhead"),
//!     };
//! };
//! assert_eq!(result, Ok::<_, Error<&str>>(7));
//! # Ok::<(), limitpal_core::ConfigError>(())
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

mod builder;
mod fallback;
mod machine;

pub use crate::breaker::BreakerTicket;
pub use builder::{PerKey, PipelineBuilder};
pub use fallback::{FallbackFn, FallbackSlot, NoFallback, WithFallback};
pub use machine::{Action, Attempt, Event, Run, Stages};

#[cfg(doc)]
use crate::Error;
use crate::metrics::RetryMetrics;
use crate::{
    Bulkhead, CircuitBreaker, CircuitOpen, Clock, ConfigError, Hedge, Outcome, RetryBudget,
    RetryPolicy,
};

/// A circuit breaker with its clock type erased.
trait Admit: Send + Sync {
    fn try_acquire(&self) -> Result<BreakerTicket, CircuitOpen>;
    fn record(&self, ticket: BreakerTicket, outcome: Outcome);
    fn open_for(&self) -> Option<Duration>;
}

impl<C: Clock> Admit for CircuitBreaker<C> {
    fn try_acquire(&self) -> Result<BreakerTicket, CircuitOpen> {
        self.try_acquire_ticket()
    }

    fn record(&self, ticket: BreakerTicket, outcome: Outcome) {
        self.record_ticket(ticket, outcome);
    }

    fn open_for(&self) -> Option<Duration> {
        CircuitBreaker::open_for(self)
    }
}

/// A circuit breaker of any clock type, as a pipeline holds it. Made with `From`.
#[derive(Clone)]
pub struct AnyBreaker(Arc<dyn Admit>);

impl<C: Clock> From<CircuitBreaker<C>> for AnyBreaker {
    fn from(breaker: CircuitBreaker<C>) -> Self {
        Self(Arc::new(breaker))
    }
}

impl fmt::Debug for AnyBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnyBreaker")
            .field("open_for", &self.0.open_for())
            .finish()
    }
}

/// What a builder collects for a pipeline, in any order: both executor builders and the
/// tower `ResilienceLayer` builder hold one, so the parts and their validation exist once.
#[derive(Clone)]
pub struct PipelineParts {
    /// The breaker, if any.
    pub breaker: Option<AnyBreaker>,
    /// The bulkhead or adaptive limit, if any.
    pub bulkhead: Option<Bulkhead>,
    /// The retry policy, if any.
    pub retry: Option<RetryPolicy>,
    /// The retry budget, if any.
    pub budget: Option<RetryBudget>,
    /// Whether attempts after the first are checked and charged by the limiter.
    pub charge_retries: bool,
    /// The per-attempt timeout, if any.
    pub attempt_timeout: Option<Duration>,
    /// The total deadline, if any.
    pub deadline: Option<Duration>,
    /// The clock, if one was given.
    pub clock: Option<Arc<dyn Clock>>,
    /// Called before every retry with (the attempt about to start, the wait before it).
    pub on_retry: Option<RetryListener>,
    /// A name for the pipeline's retry metrics (feature `metrics`).
    pub name: Option<String>,
    /// How long an attempt may wait for the limiter's quota (`None`: it is refused at once).
    pub limiter_wait: Option<Duration>,
    /// Whether an upstream's `retry_after` holds the key in the limiter for every caller.
    pub respect_pushback: bool,
    /// When to hedge a slow call, if ever.
    pub hedge: Option<Hedge>,
}

/// How long pushback may hold a key when the pipeline has no retry policy to bound it.
const MAX_PUSHBACK_WITHOUT_RETRY: Duration = Duration::from_secs(10);

/// Called before every retry with (the attempt about to start, the wait before it).
pub type RetryListener = Arc<dyn Fn(u32, Duration) + Send + Sync>;

impl Default for PipelineParts {
    fn default() -> Self {
        Self {
            breaker: None,
            bulkhead: None,
            retry: None,
            budget: None,
            charge_retries: true,
            attempt_timeout: None,
            deadline: None,
            clock: None,
            on_retry: None,
            name: None,
            limiter_wait: None,
            respect_pushback: true,
            hedge: None,
        }
    }
}

impl PipelineParts {
    /// Validates the parts and builds the pipeline; `default_clock` is used when no clock was
    /// given.
    ///
    /// # Errors
    /// [`ConfigError`] for a zero `attempt_timeout` or `deadline`.
    pub fn build<Cl>(
        self,
        classifier: Cl,
        default_clock: impl FnOnce() -> Arc<dyn Clock>,
    ) -> Result<Pipeline<Cl>, ConfigError> {
        if self.attempt_timeout == Some(Duration::ZERO) {
            return Err(ConfigError::Zero {
                field: "attempt_timeout",
            });
        }
        if self.deadline == Some(Duration::ZERO) {
            return Err(ConfigError::Zero { field: "deadline" });
        }
        if let Some(hedge) = &self.hedge {
            hedge.validate()?;
        }
        Ok(Pipeline {
            breaker: self.breaker,
            bulkhead: self.bulkhead,
            retry: self.retry,
            budget: self.budget,
            classifier,
            charge_retries: self.charge_retries,
            attempt_timeout: self.attempt_timeout,
            deadline: self.deadline,
            clock: self.clock.unwrap_or_else(default_clock),
            metrics: RetryMetrics::new(self.name.as_deref()),
            on_retry: self.on_retry,
            limiter_wait: self.limiter_wait,
            respect_pushback: self.respect_pushback,
            hedge: self.hedge,
        })
    }
}

impl fmt::Debug for PipelineParts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipelineParts")
            .field("breaker", &self.breaker)
            .field("bulkhead", &self.bulkhead)
            .field("retry", &self.retry)
            .field("budget", &self.budget)
            .field("charge_retries", &self.charge_retries)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("deadline", &self.deadline)
            .field("clock", &self.clock.is_some())
            .field("on_retry", &self.on_retry.is_some())
            .field("limiter_wait", &self.limiter_wait)
            .field("respect_pushback", &self.respect_pushback)
            .field("hedge", &self.hedge)
            .finish()
    }
}

/// The parts of a pipeline other than the limiter and the call: breaker, retry policy and
/// budget, classifier, timeouts, and the clock that measures them.
#[derive(Clone)]
pub struct Pipeline<Cl> {
    breaker: Option<AnyBreaker>,
    bulkhead: Option<Bulkhead>,
    retry: Option<RetryPolicy>,
    budget: Option<RetryBudget>,
    classifier: Cl,
    charge_retries: bool,
    attempt_timeout: Option<Duration>,
    deadline: Option<Duration>,
    clock: Arc<dyn Clock>,
    on_retry: Option<RetryListener>,
    metrics: RetryMetrics,
    limiter_wait: Option<Duration>,
    respect_pushback: bool,
    hedge: Option<Hedge>,
}

impl<Cl> Pipeline<Cl> {
    /// The hedge, if any.
    pub fn hedge(&self) -> Option<&Hedge> {
        self.hedge.as_ref()
    }

    /// The clock that measures timeouts and does a sync executor's sleeping.
    pub fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    /// The retry policy, if any.
    pub fn retry_policy(&self) -> Option<&RetryPolicy> {
        self.retry.as_ref()
    }
}

impl<Cl> fmt::Debug for Pipeline<Cl> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("breaker", &self.breaker.is_some())
            .field("bulkhead", &self.bulkhead)
            .field("retry", &self.retry)
            .field("budget", &self.budget)
            .field("charge_retries", &self.charge_retries)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("deadline", &self.deadline)
            .field("hedge", &self.hedge)
            .finish_non_exhaustive()
    }
}
