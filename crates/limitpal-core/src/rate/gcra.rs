//! The Generic Cell Rate Algorithm: one `u64` per key, updated by compare-and-swap.
//!
//! The state is the *theoretical arrival time* (TAT): the instant at which the bucket would be
//! full again. A cost `n` at `now` is admitted when `max(tat, now) + n·T − burst ≤ now`, where
//! `T` is the per-token interval and `burst = capacity·T`. A token bucket that refills
//! continuously and a leaky bucket that drains continuously are this same meter, read two ways.
//! Because the state is an absolute time, refill never loses fractions of a token.

use crate::sync::{AtomicU64, Ordering};

use super::sealed::Sealed;
use crate::ConfigError;

const NANOS_PER_SEC: f64 = 1_000_000_000.0;

/// The shared meter behind [`TokenBucket`] and [`LeakyBucket`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gcra {
    /// Nanoseconds per token, rounded down.
    interval: u64,
    /// `capacity × interval`: how far ahead of `now` the TAT may run.
    burst: u64,
    capacity: u32,
}

impl Gcra {
    fn new(
        capacity: u32,
        capacity_field: &'static str,
        per_sec: f64,
        rate_field: &'static str,
    ) -> Result<Self, ConfigError> {
        if capacity == 0 {
            return Err(ConfigError::Zero {
                field: capacity_field,
            });
        }
        if !(per_sec.is_finite() && per_sec > 0.0) {
            return Err(ConfigError::out_of_range(
                rate_field,
                per_sec,
                "a finite number greater than zero",
            ));
        }
        let interval = (NANOS_PER_SEC / per_sec).floor();
        // u64::MAX as f64 rounds up to 2^64, so `<` keeps the cast exact and in range.
        #[allow(clippy::cast_precision_loss)]
        let too_slow = interval >= u64::MAX as f64;
        if interval < 1.0 {
            return Err(ConfigError::out_of_range(
                rate_field,
                per_sec,
                "at most 1e9 (one token per nanosecond)",
            ));
        }
        if too_slow {
            return Err(ConfigError::out_of_range(
                rate_field,
                per_sec,
                "at least one token per 584 years",
            ));
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let interval = interval as u64; // checked: 1 <= interval < 2^64
        let burst = interval.checked_mul(u64::from(capacity)).ok_or_else(|| {
            ConfigError::out_of_range(
                capacity_field,
                capacity,
                "small enough that capacity / rate fits in 584 years",
            )
        })?;
        Ok(Self {
            interval,
            burst,
            capacity,
        })
    }

    /// The pure transition: the new TAT if `cost` is admitted at `now`, else the wait.
    ///
    /// Written so that nothing can overflow: `used` and `cost·T` are both at most `burst`
    /// (the caller checks `cost <= capacity`), so the comparison and the wait are exact even
    /// at the end of the `u64` time range.
    #[inline]
    fn next(self, tat: u64, now: u64, cost: u32) -> Result<u64, u64> {
        // A TAT beyond now + burst can only come from a clock that went backwards; clamping it
        // to "empty at now" is conservative and keeps waits bounded by one full refill.
        let tat = tat.clamp(now, now.saturating_add(self.burst));
        let used = tat - now;
        let cost = u64::from(cost).saturating_mul(self.interval);
        let free = self.burst - used;
        if cost <= free {
            Ok(tat.saturating_add(cost))
        } else {
            Err(cost - free)
        }
    }

    fn quota(self, tat: u64, now: u64) -> (u32, u64) {
        let used = tat.clamp(now, now.saturating_add(self.burst)) - now;
        let remaining = (self.burst - used) / self.interval;
        (u32::try_from(remaining).unwrap_or(u32::MAX), used)
    }
}

/// Implements the sealed face of a GCRA-backed algorithm.
macro_rules! gcra_algorithm {
    ($ty:ty) => {
        impl Sealed for $ty {
            type Plain = u64;
            type Cell = AtomicU64;

            #[inline]
            fn capacity(&self) -> u32 {
                self.gcra.capacity
            }

            fn window(&self) -> u64 {
                self.gcra.burst
            }

            fn new_plain(&self) -> u64 {
                0
            }

            #[inline]
            fn peek(&self, s: &u64, now: u64, cost: u32) -> Result<(), u64> {
                self.gcra.next(*s, now, cost).map(drop)
            }

            #[inline]
            fn apply(&self, s: &mut u64, now: u64, cost: u32) -> Result<(), u64> {
                *s = self.gcra.next(*s, now, cost)?;
                Ok(())
            }

            #[inline]
            fn plain_idle(&self, s: &u64, now: u64, idle: u64) -> bool {
                // tat <= now is a full bucket: the same state as a key never seen.
                s.saturating_add(idle) <= now
            }

            #[inline]
            fn plain_recency(&self, s: &u64) -> u64 {
                *s
            }

            fn plain_quota(&self, s: &u64, now: u64) -> (u32, u64) {
                self.gcra.quota(*s, now)
            }

            fn new_cell(&self) -> AtomicU64 {
                AtomicU64::new(0)
            }

            #[inline]
            fn check_cell(&self, c: &AtomicU64, now: u64, cost: u32) -> Result<(), u64> {
                // Relaxed is enough: the TAT is the only datum, and it guards no other memory.
                let mut tat = c.load(Ordering::Relaxed);
                loop {
                    let next = self.gcra.next(tat, now, cost)?;
                    match c.compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed) {
                        Ok(_) => return Ok(()),
                        Err(actual) => tat = actual,
                    }
                }
            }

            #[inline]
            fn cell_idle(&self, c: &AtomicU64, now: u64, idle: u64) -> bool {
                self.plain_idle(&c.load(Ordering::Relaxed), now, idle)
            }

            #[inline]
            fn cell_recency(&self, c: &AtomicU64) -> u64 {
                c.load(Ordering::Relaxed)
            }

            fn cell_quota(&self, c: &AtomicU64, now: u64) -> (u32, u64) {
                self.gcra.quota(c.load(Ordering::Relaxed), now)
            }
        }

        impl super::Algorithm for $ty {}
    };
}

/// A token bucket: holds up to `capacity` tokens, starts full, refills continuously at
/// `refill_per_sec`; each request takes one token (or `n` with `check_n`).
///
/// Implemented as GCRA: one `u64` per key, lock-free. The per-token interval is
/// `1e9 / refill_per_sec` nanoseconds, rounded down.
///
/// ```
/// use limitpal_core::{ManualClock, RateLimiter, TokenBucket};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let limiter = RateLimiter::builder(TokenBucket::new(1, 2.0)?).clock(clock.clone()).build()?;
/// assert!(limiter.check(&7_u64).is_ok());
/// let denied = limiter.check(&7_u64).unwrap_err();
/// assert_eq!(denied.retry_after, Duration::from_millis(500));
/// clock.advance(denied.retry_after);
/// assert!(limiter.check(&7_u64).is_ok());
/// # Ok::<(), limitpal_core::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    gcra: Gcra,
}

impl TokenBucket {
    /// A bucket of `capacity` tokens refilled at `refill_per_sec` tokens per second.
    ///
    /// # Errors
    /// [`ConfigError`] when `capacity` is zero, or `refill_per_sec` is not a finite positive
    /// number between one token per 584 years and 1e9 per second.
    pub fn new(capacity: u32, refill_per_sec: f64) -> Result<Self, ConfigError> {
        Gcra::new(capacity, "capacity", refill_per_sec, "refill_per_sec").map(|gcra| Self { gcra })
    }
}

/// A leaky bucket (as a meter): a level of at most `capacity` that drains at `leak_per_sec`;
/// a request adds one to the level and is denied when it would overflow.
///
/// This is the same meter as [`TokenBucket`] (both are GCRA, one `u64` per key): the level is
/// the tokens missing from the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeakyBucket {
    gcra: Gcra,
}

impl LeakyBucket {
    /// A bucket holding at most `capacity`, leaking `leak_per_sec` per second.
    ///
    /// # Errors
    /// [`ConfigError`] as for [`TokenBucket::new`], naming `capacity` or `leak_per_sec`.
    pub fn new(capacity: u32, leak_per_sec: f64) -> Result<Self, ConfigError> {
        Gcra::new(capacity, "capacity", leak_per_sec, "leak_per_sec").map(|gcra| Self { gcra })
    }
}

gcra_algorithm!(TokenBucket);
gcra_algorithm!(LeakyBucket);

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn transition_matches_the_bucket() {
        let g = Gcra::new(1, "c", 2.0, "r").expect("valid");
        let tat = g.next(0, 0, 1).expect("full bucket admits");
        assert_eq!(g.next(tat, 0, 1), Err(S / 2));
        assert!(g.next(tat, S / 2, 1).is_ok());
    }

    #[test]
    fn backwards_time_waits_at_most_one_refill() {
        let g = Gcra::new(2, "c", 1.0, "r").expect("valid");
        let tat = g.next(0, 100 * S, 2).expect("admits");
        // the clock jumps back 50 s: still denied, but never for more than a full refill
        let wait = g.next(tat, 50 * S, 1).unwrap_err();
        assert!(wait <= 2 * S, "{wait}");
    }

    #[test]
    fn quota_counts_remaining_tokens() {
        let g = Gcra::new(5, "c", 1.0, "r").expect("valid");
        let tat = g.next(0, 10 * S, 2).expect("admits");
        assert_eq!(g.quota(tat, 10 * S), (3, 2 * S));
        assert_eq!(g.quota(tat, 20 * S), (5, 0));
    }
}
