//! Retries through the facade: delay math, jitter statistics, the budget, the layer under
//! paused tokio time.

#![cfg(feature = "tower")]
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use limitpal::Clock;
use limitpal::fault::FaultPlan;
use limitpal::rand::SeedableRng;
use limitpal::rand::rngs::StdRng;
use limitpal::tower::fault::FaultLayer;
use limitpal::tower::{RetryExhausted, RetryLayer, TokioClock};
use limitpal::{
    Backoff, CircuitOpen, ConfigError, Jitter, Outcome, RateLimited, RetryBudget, RetryPolicy,
};

use tower::{BoxError, Layer, Service, ServiceExt, service_fn};

const SEC: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

fn policy(attempts: u32, base: Duration, jitter: Jitter) -> RetryPolicy {
    RetryPolicy::builder()
        .max_attempts(attempts)
        .base_delay(base)
        .jitter(jitter)
        .build()
        .unwrap()
}

#[test]
fn unjittered_delays_are_exact() {
    let mut rng = StdRng::seed_from_u64(1);
    let exp = policy(10, SEC, Jitter::None);
    let got: Vec<_> = (1..=5).map(|n| exp.delay(n, &mut rng)).collect();
    assert_eq!(
        got,
        [SEC, 2 * SEC, 4 * SEC, 8 * SEC, 10 * SEC],
        "capped at max_delay"
    );
    let linear = RetryPolicy::builder()
        .base_delay(100 * MS)
        .backoff(Backoff::Linear)
        .jitter(Jitter::None)
        .build()
        .unwrap();
    assert_eq!(linear.delay(3, &mut rng), 300 * MS);
    let constant = RetryPolicy::builder()
        .base_delay(100 * MS)
        .backoff(Backoff::Constant)
        .jitter(Jitter::None)
        .build()
        .unwrap();
    assert_eq!(constant.delay(7, &mut rng), 100 * MS);
    let triple = RetryPolicy::builder()
        .base_delay(SEC)
        .max_delay(Duration::from_secs(3600))
        .backoff(Backoff::Exponential { factor: 3.0 })
        .jitter(Jitter::None)
        .build()
        .unwrap();
    assert_eq!(triple.delay(3, &mut rng), 9 * SEC);
}

#[test]
fn delays_never_exceed_max_delay_for_any_retry_number() {
    let mut rng = StdRng::seed_from_u64(2);
    for jitter in [
        Jitter::None,
        Jitter::Full,
        Jitter::Equal,
        Jitter::Decorrelated,
    ] {
        for backoff in [
            Backoff::Constant,
            Backoff::Linear,
            Backoff::Exponential { factor: 1.0 },
            Backoff::Exponential { factor: 1e300 },
        ] {
            let p = RetryPolicy::builder()
                .base_delay(Duration::MAX)
                .max_delay(Duration::MAX)
                .backoff(backoff)
                .jitter(jitter)
                .build()
                .unwrap();
            for retry in [0, 1, 2, 63, 64, 1 << 20, u32::MAX - 1, u32::MAX] {
                assert!(p.delay(retry, &mut rng) <= p.max_delay());
            }
            let p = RetryPolicy::builder()
                .base_delay(MS)
                .max_delay(SEC)
                .backoff(backoff)
                .jitter(jitter)
                .build()
                .unwrap();
            for retry in [1, 2, 30, 1000, u32::MAX] {
                assert!(
                    p.delay(retry, &mut rng) <= SEC,
                    "{jitter:?} {backoff:?} {retry}"
                );
            }
        }
    }
}

#[test]
fn full_jitter_is_uniform_over_zero_to_cap() {
    let p = policy(10, SEC, Jitter::Full);
    let cap = 4 * SEC; // retry 3
    let mut rng = StdRng::seed_from_u64(3);
    let draws: Vec<_> = (0..10_000).map(|_| p.delay(3, &mut rng)).collect();
    assert!(draws.iter().all(|d| *d <= cap));
    let mean = draws.iter().sum::<Duration>() / 10_000;
    let half = cap / 2;
    assert!(
        mean.abs_diff(half) <= half / 20,
        "mean {mean:?} not within 5 % of {half:?}"
    );
}

#[test]
fn equal_and_decorrelated_jitter_stay_in_their_ranges() {
    let mut rng = StdRng::seed_from_u64(4);
    let equal = policy(10, SEC, Jitter::Equal);
    for _ in 0..1000 {
        let d = equal.delay(2, &mut rng);
        assert!((SEC..=2 * SEC).contains(&d), "{d:?}");
    }
    let decorrelated = policy(10, SEC, Jitter::Decorrelated);
    for _ in 0..1000 {
        let first = decorrelated.delay(1, &mut rng);
        assert!((SEC..=3 * SEC).contains(&first), "{first:?}");
        let third = decorrelated.delay(3, &mut rng);
        assert!((SEC..=6 * SEC).contains(&third), "{third:?}");
    }
}

#[test]
fn same_seed_same_sequence() {
    let p = policy(10, SEC, Jitter::Full);
    let draw = |seed| {
        let mut rng = StdRng::seed_from_u64(seed);
        (1..20).map(|n| p.delay(n, &mut rng)).collect::<Vec<_>>()
    };
    assert_eq!(draw(9), draw(9));
    assert_ne!(draw(9), draw(10));

    let seeded = |seed| {
        RetryPolicy::builder()
            .seed(seed)
            .jitter(Jitter::Full)
            .build()
            .unwrap()
    };
    let (a, b) = (seeded(5), seeded(5));
    let (mut ra, mut rb) = (a.new_rng(), b.new_rng());
    let sa: Vec<_> = (1..20).map(|n| a.delay(n, &mut ra)).collect();
    let sb: Vec<_> = (1..20).map(|n| b.delay(n, &mut rb)).collect();
    assert_eq!(
        sa, sb,
        "the policy's own streams are reproducible for a seed"
    );
    let mut second = a.new_rng();
    let sc: Vec<_> = (1..20).map(|n| a.delay(n, &mut second)).collect();
    assert_ne!(sa, sc, "every new stream differs");
}

#[test]
fn every_bad_argument_is_a_config_error() {
    let cases = [
        (
            RetryPolicy::builder().max_attempts(0).build().map(drop),
            "max_attempts",
        ),
        (
            RetryPolicy::builder()
                .base_delay(SEC)
                .max_delay(MS)
                .build()
                .map(drop),
            "max_delay",
        ),
        (
            RetryPolicy::builder()
                .backoff(Backoff::Exponential { factor: 0.5 })
                .build()
                .map(drop),
            "factor",
        ),
        (
            RetryPolicy::builder()
                .backoff(Backoff::Exponential { factor: f64::NAN })
                .build()
                .map(drop),
            "factor",
        ),
        (
            RetryPolicy::builder()
                .backoff(Backoff::Exponential {
                    factor: f64::INFINITY,
                })
                .build()
                .map(drop),
            "factor",
        ),
        (RetryBudget::new(Duration::ZERO, 1, 0.1).map(drop), "ttl"),
        (RetryBudget::new(SEC, 1, -0.1).map(drop), "retry_ratio"),
        (RetryBudget::new(SEC, 1, 1000.1).map(drop), "retry_ratio"),
        (RetryBudget::new(SEC, 1, f64::NAN).map(drop), "retry_ratio"),
    ];
    for (result, field) in cases {
        let err: ConfigError = result.expect_err(field);
        assert_eq!(err.field(), field);
    }
    assert!(RetryBudget::new(Duration::MAX, u32::MAX, 1000.0).is_ok());
}

#[test]
fn budget_floor_and_window() {
    let budget = RetryBudget::new(10 * SEC, 1, 0.0).unwrap(); // 10 retries per 10 s
    let now = Duration::ZERO;
    for _ in 0..10 {
        assert!(budget.withdraw(now));
    }
    assert!(!budget.withdraw(now));
    assert!(!budget.withdraw(9 * SEC));
    assert!(
        budget.withdraw(10 * SEC),
        "the first withdrawals left the window"
    );
}

/// Four threads share a budget, lock-free: no deposit is lost, and within one bucket the
/// withdrawals are exact however they race (10 % of 40 000 requests: 4 000 retries, not one
/// more).
#[test]
fn a_shared_budget_counts_every_deposit_and_never_overspends_under_threads() {
    let budget = RetryBudget::new(10 * SEC, 0, 0.1).unwrap();
    let now = Duration::from_millis(500);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..10_000 {
                    budget.deposit(now);
                }
            });
        }
    });
    assert_eq!(budget.available(now), 4_000);
    let granted: usize = std::thread::scope(|s| {
        let threads: Vec<_> = (0..4)
            .map(|_| s.spawn(|| (0..2_000).filter(|_| budget.withdraw(now)).count()))
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).sum()
    });
    assert_eq!(granted, 4_000);
    assert_eq!(budget.available(now), 0);
    assert!(!budget.withdraw(now));
    // the deposits leave the window after a ttl, the withdrawals with them
    assert_eq!(budget.available(now + 10 * SEC), 0);
    budget.deposit(now + 10 * SEC);
    assert_eq!(
        budget.available(now + 10 * SEC),
        0,
        "one request buys a tenth"
    );
}

// ---- the layer ----

/// A service failing its first `failures` calls with a numbered io error (`failure 0`,
/// `failure 1`, ..), then answering the call's number: a `FaultLayer` whose plan counts the
/// calls.
fn flaky(
    failures: u32,
) -> (
    impl Service<(), Response = u32, Error = BoxError, Future: Send> + Clone,
    FaultPlan,
) {
    let numbered = AtomicU32::new(0);
    let faults = FaultLayer::builder()
        .error(1.0, move || {
            let n = numbered.fetch_add(1, Ordering::SeqCst);
            std::io::Error::other(format!("failure {n}"))
        })
        .only_calls(0, u64::from(failures))
        .build()
        .unwrap();
    let plan = faults.plan().clone();
    let calls = plan.clone();
    let svc = faults.layer(service_fn(move |()| {
        // the plan counted this call before passing it on
        let n = u32::try_from(calls.calls() - 1).unwrap();
        async move { Ok::<u32, BoxError>(n) }
    }));
    (svc, plan)
}

#[tokio::test(start_paused = true)]
async fn succeeds_on_the_third_call_after_exactly_three_seconds() {
    let (svc, calls) = flaky(2);
    let start = TokioClock::new();
    let got = RetryLayer::new(policy(3, SEC, Jitter::None))
        .layer(svc)
        .oneshot(())
        .await
        .unwrap();
    assert_eq!(got, 2);
    assert_eq!(calls.calls(), 3);
    assert_eq!(start.now(), 3 * SEC);
}

#[tokio::test(start_paused = true)]
async fn always_failing_exhausts_with_the_last_error_as_source() {
    let (svc, calls) = flaky(u32::MAX);
    let start = TokioClock::new();
    let err = RetryLayer::new(policy(2, 500 * MS, Jitter::None))
        .layer(svc)
        .oneshot(())
        .await
        .unwrap_err();
    let exhausted = err
        .downcast_ref::<RetryExhausted>()
        .expect("RetryExhausted");
    assert_eq!(exhausted.attempts, 2);
    let source = std::error::Error::source(exhausted).unwrap();
    assert_eq!(source.to_string(), "failure 1");
    assert_eq!(calls.calls(), 2);
    assert_eq!(start.now(), 500 * MS);
}

#[tokio::test(start_paused = true)]
async fn one_attempt_with_a_retryable_error_is_exhausted_after_one() {
    let (svc, calls) = flaky(u32::MAX);
    let err = RetryLayer::new(policy(1, SEC, Jitter::None))
        .layer(svc)
        .oneshot(())
        .await
        .unwrap_err();
    assert_eq!(err.downcast_ref::<RetryExhausted>().unwrap().attempts, 1);
    assert_eq!(calls.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_non_retryable_error_returns_at_once() {
    let (svc, calls) = flaky(u32::MAX);
    let start = TokioClock::new();
    let err = RetryLayer::new(policy(5, SEC, Jitter::None))
        .classifier(|r: Result<&u32, &BoxError>| match r {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::FATAL,
        })
        .layer(svc)
        .oneshot(())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "failure 0",
        "returned as it is, not wrapped"
    );
    assert_eq!(calls.calls(), 1);
    assert_eq!(start.now(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_failing_ok_response_is_retried_and_returned_unchanged() {
    let faults = FaultLayer::builder()
        .respond(1.0, || 503_u16)
        .build()
        .unwrap();
    let calls = faults.plan().clone();
    let always_503 = faults.layer(service_fn(|()| async { Ok::<u16, BoxError>(200) }));
    let status = RetryLayer::new(policy(3, SEC, Jitter::None))
        .classifier(|r: Result<&u16, &BoxError>| match r {
            Ok(code) if *code >= 500 => Outcome::RETRYABLE,
            _ => Outcome::Success,
        })
        .layer(always_503)
        .oneshot(())
        .await
        .unwrap();
    assert_eq!(status, 503);
    assert_eq!(calls.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn an_inner_rate_limit_is_retried_no_sooner_than_its_retry_after() {
    let limited_once = FaultLayer::builder()
        .error(1.0, || RateLimited::new(3 * SEC))
        .only_calls(0, 1)
        .build()
        .unwrap()
        .layer(service_fn(|()| async { Ok::<u32, BoxError>(1) }));
    let start = TokioClock::new();
    let got = RetryLayer::new(policy(3, SEC, Jitter::None))
        .layer(limited_once)
        .oneshot(())
        .await
        .unwrap();
    assert_eq!(got, 1);
    assert_eq!(
        start.now(),
        3 * SEC,
        "waited the longer retry_after, not the 1 s backoff"
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_beyond_max_delay_stops_at_once() {
    let too_long = service_fn(|()| async {
        Err::<u32, BoxError>(Box::new(RateLimited::new(Duration::from_secs(60))))
    });
    let start = TokioClock::new();
    let err = RetryLayer::new(policy(3, SEC, Jitter::None))
        .layer(too_long)
        .oneshot(())
        .await
        .unwrap_err();
    assert_eq!(
        err.downcast_ref::<RateLimited>(),
        Some(&RateLimited::new(Duration::from_secs(60)))
    );
    assert_eq!(start.now(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn an_inner_open_circuit_is_never_retried() {
    let faults = FaultLayer::builder()
        .error(1.0, || CircuitOpen::new(SEC))
        .build()
        .unwrap();
    let calls = faults.plan().clone();
    let open = faults.layer(service_fn(|()| async { Ok::<u32, BoxError>(0) }));
    let err = RetryLayer::new(policy(3, SEC, Jitter::None))
        .layer(open)
        .oneshot(())
        .await
        .unwrap_err();
    assert!(err.is::<CircuitOpen>());
    assert_eq!(calls.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_request_that_cannot_be_replayed_is_not_retried() {
    let (svc, calls) = flaky(u32::MAX);
    let err = RetryLayer::new(policy(3, SEC, Jitter::None))
        .clone_request(|_: &()| None)
        .layer(svc)
        .oneshot(())
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "failure 0");
    assert_eq!(calls.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn budget_caps_retries_to_a_tenth_of_requests() {
    let (svc, calls) = flaky(u32::MAX);
    let budget = RetryBudget::new(Duration::from_secs(60), 0, 0.1).unwrap();
    let mut svc = RetryLayer::new(policy(3, MS, Jitter::None))
        .budget(budget)
        .layer(svc);
    let mut exhausted = 0;
    for _ in 0..1000 {
        let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
        exhausted += u32::from(err.is::<RetryExhausted>());
    }
    assert_eq!(exhausted, 1000);
    let retries = calls.calls() - 1000;
    assert!(
        (95..=100).contains(&retries),
        "{retries} retries for 1000 requests"
    );
}

#[tokio::test(start_paused = true)]
async fn clones_of_a_layer_do_not_retry_in_lockstep() {
    let layer = RetryLayer::new(
        RetryPolicy::builder()
            .max_attempts(2)
            .base_delay(SEC)
            .jitter(Jitter::Full)
            .seed(42)
            .build()
            .unwrap(),
    );
    let mut waits = Vec::new();
    for _ in 0..2 {
        let mut svc = layer.clone().layer(flaky(u32::MAX).0);
        let mut mine = Vec::new();
        for _ in 0..5 {
            let start = TokioClock::new();
            let _ = svc.ready().await.unwrap().call(()).await;
            mine.push(start.now());
        }
        waits.push(mine);
    }
    assert_ne!(waits[0], waits[1]);
    assert!(waits.iter().flatten().all(|w| *w <= SEC));
}

#[tokio::test(start_paused = true)]
async fn the_inner_service_is_polled_ready_before_each_retry() {
    use tower_test::mock;
    let (inner, mut handle) = mock::pair::<(), u32>();
    let mut svc = RetryLayer::new(policy(2, SEC, Jitter::None)).layer(inner);
    handle.allow(1);
    let call = tokio::spawn(svc.ready().await.unwrap().call(()));
    let (_, respond) = handle.next_request().await.unwrap();
    respond.send_error(std::io::Error::other("first"));
    tokio::time::advance(SEC).await;
    // no capacity: the retry waits in poll_ready
    tokio::task::yield_now().await;
    assert!(!call.is_finished());
    handle.allow(1);
    let (_, respond) = handle.next_request().await.unwrap();
    respond.send_response(7);
    assert_eq!(call.await.unwrap().unwrap(), 7);
}
