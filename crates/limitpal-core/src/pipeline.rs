//! The pipeline state machine shared by the sync and async executors and the tower layer.
//!
//! Per attempt, always in this order:
//!
//! 1. deadline: past it → [`Error::TimedOut`];
//! 2. breaker admission: Open → [`Error::CircuitOpen`] at once, nothing else runs;
//! 3. rate limiter (done by the caller, which owns the limiter): denied →
//!    [`Error::RateLimited`], and the breaker permit is released unrecorded. Every attempt is
//!    charged unless `charge_retries(false)`. With `limiter_wait` the attempt reserves its
//!    slot instead (at most [`Pipeline::limit_wait`] ahead, cut to the deadline), drops its
//!    breaker permit, sleeps, and goes back to step 2: an Open breaker then ends the run with
//!    [`Error::CircuitOpen`] and the reservation is cancelled. A key held by pushback (an
//!    outcome's `retry_after`, see `respect_pushback`) is waited for or denied the same way;
//! 4. bulkhead or adaptive limit (done by the caller, which does any waiting): a slot, or
//!    [`Error::BulkheadFull`] when none is free within its `max_wait` (the breaker permit is
//!    released unrecorded);
//! 5. the call (done by the caller), bounded by the attempt timeout;
//! 6. classify and record the outcome in the breaker and the adaptive limit;
//! 7. retryable, attempts left, budget allows → wait `max(backoff, retry_after)` and go
//!    again; a `retry_after` beyond `max_delay` or the deadline stops the run with the last
//!    outcome; a breaker that will still be Open when the next attempt would start stops the
//!    run with `CircuitOpen` without sleeping.
//!
//! This module decides; it never sleeps, reads no limiter and calls nothing. The executors
//! and the layer supply the waiting and the calling, so the decision logic exists once.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use crate::breaker::BreakerTicket;
use crate::metrics::RetryMetrics;
use crate::{
    Bulkhead, BulkheadPermit, CircuitBreaker, CircuitOpen, Classify, Clock, ConfigError, Error,
    Outcome, OwnRejection, RetryBudget, RetryPolicy, RetryState, RetryStep, Verdict,
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
}

impl<Cl> Pipeline<Cl> {
    /// The clock that measures timeouts and does a sync executor's sleeping.
    pub fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    /// The retry policy, if any.
    pub fn retry_policy(&self) -> Option<&RetryPolicy> {
        self.retry.as_ref()
    }

    /// Step 4's bulkhead or adaptive limit, if any: the caller takes the slot (waiting up to
    /// [`slot_wait`](Self::slot_wait)) and gives it to [`Permits::hold_slot`].
    pub fn bulkhead(&self) -> Option<&Bulkhead> {
        self.bulkhead.as_ref()
    }

    /// How long step 4 may wait for a slot: the bulkhead's `max_wait`, cut to the time left
    /// before the deadline.
    pub fn slot_wait(&self, run: &Run) -> Duration {
        let wait = self
            .bulkhead
            .as_ref()
            .map_or(Duration::ZERO, Bulkhead::max_wait);
        run.deadline_at
            .map_or(wait, |at| wait.min(at.saturating_sub(self.clock.now())))
    }

    /// Starts a run: deposits in the budget, fixes the deadline. `stream` seeds the run's
    /// jitter (see [`RetryPolicy::new_stream_seed`]).
    pub fn start(&self, stream: u64) -> Run {
        // Read the clock only when something needs the time: a request's happy path with
        // neither a budget nor a deadline reads no clock here.
        let now = (self.budget.is_some() || self.deadline.is_some()).then(|| self.clock.now());
        if let (Some(budget), Some(now)) = (&self.budget, now) {
            budget.deposit(now);
        }
        Run {
            retry: RetryState::new(stream),
            deadline_at: self.deadline.zip(now).map(|(d, now)| now.saturating_add(d)),
            pushback: None,
        }
    }

    /// Steps 1 and 2: the deadline, then the breaker. `Ok` carries the breaker's permit
    /// (if there is a breaker); the caller checks its limiter next if [`charges`](Self::charges),
    /// then takes a [`bulkhead`](Self::bulkhead) slot.
    ///
    /// # Errors
    /// [`Error::TimedOut`] past the deadline, [`Error::CircuitOpen`] when the breaker is open.
    #[inline]
    pub fn admit<E>(&self, run: &Run) -> Result<Permits, Error<E>> {
        if let Some(at) = run.deadline_at
            && self.clock.now() >= at
        {
            return Err(run.timed_out_before_call());
        }
        let breaker = match &self.breaker {
            None => None,
            Some(breaker) => Some(breaker.0.try_acquire().map_err(Error::CircuitOpen)?),
        };
        Ok(Permits {
            breaker,
            slot: None,
        })
    }

    /// Step 3 in wait mode: how long this attempt may wait for quota, the configured
    /// `limiter_wait` cut to the time left before the deadline. `None`: no waiting (a denial
    /// is refused at once).
    pub fn limit_wait(&self, run: &Run) -> Option<Duration> {
        let wait = self.limiter_wait?;
        Some(
            run.deadline_at
                .map_or(wait, |at| wait.min(at.saturating_sub(self.clock.now()))),
        )
    }

    /// Step 3's condition: whether this attempt is checked and charged by the limiter.
    pub fn charges(&self, run: &Run) -> bool {
        self.charge_retries || run.attempts() == 1
    }

    /// How long the attempt may run: the attempt timeout, cut to the time left before the
    /// deadline. `None`: unbounded.
    pub fn attempt_limit(&self, run: &Run) -> Option<Duration> {
        let left = run
            .deadline_at
            .map(|at| at.saturating_sub(self.clock.now()));
        match (self.attempt_timeout, left) {
            (Some(a), Some(l)) => Some(a.min(l)),
            (a, l) => a.or(l),
        }
    }

    /// Whether an attempt that ran out of time hit the total deadline (the run ends with
    /// `TimedOut`, nothing recorded) rather than its own attempt timeout (a retryable failure).
    pub fn past_deadline(&self, run: &Run) -> bool {
        run.deadline_at.is_some_and(|at| self.clock.now() >= at)
    }

    /// Step 6: classifies the attempt and records it in the breaker and the adaptive limit.
    /// Returns `Some(retry_after)` when the outcome is retryable.
    ///
    /// An upstream's own `retry_after` (not one of our rejections) is left in the run as
    /// pushback for the caller to [`hold`](crate::RateLimiter::hold) the key with.
    #[inline]
    fn record<T, E>(
        &self,
        run: &mut Run,
        permits: Permits,
        attempt: &Attempt<T, E>,
    ) -> Option<Option<Duration>>
    where
        Cl: Classify<T, E>,
        E: 'static,
    {
        let verdict = match attempt {
            // an attempt timeout is a retryable failure
            Attempt::TimedOut => Verdict::from(Outcome::RETRYABLE),
            Attempt::Done(result) => match result.as_ref().err().and_then(OwnRejection::find) {
                // our own rejections from inside the call say nothing about the callee
                Some(OwnRejection::RateLimited(wait)) => Verdict {
                    breaker: Outcome::Ignore,
                    retry: true,
                    retry_after: Some(wait),
                },
                Some(OwnRejection::CircuitOpen) => Verdict::from(Outcome::Ignore),
                Some(OwnRejection::BulkheadFull) => Verdict {
                    breaker: Outcome::Ignore,
                    retry: true,
                    retry_after: None,
                },
                None => {
                    let verdict = self.classifier.verdict(result.as_ref());
                    if self.respect_pushback
                        && let Some(after) = verdict.retry_after.filter(|d| !d.is_zero())
                    {
                        let most = self
                            .retry
                            .as_ref()
                            .map_or(MAX_PUSHBACK_WITHOUT_RETRY, RetryPolicy::max_delay);
                        run.pushback = Some(after.min(most));
                    }
                    verdict
                }
            },
        };
        if let (Some(ticket), Some(breaker)) = (permits.breaker, &self.breaker) {
            breaker.0.record(ticket, verdict.breaker);
        }
        if let Some(slot) = permits.slot {
            slot.record(verdict.breaker);
        }
        verdict.retry.then_some(verdict.retry_after)
    }

    /// Steps 6 and 7 for an attempt that cannot be retried whatever its outcome (its request
    /// cannot be replayed): classify, record, and end the run.
    pub fn settle_final<T, E>(
        &self,
        run: &mut Run,
        permits: Permits,
        attempt: Attempt<T, E>,
    ) -> Result<T, Error<E>>
    where
        Cl: Classify<T, E>,
        E: 'static,
    {
        let _ = self.record(run, permits, &attempt);
        finish(attempt, run, Stop::NotRetryable)
    }

    /// Steps 6 and 7: classify the attempt, record it in the breaker, decide what follows.
    pub fn settle<T, E>(
        &self,
        run: &mut Run,
        permits: Permits,
        attempt: Attempt<T, E>,
    ) -> Settled<T, E>
    where
        Cl: Classify<T, E>,
        E: 'static,
    {
        let Some(retry_after) = self.record(run, permits, &attempt) else {
            return Settled::Done(finish(attempt, run, Stop::NotRetryable));
        };
        let Some(policy) = &self.retry else {
            return Settled::Done(finish(attempt, run, Stop::NotRetryable));
        };
        let now = self.clock.now();
        let time_left = run.deadline_at.map(|at| at.saturating_sub(now));
        match run.retry.after_failure(
            &policy.schedule(),
            retry_after,
            self.budget.as_ref(),
            now,
            time_left,
        ) {
            RetryStep::Retry(delay) => {
                if time_left.is_some_and(|left| delay >= left) {
                    // the next attempt would start at or past the deadline
                    return Settled::Done(Err(run.timed_out_before_call()));
                }
                if let Some(open) = self.breaker.as_ref().and_then(|b| b.0.open_for())
                    && open > delay
                {
                    return Settled::Done(Err(Error::CircuitOpen(CircuitOpen::new(open))));
                }
                self.metrics.retried(delay);
                if let Some(listener) = &self.on_retry {
                    listener(run.attempts(), delay);
                }
                Settled::Retry(delay)
            }
            RetryStep::Exhausted => {
                self.metrics.exhausted();
                Settled::Done(finish(attempt, run, Stop::Exhausted))
            }
            RetryStep::GiveUp => Settled::Done(finish(attempt, run, Stop::NotRetryable)),
        }
    }
}

#[derive(Clone, Copy)]
enum Stop {
    NotRetryable,
    Exhausted,
}

/// The run's result from its last attempt.
fn finish<T, E>(attempt: Attempt<T, E>, run: &Run, stop: Stop) -> Result<T, Error<E>> {
    let attempts = run.attempts();
    match attempt {
        Attempt::Done(Ok(value)) => Ok(value),
        Attempt::Done(Err(e)) => Err(match stop {
            Stop::NotRetryable => Error::Failed(e),
            Stop::Exhausted => Error::RetryExhausted { attempts, last: e },
        }),
        Attempt::TimedOut => Err(run.timed_out_in_call()),
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
            .finish_non_exhaustive()
    }
}

/// One run through the pipeline: attempts made, the random stream, the deadline.
#[derive(Debug, Clone)]
pub struct Run {
    retry: RetryState,
    deadline_at: Option<Duration>,
    pushback: Option<Duration>,
}

impl Run {
    /// Attempts started so far, the current one included.
    #[must_use]
    pub fn attempts(&self) -> u32 {
        self.retry.attempts()
    }

    /// The run's end when its deadline passes before the current attempt calls the
    /// upstream (at admission, waiting for quota or a slot, or before a retry): the attempts
    /// that called it, the current one not included. Every driver ends a run this way.
    #[must_use]
    pub fn timed_out_before_call<E>(&self) -> Error<E> {
        Error::TimedOut {
            attempts: self.attempts().saturating_sub(1),
        }
    }

    /// The run's end when its deadline passes while the current attempt is calling the
    /// upstream: the attempts that called it, the current one included.
    #[must_use]
    pub fn timed_out_in_call<E>(&self) -> Error<E> {
        Error::TimedOut {
            attempts: self.attempts(),
        }
    }

    /// The upstream's pushback from the last settled attempt, if any (taken once): the
    /// caller holds the key in its limiter for that long.
    pub fn take_pushback(&mut self) -> Option<Duration> {
        self.pushback.take()
    }
}

/// What an attempt holds while it runs: the breaker's permit and the bulkhead's slot.
/// Dropped unsettled (a cancelled attempt), both are released and record nothing.
#[derive(Debug, Default)]
pub struct Permits {
    /// The breaker's admission, if there is a breaker; the pipeline that issued it records it.
    breaker: Option<BreakerTicket>,
    /// The bulkhead's slot, once taken.
    slot: Option<BulkheadPermit>,
}

impl Permits {
    /// Step 4's result: the attempt holds `slot` (taken from the pipeline's
    /// [`bulkhead`](Pipeline::bulkhead)) until it is settled or dropped.
    pub fn hold_slot(&mut self, slot: BulkheadPermit) {
        self.slot = Some(slot);
    }
}

/// How an attempt ended.
#[derive(Debug)]
pub enum Attempt<T, E> {
    /// The call returned.
    Done(Result<T, E>),
    /// The call ran past its attempt timeout and was abandoned.
    TimedOut,
}

/// What follows an attempt.
#[derive(Debug)]
pub enum Settled<T, E> {
    /// Wait this long, then start the next attempt with [`Pipeline::admit`].
    Retry(Duration),
    /// The run is over.
    Done(Result<T, Error<E>>),
}
