//! A slot taken ahead of time: what [`RateLimiter::reserve`](super::RateLimiter::reserve)
//! returns.

use std::fmt;
use std::time::Duration;

/// Gives a reservation's slot back, if the algorithm still can; `true`: even when its time
/// has come (an explicit [`Reservation::cancel`]).
pub(crate) type GiveBack = Box<dyn FnOnce(bool) + Send + Sync>;

/// A rate-limit slot held for one request, at once or at a known instant ahead.
///
/// Wait [`delay`](Self::delay), then go ahead and call [`commit`](Self::commit) (or simply
/// drop the reservation once its time has come). [`cancel`](Self::cancel)led, or dropped
/// *before* its time, the reservation
/// gives its slot back where the algorithm can:
///
/// - [`TokenBucket`](crate::TokenBucket) / [`LeakyBucket`](crate::LeakyBucket): when no later
///   request has been admitted or reserved behind it. A later one was promised a slot that
///   counts this one's; handing it out again would over-admit, so the slot stays used.
/// - [`SlidingWindow`](crate::SlidingWindow): always (removing an admission never makes any
///   window hold more).
/// - [`All`](crate::All): each part as above.
///
/// A reservation that admits at once ([`delay`](Self::delay) is zero) holds no handle and
/// costs nothing to drop.
///
/// ```
/// use limitpal_core::{Clock, ManualClock, RateLimiter, TokenBucket};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let limiter = RateLimiter::builder(TokenBucket::new(1, 10.0)?).clock(clock.clone()).build()?;
/// assert_eq!(limiter.reserve(&1_u64, Duration::ZERO)?.delay(), Duration::ZERO);
/// let next = limiter.reserve(&1_u64, Duration::from_secs(1))?;
/// assert_eq!(next.delay(), Duration::from_millis(100));
/// // beyond max_wait: refused at once, with the exact wait
/// let refused = limiter.reserve(&1_u64, Duration::from_millis(150)).unwrap_err();
/// assert_eq!(refused.retry_after, Duration::from_millis(200));
/// clock.advance(next.delay());
/// next.commit();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "a reservation dropped at once gives its slot back: wait its delay(), then commit()"]
pub struct Reservation {
    delay: Duration,
    give_back: Option<GiveBack>,
}

impl Reservation {
    /// A reservation admitted now.
    pub(crate) fn now() -> Self {
        Self {
            delay: Duration::ZERO,
            give_back: None,
        }
    }

    /// A slot `delay` ahead that cannot be given back, as a remote limiter (Redis) answers:
    /// dropped early, the slot stays used (never over-admission).
    pub fn unreturnable(delay: Duration) -> Self {
        Self {
            delay,
            give_back: None,
        }
    }

    /// A reservation `delay` ahead that `give_back` can return.
    pub(crate) fn ahead(delay: Duration, give_back: GiveBack) -> Self {
        Self {
            delay,
            give_back: Some(give_back),
        }
    }

    /// How long to wait, from the moment of reserving, before the request may go
    /// (`Duration::ZERO`: admitted now).
    #[must_use]
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// Keeps the slot: the request went ahead.
    pub fn commit(mut self) {
        self.give_back = None;
    }

    /// Gives the slot back, where the algorithm can (see the type's documentation), even
    /// once its time has come: the request did not go.
    pub fn cancel(mut self) {
        if let Some(give_back) = self.give_back.take() {
            give_back(true);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(give_back) = self.give_back.take() {
            give_back(false);
        }
    }
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("delay", &self.delay)
            .field("pending", &self.give_back.is_some())
            .finish()
    }
}
