//! Rate-limit algorithms and the keyed [`RateLimiter`].
//!
//! Each algorithm is a pure transition `(state, now, cost) -> state'` on a tiny per-key state:
//!
//! | algorithm | per-key state | concurrency |
//! |---|---|---|
//! | [`TokenBucket`], [`LeakyBucket`] | one `u64` (GCRA theoretical arrival time) | lock-free CAS |
//! | [`SlidingWindow`] | the admissions in the window by instant, at most `limit` entries | per-key lock |
//! | [`All`] (`a.and(b)`) | both parts' states | per-key lock |
//!
//! Time is integer nanoseconds since the clock's origin; nothing here reads a clock.

mod all;
mod gcra;
mod limiter;
mod reservation;
mod sliding;

pub use crate::keyed::DefaultHashBuilder;
pub use all::All;
pub(crate) use gcra::Gcra;
pub use gcra::{LeakyBucket, TokenBucket};
pub use limiter::{Quota, RateLimiter, RateLimiterBuilder};
pub use reservation::Reservation;
pub use sliding::SlidingWindow;

use std::fmt::Debug;

/// A rate-limit algorithm: [`TokenBucket`], [`LeakyBucket`], [`SlidingWindow`], or a
/// composite of them built with [`and`](Algorithm::and).
///
/// The trait is sealed: the algorithms' state transitions are internal so that they can stay
/// lock-free and allocation-free.
pub trait Algorithm: sealed::Sealed + Debug + Clone + Send + Sync + 'static {
    /// Combines two algorithms into one that admits a request only when both do. A request
    /// denied by either part consumes from neither, also under contention.
    ///
    /// ```
    /// use limitpal_core::{Algorithm, ManualClock, RateLimiter, SlidingWindow, TokenBucket};
    /// use std::time::Duration;
    ///
    /// // a burst of 10, but at most 3 per second over any sliding second
    /// let both = TokenBucket::new(10, 10.0)?.and(SlidingWindow::new(3, Duration::from_secs(1))?);
    /// let limiter = RateLimiter::builder(both).clock(ManualClock::new()).build()?;
    /// for _ in 0..3 {
    ///     assert!(limiter.check("k").is_ok());
    /// }
    /// assert!(limiter.check("k").is_err());
    /// # Ok::<(), limitpal_core::ConfigError>(())
    /// ```
    fn and<B: Algorithm>(self, other: B) -> All<Self, B>
    where
        Self: Sized,
    {
        All::new(self, other)
    }

    /// The largest cost that can ever be admitted at once.
    fn max_batch(&self) -> u32 {
        sealed::Sealed::capacity(self)
    }

    /// The policy as (limit, window): at most `limit` at once, fully replenished within
    /// `window`. What HTTP's `RateLimit-Policy` field advertises. For a composite: the
    /// smaller limit and the longer window.
    fn policy(&self) -> (u32, std::time::Duration) {
        (
            sealed::Sealed::capacity(self),
            std::time::Duration::from_nanos(sealed::Sealed::window(self)),
        )
    }
}

pub(crate) mod sealed {
    use std::fmt::Debug;

    /// The internal face of an algorithm: a pure transition on a plain state, and the shared
    /// (concurrent) cell that holds that state in the keyed store.
    ///
    /// All times are nanoseconds; a `Err(wait)` is the exact time until the cost would pass.
    #[allow(unreachable_pub)] // sealed: public in a private module
    pub trait Sealed {
        /// The state as a plain value, used under a lock (composites, sliding window).
        type Plain: Send + Debug;
        /// The concurrent container held per key.
        type Cell: Send + Sync + Debug;

        /// The largest cost admissible at once.
        fn capacity(&self) -> u32;
        /// Nanoseconds for an emptied quota to be whole again (the policy's window).
        fn window(&self) -> u64;

        /// A fresh key's state.
        fn new_plain(&self) -> Self::Plain;
        /// Would `cost` pass at `now`? Never mutates.
        fn peek(&self, s: &Self::Plain, now: u64, cost: u32) -> Result<(), u64>;
        /// Admit `cost` at `now`, mutating only when admitted.
        fn apply(&self, s: &mut Self::Plain, now: u64, cost: u32) -> Result<(), u64>;
        /// Has the state been indistinguishable from a fresh key's for at least `idle`?
        fn plain_idle(&self, s: &Self::Plain, now: u64, idle: u64) -> bool;
        /// A recency mark: larger means used more recently (for approximate LRU eviction).
        fn plain_recency(&self, s: &Self::Plain) -> u64;
        /// What the key has left at `now`: (remaining cost, nanoseconds until fully replenished).
        fn plain_quota(&self, s: &Self::Plain, now: u64) -> (u32, u64);

        /// What a reservation needs to give its slot back.
        type Undo: Send + Sync + Debug + 'static;
        /// The earliest instant at or after `now` at which `cost` passes, queued behind every
        /// admission and reservation already recorded (arrival order).
        fn slot(&self, s: &Self::Plain, now: u64, cost: u32) -> u64;
        /// Records `cost` as admitted at `at`, an instant at or after [`slot`](Self::slot).
        fn take(&self, s: &mut Self::Plain, at: u64, cost: u32) -> Self::Undo;
        /// Gives a [`take`](Self::take) back when nothing admitted since depends on it; else
        /// leaves the state as it is (the slot stays used: never over-admission).
        fn untake(&self, s: &mut Self::Plain, undo: &Self::Undo, cost: u32);
        /// Admits nothing before `until` (pushback from upstream).
        fn hold(&self, s: &mut Self::Plain, until: u64);

        /// A fresh key's cell.
        fn new_cell(&self) -> Self::Cell;
        /// Admit `cost` at `now` atomically.
        fn check_cell(&self, c: &Self::Cell, now: u64, cost: u32) -> Result<(), u64>;
        /// [`plain_idle`](Self::plain_idle) on a cell.
        fn cell_idle(&self, c: &Self::Cell, now: u64, idle: u64) -> bool;
        /// [`plain_recency`](Self::plain_recency) on a cell.
        fn cell_recency(&self, c: &Self::Cell) -> u64;
        /// [`plain_quota`](Self::plain_quota) on a cell.
        fn cell_quota(&self, c: &Self::Cell, now: u64) -> (u32, u64);
        /// Reserves `cost` at the next slot if it is at most `max_wait` after `now`: the slot's
        /// instant and its undo, else the wait until the slot.
        fn reserve_cell(
            &self,
            c: &Self::Cell,
            now: u64,
            cost: u32,
            max_wait: u64,
        ) -> Result<(u64, Self::Undo), u64>;
        /// [`untake`](Self::untake) on a cell.
        fn untake_cell(&self, c: &Self::Cell, undo: &Self::Undo, cost: u32);
        /// [`hold`](Self::hold) on a cell.
        fn hold_cell(&self, c: &Self::Cell, until: u64);
    }
}

/// Implements the cell half of [`sealed::Sealed`] for algorithms whose cell is a
/// `Mutex<Plain>`, by delegating to the plain transitions under the lock.
macro_rules! locked_cell {
    () => {
        type Cell = crate::sync::Mutex<Self::Plain>;

        fn new_cell(&self) -> Self::Cell {
            crate::sync::Mutex::new(self.new_plain())
        }

        fn check_cell(&self, c: &Self::Cell, now: u64, cost: u32) -> Result<(), u64> {
            self.apply(&mut crate::sync::lock(c), now, cost)
        }

        fn cell_idle(&self, c: &Self::Cell, now: u64, idle: u64) -> bool {
            self.plain_idle(&crate::sync::lock(c), now, idle)
        }

        fn cell_recency(&self, c: &Self::Cell) -> u64 {
            self.plain_recency(&crate::sync::lock(c))
        }

        fn cell_quota(&self, c: &Self::Cell, now: u64) -> (u32, u64) {
            self.plain_quota(&crate::sync::lock(c), now)
        }

        fn reserve_cell(
            &self,
            c: &Self::Cell,
            now: u64,
            cost: u32,
            max_wait: u64,
        ) -> Result<(u64, Self::Undo), u64> {
            let mut s = crate::sync::lock(c);
            let at = self.slot(&s, now, cost);
            let wait = at.saturating_sub(now);
            if wait > max_wait {
                return Err(wait);
            }
            Ok((at, self.take(&mut s, at, cost)))
        }

        fn untake_cell(&self, c: &Self::Cell, undo: &Self::Undo, cost: u32) {
            self.untake(&mut crate::sync::lock(c), undo, cost);
        }

        fn hold_cell(&self, c: &Self::Cell, until: u64) {
            self.hold(&mut crate::sync::lock(c), until);
        }
    };
}
pub(crate) use locked_cell;
