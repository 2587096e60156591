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

/// Admission times, oldest first (reserved ones may lie in the future), the latest `now` seen
/// so that time going backwards counts as "no time passed", and the end of a hold.
///
/// At most `limit` times lie in any window; reservations waiting for their slot add theirs
/// beyond it, so a key with waiters holds up to `limit` plus their count.
#[derive(Debug, Default)]
pub struct Admissions {
    times: VecDeque<u64>,
    latest: u64,
    held: u64,
}

impl SlidingWindow {
    /// The earliest instant, at or after `now` (and every time seen), at which `cost` more
    /// admissions fit: after every recorded admission (arrival order), after a hold, and
    /// once enough of the recorded ones have left the window.
    ///
    /// Exact because every recorded time is at most the result and every later admission is
    /// at least it: the only window that matters is the one ending at the result.
    fn next_slot(&self, s: &Admissions, now: u64, cost: u32) -> u64 {
        let base = now.max(s.latest);
        let mut at = base.max(s.held);
        let len = s.times.len();
        if let Some(&last) = s.times.back() {
            at = at.max(last);
        }
        // admissions that may stay in the window (the caller checks cost <= limit)
        let keep = self.limit.saturating_sub(cost) as usize;
        if len > keep {
            // The (len - keep)-th oldest admission must have left the window.
            let leaving = s.times[len.saturating_sub(keep).saturating_sub(1)]; // len > keep
            at = at.max(leaving.saturating_add(self.window));
        }
        at
    }

    /// Forgets admissions that no later admission can share a window with.
    fn prune(&self, s: &mut Admissions) {
        while s
            .times
            .front()
            .is_some_and(|&t| t.saturating_add(self.window) <= s.latest)
        {
            s.times.pop_front();
        }
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
        let base = now.max(s.latest);
        match self.next_slot(s, now, cost).saturating_sub(base) {
            // next_slot() >= base
            0 => Ok(()),
            wait => Err(wait),
        }
    }

    fn apply(&self, s: &mut Admissions, now: u64, cost: u32) -> Result<(), u64> {
        self.peek(s, now, cost)?;
        s.latest = now.max(s.latest);
        self.prune(s);
        let at = s.latest;
        s.times.extend(std::iter::repeat_n(at, cost as usize));
        Ok(())
    }

    fn plain_idle(&self, s: &Admissions, now: u64, idle: u64) -> bool {
        s.times
            .back()
            .is_none_or(|&last| last.saturating_add(self.window).saturating_add(idle) <= now)
            && s.latest <= now
            && s.held.saturating_add(idle) <= now
    }

    fn plain_recency(&self, s: &Admissions) -> u64 {
        s.latest.max(s.times.back().copied().unwrap_or(0))
    }

    fn plain_quota(&self, s: &Admissions, now: u64) -> (u32, u64) {
        let now = now.max(s.latest);
        let inside = s
            .times
            .iter()
            .filter(|&&t| t.saturating_add(self.window) > now)
            .count();
        let remaining = if s.held > now {
            0
        } else {
            (self.limit as usize).saturating_sub(inside)
        };
        let reset = s
            .times
            .back()
            .map_or(0, |&t| t.saturating_add(self.window).saturating_sub(now))
            .max(s.held.saturating_sub(now));
        (u32::try_from(remaining).unwrap_or(u32::MAX), reset)
    }

    type Undo = u64;

    fn slot(&self, s: &Admissions, now: u64, cost: u32) -> u64 {
        self.next_slot(s, now, cost)
    }

    fn take(&self, s: &mut Admissions, at: u64, cost: u32) -> u64 {
        self.prune(s);
        s.times.extend(std::iter::repeat_n(at, cost as usize));
        at
    }

    fn untake(&self, s: &mut Admissions, &at: &u64, cost: u32) {
        // Removing admissions never lets any window hold more than it did.
        for _ in 0..cost {
            match s.times.iter().rposition(|&t| t == at) {
                Some(i) => drop(s.times.remove(i)),
                None => break,
            }
        }
    }

    fn hold(&self, s: &mut Admissions, until: u64) {
        s.held = s.held.max(until);
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

    #[test]
    fn a_reservation_queues_later_checks_and_gives_its_slot_back() {
        let w = SlidingWindow::new(2, Duration::from_nanos(10)).expect("valid");
        let mut s = w.new_plain();
        assert!(w.apply(&mut s, 0, 2).is_ok());
        assert_eq!(w.slot(&s, 3, 1), 10);
        let undo = w.take(&mut s, 10, 1);
        assert_eq!(w.slot(&s, 3, 1), 10, "the second slot at 10 is still free");
        assert_eq!(w.apply(&mut s, 3, 1), Err(7));
        let second = w.take(&mut s, 10, 1);
        assert_eq!(w.slot(&s, 3, 1), 20);
        w.untake(&mut s, &second, 1);
        w.untake(&mut s, &undo, 1);
        assert_eq!(w.slot(&s, 3, 2), 10);
    }

    #[test]
    fn a_hold_admits_nothing_before_its_end() {
        let w = SlidingWindow::new(5, Duration::from_nanos(10)).expect("valid");
        let mut s = w.new_plain();
        w.hold(&mut s, 50);
        assert_eq!(w.apply(&mut s, 20, 1), Err(30));
        assert!(w.apply(&mut s, 50, 5).is_ok());
    }
}
