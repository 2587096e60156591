//! Concurrency limits: [`Bulkhead`] (at most N calls at once) and [`AdaptiveLimit`] (a
//! bulkhead whose N follows the callee's latency and errors: [`Aimd`], [`Gradient2`]).
//!
//! - A call takes a slot ([`BulkheadPermit`]) and gives it back when the permit is recorded
//!   or dropped, so a cancelled call never leaks a slot.
//! - With a queue (`.queue(max_waiting, max_wait)`), callers beyond the limit wait in FIFO
//!   order, up to `max_waiting` of them; a freed slot goes straight to the oldest waiter, so
//!   a later caller never overtakes. The wait itself is a cancel-safe future
//!   ([`Acquire`]); dropping it leaves the queue (or frees a slot handed over meanwhile).
//!   The core has no timer: the tower layer and the executors bound the wait by `max_wait`.
//! - Full, and no room to wait → [`BulkheadFull`].
//! - An adaptive limit measures each call from slot to record on its clock, so under
//!   [`ManualClock`](crate::ManualClock) or paused tokio time it is deterministic.
//!
//! In the pipeline the slot is taken last, right before the call: breaker → rate limiter →
//! bulkhead/adaptive limit → call, so a request refused earlier never holds a slot.
//!
//! ```
//! use limitpal_core::concurrency::Bulkhead;
//!
//! let bulkhead = Bulkhead::new(2)?;
//! let a = bulkhead.try_acquire()?;
//! let _b = bulkhead.try_acquire()?;
//! assert_eq!(bulkhead.try_acquire().unwrap_err().limit, 2);
//! drop(a); // cancelled or done: the slot is free again
//! assert!(bulkhead.try_acquire().is_ok());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod algorithm;
mod semaphore;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

pub use algorithm::{Aimd, Gradient2, LimitAlgorithm, Sample};
use semaphore::{Entry, Semaphore, Waiter};

use crate::blocking::block_on;
use crate::metrics::BulkheadMetrics;
use crate::sync::{Mutex, lock};
use crate::{Clock, ConfigError, MonotonicClock, Outcome};

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

/// What every clone of a bulkhead shares.
struct Shared {
    semaphore: Semaphore,
    max_wait: Duration,
    adaptive: Option<Adaptive>,
    metrics: BulkheadMetrics,
}

/// An adaptive limit's moving part.
struct Adaptive {
    clock: Arc<dyn Clock>,
    min: f64,
    max: f64,
    state: Mutex<(f64, Box<dyn LimitAlgorithm>)>,
}

impl Adaptive {
    /// Folds one call into the limit and moves the semaphore's limit with it.
    fn sample(&self, semaphore: &Semaphore, metrics: &BulkheadMetrics, sample: &Sample) {
        let mut state = lock(&self.state);
        let (limit, algorithm) = &mut *state;
        let next = algorithm.update(*limit, sample);
        *limit = if next.is_nan() {
            *limit
        } else {
            next.clamp(self.min, self.max)
        };
        let enforced = algorithm.enforced(*limit).clamp(self.min, self.max);
        drop(state);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // clamped to u32s
        let enforced = enforced as u32;
        if enforced != semaphore.limit() {
            #[cfg(feature = "tracing")]
            tracing::debug!(target: "limitpal::bulkhead", limit = enforced, "concurrency limit moved");
            semaphore.set_limit(enforced);
            metrics.limit(enforced);
        }
    }
}

/// At most N calls at once, with an optional bounded wait queue. Clones share the slots.
///
/// Unlike tower's `ConcurrencyLimit`, a slot is taken when the call starts, never in
/// `poll_ready`, so a service that is polled ready and then not called holds nothing.
#[derive(Clone)]
pub struct Bulkhead {
    shared: Arc<Shared>,
}

impl fmt::Debug for Bulkhead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bulkhead")
            .field("limit", &self.limit())
            .field("in_flight", &self.in_flight())
            .field("waiting", &self.waiting())
            .field("max_wait", &self.shared.max_wait)
            .field("adaptive", &self.shared.adaptive.is_some())
            .finish()
    }
}

impl Bulkhead {
    /// At most `max_concurrent` calls at once, no queue.
    ///
    /// # Errors
    /// [`ConfigError::Zero`] for zero.
    pub fn new(max_concurrent: u32) -> Result<Self, ConfigError> {
        Self::builder(max_concurrent).build()
    }

    /// A bulkhead to configure further (a wait queue).
    #[must_use]
    pub fn builder(max_concurrent: u32) -> BulkheadBuilder {
        BulkheadBuilder {
            max_concurrent,
            queue: Queue::default(),
            name: None,
        }
    }

    /// Takes a slot now, or fails: never waits, even with a queue configured.
    ///
    /// # Errors
    /// [`BulkheadFull`] when every slot is taken or others are already waiting.
    pub fn try_acquire(&self) -> Result<BulkheadPermit, BulkheadFull> {
        if self.shared.semaphore.try_acquire() {
            Ok(self.permit())
        } else {
            Err(self.refuse())
        }
    }

    /// Takes a slot, waiting in the queue if one is configured. The place in the queue is
    /// taken now, when `acquire` is called; the future does not time out by itself (bound
    /// it by [`max_wait`](Self::max_wait)) and leaves the queue when dropped.
    pub fn acquire(&self) -> Acquire {
        let state = match self.shared.semaphore.enter() {
            Entry::Slot => AcquireState::Ready(Ok(self.permit())),
            Entry::Queued(waiter) => AcquireState::Waiting(waiter),
            Entry::Full => AcquireState::Ready(Err(self.refuse())),
        };
        Acquire {
            bulkhead: self.clone(),
            state,
        }
    }

    /// Takes a slot, blocking this thread up to [`max_wait`](Self::max_wait) (real time:
    /// another thread must free the slot) when a queue is configured.
    ///
    /// # Errors
    /// [`BulkheadFull`] when full with no room to wait, or the wait timed out.
    pub fn acquire_blocking(&self) -> Result<BulkheadPermit, BulkheadFull> {
        block_on(self.acquire(), Some(self.shared.max_wait)).unwrap_or_else(|| Err(self.refuse()))
    }

    /// Calls allowed at once now.
    #[must_use]
    pub fn limit(&self) -> u32 {
        self.shared.semaphore.limit()
    }

    /// Calls holding a slot now.
    #[must_use]
    pub fn in_flight(&self) -> u32 {
        self.shared.semaphore.in_flight()
    }

    /// Callers waiting for a slot now.
    #[must_use]
    pub fn waiting(&self) -> u32 {
        self.shared.semaphore.waiting()
    }

    /// How long a caller may wait for a slot (zero without a queue).
    #[must_use]
    pub fn max_wait(&self) -> Duration {
        self.shared.max_wait
    }

    /// The refusal for now (reports nothing; see [`refuse`](Self::refuse)).
    #[must_use]
    pub fn full(&self) -> BulkheadFull {
        BulkheadFull::new(self.limit())
    }

    /// Refuses a call: reports it (tracing at DEBUG, target `limitpal::bulkhead`; the
    /// `limitpal_bulkhead_rejected_total` counter of a named bulkhead) and returns the error.
    /// What a caller whose wait for a slot timed out returns.
    #[cold]
    pub fn refuse(&self) -> BulkheadFull {
        let full = self.full();
        #[cfg(feature = "tracing")]
        tracing::debug!(target: "limitpal::bulkhead", limit = full.limit, "bulkhead full: call refused");
        self.shared.metrics.rejected();
        full
    }

    /// The one constructor behind both builders.
    fn with(limit: u32, queue: Queue, name: Option<&str>, adaptive: Option<Adaptive>) -> Self {
        Self {
            shared: Arc::new(Shared {
                semaphore: Semaphore::new(limit, queue.max_waiting),
                max_wait: queue.max_wait,
                adaptive,
                metrics: BulkheadMetrics::new(name, limit),
            }),
        }
    }

    fn permit(&self) -> BulkheadPermit {
        let (started_nanos, in_flight) = self.shared.adaptive.as_ref().map_or((0, 0), |a| {
            // calls in flight now, this one included
            (a.clock.now_nanos(), self.shared.semaphore.in_flight())
        });
        BulkheadPermit {
            bulkhead: Some(self.clone()),
            started_nanos,
            in_flight,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Queue {
    max_waiting: u32,
    max_wait: Duration,
}

impl Queue {
    fn validate(self) -> Result<Self, ConfigError> {
        if self.max_waiting > 0 && self.max_wait.is_zero() {
            return Err(ConfigError::Zero { field: "max_wait" });
        }
        Ok(self)
    }
}

/// Configures a [`Bulkhead`]; made by [`Bulkhead::builder`].
#[derive(Debug, Clone)]
pub struct BulkheadBuilder {
    max_concurrent: u32,
    queue: Queue,
    name: Option<String>,
}

impl BulkheadBuilder {
    /// Lets up to `max_waiting` callers wait (FIFO) up to `max_wait` each for a slot;
    /// `max_waiting` 0 means no queue (the default).
    #[must_use]
    pub fn queue(mut self, max_waiting: u32, max_wait: Duration) -> Self {
        self.queue = Queue {
            max_waiting,
            max_wait,
        };
        self
    }

    /// A name for its metrics (feature `metrics`: label `name`).
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Builds the bulkhead.
    ///
    /// # Errors
    /// [`ConfigError::Zero`] for a zero `max_concurrent`, or a zero `max_wait` with a queue.
    pub fn build(self) -> Result<Bulkhead, ConfigError> {
        if self.max_concurrent == 0 {
            return Err(ConfigError::Zero {
                field: "max_concurrent",
            });
        }
        let queue = self.queue.validate()?;
        Ok(Bulkhead::with(
            self.max_concurrent,
            queue,
            self.name.as_deref(),
            None,
        ))
    }
}

/// A slot in a [`Bulkhead`] or [`AdaptiveLimit`], freed when recorded or dropped.
///
/// For an adaptive limit, [`record`](Self::record) (or `success`/`failure`) feeds the call's
/// latency and outcome to the algorithm; a permit dropped unrecorded is a cancelled call:
/// it frees the slot and teaches nothing.
#[must_use = "the slot is freed when the permit is dropped"]
pub struct BulkheadPermit {
    bulkhead: Option<Bulkhead>,
    /// For an adaptive limit: the start time in nanoseconds...
    started_nanos: u64,
    /// ...and the calls in flight then, this one included (0: not adaptive).
    in_flight: u32,
}

impl BulkheadPermit {
    /// The call succeeded.
    pub fn success(self) {
        self.record(Outcome::Success);
    }

    /// The call failed (or timed out): for an adaptive limit, the callee may be overloaded.
    pub fn failure(self) {
        self.record(Outcome::RETRYABLE);
    }

    /// Records `outcome` (`Ignore`: nothing learned) and frees the slot.
    pub fn record(mut self, outcome: Outcome) {
        let Some(bulkhead) = self.bulkhead.take() else {
            return;
        };
        // freed after the sample (a lowered limit must not hand the slot on), and freed even
        // if a user's algorithm panics
        let _release = Release(&bulkhead.shared.semaphore);
        if let Some(adaptive) = &bulkhead.shared.adaptive
            && outcome != Outcome::Ignore
        {
            let now = adaptive.clock.now();
            let start = Duration::from_nanos(self.started_nanos);
            let sample = Sample::new(
                now,
                now.saturating_sub(start),
                self.in_flight,
                matches!(outcome, Outcome::Failure { .. }),
            );
            adaptive.sample(
                &bulkhead.shared.semaphore,
                &bulkhead.shared.metrics,
                &sample,
            );
        }
    }
}

/// Frees a slot when dropped.
struct Release<'a>(&'a Semaphore);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl Drop for BulkheadPermit {
    fn drop(&mut self) {
        if let Some(bulkhead) = self.bulkhead.take() {
            bulkhead.shared.semaphore.release();
        }
    }
}

impl fmt::Debug for BulkheadPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadPermit")
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

/// Waits for a slot; made by [`Bulkhead::acquire`]. Dropping it gives up the place in the
/// queue (or the slot handed over meanwhile): cancel-safe.
#[must_use = "futures do nothing unless polled"]
pub struct Acquire {
    bulkhead: Bulkhead,
    state: AcquireState,
}

enum AcquireState {
    Ready(Result<BulkheadPermit, BulkheadFull>),
    Waiting(Arc<Waiter>),
    Done,
}

impl Acquire {
    /// Whether this caller waits in the queue (rather than having its answer already).
    #[must_use]
    pub fn is_waiting(&self) -> bool {
        matches!(self.state, AcquireState::Waiting(_))
    }

    /// The answer, if it was decided without waiting (a slot, or full with no room to
    /// wait); `None` while this caller waits in the queue.
    pub fn answer(&mut self) -> Option<Result<BulkheadPermit, BulkheadFull>> {
        if !matches!(self.state, AcquireState::Ready(_)) {
            return None;
        }
        match std::mem::replace(&mut self.state, AcquireState::Done) {
            AcquireState::Ready(answer) => Some(answer),
            _ => None,
        }
    }
}

impl Future for Acquire {
    type Output = Result<BulkheadPermit, BulkheadFull>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &self.state {
            AcquireState::Waiting(waiter) => {
                if waiter.poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.state = AcquireState::Done;
                Poll::Ready(Ok(self.bulkhead.permit()))
            }
            AcquireState::Ready(_) => {
                let answer = self.answer().unwrap_or_else(|| Err(self.bulkhead.full()));
                Poll::Ready(answer)
            }
            AcquireState::Done => Poll::Ready(Err(self.bulkhead.full())),
        }
    }
}

impl Drop for Acquire {
    fn drop(&mut self) {
        if let AcquireState::Waiting(waiter) = &self.state {
            self.bulkhead.shared.semaphore.leave(waiter);
        }
    }
}

impl fmt::Debug for Acquire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acquire")
            .field("waiting", &self.is_waiting())
            .finish_non_exhaustive()
    }
}

/// A concurrency limit that adapts to the callee: [`Aimd`] on errors and timeouts,
/// [`Gradient2`] on latency. Clones share the limit; it is a [`Bulkhead`] whose size moves
/// (`Bulkhead::from(adaptive)` shares it), so it takes the same queue and permits.
///
/// ```
/// use limitpal_core::concurrency::{AdaptiveLimit, Aimd};
/// use limitpal_core::ManualClock;
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let limit = AdaptiveLimit::builder(Aimd::new())
///     .initial_limit(4)
///     .clock(clock.clone())
///     .build()?;
/// let permits: Vec<_> = (0..4).map(|_| limit.try_acquire()).collect::<Result<_, _>>()?;
/// assert!(limit.try_acquire().is_err()); // 4 in flight
/// clock.advance(Duration::from_millis(10));
/// for p in permits {
///     p.success(); // healthy while at least half the slots were busy: +1/limit each
/// }
/// assert!(limit.estimate() > 4.5);
/// limit.try_acquire()?.failure(); // overloaded: x0.9
/// assert!(limit.estimate() < 4.5);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct AdaptiveLimit {
    bulkhead: Bulkhead,
}

impl fmt::Debug for AdaptiveLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLimit")
            .field("limit", &self.limit())
            .field("in_flight", &self.in_flight())
            .field("waiting", &self.waiting())
            .finish()
    }
}

impl AdaptiveLimit {
    /// An adaptive limit moved by `algorithm` ([`Aimd`], [`Gradient2`], or your own).
    #[must_use]
    pub fn builder<A: LimitAlgorithm>(algorithm: A) -> AdaptiveLimitBuilder {
        AdaptiveLimitBuilder {
            algorithm: Box::new(algorithm),
            initial: 20,
            min: 1,
            max: 1000,
            queue: Queue::default(),
            clock: None,
            name: None,
        }
    }

    /// Takes a slot now, or fails (see [`Bulkhead::try_acquire`]).
    ///
    /// # Errors
    /// [`BulkheadFull`] at the limit.
    pub fn try_acquire(&self) -> Result<BulkheadPermit, BulkheadFull> {
        self.bulkhead.try_acquire()
    }

    /// Takes a slot, waiting in the queue if one is configured (see [`Bulkhead::acquire`]).
    pub fn acquire(&self) -> Acquire {
        self.bulkhead.acquire()
    }

    /// The limit enforced now (`floor` of the algorithm's estimate, or half of it during a
    /// [`Gradient2`] probe).
    #[must_use]
    pub fn limit(&self) -> u32 {
        self.bulkhead.limit()
    }

    /// The algorithm's current estimate, before flooring and probing.
    #[must_use]
    pub fn estimate(&self) -> f64 {
        self.bulkhead
            .shared
            .adaptive
            .as_ref()
            .map_or(0.0, |a| lock(&a.state).0)
    }

    /// Calls holding a slot now.
    #[must_use]
    pub fn in_flight(&self) -> u32 {
        self.bulkhead.in_flight()
    }

    /// Callers waiting for a slot now.
    #[must_use]
    pub fn waiting(&self) -> u32 {
        self.bulkhead.waiting()
    }
}

impl From<AdaptiveLimit> for Bulkhead {
    fn from(limit: AdaptiveLimit) -> Self {
        limit.bulkhead
    }
}

/// Configures an [`AdaptiveLimit`]; made by [`AdaptiveLimit::builder`].
pub struct AdaptiveLimitBuilder {
    algorithm: Box<dyn LimitAlgorithm>,
    initial: u32,
    min: u32,
    max: u32,
    queue: Queue,
    clock: Option<Arc<dyn Clock>>,
    name: Option<String>,
}

impl fmt::Debug for AdaptiveLimitBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLimitBuilder")
            .field("algorithm", &self.algorithm)
            .field("initial", &self.initial)
            .field("min", &self.min)
            .field("max", &self.max)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl AdaptiveLimitBuilder {
    /// The limit to start with (default 20).
    #[must_use]
    pub fn initial_limit(mut self, limit: u32) -> Self {
        self.initial = limit;
        self
    }

    /// The limit never falls below this (default 1).
    #[must_use]
    pub fn min_limit(mut self, limit: u32) -> Self {
        self.min = limit;
        self
    }

    /// The limit never rises above this (default 1000).
    #[must_use]
    pub fn max_limit(mut self, limit: u32) -> Self {
        self.max = limit;
        self
    }

    /// Lets up to `max_waiting` callers wait up to `max_wait` for a slot (default: no queue).
    #[must_use]
    pub fn queue(mut self, max_waiting: u32, max_wait: Duration) -> Self {
        self.queue = Queue {
            max_waiting,
            max_wait,
        };
        self
    }

    /// A name for its metrics (feature `metrics`: label `name`; the limit is a gauge).
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The clock that times calls (default [`MonotonicClock`]; `TokioClock` or
    /// [`ManualClock`](crate::ManualClock) in tests).
    #[must_use]
    pub fn clock<C: Clock>(mut self, clock: C) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Builds the limit.
    ///
    /// # Errors
    /// [`ConfigError`] for a zero `min_limit`, `max_limit` below `min_limit`, an
    /// `initial_limit` outside `[min_limit, max_limit]`, or a zero `max_wait` with a queue.
    pub fn build(self) -> Result<AdaptiveLimit, ConfigError> {
        if self.min == 0 {
            return Err(ConfigError::Zero { field: "min_limit" });
        }
        if self.max < self.min {
            return Err(ConfigError::out_of_range(
                "max_limit",
                self.max,
                "at least min_limit",
            ));
        }
        if !(self.min..=self.max).contains(&self.initial) {
            return Err(ConfigError::out_of_range(
                "initial_limit",
                self.initial,
                "in [min_limit, max_limit]",
            ));
        }
        let queue = self.queue.validate()?;
        let clock = self.clock.unwrap_or_else(|| Arc::new(MonotonicClock));
        let adaptive = Adaptive {
            clock,
            min: f64::from(self.min),
            max: f64::from(self.max),
            state: Mutex::new((f64::from(self.initial), self.algorithm)),
        };
        Ok(AdaptiveLimit {
            bulkhead: Bulkhead::with(self.initial, queue, self.name.as_deref(), Some(adaptive)),
        })
    }
}
