//! Time sources.
//!
//! Every algorithm in this crate takes `now` as an argument; a [`Clock`] is the only thing that
//! reads time. This module is the only place allowed to call `Instant::now` (clippy's
//! `disallowed-methods` enforces that), so swapping [`MonotonicClock`] for [`ManualClock`] makes
//! any limiter, breaker or retry loop deterministic.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// A source of monotonic time, measured as a [`Duration`] since the clock's own origin.
///
/// `sleep` exists so that code which must wait (a blocking `acquire`, the sync retry loop) waits
/// through the same clock it reads: [`ManualClock::sleep`] advances the clock instead of
/// blocking, so minutes of backoff run in microseconds under test.
///
/// # At the extremes
///
/// Every component keeps time as `u64` nanoseconds and every operation on it saturates (the
/// core crate builds with `clippy::arithmetic_side_effects`; tests/properties drives every
/// component through clocks at 0, at `u64::MAX` and backwards):
///
/// - **Time that goes backwards is no time passed.** A limiter gives no quota back, a
///   breaker's open period is counted from the earlier reading (never longer than its
///   recovery timeout from then), a round trip measures zero, a retry budget's window does
///   not move. A GCRA key whose clock stepped back waits out the time the step hid rather
///   than admitting more.
/// - **Past about 584 years the clock saturates.** `u64::MAX` nanoseconds is the end of time:
///   readings beyond it (a `ManualClock` set to `Duration::MAX`) read as it, time stops there,
///   and a limiter then admits what its quota holds at that instant and nothing more.
///
/// ```
/// use limitpal_core::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// clock.sleep(Duration::from_secs(90));
/// assert_eq!(clock.now(), Duration::from_secs(90));
/// ```
pub trait Clock: Send + Sync + 'static {
    /// Time elapsed since this clock's origin.
    fn now(&self) -> Duration;

    /// [`now`](Self::now) in whole nanoseconds, saturating at `u64::MAX`. Algorithms keep
    /// integer nanoseconds; a clock that counts them natively overrides this to skip the
    /// `Duration` round trip.
    #[inline]
    fn now_nanos(&self) -> u64 {
        nanos(self.now())
    }

    /// Wait for `d` as measured by this clock. Real clocks block the thread.
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    #[inline]
    fn now(&self) -> Duration {
        (**self).now()
    }

    #[inline]
    fn now_nanos(&self) -> u64 {
        (**self).now_nanos()
    }

    #[inline]
    fn sleep(&self, d: Duration) {
        (**self).sleep(d);
    }
}

/// The system's monotonic clock, measured from a process-wide origin, read through the CPU's
/// time-stamp counter where it is reliable (the `quanta` crate, as governor does) and through
/// the OS monotonic clock otherwise.
///
/// Chosen by measurement: on the reference machine a read costs 12.6 ns against 36.5 ns for
/// `std::time::Instant::now` (BENCHMARKS.md), and a limiter check is mostly a clock read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MonotonicClock;

impl MonotonicClock {
    /// The process-wide monotonic clock.
    #[must_use]
    pub const fn new() -> Self {
        Self
    }
}

/// The process-wide TSC clock and its origin, calibrated once.
struct Tsc {
    clock: quanta::Clock,
    origin: u64,
}

fn tsc() -> &'static Tsc {
    static TSC: OnceLock<Tsc> = OnceLock::new();
    TSC.get_or_init(|| {
        let clock = quanta::Clock::new();
        #[allow(clippy::disallowed_methods)] // the clock module is where time is read
        let origin = clock.raw();
        Tsc { clock, origin }
    })
}

impl Clock for MonotonicClock {
    #[inline]
    fn now(&self) -> Duration {
        Duration::from_nanos(self.now_nanos())
    }

    #[inline]
    fn now_nanos(&self) -> u64 {
        let tsc = tsc();
        #[allow(clippy::disallowed_methods)] // the clock module is where time is read
        let raw = tsc.clock.raw();
        tsc.clock.delta_as_nanos(tsc.origin, raw)
    }
}

/// A clock that moves only when told to; clones share one time.
///
/// [`sleep`](Clock::sleep) advances it, so code that waits through its clock completes at once
/// with the clock showing exactly the time waited. Setting it to an earlier time is allowed:
/// the algorithms treat time that goes backwards as "no time passed".
///
/// ```
/// use limitpal_core::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let shared = clock.clone();
/// clock.advance(Duration::from_millis(1500));
/// assert_eq!(shared.now(), Duration::from_millis(1500));
/// shared.set(Duration::from_secs(1));
/// assert_eq!(clock.now(), Duration::from_secs(1));
/// ```
#[derive(Clone, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock at time zero.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `d` (saturating at about 584 years).
    pub fn advance(&self, d: Duration) {
        let d = nanos(d);
        // fetch_update with a closure that always returns Some cannot fail.
        let _ = self
            .nanos
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some(t.saturating_add(d))
            });
    }

    /// Sets the clock to `t` since its origin; earlier than now is allowed.
    pub fn set(&self, t: Duration) {
        self.nanos.store(nanos(t), Ordering::Release);
    }
}

impl Clock for ManualClock {
    #[inline]
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Acquire))
    }

    #[inline]
    fn now_nanos(&self) -> u64 {
        self.nanos.load(Ordering::Acquire)
    }

    fn sleep(&self, d: Duration) {
        self.advance(d);
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now", &self.now())
            .finish()
    }
}

/// Whole nanoseconds in `d`, saturating at `u64::MAX` (about 584 years).
#[inline]
#[must_use]
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// `clock.now()` in whole nanoseconds.
#[inline]
pub(crate) fn now_nanos<C: Clock + ?Sized>(clock: &C) -> u64 {
    clock.now_nanos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_saturates_and_goes_back() {
        let c = ManualClock::new();
        c.advance(Duration::MAX);
        c.advance(Duration::from_secs(1));
        assert_eq!(nanos(c.now()), u64::MAX);
        c.set(Duration::from_secs(3));
        assert_eq!(c.now(), Duration::from_secs(3));
    }

    #[test]
    fn arc_forwards_sleep() {
        let c = ManualClock::new();
        let dynamic: Arc<dyn Clock> = Arc::new(c.clone());
        dynamic.sleep(Duration::from_secs(2));
        assert_eq!(c.now(), Duration::from_secs(2));
    }

    #[test]
    fn monotonic_does_not_go_back() {
        let c = MonotonicClock;
        let a = c.now();
        let b = c.now();
        assert!(b >= a);
    }
}
