//! One workload, many times, for a profiler: instruction counts from callgrind, simulated
//! cache misses from cachegrind (this machine's `perf` has no hardware counters).
//!
//! ```text
//! cargo build --release -p limitpal-bench --bin profile
//! valgrind --tool=callgrind target/release/profile resilience 100000
//! valgrind --tool=cachegrind --cache-sim=yes target/release/profile keyed-ours 1000000
//! valgrind --tool=cachegrind --branch-sim=yes target/release/profile keyed-ours 1000000 10000
//! ```
//!
//! Workloads: `breaker-plain`, `breaker-keyed` (admissions of one key), `reqwest-bare`, `reqwest-retry`, `reqwest-ours`, `reqwest-pipeline` (canned
//! `GET`s through the `compare reqwest` stacks), `bare`, `resilience`, `bulkhead`, `tower-concurrency` (requests through the
//! layer), `http-ours`, `http-governor` (allowed requests through one axum router),
//! `refilling-ours`, `refilling-governor` (round-robin over the keys given third, each full
//! again when it comes back), `deny-ours`, `deny-governor` (a spent unkeyed quota), `zipf-ours`, `zipf-governor` (the
//! Zipf mix), `rotating-ours` (every check a new key, `max_keys` 100 000),
//! `keyed-ours`, `keyed-governor` (checks spread over 1 M live keys, or the count given third;
//! the key set is built first, so profile twice with different counts and subtract).

use std::hint::black_box;

use limitpal_bench::drive::{complete, request, runtime};
use limitpal_bench::http_client::{CANNED_URL, Stack, client, client_runtime, get};
use limitpal_bench::layers::{Echo, ours_bulkhead, ours_resilience, tower_concurrency_limit};
use limitpal_bench::limiters::{governor_keyed_live, ours_keyed_live};
use tower::Service;

fn requests<S: Service<u64>>(mut svc: S, n: u64) {
    let rt = runtime();
    for i in 0..n {
        let _ = black_box(request(&rt, &mut svc, i));
    }
}

/// `n` canned `GET`s (answered by a last middleware, no network) through one stack.
fn canned(stack: Stack, n: u64) {
    let rt = client_runtime();
    let client = client(stack, true);
    for _ in 0..n {
        black_box(get(&rt, &client, CANNED_URL));
    }
}

fn http(router: &axum::Router, n: u64) {
    use tower::ServiceExt;
    let rt = runtime();
    for _ in 0..n {
        let response = complete(&rt, router.clone().oneshot(limitpal_bench::http::request()));
        black_box(response.map(|r| r.status()).ok());
    }
}

/// The `i`-th key of a fixed pseudo-random walk over `keys` live keys.
fn key(i: u64, keys: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % keys
}

fn main() {
    let mut args = std::env::args().skip(1);
    let workload = args.next().unwrap_or_default();
    let n: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let keys: u64 = args
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    match workload.as_str() {
        "bare" => requests(Echo, n),
        "breaker-plain" => {
            let plain = limitpal::CircuitBreaker::builder().build().expect("valid");
            for _ in 0..n {
                black_box(
                    plain
                        .try_acquire()
                        .map(limitpal::CallPermit::success)
                        .is_ok(),
                );
            }
        }
        "breaker-keyed" => {
            let keyed: limitpal::KeyedCircuitBreaker<u64> =
                limitpal::KeyedCircuitBreaker::builder()
                    .build()
                    .expect("valid");
            for _ in 0..n {
                black_box(
                    keyed
                        .try_acquire(&7)
                        .map(limitpal::CallPermit::success)
                        .is_ok(),
                );
            }
        }
        "reqwest-bare" => canned(Stack::Bare, n),
        "reqwest-retry" => canned(Stack::ReqwestRetry, n),
        "reqwest-ours" => canned(Stack::OursRetry, n),
        "reqwest-pipeline" => canned(Stack::OursPipeline, n),
        "resilience" => requests(ours_resilience(), n),
        "bulkhead" => requests(ours_bulkhead(), n),
        "tower-concurrency" => requests(tower_concurrency_limit(), n),
        "http-ours" => http(&limitpal_bench::http::ours(true), n),
        "http-governor" => http(&limitpal_bench::http::governor(true), n),
        "keyed-ours" => {
            let limiter = ours_keyed_live();
            (0..keys).for_each(|k| {
                let _ = limiter.check(&k);
            });
            (0..n).for_each(|i| {
                let _ = black_box(limiter.check(&key(i, keys)));
            });
        }
        "keyed-governor" => {
            let limiter = governor_keyed_live();
            (0..keys).for_each(|k| drop(limiter.check_key(&k)));
            (0..n).for_each(|i| drop(black_box(limiter.check_key(&key(i, keys)))));
        }
        "refilling-ours" => {
            let limiter = limitpal_bench::workloads::ours_refilling();
            (0..n).for_each(|i| {
                let _ = black_box(limiter.check(&(i % keys)));
            });
        }
        "refilling-governor" => {
            let limiter = limitpal_bench::workloads::governor_refilling();
            (0..n).for_each(|i| drop(black_box(limiter.check_key(&(i % keys)))));
        }
        "deny-ours" => {
            let limiter = limitpal_bench::limiters::ours_denying();
            (0..n).for_each(|_| {
                let _ = black_box(limiter.check(&()));
            });
        }
        "deny-governor" => {
            let limiter = limitpal_bench::limiters::governor_denying();
            (0..n).for_each(|_| drop(black_box(limiter.check())));
        }
        "zipf-ours" => {
            let zipf = limitpal_bench::workloads::ZipfKeys::standard();
            let limiter = limitpal_bench::workloads::ours_per_user();
            (0..n).for_each(|i| {
                let _ = black_box(limiter.check(&zipf.key(i)));
            });
        }
        "zipf-governor" => {
            let zipf = limitpal_bench::workloads::ZipfKeys::standard();
            let limiter = limitpal_bench::workloads::governor_per_user();
            (0..n).for_each(|i| drop(black_box(limiter.check_key(&zipf.key(i)))));
        }
        "rotating-ours" => {
            let limiter = limitpal_bench::workloads::ours_per_user_bounded(Some(100_000));
            (0..n).for_each(|i| {
                if keys < 1_000_000 && i % keys == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(300));
                }
                let _ = black_box(limiter.check(&limitpal_bench::workloads::rotating(i)));
            });
        }
        other => {
            eprintln!("unknown workload {other:?}");
            std::process::exit(2);
        }
    }
}
