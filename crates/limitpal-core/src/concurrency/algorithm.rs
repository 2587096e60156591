//! How an [`AdaptiveLimit`](super::AdaptiveLimit) moves its limit: [`Aimd`] and [`Gradient2`],
//! each a pure transition from (limit, one completed call) to the next limit.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use crate::ConfigError;

/// One completed call, as an algorithm sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Sample {
    /// When the call completed, on the limit's clock.
    pub now: Duration,
    /// How long the call held its slot.
    pub rtt: Duration,
    /// Calls in flight when this one started, itself included.
    pub in_flight: u32,
    /// The call failed or timed out: the callee is overloaded (or broken).
    pub dropped: bool,
}

impl Sample {
    /// A sample; `in_flight` counts the call itself.
    #[must_use]
    pub const fn new(now: Duration, rtt: Duration, in_flight: u32, dropped: bool) -> Self {
        Self {
            now,
            rtt,
            in_flight,
            dropped,
        }
    }
}

/// A concurrency-limit algorithm: folds completed calls into a limit.
///
/// The limit is an `f64` so small steps accumulate; the [`AdaptiveLimit`](super::AdaptiveLimit)
/// clamps it to its `[min, max]` and admits `floor(limit)` calls at once. Implement it for
/// your own algorithm (Vegas, a latency SLO); [`Aimd`] and [`Gradient2`] ship.
pub trait LimitAlgorithm: fmt::Debug + Send + 'static {
    /// The limit after `sample`, given the current `limit`.
    fn update(&mut self, limit: f64, sample: &Sample) -> f64;

    /// The limit to enforce on new calls now, given the current `limit`: the limit itself,
    /// unless the algorithm is probing (see [`Gradient2`]).
    fn enforced(&self, limit: f64) -> f64 {
        limit
    }

    /// Whether this algorithm would answer every later sample exactly as a new one (a clone
    /// of the one the limit was built with) would, given the same limit. A
    /// [`KeyedAdaptiveLimit`](super::KeyedAdaptiveLimit) asks only when the key has no call
    /// in flight and its limit is back at `initial_limit`, and then drops the key
    /// unobservably. The default, `false`, keeps such keys until `max_keys` or
    /// `forget_after` removes them; say `true` only if no history of yours survives.
    fn is_fresh(&self) -> bool {
        false
    }
}

/// Additive increase, multiplicative decrease, with TCP congestion avoidance's pacing: a
/// call that failed or took longer than `timeout` multiplies the limit by `backoff_ratio`
/// (once per round trip: failures of calls that started before the last decrease are the
/// same congestion event); a successful call while at least half the limit is in use adds
/// `1 / limit` (so +1 per limit's worth of calls, one round trip).
///
/// Netflix concurrency-limits' `AIMDLimit` adds 1 per call and backs off on every failure.
/// With many calls in flight, feedback arrives a whole round trip late, so that overshoots
/// by up to a doubling and then collapses under a burst of failures (our test on a
/// rejecting upstream of capacity 40 saw it swing from 1 to 81); the paced rule keeps it
/// within a few calls of the capacity.
///
/// ```
/// use limitpal_core::concurrency::{Aimd, LimitAlgorithm, Sample};
/// use std::time::Duration;
///
/// let mut aimd = Aimd::new().backoff_ratio(0.5)?;
/// let ms = Duration::from_millis;
/// let ok = Sample::new(ms(10), ms(5), 10, false);
/// assert_eq!(aimd.update(10.0, &ok), 10.1);
/// let failed = Sample::new(ms(20), ms(5), 10, true);
/// assert_eq!(aimd.update(10.0, &failed), 5.0);
/// // a call that started before that decrease: the same event, no second cut
/// let late = Sample::new(ms(21), ms(8), 10, true);
/// assert_eq!(aimd.update(5.0, &late), 5.0);
/// # Ok::<(), limitpal_core::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aimd {
    backoff_ratio: f64,
    timeout: Duration,
    last_decrease: Option<Duration>,
}

impl Default for Aimd {
    fn default() -> Self {
        Self::new()
    }
}

impl Aimd {
    /// Backoff ratio 0.9, timeout 5 s (Netflix's defaults).
    #[must_use]
    pub const fn new() -> Self {
        Self {
            backoff_ratio: 0.9,
            timeout: Duration::from_secs(5),
            last_decrease: None,
        }
    }

    /// What a failure multiplies the limit by, in `[0.5, 1)`.
    ///
    /// # Errors
    /// [`ConfigError`] outside `[0.5, 1)` or NaN.
    pub fn backoff_ratio(mut self, ratio: f64) -> Result<Self, ConfigError> {
        if !(0.5..1.0).contains(&ratio) {
            return Err(ConfigError::out_of_range(
                "backoff_ratio",
                ratio,
                "in [0.5, 1)",
            ));
        }
        self.backoff_ratio = ratio;
        Ok(self)
    }

    /// Calls slower than this count as failures.
    ///
    /// # Errors
    /// [`ConfigError::Zero`] for a zero timeout.
    pub fn timeout(mut self, timeout: Duration) -> Result<Self, ConfigError> {
        if timeout.is_zero() {
            return Err(ConfigError::Zero { field: "timeout" });
        }
        self.timeout = timeout;
        Ok(self)
    }
}

impl LimitAlgorithm for Aimd {
    fn update(&mut self, limit: f64, sample: &Sample) -> f64 {
        if sample.dropped || sample.rtt > self.timeout {
            let started = sample.now.saturating_sub(sample.rtt);
            if self.last_decrease.is_some_and(|at| started < at) {
                return limit; // sent before the last decrease: already answered
            }
            self.last_decrease = Some(sample.now);
            limit * self.backoff_ratio
        } else if f64::from(sample.in_flight) * 2.0 >= limit {
            limit + 1.0 / limit.max(1.0)
        } else {
            // not using half the limit: success says nothing about a higher one
            limit
        }
    }

    /// Always: the only history is the last decrease, which matters only to calls started
    /// before it, and none is in flight when this is asked.
    fn is_fresh(&self) -> bool {
        true
    }
}

/// Latency-gradient limit (Netflix concurrency-limits' `Gradient2Limit` update rule), computed
/// once per sample window:
///
/// ```text
/// gradient = clamp(tolerance × long_rtt / short_rtt, 0.5, 1)
/// limit    = limit × (1 − smoothing) + (limit × gradient + queue_size) × smoothing
/// ```
///
/// `short_rtt` is the mean latency of the window's successful calls. While latency stays at
/// the baseline (gradient 1: nothing queues) the growth term is `max(queue_size, limit / 4)`
/// (a slow start, so capacity that comes back is found in a few windows); once calls queue
/// upstream, latency rises in proportion, the growth term is `queue_size`, and the limit
/// settles where the upstream is just saturated: about capacity + `queue_size`. A window in which fewer than half the slots
/// were used leaves the limit alone (nothing learned about a higher one).
///
/// Where it differs from Netflix's, and why: `long_rtt` is the **lowest window mean over the
/// last `long_window` windows** (the no-load latency) rather than an exponential average of
/// all latencies. An average follows a standing queue up, so under sustained load the limit
/// drifts far above capacity; a windowed minimum does not, which is why the default
/// tolerance is 1.0 here (Netflix: 1.5 against its average). To relearn the baseline when
/// every window is queued, every `probe_interval`-th window runs at half the limit, lets
/// the upstream queue drain, and feeds only the baseline.
///
/// Defaults: window 100 ms (and at least 10 calls), long window 600 windows, tolerance 1.0,
/// smoothing 0.5 (per window of many calls, not per call as in Netflix's 0.2), queue size 2,
/// probe every 50 windows.
#[derive(Clone)]
pub struct Gradient2 {
    window: Duration,
    min_samples: u32,
    long_window: u32,
    tolerance: f64,
    smoothing: f64,
    queue_size: f64,
    probe_interval: u32,
    state: WindowState,
}

#[derive(Debug, Clone, Default)]
struct WindowState {
    start: Option<Duration>,
    sum_nanos: u128,
    successes: u32,
    calls: u32,
    max_in_flight: u32,
    windows: u64,
    probing: bool,
    /// (window number, mean) with increasing means: the sliding minimum.
    lows: VecDeque<(u64, f64)>,
}

impl fmt::Debug for Gradient2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gradient2")
            .field("window", &self.window)
            .field("long_window", &self.long_window)
            .field("tolerance", &self.tolerance)
            .field("smoothing", &self.smoothing)
            .field("queue_size", &self.queue_size)
            .field("probe_interval", &self.probe_interval)
            .field("long_rtt", &self.long_rtt())
            .finish_non_exhaustive()
    }
}

impl Default for Gradient2 {
    fn default() -> Self {
        Self::new()
    }
}

impl Gradient2 {
    /// The defaults listed above.
    #[must_use]
    pub fn new() -> Self {
        Self {
            window: Duration::from_millis(100),
            min_samples: 10,
            long_window: 600,
            tolerance: 1.0,
            smoothing: 0.5,
            queue_size: 2.0,
            probe_interval: 50,
            state: WindowState::default(),
        }
    }

    /// The sample window: the limit moves once per window of at least this long and at
    /// least `min_samples` calls.
    ///
    /// # Errors
    /// [`ConfigError::Zero`] for a zero window or `min_samples`.
    pub fn window(mut self, window: Duration, min_samples: u32) -> Result<Self, ConfigError> {
        if window.is_zero() {
            return Err(ConfigError::Zero { field: "window" });
        }
        if min_samples == 0 {
            return Err(ConfigError::Zero {
                field: "min_samples",
            });
        }
        self.window = window;
        self.min_samples = min_samples;
        Ok(self)
    }

    /// How many windows the baseline latency is the minimum of.
    ///
    /// # Errors
    /// [`ConfigError::Zero`] for zero.
    pub fn long_window(mut self, windows: u32) -> Result<Self, ConfigError> {
        if windows == 0 {
            return Err(ConfigError::Zero {
                field: "long_window",
            });
        }
        self.long_window = windows;
        Ok(self)
    }

    /// How much latency above the baseline is tolerated before the limit falls, as a ratio
    /// in `[1, 10]` (1.5 tolerates 50 % more).
    ///
    /// # Errors
    /// [`ConfigError`] outside `[1, 10]` or NaN.
    pub fn tolerance(mut self, tolerance: f64) -> Result<Self, ConfigError> {
        if !(1.0..=10.0).contains(&tolerance) {
            return Err(ConfigError::out_of_range(
                "tolerance",
                tolerance,
                "in [1, 10]",
            ));
        }
        self.tolerance = tolerance;
        Ok(self)
    }

    /// How far each window moves the limit toward its new value, in `(0, 1]`.
    ///
    /// # Errors
    /// [`ConfigError`] outside `(0, 1]` or NaN.
    pub fn smoothing(mut self, smoothing: f64) -> Result<Self, ConfigError> {
        if !(smoothing > 0.0 && smoothing <= 1.0) {
            return Err(ConfigError::out_of_range(
                "smoothing",
                smoothing,
                "in (0, 1]",
            ));
        }
        self.smoothing = smoothing;
        Ok(self)
    }

    /// Calls allowed to queue upstream beyond its capacity, in `[0, 1000]`: the growth term.
    ///
    /// # Errors
    /// [`ConfigError`] outside `[0, 1000]` or NaN.
    pub fn queue_size(mut self, queue_size: f64) -> Result<Self, ConfigError> {
        if !(0.0..=1000.0).contains(&queue_size) {
            return Err(ConfigError::out_of_range(
                "queue_size",
                queue_size,
                "in [0, 1000]",
            ));
        }
        self.queue_size = queue_size;
        Ok(self)
    }

    /// Every `interval`-th window runs at half the limit to relearn the baseline; 0 never
    /// probes (the baseline then comes only from windows that happen to be unqueued).
    #[must_use]
    pub fn probe_interval(mut self, interval: u32) -> Self {
        self.probe_interval = interval;
        self
    }

    /// The baseline (no-load) latency learned so far.
    #[must_use]
    pub fn long_rtt(&self) -> Option<Duration> {
        self.state
            .lows
            .front()
            .map(|&(_, mean)| Duration::from_secs_f64(mean / 1e9))
    }
}

impl LimitAlgorithm for Gradient2 {
    fn update(&mut self, limit: f64, sample: &Sample) -> f64 {
        let s = &mut self.state;
        let start = *s.start.get_or_insert(sample.now);
        s.calls = s.calls.saturating_add(1);
        s.max_in_flight = s.max_in_flight.max(sample.in_flight);
        if !sample.dropped {
            // a failure's latency says little about queueing
            s.sum_nanos = s.sum_nanos.saturating_add(sample.rtt.as_nanos());
            s.successes = s.successes.saturating_add(1);
        }
        if sample.now.saturating_sub(start) < self.window || s.calls < self.min_samples {
            return limit;
        }
        let (sum, successes, max_in_flight, probed) =
            (s.sum_nanos, s.successes, s.max_in_flight, s.probing);
        s.start = None;
        s.sum_nanos = 0;
        s.successes = 0;
        s.calls = 0;
        s.max_in_flight = 0;
        s.windows = s.windows.saturating_add(1);
        s.probing = std::num::NonZeroU64::new(u64::from(self.probe_interval))
            .is_some_and(|every| s.windows % every == 0);
        if successes == 0 {
            return limit;
        }
        #[allow(clippy::cast_precision_loss)] // nanoseconds: exact far beyond any latency
        let short = sum as f64 / f64::from(successes);
        while s.lows.back().is_some_and(|&(_, low)| low >= short) {
            s.lows.pop_back();
        }
        s.lows.push_back((s.windows, short));
        while s
            .lows
            .front()
            .is_some_and(|&(w, _)| w.saturating_add(u64::from(self.long_window)) <= s.windows)
        {
            s.lows.pop_front();
        }
        if probed || f64::from(max_in_flight) * 2.0 < limit {
            return limit;
        }
        let long = s.lows.front().map_or(short, |&(_, low)| low);
        let gradient = (self.tolerance * long / short.max(1.0)).clamp(0.5, 1.0);
        let growth = if gradient >= 1.0 {
            self.queue_size.max(limit * GROWTH)
        } else {
            self.queue_size
        };
        let target = limit * gradient + growth;
        limit * (1.0 - self.smoothing) + target * self.smoothing
    }

    /// Before its first sample only: the baseline and the window count are history.
    fn is_fresh(&self) -> bool {
        let s = &self.state;
        s.start.is_none() && s.windows == 0 && s.lows.is_empty()
    }

    fn enforced(&self, limit: f64) -> f64 {
        if self.state.probing {
            limit / 2.0
        } else {
            limit
        }
    }
}
/// While nothing queues (gradient 1), the limit may grow by this share of itself per window
/// rather than by `queue_size` alone: capacity that returns is found in a few windows.
const GROWTH: f64 = 0.25;
