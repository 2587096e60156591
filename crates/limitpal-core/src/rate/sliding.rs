//! An exact sliding window: at most `limit` admissions in any interval `[t, t + window)`.
//!
//! The state keeps the admissions still in the window, grouped by instant (`O(limit)` memory
//! per key at most, grown on demand; a cost of `n` at one instant is one entry, not `n`). A
//! cost `n` passes at `now` when, after it, no interval of length `window` ending at `now`
//! would hold more than `limit` admissions.

use std::collections::VecDeque;
use std::time::Duration;

use super::sealed::Sealed;
use crate::ConfigError;
use crate::clock::nanos;

/// At most `limit` admissions in any interval of length `window` — not only in aligned
/// windows, so there is no double burst at a window boundary.
///
/// Per-key state holds the instants with admissions in the window: 8 bytes each (16 more for
/// an instant with several, such as a `check_n`, whatever its cost), so at most `limit`
/// instants; it is kept under a per-key lock. Prefer [`TokenBucket`](crate::TokenBucket) for
/// large limits.
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

/// Admissions by instant, oldest first (reserved ones may lie in the future), the latest
/// `now` seen so that time going backwards counts as "no time passed", and the end of a hold.
///
/// An instant with one admission is one `u64`; an instant with more (a `check_n`, or checks
/// that read one clock value) also has its count in `counts`, so memory is 8 bytes per
/// instant unless costs are batched, and never grows with a cost's size.
///
/// At most `limit` admissions lie in any window; reservations waiting for their slot add
/// theirs beyond it, so a key with waiters holds up to `limit` plus their count.
#[derive(Debug, Default)]
pub struct Admissions {
    /// The instants with admissions, strictly increasing.
    times: VecDeque<u64>,
    /// `(time, count)` for the instants of `times` with more than one admission, in order.
    counts: VecDeque<(u64, u64)>,
    /// Admissions in all: the sum of every instant's count.
    total: u64,
    latest: u64,
    held: u64,
}

impl Admissions {
    /// Records `cost` admissions at `at` (no earlier than any recorded).
    fn push(&mut self, at: u64, cost: u32) {
        if cost == 0 {
            return;
        }
        let cost = u64::from(cost);
        match self.times.back() {
            Some(&last) if last >= at => {
                // the latest instant again (never an earlier one: see the callers)
                match self.counts.back_mut() {
                    Some((time, count)) if *time == last => *count = count.saturating_add(cost),
                    _ => self.counts.push_back((last, cost.saturating_add(1))),
                }
            }
            _ => {
                self.times.push_back(at);
                if cost > 1 {
                    self.counts.push_back((at, cost));
                }
            }
        }
        self.total = self.total.saturating_add(cost);
    }

    /// The instants and their counts, oldest first.
    fn runs(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        with_counts(self.times.iter(), self.counts.iter())
    }

    /// The instants and their counts, newest first.
    fn runs_rev(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        with_counts(self.times.iter().rev(), self.counts.iter().rev())
    }

    /// The time of the `nth` oldest admission (`1 ..= total`), walking from the nearer end.
    fn nth_oldest(&self, nth: u64) -> u64 {
        let mut seen = 0_u64;
        if nth <= self.total / 2 {
            for (time, count) in self.runs() {
                seen = seen.saturating_add(count);
                if seen >= nth {
                    return time;
                }
            }
        } else {
            // the same admission, counted from the newest: total - nth + 1 >= 1
            let from_back = self.total.saturating_sub(nth).saturating_add(1);
            for (time, count) in self.runs_rev() {
                seen = seen.saturating_add(count);
                if seen >= from_back {
                    return time;
                }
            }
        }
        self.last().unwrap_or(0)
    }

    /// The time of the newest admission.
    fn last(&self) -> Option<u64> {
        self.times.back().copied()
    }

    /// Forgets the instants for which `gone` holds, oldest first, until one does not.
    fn forget_while(&mut self, gone: impl Fn(u64) -> bool) {
        while let Some(&time) = self.times.front()
            && gone(time)
        {
            self.times.pop_front();
            let count = match self.counts.front() {
                Some(&(t, count)) if t == time => {
                    self.counts.pop_front();
                    count
                }
                _ => 1,
            };
            self.total = self.total.saturating_sub(count);
        }
    }

    /// Admissions at times for which `inside` holds, newest first, until one does not.
    fn count_back_while(&self, inside: impl Fn(u64) -> bool) -> u64 {
        self.runs_rev()
            .take_while(|&(time, _)| inside(time))
            .map(|(_, count)| count)
            .sum()
    }

    /// Removes up to `cost` admissions at `at` (none if nothing was admitted then).
    fn remove(&mut self, at: u64, cost: u32) {
        let Ok(i) = self.times.binary_search(&at) else {
            return;
        };
        let counted = self
            .counts
            .binary_search_by_key(&at, |&(time, _)| time)
            .ok();
        let count = counted.map_or(1, |j| self.counts[j].1);
        let taken = count.min(u64::from(cost));
        let left = count.saturating_sub(taken);
        self.total = self.total.saturating_sub(taken);
        match (left, counted) {
            (0, _) => {
                self.times.remove(i);
                if let Some(j) = counted {
                    self.counts.remove(j);
                }
            }
            (1, Some(j)) => {
                self.counts.remove(j);
            }
            (_, Some(j)) => self.counts[j].1 = left,
            (_, None) => {} // a single admission, none taken (cost 0)
        }
    }
}

/// Each of `times` with its count: the matching entry of `counts` (both in the same order),
/// else one.
fn with_counts<'a>(
    times: impl Iterator<Item = &'a u64>,
    counts: impl Iterator<Item = &'a (u64, u64)>,
) -> impl Iterator<Item = (u64, u64)> {
    let mut counts = counts.peekable();
    times.map(move |&time| {
        let count = counts
            .next_if(|&&(t, _)| t == time)
            .map_or(1, |&(_, count)| count);
        (time, count)
    })
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
        if let Some(last) = s.last() {
            at = at.max(last);
        }
        // admissions that may stay in the window (the caller checks cost <= limit)
        let keep = u64::from(self.limit.saturating_sub(cost));
        if s.total > keep {
            // The (total - keep)-th oldest admission must have left the window.
            let leaving = s.nth_oldest(s.total.saturating_sub(keep));
            at = at.max(leaving.saturating_add(self.window));
        }
        at
    }

    /// Forgets admissions that no later admission can share a window with.
    fn prune(&self, s: &mut Admissions) {
        let (window, latest) = (self.window, s.latest);
        s.forget_while(|time| time.saturating_add(window) <= latest);
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
        s.push(s.latest, cost);
        Ok(())
    }

    fn plain_idle(&self, s: &Admissions, now: u64, idle: u64) -> bool {
        s.last()
            .is_none_or(|last| last.saturating_add(self.window).saturating_add(idle) <= now)
            && s.latest <= now
            && s.held.saturating_add(idle) <= now
    }

    fn plain_recency(&self, s: &Admissions) -> u64 {
        s.latest.max(s.last().unwrap_or(0))
    }

    fn plain_quota(&self, s: &Admissions, now: u64) -> (u32, u64) {
        let now = now.max(s.latest);
        let inside = s.count_back_while(|time| time.saturating_add(self.window) > now);
        let remaining = if s.held > now {
            0
        } else {
            u64::from(self.limit).saturating_sub(inside)
        };
        let reset = s
            .last()
            .map_or(0, |t| t.saturating_add(self.window).saturating_sub(now))
            .max(s.held.saturating_sub(now));
        (u32::try_from(remaining).unwrap_or(u32::MAX), reset)
    }

    type Undo = u64;

    fn slot(&self, s: &Admissions, now: u64, cost: u32) -> u64 {
        self.next_slot(s, now, cost)
    }

    fn take(&self, s: &mut Admissions, at: u64, cost: u32) -> u64 {
        self.prune(s);
        s.push(at, cost);
        at
    }

    fn untake(&self, s: &mut Admissions, &at: &u64, cost: u32) {
        // Removing admissions never lets any window hold more than it did.
        s.remove(at, cost);
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

    #[test]
    fn a_large_cost_is_one_entry_and_leaves_the_window_as_a_whole() {
        let w = SlidingWindow::new(u32::MAX, Duration::from_nanos(10)).expect("valid");
        let mut s = w.new_plain();
        assert!(w.apply(&mut s, 0, u32::MAX - 1).is_ok());
        assert_eq!(
            (s.times.len(), s.counts.len()),
            (1, 1),
            "one instant, one entry"
        );
        assert!(w.apply(&mut s, 3, 1).is_ok(), "the last unit");
        assert_eq!(
            w.apply(&mut s, 4, 1),
            Err(6),
            "full until the big run leaves"
        );
        assert!(
            w.apply(&mut s, 10, u32::MAX - 1).is_ok(),
            "at 10 the big run has left: as large a cost fits again"
        );
        assert_eq!(w.apply(&mut s, 12, 1), Err(1), "the unit at 3 leaves at 13");
        assert!(w.apply(&mut s, 13, 1).is_ok());
    }

    #[test]
    fn single_admissions_take_one_word_each() {
        let w = SlidingWindow::new(100, Duration::from_nanos(1_000)).expect("valid");
        let mut s = w.new_plain();
        for t in 0..100 {
            assert!(w.apply(&mut s, t, 1).is_ok());
        }
        assert_eq!((s.times.len(), s.counts.len()), (100, 0));
        assert!(w.apply(&mut s, 100, 1).is_err());
        assert!(w.apply(&mut s, 1_000, 1).is_ok(), "the one at 0 has left");
        assert_eq!(
            w.apply(&mut s, 1_000, 1),
            Err(1),
            "the one at 1 leaves at 1 001"
        );
        assert!(w.apply(&mut s, 1_100, 1).is_ok());
        assert!(
            w.apply(&mut s, 1_100, 1).is_ok(),
            "two at one instant: one time, one count"
        );
        assert_eq!(
            (s.times.len(), s.total),
            (2, 3),
            "the ones at 1 000 and 1 100"
        );
        assert_eq!(s.counts.iter().copied().collect::<Vec<_>>(), [(1_100, 2)]);
    }

    #[test]
    fn giving_back_part_of_a_run_keeps_the_rest() {
        let w = SlidingWindow::new(4, Duration::from_nanos(10)).expect("valid");
        let mut s = w.new_plain();
        assert!(w.apply(&mut s, 0, 3).is_ok());
        let at = w.take(&mut s, 0, 1);
        assert_eq!(w.slot(&s, 0, 1), 10, "full");
        w.untake(&mut s, &at, 1);
        assert_eq!(w.slot(&s, 0, 1), 0, "one unit free again");
        w.untake(&mut s, &at, 2);
        assert_eq!(w.slot(&s, 0, 3), 0, "two more given back from the run at 0");
        assert_eq!(w.slot(&s, 0, 4), 10, "but not the third, still taken");
    }

    /// The window as it was first written: one time per unit admitted.
    #[derive(Default)]
    struct Units {
        times: Vec<u64>,
        latest: u64,
        held: u64,
    }

    impl Units {
        fn slot(&self, limit: u32, window: u64, now: u64, cost: u32) -> u64 {
            let mut at = now.max(self.latest).max(self.held);
            if let Some(&last) = self.times.last() {
                at = at.max(last);
            }
            let keep = (limit - cost) as usize;
            if self.times.len() > keep {
                at = at.max(self.times[self.times.len() - keep - 1] + window);
            }
            at
        }

        fn prune(&mut self, window: u64) {
            let latest = self.latest;
            self.times.retain(|&t| t + window > latest);
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Apply { advance: u64, cost: u32 },
        Take { advance: u64, cost: u32 },
        Untake(usize),
        Hold(u64),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            6 => (0_u64..8, 1_u32..5).prop_map(|(advance, cost)| Op::Apply { advance, cost }),
            2 => (0_u64..8, 1_u32..5).prop_map(|(advance, cost)| Op::Take { advance, cost }),
            1 => any::<usize>().prop_map(Op::Untake),
            1 => (0_u64..20).prop_map(Op::Hold),
        ]
    }

    proptest::proptest! {
        /// Grouping admissions by instant changes no answer: the same checks, reservations,
        /// give-backs and holds get the same answers as one time per unit.
        #[test]
        fn grouped_by_instant_answers_as_one_time_per_unit(
            limit in 1_u32..6,
            window in 1_u64..12,
            ops in proptest::collection::vec(op(), 0..200),
        ) {
            let w = SlidingWindow::new(limit, Duration::from_nanos(window)).expect("valid");
            let mut s = w.new_plain();
            let mut model = Units::default();
            let mut taken: Vec<(u64, u32)> = Vec::new();
            let mut now = 0_u64;
            for op in ops {
                match op {
                    Op::Apply { advance, cost } => {
                        now += advance;
                        let cost = cost.min(limit);
                        let expected = match model.slot(limit, window, now, cost) - now.max(model.latest) {
                            0 => {
                                model.latest = now.max(model.latest);
                                model.prune(window);
                                model.times.extend(std::iter::repeat_n(model.latest, cost as usize));
                                Ok(())
                            }
                            wait => Err(wait),
                        };
                        proptest::prop_assert_eq!(w.apply(&mut s, now, cost), expected);
                    }
                    Op::Take { advance, cost } => {
                        now += advance;
                        let cost = cost.min(limit);
                        let at = model.slot(limit, window, now, cost);
                        proptest::prop_assert_eq!(w.slot(&s, now, cost), at);
                        model.prune(window);
                        model.times.extend(std::iter::repeat_n(at, cost as usize));
                        taken.push((w.take(&mut s, at, cost), cost));
                    }
                    Op::Untake(i) if !taken.is_empty() => {
                        let (at, cost) = taken.swap_remove(i % taken.len());
                        for _ in 0..cost {
                            if let Some(i) = model.times.iter().rposition(|&t| t == at) {
                                model.times.remove(i);
                            }
                        }
                        w.untake(&mut s, &at, cost);
                    }
                    Op::Untake(_) => {}
                    Op::Hold(d) => {
                        model.held = model.held.max(now + d);
                        w.hold(&mut s, now + d);
                    }
                }
                for cost in 1..=limit {
                    proptest::prop_assert_eq!(
                        w.slot(&s, now, cost),
                        model.slot(limit, window, now, cost)
                    );
                }
                proptest::prop_assert_eq!(s.total, model.times.len() as u64);
            }
        }
    }
}
