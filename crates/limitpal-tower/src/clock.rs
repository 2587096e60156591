//! A clock over tokio's time, which tests can pause and advance.

use std::time::Duration;

use limitpal_core::Clock;
use tokio::time::Instant;

/// A [`Clock`] that reads `tokio::time::Instant`, measured from the moment it was created
/// (clones share that origin).
///
/// Under `#[tokio::test(start_paused = true)]`, `tokio::time::advance` moves it, so limiters
/// and breakers built with `.clock(TokioClock::new())` follow the test's virtual time. Build
/// it inside the runtime whose time it should follow. `sleep` blocks the thread (sync callers
/// cannot await tokio's timer); async components sleep with `tokio::time::sleep` instead.
///
/// ```
/// use limitpal_core::{Clock, RateLimiter, TokenBucket};
/// use limitpal_tower::TokioClock;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let limiter = RateLimiter::builder(TokenBucket::new(1, 1.0).unwrap())
///     .clock(TokioClock::new())
///     .build()
///     .unwrap();
/// assert!(limiter.check(&()).is_ok());
/// assert!(limiter.check(&()).is_err());
/// tokio::time::advance(Duration::from_secs(1)).await;
/// assert!(limiter.check(&()).is_ok());
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: Instant,
}

impl TokioClock {
    /// A clock over tokio's (pausable) time, starting at zero now.
    #[must_use]
    pub fn new() -> Self {
        #[allow(clippy::disallowed_methods)] // the clock module is where time is read
        let origin = Instant::now();
        Self { origin }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Duration {
        #[allow(clippy::disallowed_methods)] // the clock module is where time is read
        Instant::now().saturating_duration_since(self.origin)
    }
}

/// The instant `delay` from now on tokio's clock, as `tokio::time::sleep(delay)` sets its
/// timer (a delay past the clock's range: about 30 years, as tokio's), for a timer reset to
/// another deadline.
pub(crate) fn deadline_in(delay: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 60 * 60);
    #[allow(clippy::disallowed_methods)] // the clock module is where time is read
    let now = Instant::now();
    now.checked_add(delay)
        .or_else(|| now.checked_add(FAR))
        .unwrap_or(now)
}
