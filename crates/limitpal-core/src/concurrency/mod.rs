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

mod adaptive;
mod algorithm;
mod keyed;
mod permit;
mod semaphore;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use adaptive::Adaptive;
pub use adaptive::{AdaptiveLimit, AdaptiveLimitBuilder};
pub use algorithm::{Aimd, Gradient2, LimitAlgorithm, Sample};
pub use keyed::{
    KeyedAdaptiveLimit, KeyedAdaptiveLimitBuilder, KeyedBulkhead, KeyedBulkheadBuilder,
};
use permit::AcquireState;
pub use permit::{Acquire, BulkheadPermit};
use semaphore::{Entry, Semaphore};

use crate::blocking::block_on;
pub use crate::error::BulkheadFull;
use crate::metrics::BulkheadMetrics;
use crate::{Clock, ConfigError};

/// What every clone of a bulkhead shares.
struct Shared {
    semaphore: Semaphore,
    max_wait: Duration,
    adaptive: Option<Adaptive>,
    metrics: BulkheadMetrics,
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
        self.try_take().ok_or_else(|| self.refuse())
    }

    /// A slot now if one is free, reporting nothing when none is: a pipeline's fast path
    /// before it queues with [`acquire`](Self::acquire) (which reports a refusal once).
    #[inline]
    pub(crate) fn try_take(&self) -> Option<BulkheadPermit> {
        self.shared.semaphore.try_acquire().then(|| self.permit())
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
    #[must_use]
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
    const fn new(max_waiting: u32, max_wait: Duration) -> Self {
        Self {
            max_waiting,
            max_wait,
        }
    }

    /// Checks a builder's limit and queue, which every bulkhead builder has.
    fn checked(max_concurrent: u32, queue: Self) -> Result<Self, ConfigError> {
        if max_concurrent == 0 {
            return Err(ConfigError::Zero {
                field: "max_concurrent",
            });
        }
        queue.validate()
    }

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
        self.queue = Queue::new(max_waiting, max_wait);
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
        let queue = Queue::checked(self.max_concurrent, self.queue)?;
        Ok(Bulkhead::with(
            self.max_concurrent,
            queue,
            self.name.as_deref(),
            None,
        ))
    }
}
