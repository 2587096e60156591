//! # limitpal
//!
//! Resilience for Rust services and clients: keyed rate limiting, circuit breaking and
//! retries, each usable alone and composed in one fixed pipeline around any tower `Service`,
//! with one deterministic clock for tests.
//!
//! ```
//! use limitpal::{ManualClock, RateLimiter, TokenBucket};
//! use std::time::Duration;
//!
//! let clock = ManualClock::new();
//! let per_user = RateLimiter::builder(TokenBucket::new(2, 1.0)?) // burst 2, then 1/s
//!     .clock(clock.clone())
//!     .build()?;
//! assert!(per_user.check("alice").is_ok());
//! assert!(per_user.check("alice").is_ok());
//! let denied = per_user.check("alice").unwrap_err();
//! assert_eq!(denied.retry_after, Duration::from_secs(1));
//! assert!(per_user.check("bob").is_ok()); // every key has its own quota
//! # Ok::<(), limitpal::ConfigError>(())
//! ```
//!
//! ## Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `tower` | yes | module [`tower`]: layers, [`TokioClock`](crate::tower::TokioClock) |
//! | `http` | no | `tower::http`: HTTP key extractors, 429 responses with `Retry-After` and `RateLimit` fields |
//! | `metrics` | no | counters, gauges and histograms through the `metrics` facade for components given a `.name(..)` (see [`metrics`]) |
//! | `serde` | no | `config`: configuration structs that deserialize (humantime durations) and build, errors naming the field path |
//! | `redis` | no | `redis`: a limiter shared through Redis, with failure policies |
//! | `tracing` | yes | events for denials and transitions through `tracing` |
//!
//! ## Map
//!
//! - Time: [`Clock`], [`MonotonicClock`], [`ManualClock`].
//! - Rate limiting: [`TokenBucket`], [`LeakyBucket`], [`SlidingWindow`], composites with
//!   [`Algorithm::and`], the keyed [`RateLimiter`], [`AsyncLimiter`].
//! - Circuit breaking: [`CircuitBreaker`], [`CallPermit`], [`CircuitState`]; one per key
//!   (a host) with [`KeyedCircuitBreaker`].
//! - Retries: [`RetryPolicy`] ([`Backoff`], [`Jitter`]), [`RetryBudget`], [`RetryState`].
//! - Concurrency: [`Bulkhead`] (at most N at once, optional wait queue), [`AdaptiveLimit`]
//!   (N follows the callee: [`concurrency::Aimd`], [`concurrency::Gradient2`]), [`BulkheadFull`];
//!   per key (a tenant, a host) with [`KeyedBulkhead`] and [`KeyedAdaptiveLimit`], in the
//!   rate limiter's bounded keyed store.
//! - The pipeline: [`ResilientExecutor`] (sync), [`Error`]; with `tower`:
//!   `tower::ResilienceLayer` and `tower::AsyncResilientExecutor`; the step machine they
//!   all drive, [`pipeline`].
//! - Hedging and fallback: [`Hedge`] (`.hedge(..)` on every pipeline builder, `tower::HedgeLayer`
//!   alone), `.fallback(..)` on every pipeline builder.
//! - Classification: [`Outcome`], [`Verdict`], [`Classify`], [`DefaultClassifier`].
//! - Errors: [`ConfigError`], [`RateLimited`], [`CheckNError`], [`CircuitOpen`], [`BulkheadFull`].

pub use limitpal_core::{
    AdaptiveLimit, Algorithm, All, AsyncLimiter, Backoff, Bulkhead, BulkheadFull, BulkheadPermit,
    CallPermit, CheckNError, CircuitBreaker, CircuitBreakerBuilder, CircuitOpen, CircuitState,
    Classify, Clock, ConfigError, DefaultClassifier, DefaultHashBuilder, Error, Hedge, Jitter,
    KeyedAdaptiveLimit, KeyedBulkhead, KeyedCircuitBreaker, LeakyBucket, ManualClock,
    MonotonicClock, Outcome, OwnRejection, Quota, RateLimited, RateLimiter, RateLimiterBuilder,
    Reservation, Reserve, ReserveFuture, ResilientExecutor, ResilientExecutorBuilder, RetryBudget,
    RetryIf, RetryPolicy, RetryPolicyBuilder, RetryRng, RetrySchedule, RetryState, RetryStep,
    SlidingWindow, TokenBucket, Verdict,
};

/// Concurrency limits: [`Bulkhead`], [`AdaptiveLimit`] and its algorithms.
pub use limitpal_core::concurrency;
pub use limitpal_core::concurrency::{Aimd, Gradient2};

/// The `rand` version whose RNGs [`RetryPolicy::delay`] takes.
pub use limitpal_core::rand;

/// tower middleware and tokio integration (feature `tower`).
#[cfg(feature = "tower")]
pub mod tower {
    #[cfg(feature = "http")]
    pub use limitpal_tower::http;
    pub use limitpal_tower::{
        AdaptiveLimitLayer, AsyncResilientExecutor, BulkheadLayer, CircuitBreakerLayer, FaultLayer,
        HedgeLayer, KeyExtractor, KeyMissing, MissingKey, RateLimitLayer, ResilienceLayer,
        RetryExhausted, RetryLayer, TimedOut, TokioClock, UntilReady, UntilReadyFuture,
    };
    pub use limitpal_tower::{breaker, bulkhead, fault, hedge, limit, resilience, retry};
}

pub use limitpal_core::metrics;

/// The pipeline as a sans-IO step machine ([`pipeline::Pipeline::step`]) and the builder
/// every pipeline builder wraps ([`pipeline::PipelineBuilder`]): for writing a driver of
/// your own.
pub use limitpal_core::pipeline;

/// Faults on purpose: seeded plans of latency, errors, hangs and lost answers
/// ([`tower::FaultLayer`] for services, [`fault::FaultInjector`] for sync calls).
pub use limitpal_core::fault;

/// Configuration that deserializes and builds (feature `serde`).
#[cfg(feature = "serde")]
pub use limitpal_core::config;

/// Distributed rate limiting on Redis (feature `redis`).
#[cfg(feature = "redis")]
pub mod redis {
    pub use limitpal_redis::*;
}

/// reqwest middleware running the pipeline (feature `reqwest`).
#[cfg(feature = "reqwest")]
pub mod reqwest {
    pub use limitpal_reqwest::*;
}

/// The README's examples, compiled and run by `cargo test --doc`.
#[cfg(all(doctest, feature = "http", feature = "reqwest"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
