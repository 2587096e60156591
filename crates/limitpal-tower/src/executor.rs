//! The async resilient executor: the sync executor's pipeline, awaited.

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use limitpal_core::pipeline::{Action, Attempt, Event, PerKey, Pipeline, Run};
use limitpal_core::{
    BuildTarget, CheckFn, Classify, Clock, DefaultClassifier, Error, ExecutorParts, LimitCheck,
    Reserve, ResilientExecutorBuilder, RetryPolicy,
};

use crate::TokioClock;
use crate::hedge::{Lanes, poll_attempt};

/// The async pipeline: runs `op()`'s future through limiter, breaker, retries, attempt
/// timeouts and a deadline, sleeping with tokio's timer. Built with the same builder as
/// [`ResilientExecutor`](limitpal_core::ResilientExecutor); without `.clock(..)` it measures
/// time with [`TokioClock`], so paused test time drives it. Dropping a run's future cancels it:
/// its breaker permit is released unrecorded. A run allocates nothing of its own, except
/// with `.hedge(..)`: each attempt that may hedge keeps its calls in one allocation.
///
/// ```
/// use limitpal_core::{Error, Jitter, RetryPolicy};
/// use limitpal_tower::AsyncResilientExecutor;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let exec = AsyncResilientExecutor::builder()
///     .retry(RetryPolicy::builder().max_attempts(2).jitter(Jitter::None).build()?)
///     .attempt_timeout(Duration::from_secs(1))
///     .build()?;
/// // the call hangs: the attempt times out after 1 s, is retried, and times out again
/// let result = exec.run(&(), || std::future::pending::<Result<(), std::io::Error>>()).await;
/// assert!(matches!(result, Err(Error::TimedOut { attempts: 2 })));
/// # Ok(()) }
/// ```
pub struct AsyncResilientExecutor<K, Cl = DefaultClassifier> {
    limiter: Option<CheckFn<K>>,
    pipeline: Pipeline<Cl>,
    per_key: PerKey<K>,
}

impl<K, Cl: Clone> Clone for AsyncResilientExecutor<K, Cl> {
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
            pipeline: self.pipeline.clone(),
            per_key: self.per_key.clone(),
        }
    }
}

/// Builds the [`AsyncResilientExecutor`].
#[derive(Debug, Clone, Copy)]
pub struct AsyncTarget;

impl<K, Cl> BuildTarget<K, Cl> for AsyncTarget {
    type Output = AsyncResilientExecutor<K, Cl>;

    fn default_clock() -> Arc<dyn Clock> {
        Arc::new(TokioClock::new())
    }

    fn build(parts: ExecutorParts<K, Cl>) -> Self::Output {
        AsyncResilientExecutor {
            limiter: parts.limiter,
            pipeline: parts.pipeline,
            per_key: parts.per_key,
        }
    }
}

impl<K> AsyncResilientExecutor<K> {
    /// Starts an executor with no parts; add any of them, in any order.
    #[must_use]
    pub fn builder() -> ResilientExecutorBuilder<K, DefaultClassifier, AsyncTarget> {
        ResilientExecutorBuilder::<K, DefaultClassifier, AsyncTarget>::new()
    }
}

impl<K, Cl> AsyncResilientExecutor<K, Cl> {
    /// Runs the futures `op()` makes through the pipeline for `key`.
    ///
    /// # Errors
    /// [`Error`]: our breaker, limiter or bulkhead refused, retries ran out, the call failed
    /// for good, or the deadline passed.
    pub fn run<T, E, F, Fut>(&self, key: &K, op: F) -> impl Future<Output = Result<T, Error<E>>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        Cl: Classify<T, E>,
        E: 'static,
    {
        // `drive`'s future itself, not one around it: no second copy of it and its output
        let mut op = op;
        self.drive(Some(key), move || Some(op()), true)
    }

    /// [`run`](Self::run) with a key that may be absent: without one the limiter and the
    /// per-key stages are skipped and the rest of the pipeline runs (the plain breaker and
    /// bulkhead, retries, timeouts), as a layer's `MissingKey::Allow` does. For callers that
    /// compute a key only when [`uses_key`](Self::uses_key) says it is used.
    ///
    /// # Errors
    /// As [`run`](Self::run).
    pub fn run_with_key<T, E, F, Fut>(
        &self,
        key: Option<&K>,
        op: F,
    ) -> impl Future<Output = Result<T, Error<E>>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        Cl: Classify<T, E>,
        E: 'static,
    {
        let mut op = op;
        self.drive(key, move || Some(op()), true)
    }

    /// Runs one call through the pipeline (limiter with its wait, breaker, bulkhead, attempt
    /// timeout, pushback) and never retries it, whatever its outcome: for calls that cannot
    /// be replayed, such as a request whose body is a stream. A retryable failure ends the
    /// run as [`Error::Failed`].
    ///
    /// # Errors
    /// As [`run`](Self::run), without `RetryExhausted`.
    pub fn run_once<T, E, Fut>(
        &self,
        key: &K,
        call: Fut,
    ) -> impl Future<Output = Result<T, Error<E>>>
    where
        Fut: Future<Output = Result<T, E>>,
        Cl: Classify<T, E>,
        E: 'static,
    {
        let mut call = Some(call);
        self.drive(Some(key), move || call.take(), false)
    }

    /// [`run_once`](Self::run_once) with a key that may be absent (see
    /// [`run_with_key`](Self::run_with_key)).
    ///
    /// # Errors
    /// As [`run_once`](Self::run_once).
    pub fn run_once_with_key<T, E, Fut>(
        &self,
        key: Option<&K>,
        call: Fut,
    ) -> impl Future<Output = Result<T, Error<E>>>
    where
        Fut: Future<Output = Result<T, E>>,
        Cl: Classify<T, E>,
        E: 'static,
    {
        let mut call = Some(call);
        self.drive(key, move || call.take(), false)
    }

    /// Whether the pipeline has a limiter.
    #[must_use]
    pub fn has_limiter(&self) -> bool {
        self.limiter.is_some()
    }

    /// Whether the pipeline uses the key of each run: it has a limiter or a per-key stage
    /// (`circuit_breaker_per`, `bulkhead_per`, `adaptive_limit_per`). A caller that computes
    /// keys lazily ([`run_with_key`](Self::run_with_key)) must pass one when this says so.
    #[must_use]
    pub fn uses_key(&self) -> bool {
        self.limiter.is_some() || self.per_key.is_some()
    }

    /// Whether a failed call may be attempted again (a retry policy is set).
    #[must_use]
    pub fn retries(&self) -> bool {
        self.pipeline.retry_policy().is_some()
    }

    async fn drive<T, E, F, Fut>(
        &self,
        key: Option<&K>,
        mut op: F,
        replay: bool,
    ) -> Result<T, Error<E>>
    where
        F: FnMut() -> Option<Fut>,
        Fut: Future<Output = Result<T, E>>,
        Cl: Classify<T, E>,
        E: 'static,
    {
        let p = &self.pipeline;
        let stream = p.retry_policy().map_or(0, RetryPolicy::new_stream_seed);
        let limiter = key.and(self.limiter.as_ref());
        let stages = key.map(|key| self.per_key.stages(key)).unwrap_or_default();
        let mut run = p.start_with(stream, limiter.is_some(), stages);
        if replay && p.hedge().is_some() {
            run.allow_hedge();
        }
        let mut action = p.step(&mut run, Event::Start);
        loop {
            action = match action {
                Action::CheckLimit { max_wait } => {
                    // a local limiter answers here; only a remote one is awaited
                    let answer = match (limiter, key, max_wait) {
                        (Some(limiter), Some(key), None) => {
                            Event::Limit(match limiter.check(key) {
                                LimitCheck::Now(answer) => answer,
                                LimitCheck::Later(answer) => answer.await,
                            })
                        }
                        (Some(limiter), Some(key), Some(max_wait)) => {
                            Event::Reserved(match limiter.reserve(key, max_wait) {
                                Reserve::Now(answer) => answer,
                                Reserve::Later(answer) => answer.await,
                            })
                        }
                        // a run without a limiter and a key is never asked to check one
                        _ => Event::Limit(Ok(())),
                    };
                    p.step(&mut run, answer)
                }
                Action::WaitQuota(reservation) => {
                    tokio::time::sleep(reservation.delay()).await;
                    p.step(&mut run, Event::QuotaCame(reservation))
                }
                Action::TakeSlot { acquire, max_wait } => {
                    match tokio::time::timeout(max_wait, acquire).await {
                        Ok(slot) => p.step(&mut run, Event::Slot(slot)),
                        Err(_) => p.step(&mut run, Event::SlotTimedOut),
                    }
                }
                Action::Call { timeout } => {
                    // `run_once` has one call to make, and is never asked for a second: its
                    // first is settled with `CalledOnce`, which ends the run
                    let Some(call) = op() else {
                        let attempts = run.attempts().saturating_sub(1);
                        return Err(Error::TimedOut { attempts });
                    };
                    if run.hedge_in().is_some() {
                        // boxed: its calls, timers and lanes would make every run's future
                        // (and every copy of it) 256 bytes larger; a run that may hedge pays
                        // one allocation per attempt instead
                        Box::pin(self.hedged(&mut run, key, call, timeout, &mut op)).await
                    } else {
                        let attempt = match timeout {
                            None => Attempt::Done(call.await),
                            Some(limit) => tokio::time::timeout(limit, call)
                                .await
                                .map_or(Attempt::TimedOut, Attempt::Done),
                        };
                        let next = if replay {
                            p.step(&mut run, Event::Called(attempt))
                        } else {
                            p.step(&mut run, Event::CalledOnce(attempt))
                        };
                        if let (Some(hold), Some(limiter), Some(key)) =
                            (run.take_pushback(), limiter, key)
                        {
                            limiter.hold(key, hold);
                        }
                        next
                    }
                }
                Action::Sleep(delay) => {
                    tokio::time::sleep(delay).await;
                    p.step(&mut run, Event::Slept)
                }
                // only asked while a hedged call runs, in `hedged`
                Action::CheckHedge | Action::Hedge { .. } | Action::Await => p.step(
                    &mut run,
                    Event::HedgeLimit(Err(limitpal_core::RateLimited::new(Duration::ZERO))),
                ),
                Action::Done(result) => return result,
            };
        }
    }

    /// Step 5 with a hedge: the primary call, and the hedges the machine starts when it is
    /// slow, until the first success (the others dropped on return) or the last failure.
    async fn hedged<T, E, F, Fut>(
        &self,
        run: &mut Run,
        key: Option<&K>,
        call: Fut,
        timeout: Option<Duration>,
        op: &mut F,
    ) -> Action<T, E>
    where
        F: FnMut() -> Option<Fut>,
        Fut: Future<Output = Result<T, E>>,
        Cl: Classify<T, E>,
        E: 'static,
    {
        let p = &self.pipeline;
        let limiter = key.and(self.limiter.as_ref());
        let mut primary = pin!(Some(call));
        let mut timer = pin!(timeout.map(tokio::time::sleep));
        let mut hedge = pin!(None::<tokio::time::Sleep>);
        let mut lanes = Lanes::default();
        loop {
            let hedge_in = run.hedge_in();
            let event = poll_fn(|cx| {
                if let Some(call) = primary.as_mut().as_pin_mut()
                    && let Some(attempt) = poll_attempt(call, timer.as_mut().as_pin_mut(), cx)
                {
                    primary.set(None);
                    timer.set(None);
                    return Poll::Ready(Event::Called(attempt));
                }
                if let Poll::Ready(event) = lanes.poll(cx) {
                    return Poll::Ready(event);
                }
                if hedge.is_none()
                    && let Some(delay) = hedge_in
                {
                    hedge.set(Some(tokio::time::sleep(delay)));
                }
                if let Some(due) = hedge.as_mut().as_pin_mut()
                    && due.poll(cx).is_ready()
                {
                    hedge.set(None);
                    return Poll::Ready(Event::HedgeDue);
                }
                Poll::Pending
            })
            .await;
            let mut action = p.step(run, event);
            let action = loop {
                if let (Some(hold), Some(limiter), Some(key)) = (run.take_pushback(), limiter, key)
                {
                    limiter.hold(key, hold);
                }
                action = match action {
                    Action::CheckHedge => match lanes.check(limiter, key) {
                        Some(answer) => p.step(run, answer),
                        None => Action::Await,
                    },
                    Action::Hedge { lane, timeout } => match op() {
                        Some(call) => {
                            lanes.start(lane, call, timeout);
                            Action::Await
                        }
                        None => p.step(run, Event::HedgeDropped { lane }),
                    },
                    action => break action,
                };
            };
            if !matches!(action, Action::Await) {
                return action; // the losers are dropped with `lanes`
            }
        }
    }
}

impl<K, Cl> fmt::Debug for AsyncResilientExecutor<K, Cl> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncResilientExecutor")
            .field("limiter", &self.limiter.is_some())
            .field("pipeline", &self.pipeline)
            .finish()
    }
}
