//! Per-request cost of each middleware around the same trivial service, and HTTP 200 vs 429
//! through the same axum router, ours next to the peers.
//!
//! ```text
//! cargo bench -p limitpal-bench --bench layers
//! ```

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use limitpal_bench::drive::{complete, request, runtime, warm};
use limitpal_bench::layers::{
    Echo, ours_adaptive, ours_breaker, ours_bulkhead, ours_rate_limit, ours_resilience, ours_retry,
    tower_builtin_stack, tower_concurrency_limit, tower_resilience_stack,
};
use tokio::runtime::Runtime;
use tower::{Service, ServiceExt};

fn bench_service<S: Service<u64>>(c: &mut Criterion, name: &str, mut svc: S) {
    let rt = runtime();
    let mut i = 0_u64;
    c.bench_function(name, |b| {
        b.iter(|| {
            i += 1;
            let _ = black_box(request(&rt, &mut svc, i));
        });
    });
}

fn layers(c: &mut Criterion) {
    bench_service(c, "layers/bare", Echo);
    bench_service(c, "layers/limitpal RateLimitLayer", ours_rate_limit());
    bench_service(c, "layers/limitpal CircuitBreakerLayer", ours_breaker());
    bench_service(c, "layers/limitpal RetryLayer", ours_retry());
    bench_service(c, "layers/limitpal ResilienceLayer", ours_resilience());
    bench_service(
        c,
        "layers/tower-resilience breaker+limiter+retry",
        tower_resilience_stack(),
    );
    let rt = runtime();
    let builtin = {
        let _guard = rt.enter(); // tower's RateLimit creates a timer when built
        tower_builtin_stack()
    };
    bench_service(c, "layers/tower RateLimit+Retry", builtin);
    bench_service(c, "layers/limitpal BulkheadLayer", ours_bulkhead());
    bench_service(c, "layers/limitpal AdaptiveLimitLayer", ours_adaptive());
    bench_service(
        c,
        "layers/tower ConcurrencyLimit",
        tower_concurrency_limit(),
    );
}

/// `svc` warmed for 1.1 s (tower's `Hedge` arms its timer per request only past its first
/// 1 s period), then benched, inside the runtime (its timer is made in `call`).
fn bench_warm<S: Service<u64>>(c: &mut Criterion, rt: &Runtime, name: &str, mut svc: S) {
    let _guard = rt.enter();
    warm(rt, &mut svc, std::time::Duration::from_millis(1_100));
    let mut i = 0_u64;
    c.bench_function(name, |b| {
        b.iter(|| {
            i += 1;
            let _ = black_box(request(rt, &mut svc, i));
        });
    });
}

/// The hedge stage, idle (no hedge fires), on a ready call and on a call in flight, next to
/// tower's `Hedge`.
fn hedging(c: &mut Criterion) {
    use limitpal_bench::layers::{
        ours_hedge, ours_hedge_pending, ours_resilience_hedged, tower_hedge, tower_hedge_pending,
    };
    let rt = runtime();
    bench_warm(
        c,
        &rt,
        "hedging/limitpal ResilienceLayer",
        ours_resilience(),
    );
    bench_warm(
        c,
        &rt,
        "hedging/limitpal ResilienceLayer + idle hedge",
        ours_resilience_hedged(),
    );
    bench_warm(c, &rt, "hedging/limitpal HedgeLayer", ours_hedge());
    bench_warm(c, &rt, "hedging/tower Hedge", tower_hedge());
    bench_warm(
        c,
        &rt,
        "hedging/limitpal HedgeLayer, call in flight",
        ours_hedge_pending(),
    );
    bench_warm(
        c,
        &rt,
        "hedging/tower Hedge, call in flight",
        tower_hedge_pending(),
    );
}

fn http(c: &mut Criterion) {
    use limitpal_bench::http::{governor, ours, request as http_request};
    let rt = runtime();
    for (name, router) in [
        ("http/limitpal 200", ours(true)),
        ("http/limitpal 429", ours(false)),
        ("http/tower_governor 200", governor(true)),
        ("http/tower_governor 429", governor(false)),
    ] {
        c.bench_function(name, |b| {
            b.iter(|| {
                let response = complete(&rt, router.clone().oneshot(http_request()));
                black_box(response.map(|r| r.status()).ok())
            });
        });
    }
}

criterion_group!(benches, layers, hedging, http);
criterion_main!(benches);
