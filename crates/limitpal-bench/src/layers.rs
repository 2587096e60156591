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

/// `ResilienceLayer` as [`ours_resilience`], plus a hedge that never fires (the echo answers
/// at once, the delay is 1 s): what an idle hedge stage costs a request.
pub fn ours_resilience_hedged() -> impl Service<u64, Response = u64, Error = BoxError> + Clone {
    ResilienceLayer::builder()
        .rate_limit(limiter(), |_: &u64| 0_u64)
        .circuit_breaker(breaker())
        .retry(policy())
        .hedge(limitpal::Hedge::after(Duration::from_secs(1)))
        .build()
        .expect("valid layer")
        .layer(Echo)
}

/// limitpal's `HedgeLayer` alone, a fixed 1 s delay (idle: the echo answers at once).
pub fn ours_hedge() -> impl Service<u64, Response = u64, Error = BoxError> + Clone {
    limitpal::tower::HedgeLayer::new(limitpal::Hedge::after(Duration::from_secs(1)))
        .expect("valid hedge")
        .layer(Echo)
}

/// limitpal's `HedgeLayer` alone, hedging at the p95 of recent calls (records every call's
/// latency: one clock read and one histogram bucket).
pub fn ours_hedge_percentile() -> impl Service<u64, Response = u64, Error = BoxError> + Clone {
    limitpal::tower::HedgeLayer::new(limitpal::Hedge::percentile(0.95, 10))
        .expect("valid hedge")
        .layer(Echo)
}

/// tower's `Hedge` policy: every request may be hedged, cloned as is.
#[derive(Debug, Clone, Copy)]
pub struct HedgeAll;

impl tower::hedge::Policy<u64> for HedgeAll {
    fn clone_request(&self, req: &u64) -> Option<u64> {
        Some(*req)
    }

    fn can_retry(&self, _: &u64) -> bool {
        true
    }
}

/// tower's `Hedge`, the p95 of latencies over 1 s periods after 10 samples (its histogram
/// records every call; it needs a tokio runtime for its timers).
pub fn tower_hedge() -> impl Service<u64, Response = u64, Error = BoxError> {
    tower::hedge::Hedge::new::<u64>(Echo, HedgeAll, 10, 0.95, Duration::from_secs(1))
}

/// The echo, but its answer is pending once (a call in flight when first polled, as a real
/// upstream call is): a hedge stage arms its timer for it.
#[derive(Debug, Clone, Copy)]
pub struct EchoPendingOnce;

/// [`EchoPendingOnce`]'s future: `Pending` on its first poll (waking itself), then the answer.
#[derive(Debug)]
pub struct PendingOnce(u64, bool);

impl std::future::Future for PendingOnce {
    type Output = Result<u64, Infallible>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        if self.1 {
            return std::task::Poll::Ready(Ok(self.0));
        }
        self.1 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

impl Service<u64> for EchoPendingOnce {
    type Response = u64;
    type Error = Infallible;
    type Future = PendingOnce;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u64) -> Self::Future {
        PendingOnce(req, false)
    }
}

/// [`ours_resilience`] in front of [`EchoPendingOnce`], with or without an idle hedge (1 s).
pub fn ours_resilience_pending(
    hedge: bool,
) -> impl Service<u64, Response = u64, Error = BoxError> + Clone {
    let builder = ResilienceLayer::builder()
        .rate_limit(limiter(), |_: &u64| 0_u64)
        .circuit_breaker(breaker())
        .retry(policy());
    let builder = if hedge {
        builder.hedge(limitpal::Hedge::after(Duration::from_secs(1)))
    } else {
        builder
    };
    builder.build().expect("valid layer").layer(EchoPendingOnce)
}

/// [`ours_hedge`] in front of [`EchoPendingOnce`].
pub fn ours_hedge_pending() -> impl Service<u64, Response = u64, Error = BoxError> + Clone {
    limitpal::tower::HedgeLayer::new(limitpal::Hedge::after(Duration::from_secs(1)))
        .expect("valid hedge")
        .layer(EchoPendingOnce)
}

/// [`tower_hedge`] in front of [`EchoPendingOnce`].
pub fn tower_hedge_pending() -> impl Service<u64, Response = u64, Error = BoxError> {
    tower::hedge::Hedge::new::<u64>(EchoPendingOnce, HedgeAll, 10, 0.95, Duration::from_secs(1))
}
