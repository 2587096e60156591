//! An exact sliding window: at most `limit` admissions in any interval `[t, t + window)`.
//!
//! The state keeps the times of the last `limit` admissions (`O(limit)` memory per key, grown
//! on demand). A cost `n` passes at `now` when, after it, no interval of length `window` ending
//! at `now` would hold more than `limit` admissions.

use std::collections::VecDeque;
use std::time::Duration;

use super::sealed::Sealed;
use crate::ConfigError;
use crate::clock::nanos;

/// At most `limit` admissions in any interval of length `window` — not only in aligned
/// windows, so there is no double burst at a window boundary.
///
/// Per-key state grows to `limit` timestamps (8 bytes each) and is kept under a per-key lock;
/// prefer [`TokenBucket`](crate::TokenBucket) for large limits.
///
/// ```
/// use limitpal_core::{ManualClock, RateLimiter, SlidingWindow};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let limiter = RateLimiter::builder(SlidingWindow::new(2, Duration::from_secs(10))?)
///     .clock(clock.clone())
///     .build()?;
/// assert!(limiter.check("k").is_ok()); // t = 0
/// clock.advance(Duration::from_secs(6));
/// assert!(limiter.check("k").is_ok()); // t = 6
/// // the admission at t = 0 leaves the window at t = 10
/// assert_eq!(limiter.check("k").unwrap_err().retry_after, Duration::from_secs(4));
/// # Ok::<(), limitpal_core::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlidingWindow {
    limit: u32,
    window: u64,
}

impl SlidingWindow {
    /// At most `limit` admissions in any `window`.
    ///
    /// # Errors
    /// [`ConfigError`] when `limit` is zero or `window` is shorter than a nanosecond.
    pub fn new(limit: u32, window: Duration) -> Result<Self, ConfigError> {
        if limit == 0 {
            return Err(ConfigError::Zero { field: "limit" });
        }
        let window = nanos(window);
        if window == 0 {
            return Err(ConfigError::Zero { field: "window" });
        }
        Ok(Self { limit, window })
    }
}

/// Admission times, oldest first, at most `limit` of them, plus the latest `now` seen so that
/// time going backwards counts as "no time passed".
#[derive(Debug, Default)]
pub struct Admissions {
    times: VecDeque<u64>,
    latest: u64,
}

impl SlidingWindow {
    /// Nanoseconds until `cost` more admissions fit, or 0 when they fit now.
    fn wait(&self, s: &Admissions, now: u64, cost: u32) -> u64 {
        let now = now.max(s.latest);
        let limit = self.limit as usize;
        let keep = limit - cost as usize; // admissions that may stay in the window
        let len = s.times.len();
        if len <= keep {
            return 0;
        }
        // The (len - keep)-th oldest admission must have left the window.
        let leaving = s.times[len - keep - 1];
        leaving.saturating_add(self.window).saturating_sub(now)
    }
}

impl Sealed for SlidingWindow {
    type Plain = Admissions;
    super::locked_cell!();

    fn capacity(&self) -> u32 {
        self.limit
    }

    fn window(&self) -> u64 {
        self.window
    }

    fn new_plain(&self) -> Admissions {
        Admissions::default()
    }

    fn peek(&self, s: &Admissions, now: u64, cost: u32) -> Result<(), u64> {
        match self.wait(s, now, cost) {
            0 => Ok(()),
            wait => Err(wait),
        }
    }

    fn apply(&self, s: &mut Admissions, now: u64, cost: u32) -> Result<(), u64> {
        self.peek(s, now, cost)?;
        let now = now.max(s.latest);
        s.latest = now;
        while s
            .times
            .front()
            .is_some_and(|&t| t.saturating_add(self.window) <= now)
        {
            s.times.pop_front();
        }
        for _ in 0..cost {
            if s.times.len() == self.limit as usize {
                s.times.pop_front();
            }
            s.times.push_back(now);
        }
        Ok(())
    }

    fn plain_idle(&self, s: &Admissions, now: u64, idle: u64) -> bool {
        s.times
            .back()
            .is_none_or(|&last| last.saturating_add(self.window).saturating_add(idle) <= now)
            && s.latest <= now
    }

    fn plain_recency(&self, s: &Admissions) -> u64 {
        s.latest
    }

    fn plain_quota(&self, s: &Admissions, now: u64) -> (u32, u64) {
        let now = now.max(s.latest);
        let inside = s
            .times
            .iter()
            .filter(|&&t| t.saturating_add(self.window) > now)
            .count();
        let remaining = (self.limit as usize).saturating_sub(inside);
        let reset = s
            .times
            .back()
            .map_or(0, |&t| t.saturating_add(self.window).saturating_sub(now));
        (u32::try_from(remaining).unwrap_or(u32::MAX), reset)
    }
}

impl super::Algorithm for SlidingWindow {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_interval_holds_at_most_limit() {
        let w = SlidingWindow::new(2, Duration::from_nanos(10)).expect("valid");
        let mut s = w.new_plain();
        assert!(w.apply(&mut s, 0, 1).is_ok());
        assert!(w.apply(&mut s, 9, 1).is_ok());
        assert_eq!(w.apply(&mut s, 9, 1), Err(1));
        assert!(w.apply(&mut s, 10, 1).is_ok());
        assert_eq!(w.apply(&mut s, 18, 1), Err(1));
        assert!(w.apply(&mut s, 19, 1).is_ok());
    }

    #[test]
    fn backwards_time_is_no_time_passed() {
        let w = SlidingWindow::new(1, Duration::from_nanos(10)).expect("valid");
        let mut s = w.new_plain();
        assert!(w.apply(&mut s, 100, 1).is_ok());
        assert_eq!(w.apply(&mut s, 50, 1), Err(10));
        assert!(w.apply(&mut s, 110, 1).is_ok());
    }
}
