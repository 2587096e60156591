//! The tokio and tower face of [limitpal](https://docs.rs/limitpal).
//!
//! This crate adapts the rules of `limitpal-core` to tower services; it holds no rule of its
//! own. Every middleware follows tower's layout (`layer.rs`, `service.rs`, `future.rs`):
//! `poll_ready` only forwards, admission happens in `call`, errors are [`tower::BoxError`]
//! downcastable to limitpal's error structs.
//!
//! - [`RateLimitLayer`]: a keyed rate limit, shared by every clone; [`KeyExtractor`].
//! - [`CircuitBreakerLayer`]: a shared circuit breaker around a service.
//! - [`RetryLayer`]: retries with backoff, jitter and a budget; [`RetryExhausted`].
//! - [`BulkheadLayer`], [`AdaptiveLimitLayer`]: at most N calls in flight, N fixed or
//!   following the callee's latency and errors.
//! - `http` (feature `http`): HTTP key extractors and `HttpRateLimitLayer` (429 responses).
//! - [`ResilienceLayer`]: breaker, limiter, bulkhead and retries as one service and one future.
//! - [`AsyncResilientExecutor`]: the pipeline for async closures.
//! - [`TokioClock`]: the clock to use under `#[tokio::test(start_paused = true)]`.

pub mod breaker;
pub mod bulkhead;
mod clock;
mod error;
mod executor;
pub mod fault;
pub mod hedge;
#[cfg(feature = "http")]
pub mod http;
mod key;
pub mod limit;
pub mod resilience;
pub mod retry;

pub use breaker::CircuitBreakerLayer;
pub use bulkhead::{AdaptiveLimitLayer, BulkheadLayer};
pub use clock::TokioClock;
pub use error::{RetryExhausted, TimedOut};
pub use executor::{AsyncResilientExecutor, AsyncTarget};
pub use fault::FaultLayer;
pub use hedge::HedgeLayer;
pub use key::{KeyExtractor, KeyMissing, MissingKey};
pub use limit::{RateLimitLayer, UntilReady, UntilReadyFuture};
pub use resilience::ResilienceLayer;
pub use retry::RetryLayer;
