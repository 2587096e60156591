//! The allocation and memory targets as tests, so a regression fails CI (timing targets stay
//! in the benches). One test function: the counting allocator is process-wide, and the
//! counts must not include another test's allocations.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use limitpal_bench::alloc::{self, Counting};
use limitpal_bench::drive::{request, runtime};
use limitpal_bench::http_client::{CANNED_URL, Stack, client, client_runtime, get};
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

    // reqwest middleware, answered by a canned 200 on this thread: a retrying middleware must
    // keep a copy of the request (reqwest-retry makes one too); ours adds nothing to that copy,
    // and the whole pipeline (limiter, breaker, budget) allocates nothing more than retry alone.
    let [pass, peer, retry, pipeline] = [
        Stack::PassThrough,
        Stack::ReqwestRetry,
        Stack::OursRetry,
        Stack::OursPipeline,
    ]
    .map(reqwest_allocations);
    assert!(
        retry <= peer,
        "Resilience {retry} vs reqwest-retry {peer} allocs/request"
    );
    assert_eq!(pipeline, retry, "the pipeline's parts allocate per request");
    assert!(
        retry > pass,
        "the request copy is counted: {retry} vs {pass}"
    );
}

fn reqwest_allocations(stack: Stack) -> u64 {
    let rt = client_runtime();
    let client = client(stack, true);
    for _ in 0..100 {
        assert_eq!(get(&rt, &client, CANNED_URL), Some(200));
    }
    let before = alloc::thread_calls();
    for _ in 0..1000 {
        assert_eq!(get(&rt, &client, CANNED_URL), Some(200));
    }
    (alloc::thread_calls() - before) / 1000
}
