//! Hedging: when an attempt is slow, send another and take the first answer.
//!
//! A [`Hedge`] says when a run's call is slow enough to hedge: after a fixed delay
//! ([`Hedge::after`]) or after the observed latency percentile ([`Hedge::percentile`], e.g.
//! the p95 of recent calls, tracked in O(1) per call). The pipeline's step machine decides
//! every hedge (see [`pipeline`](crate::pipeline)): a hedge is an attempt like any other —
//! charged to the rate limiter, admitted by the breaker, given its own bulkhead slot — and
//! an *extra* attempt drawn from the same [`RetryBudget`](crate::RetryBudget) as retries, so
//! `extra attempts ≤ ratio × requests` holds for both together. The first success wins; the
//! other calls are dropped at once (their permits and slots released unrecorded).
//!
//! ```
//! use limitpal_core::Hedge;
//! use std::time::Duration;
//!
//! let fixed = Hedge::after(Duration::from_millis(50)).max_hedges(2);
//! assert_eq!(fixed.delay(Duration::ZERO), Some(Duration::from_millis(50)));
//!
//! // p90 of the last window of calls, once 10 have been seen
//! let tracked = Hedge::percentile(0.9, 10);
//! assert_eq!(tracked.delay(Duration::ZERO), None); // not warm yet: no hedging
//! for ms in 1..=10 {
//!     tracked.record(Duration::from_millis(ms), Duration::ZERO);
//! }
//! let p90 = tracked.delay(Duration::ZERO).unwrap();
//! assert!(p90 >= Duration::from_millis(9) && p90 <= Duration::from_millis(11));
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::ConfigError;

/// When to send a hedged attempt, and how many at most. Clones share the latency record of
/// a percentile hedge.
#[derive(Clone)]
pub struct Hedge {
    delay: Delay,
    max_hedges: u32,
}

#[derive(Clone)]
enum Delay {
    Fixed(Duration),
    Percentile(Arc<Latencies>),
}

/// The window a percentile hedge's latencies are taken over by default.
const DEFAULT_WINDOW: Duration = Duration::from_secs(10);

impl Hedge {
    /// Hedges a call still running `delay` after it started (zero: every hedge at once).
    #[must_use]
    pub fn after(delay: Duration) -> Self {
        Self {
            delay: Delay::Fixed(delay),
            max_hedges: 1,
        }
    }

    /// Hedges a call still running after the `p` quantile of recent calls' latencies
    /// (`0.95` or `95.0`: the p95), once `min_samples` calls have been seen in the window
    /// (10 s unless [`window`](Self::window) says otherwise); until then nothing is hedged.
    /// Latencies are kept in a log-linear histogram (buckets 12.5 % wide), so the delay
    /// is the bucket's upper edge: at most 12.5 % above the true quantile.
    #[must_use]
    pub fn percentile(p: f64, min_samples: u32) -> Self {
        Self {
            delay: Delay::Percentile(Arc::new(Latencies::new(p, min_samples, DEFAULT_WINDOW))),
            max_hedges: 1,
        }
    }

    /// At most `n` hedges per attempt (default 1); zero is refused at `build`.
    #[must_use]
    pub fn max_hedges(mut self, n: u32) -> Self {
        self.max_hedges = n;
        self
    }

    /// The window a percentile hedge's latencies are taken over (default 10 s): the delay
    /// follows the last full window (or the current one while warming up). No effect on a
    /// fixed hedge.
    #[must_use]
    pub fn window(mut self, window: Duration) -> Self {
        if let Delay::Percentile(latencies) = &self.delay {
            self.delay = Delay::Percentile(Arc::new(Latencies::new(
                latencies.quantile,
                latencies.min_samples,
                window,
            )));
        }
        self
    }

    /// The most hedges per attempt.
    #[must_use]
    pub fn hedges(&self) -> u32 {
        self.max_hedges
    }

    /// How long after a call's start it is hedged, at `now`; `None` while a percentile
    /// hedge has seen fewer than `min_samples` calls.
    #[must_use]
    pub fn delay(&self, now: Duration) -> Option<Duration> {
        match &self.delay {
            Delay::Fixed(delay) => Some(*delay),
            Delay::Percentile(latencies) => latencies.delay(now),
        }
    }

    /// Whether the hedge learns from latencies ([`record`](Self::record) does something).
    #[must_use]
    pub fn tracks_latency(&self) -> bool {
        matches!(self.delay, Delay::Percentile(_))
    }

    /// Records the latency of a call that succeeded, at `now` (for a percentile hedge; the
    /// pipeline does this for every winning attempt).
    pub fn record(&self, latency: Duration, now: Duration) {
        if let Delay::Percentile(latencies) = &self.delay {
            latencies.record(latency, now);
        }
    }

    /// Checks the configuration.
    ///
    /// # Errors
    /// [`ConfigError`] for `max_hedges(0)`, a percentile outside (0, 100) or a zero window.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_hedges == 0 {
            return Err(ConfigError::Zero {
                field: "max_hedges",
            });
        }
        if let Delay::Percentile(latencies) = &self.delay {
            if !(latencies.quantile > 0.0 && latencies.quantile <= 1.0) {
                return Err(ConfigError::out_of_range(
                    "percentile",
                    latencies.given,
                    "in (0, 1] as a fraction, or in (1, 100) as a percent",
                ));
            }
            if latencies.window.is_zero() {
                return Err(ConfigError::Zero {
                    field: "hedge window",
                });
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Hedge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Hedge");
        match &self.delay {
            Delay::Fixed(delay) => d.field("after", delay),
            Delay::Percentile(l) => d
                .field("percentile", &l.quantile)
                .field("min_samples", &l.min_samples)
                .field("window", &l.window),
        };
        d.field("max_hedges", &self.max_hedges).finish()
    }
}

/// Sub-buckets per power of two (8: buckets 12.5 % wide).
const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
const SUB_MASK: u64 = (1 << SUB_BITS) - 1;
/// Latencies are kept up to 2^40 ns (about 18 minutes); longer ones count as that.
const MAX_BITS: u32 = 40;
const BUCKETS: usize = (MAX_BITS as usize - SUB_BITS as usize + 1) * SUB;
/// No delay cached yet.
const NONE: u64 = u64::MAX;

/// Two windows of latency histograms, the current one and the last, and the delay they give.
struct Latencies {
    quantile: f64,
    given: f64,
    min_samples: u32,
    window: Duration,
    windows: [Window; 2],
    /// The delay in nanoseconds, `NONE` until the first window with enough samples.
    delay: AtomicU64,
}

struct Window {
    /// Which window of time (`now / window`) the counts are for.
    epoch: AtomicU64,
    count: AtomicU64,
    buckets: Box<[AtomicU32]>,
}

impl Latencies {
    fn new(p: f64, min_samples: u32, window: Duration) -> Self {
        // 95.0 and 0.95 both mean the p95; 1.0 is the maximum
        let quantile = if p > 1.0 { p / 100.0 } else { p };
        let quantile = if quantile >= 1.0 && p > 1.0 {
            f64::NAN // 100.0 and beyond: refused by validate
        } else {
            quantile
        };
        let window_of = || Window {
            epoch: AtomicU64::new(0),
            count: AtomicU64::new(0),
            buckets: (0..BUCKETS).map(|_| AtomicU32::new(0)).collect(),
        };
        Self {
            quantile,
            given: p,
            min_samples: min_samples.max(1),
            window,
            windows: [window_of(), window_of()],
            delay: AtomicU64::new(NONE),
        }
    }

    fn epoch(&self, now: Duration) -> u64 {
        let window = self.window.as_nanos().max(1);
        u64::try_from(now.as_nanos().checked_div(window).unwrap_or(0)).unwrap_or(u64::MAX)
    }

    fn delay(&self, _now: Duration) -> Option<Duration> {
        match self.delay.load(Ordering::Relaxed) {
            NONE => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }

    /// O(1): one bucket and one count incremented; a window's turn (once per window) or a
    /// warm-up milestone (count reaching `min_samples` × 2^k) recomputes the delay from
    /// the window's buckets.
    fn record(&self, latency: Duration, now: Duration) {
        let epoch = self.epoch(now);
        let slot = usize::from(epoch % 2 == 1);
        let window = &self.windows[slot];
        let seen = window.epoch.load(Ordering::Acquire);
        if seen != epoch
            && window
                .epoch
                .compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // this window's turn: the other one is the last full window, the delay from now on
            let last = &self.windows[slot ^ 1];
            if last.epoch.load(Ordering::Acquire).checked_add(1) == Some(epoch) {
                self.recompute(last);
            }
            for bucket in &*window.buckets {
                bucket.store(0, Ordering::Relaxed);
            }
            window.count.store(0, Ordering::Relaxed);
        }
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        window.buckets[bucket(nanos)].fetch_add(1, Ordering::Relaxed);
        let count = window
            .count
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let min = u64::from(self.min_samples);
        if count >= min
            && count.checked_div(min).is_some_and(u64::is_power_of_two)
            && count.checked_rem(min) == Some(0)
        {
            self.recompute(window);
        }
    }

    fn recompute(&self, window: &Window) {
        let count = window.count.load(Ordering::Relaxed);
        if count < u64::from(self.min_samples) {
            return;
        }
        // the rank of the quantile: the smallest latency at or above which `quantile` of
        // the calls finished
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let rank = ((count as f64) * self.quantile - 1e-9).ceil().max(1.0) as u64;
        let mut seen = 0_u64;
        for (index, bucket) in window.buckets.iter().enumerate() {
            seen = seen.saturating_add(u64::from(bucket.load(Ordering::Relaxed)));
            if seen >= rank {
                self.delay.store(upper_edge(index), Ordering::Relaxed);
                return;
            }
        }
    }
}

/// The bucket of a latency of `nanos`: exact below 8 ns, then 8 per power of two.
fn bucket(nanos: u64) -> usize {
    let v = nanos.min((1 << MAX_BITS) - 1);
    let msb = 63_u32.saturating_sub(v.leading_zeros());
    if msb < SUB_BITS {
        return usize::try_from(v).unwrap_or(0);
    }
    let shift = msb.saturating_sub(SUB_BITS);
    let sub = usize::try_from((v >> shift) & SUB_MASK).unwrap_or(0);
    let octave = usize::try_from(msb.saturating_sub(SUB_BITS - 1)).unwrap_or(0);
    octave.saturating_mul(SUB).saturating_add(sub)
}

/// The largest latency in bucket `index`, in nanoseconds.
fn upper_edge(index: usize) -> u64 {
    if index < SUB {
        return u64::try_from(index).unwrap_or(0);
    }
    let octave = u32::try_from(index / SUB).unwrap_or(0);
    let sub = u64::try_from(index % SUB).unwrap_or(0);
    let shift = octave.saturating_sub(1);
    let low = (SUB_MASK.saturating_add(1).saturating_add(sub)) << shift;
    low.saturating_add((1_u64 << shift).saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_each_latency() {
        for nanos in [
            0_u64,
            1,
            7,
            8,
            9,
            15,
            16,
            100,
            1_000,
            123_456,
            10_000_000_000,
        ] {
            let index = bucket(nanos);
            assert!(index < BUCKETS);
            assert!(
                upper_edge(index) >= nanos,
                "{nanos} above its bucket {index}"
            );
            if index > 0 {
                assert!(
                    upper_edge(index - 1) < nanos,
                    "{nanos} belongs lower than {index}"
                );
            }
            assert!(upper_edge(index) as f64 <= (nanos as f64) * 1.125 + 1.0);
        }
    }

    #[test]
    fn percentile_follows_the_last_full_window() {
        let hedge = Hedge::percentile(95.0, 20).window(Duration::from_secs(1));
        hedge.validate().unwrap();
        let at = Duration::from_millis(100);
        for i in 0..100_u64 {
            hedge.record(Duration::from_millis(if i < 95 { 10 } else { 500 }), at);
        }
        let p95 = hedge.delay(at).unwrap();
        assert!(
            p95 >= Duration::from_millis(10) && p95 < Duration::from_millis(12),
            "{p95:?}"
        );
        // the next window's calls are slower: the delay follows at its first milestone (20
        // samples), then at the window's end from all of them
        let next = Duration::from_millis(1_100);
        for i in 0..30 {
            hedge.record(Duration::from_millis(if i < 20 { 100 } else { 300 }), next);
        }
        let p95 = hedge.delay(next).unwrap();
        assert!(
            p95 >= Duration::from_millis(100) && p95 < Duration::from_millis(113),
            "{p95:?}"
        );
        hedge.record(Duration::from_millis(1), Duration::from_millis(2_100));
        let p95 = hedge.delay(next).unwrap();
        assert!(
            p95 >= Duration::from_millis(300) && p95 < Duration::from_millis(338),
            "{p95:?}"
        );
    }

    #[test]
    fn bad_percentiles_are_refused() {
        for p in [0.0, -1.0, 100.0, 250.0, f64::NAN] {
            let err = Hedge::percentile(p, 10).validate().unwrap_err();
            assert_eq!(err.field(), "percentile", "{p}");
        }
        assert_eq!(
            Hedge::after(Duration::ZERO)
                .max_hedges(0)
                .validate()
                .unwrap_err()
                .field(),
            "max_hedges"
        );
        assert!(Hedge::percentile(0.5, 1).validate().is_ok());
    }
}
