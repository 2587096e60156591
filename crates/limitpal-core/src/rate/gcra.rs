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

    /// A meter of `capacity` events per `window`: `capacity` at once, then one more every
    /// `window / capacity` (a breaker's error budget counts failures with it).
    pub(crate) fn per_window(
        capacity: u32,
        capacity_field: &'static str,
        window: std::time::Duration,
        window_field: &'static str,
    ) -> Result<Self, ConfigError> {
        if capacity == 0 {
            return Err(ConfigError::Zero {
                field: capacity_field,
            });
        }
        let interval = crate::clock::nanos(window)
            .checked_div(u64::from(capacity))
            .unwrap_or(0); // capacity > 0 here
        if interval == 0 {
            return Err(ConfigError::out_of_range(
                window_field,
                format!("{window:?}"),
                "at least one nanosecond per event of the budget",
            ));
        }
        Ok(Self {
            interval,
            burst: interval.saturating_mul(u64::from(capacity)), // <= window
            capacity,
        })
    }

    /// Admits `cost` at `now` on the shared cell `c` (lock-free), or says how long until it
    /// would be admitted.
    #[inline]
    pub(crate) fn check_cell(self, c: &AtomicU64, now: u64, cost: u32) -> Result<(), u64> {
        // Relaxed is enough: the TAT is the only datum, and it guards no other memory.
        let mut tat = c.load(Ordering::Relaxed);
        loop {
            let next = self.next(tat, now, cost)?;
            match c.compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(()),
                Err(actual) => tat = actual,
            }
        }
    }

    /// How long a spent meter takes to be full again (nanoseconds).
    pub(crate) fn window_nanos(self) -> u64 {
        self.burst
    }

    /// Whether the cell `c` is full at `now`: the same state as a fresh cell.
    pub(crate) fn cell_full(self, c: &AtomicU64, now: u64) -> bool {
        c.load(Ordering::Relaxed) <= now
    }

    /// How long from `now` until the cell `c` admits `cost` (zero: it would now).
    pub(crate) fn wait_cell(self, c: &AtomicU64, now: u64, cost: u32) -> u64 {
        self.next(c.load(Ordering::Relaxed), now, cost)
            .err()
            .unwrap_or(0)
    }

    /// The pure transition: the new TAT if `cost` is admitted at `now`, else the wait.
    ///
    /// Written so that nothing can overflow: `used` and `cost·T` are both at most `burst`
    /// when admitted (the caller checks `cost <= capacity`), so the comparison and the wait
    /// are exact even at the end of the `u64` time range. A TAT more than `burst` ahead of
    /// `now` is legitimate (a reservation or a hold put it there): the wait then includes the
    /// part beyond the burst, so the retry-after stays exact.
    #[inline]
    fn next(self, tat: u64, now: u64, cost: u32) -> Result<u64, u64> {
        let used = tat.saturating_sub(now);
        let cost = u64::from(cost).saturating_mul(self.interval);
        match self.burst.checked_sub(used) {
            Some(free) if cost <= free => Ok(tat.max(now).saturating_add(cost)),
            // both arms as the guards say: cost > free, used > burst (saturating all the same)
            Some(free) => Err(cost.saturating_sub(free)),
            None => Err(used.saturating_sub(self.burst).saturating_add(cost)),
        }
    }

    /// The earliest instant at or after `now` at which `cost` is admitted, queued behind
    /// every admission and reservation already in `tat`.
    ///
    /// `tat + cost·T − burst`, computed as `tat − (burst − cost·T)` so that it cannot
    /// overflow (the caller checks `cost <= capacity`, so `cost·T <= burst`).
    #[inline]
    fn slot(self, tat: u64, now: u64, cost: u32) -> u64 {
        let cost = u64::from(cost).saturating_mul(self.interval);
        tat.saturating_sub(self.burst.saturating_sub(cost)).max(now)
    }

    /// The TAT after admitting `cost` at `at` (an instant at or after [`slot`](Self::slot)).
    #[inline]
    fn take_at(self, tat: u64, at: u64, cost: u32) -> u64 {
        let cost = u64::from(cost).saturating_mul(self.interval);
        tat.max(at).saturating_add(cost)
    }

    /// The TAT that admits nothing before `until` (then one request per interval).
    fn held(self, until: u64) -> u64 {
        until
            .saturating_add(self.burst)
            .saturating_sub(self.interval)
    }

    fn quota(self, tat: u64, now: u64) -> (u32, u64) {
        let used = tat.saturating_sub(now);
        let remaining = self
            .burst
            .saturating_sub(used)
            .checked_div(self.interval)
            .unwrap_or(0); // interval >= 1 by construction
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

            type Undo = (u64, u64);

            #[inline]
            fn slot(&self, s: &u64, now: u64, cost: u32) -> u64 {
                self.gcra.slot(*s, now, cost)
            }

            #[inline]
            fn take(&self, s: &mut u64, at: u64, cost: u32) -> (u64, u64) {
                let prev = *s;
                *s = self.gcra.take_at(prev, at, cost);
                (prev, *s)
            }

            fn untake(&self, s: &mut u64, &(prev, taken): &(u64, u64), _cost: u32) {
                // Only the latest reservation can be returned: lowering the TAT under a
                // later one would hand its slot out twice.
                if *s == taken {
                    *s = prev;
                }
            }

            fn hold(&self, s: &mut u64, until: u64) {
                *s = (*s).max(self.gcra.held(until));
            }

            fn new_cell(&self) -> AtomicU64 {
                AtomicU64::new(0)
            }

            #[inline]
            fn check_cell(&self, c: &AtomicU64, now: u64, cost: u32) -> Result<(), u64> {
                self.gcra.check_cell(c, now, cost)
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

            #[inline]
            fn reserve_cell(
                &self,
                c: &AtomicU64,
                now: u64,
                cost: u32,
                max_wait: u64,
            ) -> Result<(u64, (u64, u64)), u64> {
                let mut tat = c.load(Ordering::Relaxed);
                loop {
                    let at = self.gcra.slot(tat, now, cost);
                    let wait = at.saturating_sub(now); // slot() is at or after now
                    if wait > max_wait {
                        return Err(wait);
                    }
                    let next = self.gcra.take_at(tat, at, cost);
                    match c.compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed) {
                        Ok(_) => return Ok((at, (tat, next))),
                        Err(actual) => tat = actual,
                    }
                }
            }

            fn untake_cell(&self, c: &AtomicU64, &(prev, taken): &(u64, u64), _cost: u32) {
                // One attempt: if anything moved the TAT since, a later admission stands on
                // this slot and it stays taken (never over-admission).
                let _ = c.compare_exchange(taken, prev, Ordering::Relaxed, Ordering::Relaxed);
            }

            fn hold_cell(&self, c: &AtomicU64, until: u64) {
                c.fetch_max(self.gcra.held(until), Ordering::Relaxed);
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
    fn backwards_time_never_admits_more() {
        let g = Gcra::new(2, "c", 1.0, "r").expect("valid");
        let tat = g.next(0, 100 * S, 2).expect("admits");
        // the clock jumps back 50 s: still denied until the TAT's instant comes round again
        assert_eq!(g.next(tat, 50 * S, 1), Err(51 * S));
    }

    #[test]
    fn a_reserved_slot_queues_later_requests_and_the_wait_stays_exact() {
        let g = Gcra::new(2, "c", 1.0, "r").expect("valid");
        let tat = g.next(0, 0, 2).expect("full bucket admits a burst of 2");
        assert_eq!(g.slot(tat, 0, 1), S);
        let tat = g.take_at(tat, S, 1); // reserved at 1 s
        assert_eq!(g.slot(tat, 0, 1), 2 * S);
        assert_eq!(
            g.next(tat, 0, 1),
            Err(2 * S),
            "a check waits behind the reservation"
        );
        assert_eq!(g.next(tat, S, 1), Err(S));
    }

    #[test]
    fn a_hold_admits_nothing_before_its_end_then_one_per_interval() {
        let g = Gcra::new(5, "c", 1.0, "r").expect("valid");
        let tat = g.held(10 * S);
        assert_eq!(g.next(tat, 9 * S, 1), Err(S));
        let tat = g.next(tat, 10 * S, 1).expect("admitted when the hold ends");
        assert_eq!(g.next(tat, 10 * S, 1), Err(S));
    }

    #[test]
    fn quota_counts_remaining_tokens() {
        let g = Gcra::new(5, "c", 1.0, "r").expect("valid");
        let tat = g.next(0, 10 * S, 2).expect("admits");
        assert_eq!(g.quota(tat, 10 * S), (3, 2 * S));
        assert_eq!(g.quota(tat, 20 * S), (5, 0));
    }
}
