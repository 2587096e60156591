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

    keyed_breaker_memory_and_admissions();

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

/// A keyed breaker's held keys (each Closed with one failure counted, so none looks fresh):
/// at most 128 bytes each (122 at 200 000 keys, 116 at 1 M: the table grows in steps), 64
/// more with key listeners (both kinds: they share the key's copy), and admissions of held
/// keys allocate nothing, with key listeners too.
fn keyed_breaker_memory_and_admissions() {
    use limitpal::{CallPermit, KeyedCircuitBreaker};
    const KEYS: u64 = 200_000;
    let before = alloc::live_bytes();
    let plain: KeyedCircuitBreaker<u64> = KeyedCircuitBreaker::builder().build().unwrap();
    for key in 0..KEYS {
        plain.try_acquire(&key).unwrap().failure();
    }
    assert_eq!(plain.len(), 200_000);
    #[allow(clippy::cast_precision_loss)]
    let per_key = (alloc::live_bytes() - before) as f64 / 200_000.0;
    assert!(per_key <= 128.0, "{per_key:.1} bytes per held key");
    drop(plain);
    let before = alloc::live_bytes();
    let listened: KeyedCircuitBreaker<u64> = KeyedCircuitBreaker::builder()
        .on_key_state_change(|_, _, _| {})
        .on_key_rejection(|_, _| {})
        .build()
        .unwrap();
    for key in 0..KEYS {
        listened.try_acquire(&key).unwrap().failure();
    }
    #[allow(clippy::cast_precision_loss)]
    let per_key = (alloc::live_bytes() - before) as f64 / 200_000.0;
    // the key's listeners: a 24-byte box and one allocation holding a copy of the key
    assert!(
        per_key <= 128.0 + 64.0,
        "{per_key:.1} bytes per key with a listener"
    );
    let plain: KeyedCircuitBreaker<u64> = KeyedCircuitBreaker::builder().build().unwrap();
    for key in 0..1_000 {
        plain.try_acquire(&key).unwrap().failure();
    }
    for breakers in [&plain, &listened] {
        let before = alloc::calls();
        for i in 0..10_000_u64 {
            let key = i.wrapping_mul(7919) % 1_000;
            breakers.try_acquire(&key).map(CallPermit::failure).unwrap();
            breakers.reset(&key); // stays Closed and held: failures are counted again
        }
        assert_eq!(
            alloc::calls() - before,
            0,
            "allocations admitting held keys"
        );
    }
}
