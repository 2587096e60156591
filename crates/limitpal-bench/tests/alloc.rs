//! The allocation and memory targets as tests, so a regression fails CI (timing targets stay
//! in the benches). One test function: the counting allocator is process-wide, and the
//! counts must not include another test's allocations.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use limitpal_bench::alloc::{self, Counting};
use limitpal_bench::drive::{request, runtime};
use limitpal_bench::layers::{
    ours_adaptive, ours_breaker, ours_bulkhead, ours_rate_limit, ours_resilience, ours_retry,
};
use limitpal_bench::limiters::ours_keyed_live;
use tower::Service;

#[global_allocator]
static ALLOC: Counting = Counting;

fn allocations_per_request<S: Service<u64>>(mut svc: S) -> u64 {
    let rt = runtime();
    for i in 0..100 {
        let _ = request(&rt, &mut svc, i); // warm up: first-use allocations are not per request
    }
    let before = alloc::calls();
    for i in 0..1000 {
        assert!(request(&rt, &mut svc, i).is_ok());
    }
    (alloc::calls() - before) / 1000
}

#[test]
fn targets() {
    assert_eq!(
        allocations_per_request(ours_rate_limit()),
        0,
        "RateLimitLayer"
    );
    assert_eq!(
        allocations_per_request(ours_breaker()),
        0,
        "CircuitBreakerLayer"
    );
    assert_eq!(allocations_per_request(ours_retry()), 0, "RetryLayer");
    assert_eq!(allocations_per_request(ours_bulkhead()), 0, "BulkheadLayer");
    assert_eq!(
        allocations_per_request(ours_adaptive()),
        0,
        "AdaptiveLimitLayer"
    );
    assert_eq!(
        allocations_per_request(ours_resilience()),
        0,
        "ResilienceLayer"
    );

    let before = alloc::live_bytes();
    let limiter = ours_keyed_live();
    for key in 0..1_000_000_u64 {
        limiter.check(&key).unwrap();
    }
    assert_eq!(limiter.len(), 1_000_000);
    #[allow(clippy::cast_precision_loss)]
    let per_key = (alloc::live_bytes() - before) as f64 / 1e6;
    assert!(per_key <= 36.0, "{per_key:.1} bytes per live u64 key");
}
