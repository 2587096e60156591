//! The runtime-free core of [limitpal](https://docs.rs/limitpal): clocks, rate-limit
//! algorithms and the keyed limiter.
//!
//! Every rule here is a pure transition on a tiny state that takes `now` as an argument, so
//! it is lock-free where it can be, and deterministic under [`ManualClock`]. Nothing here
//! depends on an async runtime; the tower layers in `limitpal-tower` only adapt these types.
//!
//! ```
//! use limitpal_core::{ManualClock, RateLimiter, TokenBucket};
//! use std::time::Duration;
//!
//! let clock = ManualClock::new();
//! let limiter = RateLimiter::builder(TokenBucket::new(3, 1.0)?).clock(clock.clone()).build()?;
//! for _ in 0..3 {
//!     limiter.check(&42_u64)?;
//! }
//! let denied = limiter.check(&42_u64).unwrap_err();
//! assert_eq!(denied.retry_after, Duration::from_secs(1));
//! clock.advance(denied.retry_after);
//! limiter.check(&42_u64)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// Every arithmetic on time, counts and durations saturates or is checked: a line that
// provably cannot overflow allows the lint and says why. Tests are exempt.
#![warn(clippy::arithmetic_side_effects)]
#![cfg_attr(test, allow(clippy::arithmetic_side_effects))]

mod blocking;
pub mod breaker;
mod classify;
pub mod clock;
pub mod concurrency;
#[cfg(feature = "serde")]
pub mod config;
mod error;
mod executor;
pub mod fault;
pub mod hedge;
mod keyed;
mod limiter_async;
pub mod metrics;
pub mod pipeline;
pub mod rate;
pub mod retry;
mod sync;

pub use breaker::{
    CallPermit, CircuitBreaker, CircuitBreakerBuilder, CircuitState, KeyedCircuitBreaker,
};
pub use classify::{Classify, DefaultClassifier, Outcome, OwnRejection, Verdict};
pub use clock::{Clock, ManualClock, MonotonicClock};
pub use concurrency::{AdaptiveLimit, Bulkhead, BulkheadPermit, KeyedAdaptiveLimit, KeyedBulkhead};
pub use error::{BulkheadFull, CheckNError, CircuitOpen, ConfigError, Error, RateLimited};
pub use executor::{
    BuildTarget, CheckFn, ExecutorParts, LimitCheck, ResilientExecutor, ResilientExecutorBuilder,
    RetryIf, SyncTarget, check_fn,
};
pub use hedge::Hedge;
pub use limiter_async::{AsyncLimiter, Reserve, ReserveFuture};
pub use rate::{
    Algorithm, All, DefaultHashBuilder, LeakyBucket, Quota, RateLimiter, RateLimiterBuilder,
    Reservation, SlidingWindow, TokenBucket,
};
pub use retry::{
    Backoff, Jitter, RetryBudget, RetryPolicy, RetryPolicyBuilder, RetryRng, RetrySchedule,
    RetryState, RetryStep,
};

/// The `rand` crate this crate's [`RetryPolicy::delay`] takes RNGs from.
pub use rand;
