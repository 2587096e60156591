//! [`ResilienceLayer`]: rate limit, circuit breaker and retries as one service and one
//! future, in the fixed order of the pipeline — whatever the order of the builder calls.
//!
//! Per attempt: deadline → breaker admission → rate limiter (or, with
//! [`limiter_wait`](ResilienceLayerBuilder::limiter_wait), a wait for its slot holding no
//! probe and no slot, then admission again) → the call (bounded by the attempt timeout) →
//! classify and record, holding the key when the answer carries a `retry_after` → retry or
//! stop; see
//! [`limitpal_core::pipeline`] for the exact rules, shared with the executors. `poll_ready`
//! forwards once to the inner service; the first attempt is admitted inside `call`, so a
//! rejected request never reaches the inner service and never holds a slot in `Buffer` or
//! `Balance`. Without retries the inner service is not even cloned. Errors are `BoxError`:
//! [`RateLimited`](limitpal_core::RateLimited), [`CircuitOpen`](limitpal_core::CircuitOpen),
//! [`RetryExhausted`](crate::RetryExhausted), [`TimedOut`](crate::TimedOut), [`KeyMissing`](crate::KeyMissing),
//! or the inner service's own error.
//!
//! ```
//! use limitpal_core::{CircuitBreaker, Jitter, RateLimiter, RetryPolicy, TokenBucket};
//! use limitpal_tower::{ResilienceLayer, TokioClock};
//! use std::time::Duration;
//! use tower::{BoxError, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), BoxError> {
//! let clock = TokioClock::new();
//! let layer = ResilienceLayer::builder()
//!     .retry(RetryPolicy::builder().max_attempts(3).jitter(Jitter::None).build()?)
//!     .circuit_breaker(CircuitBreaker::builder().clock(clock).build()?)
//!     .rate_limit(
//!         RateLimiter::builder(TokenBucket::new(100, 10.0)?).clock(clock).build()?,
//!         |req: &(&'static str, u32)| req.0, // key: the tenant
//!     )
//!     .attempt_timeout(Duration::from_secs(2))
//!     .build()?;
//! let svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|req: (&'static str, u32)| async move { Ok::<_, BoxError>(req.1 * 2) }));
//! assert_eq!(svc.oneshot(("tenant-a", 21)).await?, 42);
//! # Ok(()) }
//! ```

mod admission;
mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::{
    BreakerPer, BuiltLayer, BulkheadPer, HedgeIf, NoKey, NoStages, PerRequest, ResilienceLayer,
    ResilienceLayerBuilder,
};
pub use service::ResilienceService;
