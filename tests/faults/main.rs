//! Faults on purpose: `FaultPlan` (the same seed gives the same faults; rates hold over
//! 100 000 calls), `FaultLayer` under paused tokio time (latency exact, hangs, lost answers,
//! injected responses, filters and windows), `FaultInjector` in the sync executor, and the
//! pipeline tested with them.

#![cfg(feature = "tower")]
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use limitpal::fault::{Fault, FaultInjector, FaultKind, FaultPlan};
use limitpal::tower::fault::{FaultLayer, ResponseDropped};
use limitpal::tower::{ResilienceLayer, TokioClock};
use limitpal::{Clock, Error, Jitter, ManualClock, ResilientExecutor, RetryPolicy};
use tower::{BoxError, Layer, ServiceExt, service_fn};

const MS: Duration = Duration::from_millis(1);

fn plan(seed: u64) -> FaultPlan {
    FaultPlan::builder()
        .seed(seed)
        .latency_between(0.2, 10 * MS, 50 * MS)
        .error(0.1)
        .timeout(0.05)
        .drop_response(0.05)
        .respond(0.1)
        .build()
        .unwrap()
}

#[test]
fn the_same_seed_gives_the_same_faults_and_another_seed_others() {
    let run = |seed| {
        let plan = plan(seed);
        (0..1_000)
            .map(|_| plan.next(Duration::ZERO))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
    // the n-th call's fault does not depend on what came before it
    let plan = plan(7);
    assert_eq!(run(7)[500], plan.fault(500, Duration::ZERO));
}

#[test]
fn rates_hold_within_one_percent_over_100_000_calls() {
    for seed in [1, 2, 3, 42, u64::MAX] {
        let plan = plan(seed);
        let n = 100_000_u32;
        let mut counts = [0_u32; 5];
        let mut delayed = 0_u32;
        for _ in 0..n {
            let Fault { latency, kind } = plan.next(Duration::ZERO);
            if !latency.is_zero() {
                delayed += 1;
                assert!((10 * MS..=50 * MS).contains(&latency), "{latency:?}");
            }
            let i = match kind {
                FaultKind::Pass => 0,
                FaultKind::Error => 1,
                FaultKind::Timeout => 2,
                FaultKind::Drop => 3,
                FaultKind::Respond => 4,
                other => panic!("unexpected {other:?}"),
            };
            counts[i] += 1;
        }
        let share = |c: u32| f64::from(c) / f64::from(n);
        let expected = [0.7, 0.1, 0.05, 0.05, 0.1];
        for (count, want) in counts.into_iter().zip(expected) {
            assert!(
                (share(count) - want).abs() <= 0.01,
                "seed {seed}: {} vs {want}",
                share(count)
            );
        }
        assert!((share(delayed) - 0.2).abs() <= 0.01, "seed {seed}");
        assert_eq!(plan.calls(), u64::from(n));
    }
}

#[test]
fn bad_plans_are_config_errors_naming_the_field() {
    let field = |b: limitpal::fault::FaultPlanBuilder| b.build().unwrap_err().field();
    assert_eq!(field(FaultPlan::builder().error(1.5)), "error_rate");
    assert_eq!(
        field(FaultPlan::builder().timeout(f64::NAN)),
        "timeout_rate"
    );
    assert_eq!(
        field(FaultPlan::builder().latency(-0.1, MS)),
        "latency_rate"
    );
    assert_eq!(
        field(FaultPlan::builder().error(0.6).drop_response(0.5)),
        "drop_rate"
    );
    assert_eq!(
        field(FaultPlan::builder().latency_between(0.1, 2 * MS, MS)),
        "latency_max"
    );
    assert_eq!(field(FaultPlan::builder().during(MS, MS)), "during");
    assert_eq!(field(FaultPlan::builder().only_calls(3, 3)), "only_calls");
    assert_eq!(field(FaultPlan::builder().only_calls(4, 1)), "only_calls");
    assert_eq!(field(FaultPlan::builder().capacity(0, MS)), "capacity");
    assert_eq!(
        field(FaultPlan::builder().degraded(MS, 2 * MS, 1)),
        "degraded"
    );
    assert_eq!(
        field(FaultPlan::builder().capacity(2, MS).degraded(MS, 2 * MS, 0)),
        "degraded"
    );
    assert_eq!(
        field(FaultPlan::builder().capacity(2, MS).degraded(2 * MS, MS, 1)),
        "degraded"
    );
    assert!(
        FaultPlan::builder()
            .error(0.5)
            .timeout(0.25)
            .drop_response(0.25)
            .build()
            .is_ok()
    );
    let no_error = FaultInjector::builder()
        .plan(|p| p.latency(0.5, MS))
        .build();
    assert_eq!(no_error.unwrap_err().field(), "error");
}

#[test]
fn capacity_queues_calls_beyond_the_workers_in_fifo_order() {
    let plan = FaultPlan::builder()
        .capacity(2, 10 * MS)
        .degraded(100 * MS, 200 * MS, 1)
        .build()
        .unwrap();
    // four calls at once on two workers: two finish at 10 ms, two wait for them
    let at_zero: Vec<_> = (0..4).map(|_| plan.next(Duration::ZERO).latency).collect();
    assert_eq!(at_zero, [10 * MS, 10 * MS, 20 * MS, 20 * MS]);
    // an idle upstream serves at once again
    assert_eq!(plan.next(50 * MS).latency, 10 * MS);
    // degraded: one worker, so three calls at 100 ms finish one after the other
    let degraded: Vec<_> = (0..3).map(|_| plan.next(100 * MS).latency).collect();
    assert_eq!(degraded, [10 * MS, 20 * MS, 30 * MS]);
    // after the window both workers serve: the second one starts idle
    let after: Vec<_> = (0..2).map(|_| plan.next(200 * MS).latency).collect();
    assert_eq!(after, [10 * MS, 10 * MS]);
    // `fault(n, now)` is the plan's own draw, without the queue
    assert_eq!(plan.fault(0, Duration::ZERO).latency, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn the_layer_with_capacity_overloads_like_an_upstream() {
    let layer = FaultLayer::builder().capacity(2, 10 * MS).build().unwrap();
    // a concrete inner error: `FaultLayer` over a `BoxError` service inside `tokio::spawn`
    // trips a rustc limitation ("`From` is not general enough")
    let svc = layer.layer(service_fn(|n: u32| async move {
        Ok::<_, std::convert::Infallible>(n)
    }));
    let clock = TokioClock::new();
    let start = clock.now();
    let calls: Vec<_> = (0..6)
        .map(|i| {
            let svc = svc.clone();
            tokio::spawn(async move {
                let v = svc.oneshot(i).await.unwrap();
                (v, clock.now() - start)
            })
        })
        .collect();
    let mut done = Vec::new();
    for call in calls {
        done.push(call.await.unwrap());
    }
    let took: Vec<_> = done.iter().map(|(_, t)| *t).collect();
    assert_eq!(took, [10 * MS, 10 * MS, 20 * MS, 20 * MS, 30 * MS, 30 * MS]);
    assert!(done.iter().enumerate().all(|(i, (v, _))| *v as usize == i));
}

/// What the layer did to each of `n` calls, with when each one answered (paused time).
async fn layer_run(seed: u64, n: u32) -> Vec<(Result<u32, String>, Duration)> {
    let layer = FaultLayer::builder()
        .seed(seed)
        .latency(0.2, 100 * MS)
        .error(0.1, || "injected")
        .timeout(0.1)
        .drop_response(0.1)
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
    let clock = TokioClock::new();
    let mut seen = Vec::new();
    for i in 0..n {
        let start = clock.now();
        let answer = tokio::time::timeout(Duration::from_secs(1), svc.clone().oneshot(i)).await;
        let answer = match answer {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("hung".to_owned()),
        };
        seen.push((answer, clock.now() - start));
    }
    seen
}

#[tokio::test(start_paused = true)]
async fn the_layer_replays_exactly_under_paused_time() {
    let first = layer_run(5, 2_000).await;
    assert_eq!(first, layer_run(5, 2_000).await);
    assert_ne!(first, layer_run(6, 2_000).await);
    for (answer, took) in &first {
        // latency is exact; a hang is cut by the 1 s timeout, after any latency
        match answer {
            Ok(_) | Err(_) if *took == Duration::ZERO || *took == 100 * MS => {}
            Err(e) if e == "hung" => {
                assert!(*took == Duration::from_secs(1), "{took:?}");
            }
            other => panic!("{other:?} took {took:?}"),
        }
    }
    let count =
        |f: &dyn Fn(&Result<u32, String>) -> bool| first.iter().filter(|(a, _)| f(a)).count();
    assert!((140..260).contains(&count(&|a| a.as_ref().is_err_and(|e| e == "hung"))));
    assert!((140..260).contains(&count(&|a| a.as_ref().is_err_and(|e| e == "injected"))));
    let dropped = ResponseDropped.to_string();
    assert!((140..260).contains(&count(&|a| a.as_ref().is_err_and(|e| *e == dropped))));
    assert!((1_300..1_500).contains(&count(&|a| a.is_ok())));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_answer_ran_the_call_and_an_injected_response_did_not() {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let inner = service_fn(move |_: ()| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, BoxError>(200_u16) }
    });
    let dropping = FaultLayer::builder().drop_response(1.0).build().unwrap();
    let err = dropping.layer(inner.clone()).oneshot(()).await.unwrap_err();
    assert!(err.is::<ResponseDropped>());
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the request had its effect"
    );

    let unavailable = FaultLayer::builder()
        .respond(1.0, || 503_u16)
        .build()
        .unwrap();
    assert_eq!(unavailable.layer(inner).oneshot(()).await.unwrap(), 503);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "not called");
}

#[tokio::test(start_paused = true)]
async fn only_matching_requests_draw_faults_and_only_inside_the_window() {
    let layer = FaultLayer::builder()
        .error(1.0, || "down")
        .only_if(|host: &&str| *host == "flaky.example")
        .plan(|p| p.during(Duration::from_secs(10), Duration::from_secs(20)))
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(|host: &'static str| async move {
        Ok::<_, BoxError>(host)
    }));
    // before the window: nothing injected
    assert!(svc.clone().oneshot("flaky.example").await.is_ok());
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(svc.clone().oneshot("flaky.example").await.is_err());
    assert!(svc.clone().oneshot("healthy.example").await.is_ok());
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(svc.clone().oneshot("flaky.example").await.is_ok());
    // the healthy host never advanced the plan
    assert_eq!(layer.plan().calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn only_calls_fails_the_first_calls_then_recovers() {
    let layer = FaultLayer::builder()
        .error(1.0, || "starting up")
        .only_calls(0, 2)
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
    let mut answers = Vec::new();
    for n in 0..5 {
        answers.push(svc.clone().oneshot(n).await.map_err(|e| e.to_string()));
    }
    let down = Err("starting up".to_owned());
    assert_eq!(
        answers,
        [down.clone(), down, Ok(2), Ok(3), Ok(4)],
        "calls 0 and 1 fail, the rest pass"
    );
    // a window in the middle: only calls 1 and 2
    let middle = FaultPlan::builder()
        .error(1.0)
        .only_calls(1, 3)
        .build()
        .unwrap();
    let kinds: Vec<FaultKind> = (0..5).map(|_| middle.next(Duration::ZERO).kind).collect();
    assert_eq!(
        kinds,
        [
            FaultKind::Pass,
            FaultKind::Error,
            FaultKind::Error,
            FaultKind::Pass,
            FaultKind::Pass
        ]
    );
}

#[test]
fn the_sync_injector_in_the_executor_is_reproducible_with_a_manual_clock() {
    let run = |seed| {
        let clock = ManualClock::new();
        let faults = FaultInjector::builder()
            .plan(|p| p.seed(seed).latency(0.3, 200 * MS))
            .error(0.4, || "injected")
            .clock(clock.clone())
            .build()
            .unwrap();
        let exec = ResilientExecutor::builder()
            .retry(
                RetryPolicy::builder()
                    .max_attempts(3)
                    .base_delay(100 * MS)
                    .jitter(Jitter::None)
                    .build()
                    .unwrap(),
            )
            .clock(clock.clone())
            .build()
            .unwrap();
        let results: Vec<Result<u32, Error<&str>>> = (0..200)
            .map(|i| exec.run(&(), || faults.call(|| Ok(i))))
            .collect();
        (results, clock.now())
    };
    let (results, took) = run(11);
    assert_eq!((results.clone(), took), run(11));
    // 40 % injected, three attempts: about 0.4³ = 6.4 % give up
    let exhausted = results
        .iter()
        .filter(|r| matches!(r, Err(Error::RetryExhausted { .. })))
        .count();
    assert!((4..25).contains(&exhausted), "{exhausted}");
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(_) | Err(Error::RetryExhausted { .. })))
    );
    assert!(
        took > Duration::from_secs(10),
        "latency and backoff moved the clock: {took:?}"
    );
}

/// The pipeline against hangs: the attempt timeout cuts every hang and the retry recovers,
/// the same way on every run of the seed.
#[tokio::test(start_paused = true)]
async fn the_pipeline_cuts_injected_hangs_and_retries_them() {
    let run = || async {
        let faults = FaultLayer::builder().seed(3).timeout(0.3).build().unwrap();
        let svc = tower::ServiceBuilder::new()
            .layer(
                ResilienceLayer::builder()
                    .retry(
                        RetryPolicy::builder()
                            .max_attempts(4)
                            .base_delay(10 * MS)
                            .jitter(Jitter::None)
                            .build()
                            .unwrap(),
                    )
                    .attempt_timeout(50 * MS)
                    .build()
                    .unwrap(),
            )
            .layer(faults.clone())
            .service(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
        let mut answers = Vec::new();
        for i in 0..300 {
            answers.push(svc.clone().oneshot(i).await.map_err(|e| e.to_string()));
        }
        (answers, faults.plan().calls())
    };
    let (answers, calls) = run().await;
    assert_eq!((answers.clone(), calls), run().await);
    // 0.3⁴ ≈ 0.8 % of requests hang four times
    let ok = answers.iter().filter(|a| a.is_ok()).count();
    assert!((290..=300).contains(&ok), "{ok}");
    assert!(
        calls > 300 + 100,
        "retried hangs went through the plan again: {calls}"
    );
}
