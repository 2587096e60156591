//! Limiters built the same way for us and for governor.

use std::num::NonZeroU32;

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};
use limitpal::{RateLimiter, TokenBucket};

/// A burst no benchmark exhausts, refilled once per second: every check is admitted, and
/// a checked key stays live (not idle) for as long as the benchmark runs.
pub const BURST: u32 = 1_000_000_000;

/// Our keyed limiter with the shared quota.
#[must_use]
pub fn ours_keyed() -> RateLimiter<u64> {
    RateLimiter::builder(TokenBucket::new(BURST, 1.0).expect("valid quota"))
        .build()
        .expect("valid limiter")
}

/// A keyed limiter over many live keys: a burst no benchmark exhausts, with every check
/// keeping its key live (not idle) for 1000 s, so idle eviction never runs mid-benchmark,
/// every lookup finds its key, and memory figures count every key inserted, however slow
/// the run.
#[must_use]
pub fn ours_keyed_live() -> RateLimiter<u64> {
    RateLimiter::builder(TokenBucket::new(LIVE_BURST, 0.001).expect("valid quota"))
        .build()
        .expect("valid limiter")
}

/// governor's keyed limiter with the quota of [`ours_keyed_live`].
#[must_use]
pub fn governor_keyed_live() -> DefaultKeyedRateLimiter<u64> {
    governor::RateLimiter::keyed(
        Quota::with_period(std::time::Duration::from_secs(1000))
            .expect("non-zero period")
            .allow_burst(NonZeroU32::new(LIVE_BURST).expect("non-zero")),
    )
}

/// The burst of [`ours_keyed_live`]: far more than the checks any one key gets, small enough
/// that a full refill (burst x 1000 s) fits in our 584-year time range.
const LIVE_BURST: u32 = 1_000_000;

/// Our unkeyed limiter with the shared quota.
#[must_use]
pub fn ours_direct() -> RateLimiter<()> {
    RateLimiter::builder(TokenBucket::new(BURST, 1.0).expect("valid quota"))
        .build()
        .expect("valid limiter")
}

/// Our unkeyed limiter that denies every check after the first.
#[must_use]
pub fn ours_denying() -> RateLimiter<()> {
    let limiter = RateLimiter::builder(TokenBucket::new(1, 1e-6).expect("valid quota"))
        .build()
        .expect("valid limiter");
    let _ = limiter.check(&());
    limiter
}

fn quota() -> Quota {
    Quota::per_second(NonZeroU32::MIN).allow_burst(NonZeroU32::new(BURST).expect("non-zero"))
}

/// governor's keyed limiter with the shared quota (its defaults: `DashMap`, the quanta clock).
#[must_use]
pub fn governor_keyed() -> DefaultKeyedRateLimiter<u64> {
    governor::RateLimiter::keyed(quota())
}

/// governor's direct limiter with the shared quota.
#[must_use]
pub fn governor_direct() -> DefaultDirectRateLimiter {
    governor::RateLimiter::direct(quota())
}

/// governor's direct limiter that denies every check after the first.
#[must_use]
pub fn governor_denying() -> DefaultDirectRateLimiter {
    let limiter = governor::RateLimiter::direct(
        Quota::with_period(std::time::Duration::from_secs(1_000_000)).expect("non-zero period"),
    );
    let _ = limiter.check();
    limiter
}

/// A spread of `n` keys: key `i` of a benchmark is `spread(i) % n`.
#[must_use]
pub fn spread(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11
}
