//! The same trivial service behind each library's middleware.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::time::Duration;

use limitpal::concurrency::{AdaptiveLimit, Gradient2};
use limitpal::tower::{
    AdaptiveLimitLayer, BulkheadLayer, CircuitBreakerLayer, RateLimitLayer, ResilienceLayer,
    RetryLayer,
};
use limitpal::{Bulkhead, CircuitBreaker, RateLimiter, RetryPolicy, TokenBucket};
use tower::util::BoxCloneService;
use tower::{BoxError, Layer, Service, ServiceBuilder, ServiceExt};

use crate::limiters::BURST;

/// The service every stack wraps: answers its `u64` request at once.
#[derive(Debug, Clone, Copy)]
pub struct Echo;

impl Service<u64> for Echo {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u64) -> Self::Future {
        ready(Ok(req))
    }
}

/// A stack under test, type-erased only for listing; benches use the concrete builders.
pub type Stack = BoxCloneService<u64, u64, BoxError>;

fn limiter() -> RateLimiter<u64> {
    RateLimiter::builder(TokenBucket::new(BURST, 1.0).expect("valid quota"))
        .build()
        .expect("valid limiter")
}

fn breaker() -> CircuitBreaker {
    CircuitBreaker::builder().build().expect("valid breaker")
}

fn policy() -> RetryPolicy {
    RetryPolicy::builder()
        .max_attempts(3)
        .build()
        .expect("valid policy")
}

/// limitpal's `RateLimitLayer`, one key.
pub fn ours_rate_limit() -> impl Service<u64, Response = u64, Error = BoxError> + Clone {
    RateLimitLayer::new(limiter(), |_: &u64| 0_u64).layer(Echo)
}

/// limitpal's `CircuitBreakerLayer`.
pub fn ours_breaker() -> impl Service<u64, Response = u64, Error = BoxError> + Clone {
    CircuitBreakerLayer::new(breaker()).layer(Echo)
}

/// limitpal's `RetryLayer`.
pub fn ours_retry() -> impl Service<u64, Response = u64, Error = BoxError> + Clone {
    RetryLayer::new(policy()).layer(Echo)
}

/// limitpal's `BulkheadLayer`, 1000 slots.
pub fn ours_bulkhead() -> impl Service<u64, Response = u64, Error = BoxError> + Clone {
    BulkheadLayer::new(Bulkhead::new(1000).expect("valid bulkhead")).layer(Echo)
}

/// limitpal's `AdaptiveLimitLayer` with `Gradient2`.
pub fn ours_adaptive() -> impl Service<u64, Response = u64, Error = BoxError> + Clone {
    let limit = AdaptiveLimit::builder(Gradient2::new())
        .initial_limit(1000)
        .min_limit(1000)
        .max_limit(1000)
        .build()
        .expect("valid limit");
    AdaptiveLimitLayer::new(limit).layer(Echo)
}

/// tower's `ConcurrencyLimit`, 1000 slots (the permit is taken in `poll_ready`).
pub fn tower_concurrency_limit() -> impl Service<u64, Response = u64> {
    ServiceBuilder::new().concurrency_limit(1000).service(Echo)
}

/// limitpal's `ResilienceLayer`: rate limit (one key) + breaker + retry, one service.
pub fn ours_resilience() -> impl Service<u64, Response = u64, Error = BoxError> + Clone {
    ResilienceLayer::builder()
        .rate_limit(limiter(), |_: &u64| 0_u64)
        .circuit_breaker(breaker())
        .retry(policy())
        .build()
        .expect("valid layer")
        .layer(Echo)
}

/// `ResilienceLayer` with every part named, so each records metrics (install a recorder
/// first).
pub fn ours_resilience_named() -> impl Service<u64, Response = u64, Error = BoxError> + Clone {
    let limiter = RateLimiter::builder(TokenBucket::new(BURST, 1.0).expect("valid quota"))
        .name("bench")
        .build()
        .expect("valid limiter");
    let breaker = CircuitBreaker::builder()
        .name("bench")
        .build()
        .expect("valid breaker");
    ResilienceLayer::builder()
        .name("bench")
        .rate_limit(limiter, |_: &u64| 0_u64)
        .circuit_breaker(breaker)
        .retry(policy())
        .build()
        .expect("valid layer")
        .layer(Echo)
}

/// tower-resilience's circuit breaker → rate limiter → retry, as its docs compose them.
pub fn tower_resilience_stack() -> impl Service<u64, Response = u64> + Clone {
    use tower_resilience::circuitbreaker::CircuitBreakerLayer as Breaker;
    use tower_resilience::ratelimiter::RateLimiterLayer as Limiter;
    use tower_resilience::retry::RetryLayer as Retry;
    let retry = Retry::<u64, u64, Infallible>::builder()
        .max_attempts(3)
        .build()
        .layer(Echo);
    let limited = Limiter::builder()
        .limit_for_period(usize::try_from(BURST).unwrap_or(usize::MAX))
        .refresh_period(Duration::from_secs(1))
        .build()
        .expect("valid tower-resilience rate limiter")
        .layer(retry);
    Breaker::builder()
        .build()
        .expect("valid tower-resilience breaker")
        .layer(limited)
}

/// A tower `retry::Policy` that retries errors up to twice, as tower users hand-write.
#[derive(Debug, Clone, Copy)]
pub struct RetryTwice(u8);

impl<E> tower::retry::Policy<u64, u64, E> for RetryTwice {
    type Future = Ready<()>;

    fn retry(&mut self, _: &mut u64, result: &mut Result<u64, E>) -> Option<Self::Future> {
        match result {
            Err(_) if self.0 < 2 => {
                self.0 += 1;
                Some(ready(()))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, req: &u64) -> Option<u64> {
        Some(*req)
    }
}

/// tower's own `RateLimit` (unkeyed) → `Retry`.
pub fn tower_builtin_stack() -> impl Service<u64, Response = u64> {
    ServiceBuilder::new()
        .rate_limit(u64::from(BURST), Duration::from_secs(1))
        .retry(RetryTwice(0))
        .service(Echo)
}

/// Boxes any stack with a boxed error (for listing in one table).
pub fn boxed<S>(svc: S) -> Stack
where
    S: Service<u64, Response = u64> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    BoxCloneService::new(svc.map_err(Into::into))
}
