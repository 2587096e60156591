//! The sync resilient executor and the builder it shares with the async one.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::blocking::block_on;
use crate::pipeline::{
    Action, Attempt, Event, FallbackFn, FallbackSlot, NoFallback, PerKey, Pipeline,
    PipelineBuilder, PipelineParts,
};
use crate::{
    AsyncLimiter, Classify, Clock, ConfigError, DefaultClassifier, Error, MonotonicClock, Outcome,
    RateLimited, Reserve, RetryPolicy,
};

/// An executor's limiter: any [`AsyncLimiter`], erased; answers now or through a future.
/// Made by [`check_fn`].
pub struct CheckFn<K>(Arc<dyn ErasedLimiter<K>>);

impl<K> Clone for CheckFn<K> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<K> fmt::Debug for CheckFn<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CheckFn(..)")
    }
}

/// The object-safe face of an [`AsyncLimiter`].
trait ErasedLimiter<K>: Send + Sync {
    fn check(&self, key: &K) -> LimitCheck;
    fn reserve(&self, key: &K, max_wait: Duration) -> Reserve;
    fn hold(&self, key: &K, d: Duration);
}

impl<K, L: AsyncLimiter<K> + Send + Sync> ErasedLimiter<K> for L {
    #[inline]
    fn check(&self, key: &K) -> LimitCheck {
        match self.check_now(key) {
            Some(answer) => LimitCheck::Now(answer),
            None => LimitCheck::Later(Box::pin(AsyncLimiter::check(self, key))),
        }
    }

    fn reserve(&self, key: &K, max_wait: Duration) -> Reserve {
        AsyncLimiter::reserve(self, key, max_wait)
    }

    fn hold(&self, key: &K, d: Duration) {
        AsyncLimiter::hold(self, key, d);
    }
}

impl<K> CheckFn<K> {
    /// Checks `key`: a local limiter answers now (nothing boxed), a remote one through a
    /// boxed future.
    #[inline]
    pub fn check(&self, key: &K) -> LimitCheck {
        self.0.check(key)
    }

    /// Reserves `key`'s next slot within `max_wait` (see [`AsyncLimiter::reserve`]).
    pub fn reserve(&self, key: &K, max_wait: Duration) -> Reserve {
        self.0.reserve(key, max_wait)
    }

    /// Holds `key` for `d` (pushback; see [`AsyncLimiter::hold`]).
    pub fn hold(&self, key: &K, d: Duration) {
        self.0.hold(key, d);
    }
}

/// Erases `limiter` into a [`CheckFn`].
pub fn check_fn<K, L>(limiter: L) -> CheckFn<K>
where
    L: AsyncLimiter<K> + Send + Sync + 'static,
{
    CheckFn(Arc::new(limiter))
}

/// A limiter's answer: now (a local limiter), or later (a remote one such as Redis).
pub enum LimitCheck {
    /// Decided without waiting.
    Now(Result<(), RateLimited>),
    /// Decided by this future.
    Later(Pin<Box<dyn Future<Output = Result<(), RateLimited>> + Send>>),
}

impl fmt::Debug for LimitCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Now(result) => f.debug_tuple("Now").field(result).finish(),
            Self::Later(_) => f.write_str("Later(..)"),
        }
    }
}

/// Classifies with a predicate on errors: `Ok` is a success, an `Err` a failure, retryable
/// when the predicate says so. Made by [`ResilientExecutorBuilder::retry_if`].
pub struct RetryIf<F>(Arc<F>);

impl<F> RetryIf<F> {
    pub(crate) fn new(retryable: F) -> Self {
        Self(Arc::new(retryable))
    }
}

impl<F> Clone for RetryIf<F> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<F> fmt::Debug for RetryIf<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RetryIf(..)")
    }
}

impl<T, E, F> Classify<T, E> for RetryIf<F>
where
    F: Fn(&E) -> bool + Send + Sync + 'static,
{
    fn classify(&self, result: Result<&T, &E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(e) => Outcome::Failure {
                retryable: (self.0)(e),
                retry_after: None,
            },
        }
    }
}

/// What a builder hands to the executor it builds (sync here, async in `limitpal-tower`).
pub struct ExecutorParts<K, Cl> {
    /// The limiter, if any.
    pub limiter: Option<CheckFn<K>>,
    /// Everything else, configured.
    pub pipeline: Pipeline<Cl>,
    /// The breaker and bulkhead chosen by each run's key, if any.
    pub per_key: PerKey<K>,
}

impl<K, Cl> fmt::Debug for ExecutorParts<K, Cl> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecutorParts")
            .field("limiter", &self.limiter.is_some())
            .field("pipeline", &self.pipeline)
            .finish()
    }
}

/// Turns a builder's parts into an executor; lets the sync and the async executor share
/// one builder.
pub trait BuildTarget<K, Cl> {
    /// The executor built.
    type Output;
    /// The clock used when the builder was given none.
    fn default_clock() -> Arc<dyn Clock>;
    /// Builds it from validated parts.
    fn build(parts: ExecutorParts<K, Cl>) -> Self::Output;
}

/// Builds a [`ResilientExecutor`] (or, through `limitpal-tower`, an async one): a
/// [`PipelineBuilder`] and the executor it builds. Every part is optional and the calls may
/// come in any order: the pipeline order is always the same. The setters are the
/// [`PipelineBuilder`]'s, with the same names on `ResilienceLayer`'s builder.
pub struct ResilientExecutorBuilder<K, Cl, T, Fb = NoFallback> {
    pipeline: PipelineBuilder<K, Cl, Fb>,
    target: PhantomData<fn() -> T>,
}

impl<K, T> ResilientExecutorBuilder<K, DefaultClassifier, T> {
    /// A builder for the executor `T` builds; `ResilientExecutor::builder()` is the usual way in.
    #[must_use]
    pub fn new() -> Self {
        ResilientExecutorBuilder {
            pipeline: PipelineBuilder::new(),
            target: PhantomData,
        }
    }
}

impl<K, T> Default for ResilientExecutorBuilder<K, DefaultClassifier, T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, Cl, T, Fb> ResilientExecutorBuilder<K, Cl, T, Fb> {
    crate::pipeline_setters!();

    fn pipeline_parts(&mut self) -> &mut PipelineParts {
        self.pipeline.pipeline_parts()
    }

    /// Checks every attempt against `limiter` (step 3), keyed by the `key` given to `run`:
    /// a local [`RateLimiter`](crate::RateLimiter) (decided at once, nothing boxed) or any
    /// other [`AsyncLimiter`], such as the Redis limiter (awaited by the async executor; the
    /// sync executor blocks its thread on the answer).
    #[must_use]
    pub fn limiter<L>(mut self, limiter: L) -> Self
    where
        L: AsyncLimiter<K> + Send + Sync + 'static,
    {
        self.pipeline = self.pipeline.limiter(limiter);
        self
    }

    /// A breaker per key: each run uses the breaker of `key(&run_key)` in `keyed` (see
    /// [`PipelineBuilder::circuit_breaker_per`]).
    #[must_use]
    pub fn circuit_breaker_per<K2, C>(
        mut self,
        keyed: crate::KeyedCircuitBreaker<K2, C>,
        key: impl Fn(&K) -> K2 + Send + Sync + 'static,
    ) -> Self
    where
        K2: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
        C: Clock + Clone,
    {
        self.pipeline = self.pipeline.circuit_breaker_per(keyed, key);
        self
    }

    /// A bulkhead per key: each run takes its slot from the bulkhead of `key(&run_key)` in
    /// `keyed` (see [`PipelineBuilder::bulkhead_per`]).
    #[must_use]
    pub fn bulkhead_per<K2>(
        mut self,
        keyed: crate::KeyedBulkhead<K2>,
        key: impl Fn(&K) -> K2 + Send + Sync + 'static,
    ) -> Self
    where
        K2: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    {
        self.pipeline = self.pipeline.bulkhead_per(keyed, key);
        self
    }

    /// An adaptive limit per key: each run takes its slot from the limit of `key(&run_key)`
    /// in `keyed`, whose size follows that key's outcomes (see
    /// [`PipelineBuilder::adaptive_limit_per`]).
    #[must_use]
    pub fn adaptive_limit_per<K2>(
        mut self,
        keyed: crate::KeyedAdaptiveLimit<K2>,
        key: impl Fn(&K) -> K2 + Send + Sync + 'static,
    ) -> Self
    where
        K2: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    {
        self.pipeline = self.pipeline.adaptive_limit_per(keyed, key);
        self
    }

    /// Classifies with a predicate: an `Err` is retried only when `retryable(&err)`.
    #[must_use]
    pub fn retry_if<F, E>(self, retryable: F) -> ResilientExecutorBuilder<K, RetryIf<F>, T, Fb>
    where
        F: Fn(&E) -> bool + Send + Sync + 'static,
    {
        self.classifier(RetryIf::new(retryable))
    }

    /// Classifies results: `Fn(Result<&T, &E>) -> Outcome` (see [`Outcome`]).
    #[must_use]
    pub fn classifier<Cl2>(self, classifier: Cl2) -> ResilientExecutorBuilder<K, Cl2, T, Fb> {
        ResilientExecutorBuilder {
            pipeline: self.pipeline.classifier(classifier),
            target: PhantomData,
        }
    }

    /// Answers for a run that gave up: `Some(value)` from `fallback(&error)` is the run's
    /// `Ok(value)` (see [`PipelineBuilder::fallback`]); counted and traced, never silent.
    #[must_use]
    pub fn fallback<F, T2, E>(
        self,
        fallback: F,
    ) -> ResilientExecutorBuilder<K, Cl, T, FallbackFn<F>>
    where
        F: Fn(&Error<E>) -> Option<T2> + Send + Sync + 'static,
    {
        ResilientExecutorBuilder {
            pipeline: self.pipeline.fallback(fallback),
            target: PhantomData,
        }
    }

    /// Builds the executor.
    ///
    /// # Errors
    /// [`ConfigError`] for a zero `attempt_timeout` or `deadline`, or a bad [`Hedge`](crate::Hedge).
    pub fn build(self) -> Result<T::Output, ConfigError>
    where
        Fb: FallbackSlot,
        T: BuildTarget<K, Fb::With<Cl>>,
    {
        Ok(T::build(self.pipeline.build(T::default_clock)?))
    }
}

impl<K, Cl, T, Fb> fmt::Debug for ResilientExecutorBuilder<K, Cl, T, Fb> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResilientExecutorBuilder")
            .field("pipeline", &self.pipeline)
            .finish_non_exhaustive()
    }
}

/// The sync pipeline: runs a closure through breaker, limiter, bulkhead and retries, sleeping between
/// attempts through its clock (so with [`ManualClock`](crate::ManualClock) a run of minutes
/// of backoff completes at once). Clones share every part's state.
///
/// ```
/// use limitpal_core::{CircuitBreaker, Error, Jitter, ManualClock, ResilientExecutor, RetryPolicy};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let exec = ResilientExecutor::builder()
///     .retry(RetryPolicy::builder().max_attempts(3).base_delay(Duration::from_secs(1)).jitter(Jitter::None).build()?)
///     .breaker(CircuitBreaker::builder().clock(clock.clone()).build()?)
///     .clock(clock.clone())
///     .build()?;
/// let mut calls = 0;
/// let answer = exec.run(&"user-1", || {
///     calls += 1;
///     if calls < 3 { Err("flaky") } else { Ok(calls) }
/// });
/// assert_eq!(answer, Ok(3));
/// assert_eq!(limitpal_core::Clock::now(&clock), Duration::from_secs(3)); // 1 s + 2 s, no real wait
/// # Ok::<(), limitpal_core::ConfigError>(())
/// ```
pub struct ResilientExecutor<K, Cl = DefaultClassifier> {
    limiter: Option<CheckFn<K>>,
    pipeline: Pipeline<Cl>,
    per_key: PerKey<K>,
}

impl<K, Cl: Clone> Clone for ResilientExecutor<K, Cl> {
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
            pipeline: self.pipeline.clone(),
            per_key: self.per_key.clone(),
        }
    }
}

/// Builds the sync [`ResilientExecutor`].
#[derive(Debug, Clone, Copy)]
pub struct SyncTarget;

impl<K, Cl> BuildTarget<K, Cl> for SyncTarget {
    type Output = ResilientExecutor<K, Cl>;

    fn default_clock() -> Arc<dyn Clock> {
        Arc::new(MonotonicClock)
    }

    fn build(parts: ExecutorParts<K, Cl>) -> Self::Output {
        ResilientExecutor {
            limiter: parts.limiter,
            pipeline: parts.pipeline,
            per_key: parts.per_key,
        }
    }
}

impl<K> ResilientExecutor<K> {
    /// Starts an executor with no parts; add any of them, in any order.
    #[must_use]
    pub fn builder() -> ResilientExecutorBuilder<K, DefaultClassifier, SyncTarget> {
        ResilientExecutorBuilder::<K, DefaultClassifier, SyncTarget>::new()
    }
}

impl<K, Cl> ResilientExecutor<K, Cl> {
    /// Runs `op` through the pipeline for `key`.
    ///
    /// # Errors
    /// [`Error`]: our limiter or breaker refused, retries ran out, the call failed for good,
    /// or the deadline passed. A final `Ok` is returned as it is, even if classified as a
    /// failure.
    pub fn run<T, E, F>(&self, key: &K, mut op: F) -> Result<T, Error<E>>
    where
        F: FnMut() -> Result<T, E>,
        Cl: Classify<T, E>,
        E: 'static,
    {
        let p = &self.pipeline;
        let stream = p.retry_policy().map_or(0, RetryPolicy::new_stream_seed);
        let mut run = p.start_with(stream, self.limiter.is_some(), self.per_key.stages(key));
        let mut action = p.step(&mut run, Event::Start);
        loop {
            action = match action {
                Action::CheckLimit { max_wait } => {
                    let answer = self
                        .limiter
                        .as_ref()
                        .map_or(Event::Limit(Ok(())), |limiter| {
                            check_limit(limiter, key, max_wait)
                        });
                    p.step(&mut run, answer)
                }
                Action::WaitQuota(reservation) => {
                    p.clock().sleep(reservation.delay());
                    p.step(&mut run, Event::QuotaCame(reservation))
                }
                Action::TakeSlot { acquire, max_wait } => match block_on(acquire, Some(max_wait)) {
                    Some(slot) => p.step(&mut run, Event::Slot(slot)),
                    None => p.step(&mut run, Event::SlotTimedOut),
                },
                Action::Call { timeout } => {
                    let started = p.clock().now();
                    let result = op();
                    let attempt = match timeout {
                        Some(limit) if p.clock().now().saturating_sub(started) > limit => {
                            Attempt::TimedOut
                        }
                        _ => Attempt::Done(result),
                    };
                    let next = p.step(&mut run, Event::Called(attempt));
                    if let (Some(hold), Some(limiter)) = (run.take_pushback(), &self.limiter) {
                        limiter.hold(key, hold);
                    }
                    next
                }
                Action::Sleep(delay) => {
                    p.clock().sleep(delay);
                    p.step(&mut run, Event::Slept)
                }
                // one call at a time: this run never allowed a hedge, so none is asked for;
                // were one asked, it is refused and the call in hand settles the run
                Action::CheckHedge => p.step(
                    &mut run,
                    Event::HedgeLimit(Err(RateLimited::new(Duration::ZERO))),
                ),
                Action::Hedge { .. } | Action::Await => {
                    return Err(Error::TimedOut {
                        attempts: run.attempts(),
                    });
                }
                Action::Done(result) => return result,
            };
        }
    }
}

/// A wait without a timeout always ends with the answer; were it to end without one, the
/// attempt is refused rather than admitted unchecked.
#[cold]
fn no_answer<T>() -> Result<T, RateLimited> {
    Err(RateLimited::new(Duration::ZERO))
}

/// Step 3 on this thread: the limiter's answer, blocking for a remote one.
fn check_limit<K, T, E>(limiter: &CheckFn<K>, key: &K, max_wait: Option<Duration>) -> Event<T, E> {
    let Some(max_wait) = max_wait else {
        return Event::Limit(match limiter.check(key) {
            LimitCheck::Now(answer) => answer,
            LimitCheck::Later(future) => block_on(future, None).unwrap_or_else(no_answer),
        });
    };
    Event::Reserved(match limiter.reserve(key, max_wait) {
        Reserve::Now(answer) => answer,
        Reserve::Later(future) => block_on(future, None).unwrap_or_else(no_answer),
    })
}

impl<K, Cl> fmt::Debug for ResilientExecutor<K, Cl> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResilientExecutor")
            .field("limiter", &self.limiter.is_some())
            .field("pipeline", &self.pipeline)
            .finish()
    }
}
