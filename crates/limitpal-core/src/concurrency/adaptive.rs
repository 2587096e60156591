//! [`AdaptiveLimit`]: a [`Bulkhead`] whose size a [`LimitAlgorithm`] moves, and the part of
//! it the bulkhead's shared state holds.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::semaphore::Semaphore;
use super::{Acquire, Bulkhead, BulkheadFull, BulkheadPermit, LimitAlgorithm, Queue, Sample};
use crate::metrics::BulkheadMetrics;
use crate::sync::{Mutex, lock};
use crate::{Clock, ConfigError, MonotonicClock};

/// An adaptive limit's moving part.
pub(super) struct Adaptive {
    pub(super) clock: Arc<dyn Clock>,
    min: f64,
    max: f64,
    state: Mutex<(f64, Box<dyn LimitAlgorithm>)>,
}

impl Adaptive {
    /// A limit at `bounds.initial`, moved by `algorithm`.
    fn new(clock: Arc<dyn Clock>, bounds: Bounds, algorithm: Box<dyn LimitAlgorithm>) -> Self {
        Self {
            clock,
            min: f64::from(bounds.min),
            max: f64::from(bounds.max),
            state: Mutex::new((f64::from(bounds.initial), algorithm)),
        }
    }

    /// Whether a new limit starting at `initial` would answer every later call as this one
    /// does. Asked only with no call in flight (see [`LimitAlgorithm::is_fresh`]).
    pub(super) fn is_fresh(&self, initial: u32) -> bool {
        let state = lock(&self.state);
        #[allow(clippy::float_cmp)] // exactly the start: any step taken moves it
        let at_start = state.0 == f64::from(initial);
        at_start && state.1.is_fresh()
    }

    /// Folds one call into the limit and moves the semaphore's limit with it.
    pub(super) fn sample(&self, semaphore: &Semaphore, metrics: &BulkheadMetrics, sample: &Sample) {
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

/// A concurrency limit that adapts to the callee: [`Aimd`](super::Aimd) on errors and timeouts,
/// [`Gradient2`](super::Gradient2) on latency. Clones share the limit; it is a [`Bulkhead`] whose size moves
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
    /// An adaptive limit moved by `algorithm` ([`Aimd`](super::Aimd), [`Gradient2`](super::Gradient2), or your own).
    #[must_use]
    pub fn builder<A: LimitAlgorithm>(algorithm: A) -> AdaptiveLimitBuilder {
        AdaptiveLimitBuilder {
            algorithm: Box::new(algorithm),
            settings: Settings::default(),
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
    /// [`Gradient2`](super::Gradient2) probe).
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

/// The setters every adaptive-limit builder has (its `settings: Settings` field), written
/// once for [`AdaptiveLimitBuilder`] and the keyed builder.
macro_rules! settings_setters {
    () => {
        /// The limit to start with (every key's, for a keyed limit; default 20).
        #[must_use]
        pub fn initial_limit(mut self, limit: u32) -> Self {
            self.settings.bounds.initial = limit;
            self
        }

        /// The limit never falls below this (default 1).
        #[must_use]
        pub fn min_limit(mut self, limit: u32) -> Self {
            self.settings.bounds.min = limit;
            self
        }

        /// The limit never rises above this (default 1000).
        #[must_use]
        pub fn max_limit(mut self, limit: u32) -> Self {
            self.settings.bounds.max = limit;
            self
        }

        /// Lets up to `max_waiting` callers (per key, for a keyed limit) wait in FIFO order up
        /// to `max_wait` each for a slot (default: no queue).
        #[must_use]
        pub fn queue(mut self, max_waiting: u32, max_wait: Duration) -> Self {
            self.settings.queue = Queue::new(max_waiting, max_wait);
            self
        }

        /// The bounds given, each left at its default where `None` (for configuration).
        #[cfg(feature = "serde")]
        pub(crate) fn bounds(
            mut self,
            initial: Option<u32>,
            min: Option<u32>,
            max: Option<u32>,
        ) -> Self {
            let b = &mut self.settings.bounds;
            b.initial = initial.unwrap_or(b.initial);
            b.min = min.unwrap_or(b.min);
            b.max = max.unwrap_or(b.max);
            self
        }

        /// The clock that times calls (and notes a keyed limit's last uses; default
        /// [`MonotonicClock`]; `TokioClock` or [`ManualClock`](crate::ManualClock) in tests).
        #[must_use]
        pub fn clock<C: Clock>(mut self, clock: C) -> Self {
            self.settings.clock = Some(Arc::new(clock));
            self
        }
    };
}
pub(super) use settings_setters;

/// Configures an [`AdaptiveLimit`]; made by [`AdaptiveLimit::builder`].
pub struct AdaptiveLimitBuilder {
    algorithm: Box<dyn LimitAlgorithm>,
    settings: Settings,
    name: Option<String>,
}

/// What a plain and a keyed adaptive limit are both configured with.
#[derive(Clone)]
pub(super) struct Settings {
    pub(super) bounds: Bounds,
    pub(super) queue: Queue,
    pub(super) clock: Option<Arc<dyn Clock>>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            bounds: Bounds {
                initial: 20,
                min: 1,
                max: 1000,
            },
            queue: Queue::default(),
            clock: None,
        }
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("bounds", &self.bounds)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

/// Where a limit starts and the range it moves in.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bounds {
    pub(super) initial: u32,
    pub(super) min: u32,
    pub(super) max: u32,
}

impl Settings {
    /// Checks the bounds and the queue; returns the clock to time calls by.
    ///
    /// # Errors
    /// See [`AdaptiveLimitBuilder::build`].
    pub(super) fn checked(&self) -> Result<Arc<dyn Clock>, ConfigError> {
        let Bounds { initial, min, max } = self.bounds;
        if min == 0 {
            return Err(ConfigError::Zero { field: "min_limit" });
        }
        if max < min {
            return Err(ConfigError::out_of_range(
                "max_limit",
                max,
                "at least min_limit",
            ));
        }
        if !(min..=max).contains(&initial) {
            return Err(ConfigError::out_of_range(
                "initial_limit",
                initial,
                "in [min_limit, max_limit]",
            ));
        }
        self.queue.validate()?;
        Ok(self
            .clock
            .clone()
            .unwrap_or_else(|| Arc::new(MonotonicClock)))
    }

    /// A bulkhead at the initial limit moved by `algorithm` (settings already checked).
    pub(super) fn limit(
        &self,
        clock: Arc<dyn Clock>,
        algorithm: Box<dyn LimitAlgorithm>,
        name: Option<&str>,
    ) -> Bulkhead {
        let adaptive = Adaptive::new(clock, self.bounds, algorithm);
        Bulkhead::with(self.bounds.initial, self.queue, name, Some(adaptive))
    }
}

impl fmt::Debug for AdaptiveLimitBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLimitBuilder")
            .field("algorithm", &self.algorithm)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl AdaptiveLimitBuilder {
    settings_setters!();

    /// A name for its metrics (feature `metrics`: label `name`; the limit is a gauge).
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Builds the limit.
    ///
    /// # Errors
    /// [`ConfigError`] for a zero `min_limit`, `max_limit` below `min_limit`, an
    /// `initial_limit` outside `[min_limit, max_limit]`, or a zero `max_wait` with a queue.
    pub fn build(self) -> Result<AdaptiveLimit, ConfigError> {
        let clock = self.settings.checked()?;
        Ok(AdaptiveLimit {
            bulkhead: self
                .settings
                .limit(clock, self.algorithm, self.name.as_deref()),
        })
    }
}
