//! The same scenarios through `ResilienceLayer` and `AsyncResilientExecutor` under paused
//! tokio time.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use limitpal::fault::FaultPlan;
use limitpal::tower::fault::FaultLayer;
use limitpal::tower::{
    AsyncResilientExecutor, ResilienceLayer, RetryExhausted, TimedOut, TokioClock,
};
use limitpal::{
    Backoff, CircuitBreaker, CircuitOpen, CircuitState, Clock, Error, Jitter, RateLimited,
    RateLimiter, RetryPolicy, TokenBucket,
};
use tower::{BoxError, Layer, Service, ServiceExt, service_fn};

const SEC: Duration = Duration::from_secs(1);

fn policy(attempts: u32, base: Duration) -> RetryPolicy {
    RetryPolicy::builder()
        .max_attempts(attempts)
        .base_delay(base)
        .jitter(Jitter::None)
        .build()
        .unwrap()
}

fn breaker(threshold: u32, recovery: Duration) -> CircuitBreaker<TokioClock> {
    CircuitBreaker::builder()
        .failure_threshold(threshold)
        .recovery_timeout(recovery)
        .clock(TokioClock::new())
        .build()
        .unwrap()
}

/// Fails its first `failures` calls with a numbered io error (`failure 1`, ..), then answers
/// the call's number (counting from 1): a `FaultLayer` whose plan counts the calls.
fn upstream(
    failures: u32,
) -> (
    impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone,
    FaultPlan,
) {
    let numbered = AtomicU32::new(0);
    let faults = FaultLayer::builder().error(1.0, move || {
        let n = numbered.fetch_add(1, Ordering::SeqCst) + 1;
        std::io::Error::other(format!("failure {n}"))
    });
    // no failures: a plan that injects into no call (an empty range is a ConfigError)
    let faults = if failures == 0 {
        faults.plan(|p| p.error(0.0))
    } else {
        faults.only_calls(0, u64::from(failures))
    };
    answering_the_call_number(&faults.build().unwrap())
}

/// Never answers (an injected hang); its plan counts the calls.
fn hung() -> (
    impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone,
    FaultPlan,
) {
    answering_the_call_number(&FaultLayer::builder().timeout(1.0).build().unwrap())
}

/// `faults` in front of a service answering the call's number; the plan that counts them.
fn answering_the_call_number<E: Into<BoxError> + 'static>(
    faults: &FaultLayer<E, u32>,
) -> (
    impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone + use<E>,
    FaultPlan,
) {
    let plan = faults.plan().clone();
    let calls = plan.clone();
    let svc = faults.layer(service_fn(move |_: u32| {
        // the plan counted this call before passing it on
        let n = u32::try_from(calls.calls()).unwrap();
        async move { Ok::<u32, BoxError>(n) }
    }));
    (svc, plan)
}

#[tokio::test(start_paused = true)]
async fn layer_retry_succeeds_on_the_third_call_after_three_seconds() {
    let (svc, calls) = upstream(2);
    let clock = TokioClock::new();
    let layer = ResilienceLayer::builder()
        .retry(policy(3, SEC))
        .build()
        .unwrap();
    assert_eq!(layer.layer(svc).oneshot(0).await.unwrap(), 3);
    assert_eq!(calls.calls(), 3);
    assert_eq!(clock.now(), 3 * SEC);
}

#[tokio::test(start_paused = true)]
async fn layer_always_failing_is_exhausted_after_two_attempts() {
    let (svc, calls) = upstream(u32::MAX);
    let clock = TokioClock::new();
    let layer = ResilienceLayer::builder()
        .retry(policy(2, SEC / 2))
        .build()
        .unwrap();
    let err = layer.layer(svc).oneshot(0).await.unwrap_err();
    let exhausted = err.downcast_ref::<RetryExhausted>().unwrap();
    assert_eq!(exhausted.attempts, 2);
    assert_eq!(exhausted.last().to_string(), "failure 2");
    assert_eq!(calls.calls(), 2);
    assert_eq!(clock.now(), SEC / 2);
}

#[tokio::test(start_paused = true)]
async fn layer_breaker_opened_by_two_requests_rejects_the_third_without_calling() {
    let (svc, calls) = upstream(u32::MAX);
    let layer = ResilienceLayer::builder()
        .circuit_breaker(breaker(2, 5 * SEC))
        .build()
        .unwrap();
    let svc = layer.layer(svc);
    for _ in 0..2 {
        let err = svc.clone().oneshot(0).await.unwrap_err();
        assert!(
            err.is::<std::io::Error>(),
            "not retryable without retry: returned as is"
        );
    }
    let err = svc.oneshot(0).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<CircuitOpen>(),
        Some(&CircuitOpen::new(5 * SEC))
    );
    assert_eq!(calls.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn layer_limiter_denies_the_second_request_without_calling() {
    let (svc, calls) = upstream(0);
    let limiter = RateLimiter::builder(TokenBucket::new(1, 1.0).unwrap())
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let layer = ResilienceLayer::builder()
        .rate_limit(limiter, |req: &u32| *req)
        .build()
        .unwrap();
    let svc = layer.layer(svc);
    assert_eq!(svc.clone().oneshot(7).await.unwrap(), 1);
    let err = svc.clone().oneshot(7).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<RateLimited>(),
        Some(&RateLimited::new(SEC))
    );
    assert_eq!(svc.oneshot(8).await.unwrap(), 2, "another key");
    assert_eq!(calls.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn layer_order_open_breaker_spares_the_limiter_and_denials_spare_the_breaker() {
    let limiter = RateLimiter::builder(TokenBucket::new(1, 0.001).unwrap())
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let b = breaker(1, 5 * SEC);
    // builder calls in "wrong" order: the pipeline order does not change
    let layer = ResilienceLayer::builder()
        .rate_limit(limiter.clone(), |_: &u32| 0_u8)
        .circuit_breaker(b.clone())
        .build()
        .unwrap();
    let (svc, _) = upstream(0);
    let svc = layer.layer(svc);
    b.force_open();
    for _ in 0..3 {
        assert!(
            svc.clone()
                .oneshot(0)
                .await
                .unwrap_err()
                .is::<CircuitOpen>()
        );
    }
    assert_eq!(limiter.quota(&0).0, 1, "an open breaker charges nothing");
    b.reset();
    assert!(svc.clone().oneshot(0).await.is_ok());
    for _ in 0..3 {
        assert!(
            svc.clone()
                .oneshot(0)
                .await
                .unwrap_err()
                .is::<RateLimited>()
        );
    }
    assert_eq!(b.state(), CircuitState::Closed, "denials record nothing");
}

#[tokio::test(start_paused = true)]
async fn a_hung_call_is_retried_after_its_attempt_timeout() {
    let (first_hangs, _) = answering_the_call_number(
        &FaultLayer::builder()
            .timeout(1.0)
            .only_calls(0, 1)
            .build()
            .unwrap(),
    );
    let clock = TokioClock::new();
    let layer = ResilienceLayer::builder()
        .retry(policy(3, SEC))
        .attempt_timeout(SEC)
        .build()
        .unwrap();
    assert_eq!(layer.layer(first_hangs).oneshot(0).await.unwrap(), 2);
    assert_eq!(clock.now(), 2 * SEC, "1 s timeout + 1 s backoff");
}

#[tokio::test(start_paused = true)]
async fn a_deadline_ends_the_request_with_timed_out() {
    let (svc, calls) = upstream(u32::MAX);
    let clock = TokioClock::new();
    let layer = ResilienceLayer::builder()
        .retry(
            RetryPolicy::builder()
                .max_attempts(10)
                .base_delay(SEC)
                .backoff(Backoff::Constant)
                .jitter(Jitter::None)
                .build()
                .unwrap(),
        )
        .deadline(Duration::from_millis(2500))
        .build()
        .unwrap();
    let err = layer.layer(svc).oneshot(0).await.unwrap_err();
    assert_eq!(err.downcast_ref::<TimedOut>(), Some(&TimedOut::new(3)));
    assert_eq!(calls.calls(), 3);
    assert_eq!(clock.now(), 2 * SEC);

    // a hung call is cut at the deadline itself
    let (svc, _) = hung();
    let layer = ResilienceLayer::builder()
        .deadline(Duration::from_millis(2500))
        .build()
        .unwrap();
    let start = clock.now();
    let err = layer.layer(svc).oneshot(0).await.unwrap_err();
    assert!(err.is::<TimedOut>());
    assert_eq!(clock.now() - start, Duration::from_millis(2500));
}

#[tokio::test(start_paused = true)]
async fn a_hung_half_open_probe_times_out_and_frees_its_slot() {
    let b = breaker(1, SEC);
    b.force_open();
    tokio::time::advance(SEC).await;
    let (svc, calls) = hung();
    let layer = ResilienceLayer::builder()
        .circuit_breaker(b.clone())
        .attempt_timeout(SEC)
        .build()
        .unwrap();
    let svc = layer.layer(svc);
    let err = svc.clone().oneshot(0).await.unwrap_err();
    assert!(err.is::<TimedOut>(), "the probe timed out: {err}");
    assert_eq!(
        b.state(),
        CircuitState::Open,
        "a timed-out probe is a failure: reopened"
    );
    tokio::time::advance(SEC).await;
    let probe = tokio::spawn(svc.clone().oneshot(0));
    tokio::task::yield_now().await;
    assert_eq!(calls.calls(), 2, "a new probe got the slot");
    probe.abort();
    let _ = probe.await;
    let third = svc.oneshot(0);
    tokio::pin!(third);
    assert!(
        futures_ready(&mut third).is_none(),
        "the aborted probe's slot was freed"
    );
    assert_eq!(calls.calls(), 3);
}

/// Polls once; `Some` if already finished.
fn futures_ready<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match std::pin::Pin::new(f).poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

#[tokio::test(start_paused = true)]
async fn async_executor_matches_the_sync_scenarios() {
    let clock = TokioClock::new();
    let exec = AsyncResilientExecutor::builder()
        .retry(policy(3, SEC))
        .build()
        .unwrap();
    let calls = AtomicU32::new(0);
    let result = exec
        .run(&(), || {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            async move { if n < 3 { Err(n) } else { Ok(n) } }
        })
        .await;
    assert_eq!(result, Ok(3));
    assert_eq!(clock.now(), 3 * SEC);

    let exec = AsyncResilientExecutor::builder()
        .retry(policy(2, SEC / 2))
        .build()
        .unwrap();
    let result: Result<(), _> = exec.run(&(), || async { Err("down") }).await;
    assert_eq!(
        result,
        Err(Error::RetryExhausted {
            attempts: 2,
            last: "down"
        })
    );

    let limiter = RateLimiter::builder(TokenBucket::new(1, 1.0).unwrap())
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let exec = AsyncResilientExecutor::builder()
        .limiter(limiter)
        .breaker(breaker(2, 5 * SEC))
        .build()
        .unwrap();
    assert_eq!(exec.run(&"k", || async { Ok::<_, ()>(1) }).await, Ok(1));
    assert!(matches!(
        exec.run(&"k", || async { Ok::<_, ()>(1) }).await,
        Err(Error::RateLimited(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn cancelled_async_runs_release_their_half_open_permits() {
    let b = breaker(1, SEC);
    b.force_open();
    tokio::time::advance(SEC).await;
    let exec = AsyncResilientExecutor::builder()
        .breaker(b.clone())
        .build()
        .unwrap();
    for _ in 0..100 {
        let run = exec.run(&(), std::future::pending::<Result<(), ()>>);
        tokio::pin!(run);
        assert!(futures_ready(&mut run).is_none()); // holds the probe slot now
    } // dropped: cancelled
    let result = exec.run(&(), || async { Ok::<_, ()>(()) }).await;
    assert_eq!(result, Ok(()), "the slot was free for a real probe");
    assert_eq!(b.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn not_replayable_requests_are_not_retried_through_the_layer() {
    let (svc, calls) = upstream(u32::MAX);
    let layer = ResilienceLayer::builder()
        .retry(policy(3, SEC))
        .clone_request(|_: &u32| None)
        .build()
        .unwrap();
    let err = layer.layer(svc).oneshot(0).await.unwrap_err();
    assert!(err.is::<std::io::Error>());
    assert_eq!(calls.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_requests_cancelled_at_random_points_leak_nothing() {
    use limitpal::RetryBudget;
    use limitpal::rand::RngCore;

    let max_calls = 3;
    let b = CircuitBreaker::builder()
        .failure_threshold(2)
        .recovery_timeout(SEC)
        .half_open_max_calls(max_calls)
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let budget = RetryBudget::new(10 * SEC, 1, 0.5).unwrap();
    let layer = ResilienceLayer::builder()
        .circuit_breaker(b.clone())
        .retry(policy(3, Duration::from_millis(10)))
        .budget(budget.clone())
        .attempt_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    // the upstream answers after 0-49 ms: success, failure, or never
    let upstream = service_fn(|n: u32| async move {
        tokio::time::sleep(Duration::from_millis(u64::from(n % 50))).await;
        match n % 3 {
            0 => Ok(n),
            1 => Err(std::io::Error::other("failed")),
            _ => std::future::pending().await,
        }
    });
    let svc = layer.layer(upstream);
    let mut rng = limitpal::RetryRng::new(7);
    let clock = TokioClock::new();
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    for i in 0..10_000_u32 {
        if i % 500 == 0 {
            b.force_open();
            tokio::time::advance(SEC).await; // half-open: the next requests hold probe slots
        }
        if b.state() == CircuitState::HalfOpen {
            // every earlier request was dropped: all probe slots of this epoch must be free
            let probes: Vec<_> = (0..max_calls).map(|_| b.try_acquire()).collect();
            assert!(
                probes.iter().all(Result::is_ok),
                "a probe slot leaked at request {i}"
            );
        }
        let n = u32::try_from(rng.next_u64() % 1000).unwrap();
        let mut future = Box::pin(svc.clone().oneshot(n));
        for _ in 0..rng.next_u64() % 4 {
            if future.as_mut().poll(&mut cx).is_ready() {
                break;
            }
            tokio::time::advance(Duration::from_millis(rng.next_u64() % 40)).await;
        }
        drop(future); // cancelled wherever it was
    }
    // every probe slot is free again
    b.force_open();
    tokio::time::advance(SEC).await;
    let probes: Vec<_> = (0..max_calls).map(|_| b.try_acquire().unwrap()).collect();
    assert!(
        b.try_acquire().is_err(),
        "exactly {max_calls} slots, none leaked"
    );
    for p in probes {
        p.success();
    }
    assert_eq!(
        b.state(),
        CircuitState::Closed,
        "and the breaker still works"
    );
    // once the budget's window has passed, only its floor remains: nothing is held
    tokio::time::advance(11 * SEC).await;
    assert_eq!(budget.available(clock.now()), 10);
}

/// `breaker` and `circuit_breaker` are one setter under two names on the layer and on both
/// executors: each name puts the breaker in the pipeline (an open breaker refuses the call,
/// a success is recorded in it).
#[tokio::test(start_paused = true)]
async fn breaker_and_circuit_breaker_name_the_same_stage_everywhere() {
    let (b1, b2) = (breaker(1, 5 * SEC), breaker(1, 5 * SEC));
    for layer in [
        ResilienceLayer::builder()
            .breaker(b1.clone())
            .build()
            .unwrap(),
        ResilienceLayer::builder()
            .circuit_breaker(b2.clone())
            .build()
            .unwrap(),
    ] {
        let (svc, calls) = upstream(1);
        let svc = layer.layer(svc);
        assert!(svc.clone().oneshot(0).await.is_err(), "the one failure");
        let refused = svc.clone().oneshot(0).await.unwrap_err();
        assert!(refused.is::<CircuitOpen>(), "{refused}");
        assert_eq!(calls.calls(), 1, "the open breaker made no call");
    }
    assert_eq!(b1.state(), CircuitState::Open);
    assert_eq!(b2.state(), CircuitState::Open);

    let (b3, b4) = (breaker(1, 5 * SEC), breaker(1, 5 * SEC));
    for exec in [
        AsyncResilientExecutor::<()>::builder()
            .breaker(b3.clone())
            .build()
            .unwrap(),
        AsyncResilientExecutor::<()>::builder()
            .circuit_breaker(b4.clone())
            .build()
            .unwrap(),
    ] {
        let failed = exec
            .run(&(), || async {
                Err::<(), _>(std::io::Error::other("down"))
            })
            .await;
        assert!(matches!(failed, Err(Error::Failed(_))), "{failed:?}");
        let refused = exec
            .run(&(), || async { Ok::<_, std::io::Error>(()) })
            .await;
        assert!(matches!(refused, Err(Error::CircuitOpen(_))), "{refused:?}");
    }
    assert_eq!(b3.state(), CircuitState::Open);
    assert_eq!(b4.state(), CircuitState::Open);
}

/// The layer's builder is the executors' pipeline builder: `retry_if`, named as on the
/// executors, decides which of the inner service's errors are retried.
#[tokio::test(start_paused = true)]
async fn the_layer_takes_retry_if_like_the_executors() {
    for (retry_timeouts_only, calls_made) in [(true, 1), (false, 3)] {
        let layer = ResilienceLayer::builder()
            .retry(policy(3, SEC))
            .retry_if(move |e: &BoxError| {
                e.to_string().contains("timed out") || !retry_timeouts_only
            })
            .build()
            .unwrap();
        let (svc, calls) = upstream(2);
        let answer = layer.layer(svc).oneshot(0).await;
        assert_eq!(calls.calls(), calls_made);
        if retry_timeouts_only {
            let failed = answer.unwrap_err();
            assert_eq!(failed.to_string(), "failure 1", "not retried: {failed}");
        } else {
            assert_eq!(answer.unwrap(), 3, "the third call answers");
        }
    }
}

/// `run_with_key(None, ..)` runs the pipeline without its limiter (a caller that computes
/// its key only when `uses_key()` says it is used); `Some(key)` is `run(&key, ..)`.
#[tokio::test(start_paused = true)]
async fn a_run_without_a_key_skips_the_limiter_and_nothing_else() {
    let limiter = RateLimiter::builder(TokenBucket::new(1, 1.0).unwrap())
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let b = breaker(1, 5 * SEC);
    let exec = AsyncResilientExecutor::builder()
        .limiter(limiter)
        .breaker(b.clone())
        .build()
        .unwrap();
    assert!(exec.has_limiter());
    for _ in 0..3 {
        let ran = exec.run_with_key(None, || async { Ok::<_, ()>(1) }).await;
        assert_eq!(ran, Ok(1), "no key: never limited");
    }
    assert_eq!(
        exec.run_with_key(Some(&"k"), || async { Ok::<_, ()>(2) })
            .await,
        Ok(2)
    );
    assert!(matches!(
        exec.run_with_key(Some(&"k"), || async { Ok::<_, ()>(3) })
            .await,
        Err(Error::RateLimited(_))
    ));
    let failed = exec
        .run_once_with_key(None, async { Err::<(), _>(()) })
        .await;
    assert!(matches!(failed, Err(Error::Failed(()))), "{failed:?}");
    let refused = exec.run_with_key(None, || async { Ok::<_, ()>(4) }).await;
    assert!(
        matches!(refused, Err(Error::CircuitOpen(_))),
        "the breaker still applies: {refused:?}"
    );
    assert!(exec.uses_key());
    let bare = AsyncResilientExecutor::<()>::builder().build().unwrap();
    assert!(!bare.has_limiter() && !bare.uses_key());
    // a per-key stage needs the key too, limiter or not
    let per_key = AsyncResilientExecutor::<u32>::builder()
        .circuit_breaker_per(
            limitpal::KeyedCircuitBreaker::<u32>::builder()
                .build()
                .unwrap(),
            |key: &u32| *key,
        )
        .build()
        .unwrap();
    assert!(!per_key.has_limiter() && per_key.uses_key());
}

/// `circuit_breaker_per`: one breaker per host found in the request. Host 1 always fails;
/// its breaker opens and its later requests are refused without a call, while hosts 0 and 2
/// answer every request.
#[tokio::test(start_paused = true)]
async fn the_layer_keeps_one_breaker_per_host() {
    let breakers = limitpal::KeyedCircuitBreaker::builder()
        .failure_threshold(2)
        .recovery_timeout(60 * SEC)
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let calls = std::sync::Arc::new([AtomicU32::new(0), AtomicU32::new(0), AtomicU32::new(0)]);
    let seen = std::sync::Arc::clone(&calls);
    let upstream = service_fn(move |req: u32| {
        let host = (req % 3) as usize;
        seen[host].fetch_add(1, Ordering::SeqCst);
        async move {
            if host == 1 {
                Err::<u32, BoxError>("host 1 is down".into())
            } else {
                Ok(req)
            }
        }
    });
    let svc = ResilienceLayer::builder()
        .circuit_breaker_per(breakers.clone(), |req: &u32| req % 3)
        .build()
        .unwrap()
        .layer(upstream);
    let mut refused = [0_u32; 3];
    for req in 0..30_u32 {
        match svc.clone().oneshot(req).await {
            Ok(answer) => assert_eq!(answer, req),
            Err(e) if e.is::<CircuitOpen>() => refused[(req % 3) as usize] += 1,
            Err(e) => assert_eq!(req % 3, 1, "only host 1 fails: {e}"),
        }
    }
    assert_eq!(refused, [0, 8, 0], "host 1: 2 failures, then 8 refusals");
    assert_eq!(
        calls[1].load(Ordering::SeqCst),
        2,
        "its breaker spared host 1 the rest"
    );
    assert_eq!(calls[0].load(Ordering::SeqCst), 10);
    assert_eq!(breakers.state(&1), CircuitState::Open);
    assert_eq!(breakers.state(&0), CircuitState::Closed);
}

/// `bulkhead_per` on the layer and `circuit_breaker_per` / `bulkhead_per` on the executor: a
/// tenant whose slot is taken is refused, another tenant is not.
#[tokio::test(start_paused = true)]
async fn per_key_bulkheads_through_the_layer_and_the_executor() {
    let tenants: limitpal::KeyedBulkhead<u32> =
        limitpal::KeyedBulkhead::builder(1).build().unwrap();
    let svc = ResilienceLayer::builder()
        .bulkhead_per(tenants.clone(), |req: &u32| req / 100)
        .build()
        .unwrap()
        .layer(service_fn(|req: u32| async move { Ok::<_, BoxError>(req) }));
    let held = tenants.try_acquire(&1).unwrap(); // tenant 1's one slot
    let refused = svc.clone().oneshot(101).await.unwrap_err();
    assert!(refused.is::<limitpal::BulkheadFull>(), "{refused}");
    assert_eq!(
        svc.clone().oneshot(201).await.unwrap(),
        201,
        "tenant 2 is not held up"
    );
    drop(held);
    assert_eq!(svc.oneshot(102).await.unwrap(), 102);

    let breakers = limitpal::KeyedCircuitBreaker::builder()
        .failure_threshold(1)
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let exec = AsyncResilientExecutor::builder()
        .circuit_breaker_per(breakers.clone(), |host: &&str| (*host).to_owned())
        .bulkhead_per(tenants.clone(), |host: &&str| u32::from(host.len() == 1))
        .build()
        .unwrap();
    let failed = exec.run(&"b", || async { Err::<(), _>(()) }).await;
    assert!(matches!(failed, Err(Error::Failed(()))), "{failed:?}");
    let refused = exec.run(&"b", || async { Ok::<_, ()>(()) }).await;
    assert!(matches!(refused, Err(Error::CircuitOpen(_))), "{refused:?}");
    assert_eq!(
        exec.run(&"cc", || async { Ok::<_, ()>(7) }).await,
        Ok(7),
        "another host"
    );
    let held = tenants.try_acquire(&1).unwrap();
    let full = exec.run(&"c", || async { Ok::<_, ()>(()) }).await;
    assert!(matches!(full, Err(Error::BulkheadFull(_))), "{full:?}");
    drop(held);
    assert_eq!(breakers.state("b"), CircuitState::Open);
}

/// `adaptive_limit_per` on the layer and the executor: the failing host's limit falls with
/// each classified failure, the healthy host keeps its own.
#[tokio::test(start_paused = true)]
async fn per_key_adaptive_limits_through_the_layer_and_the_executor() {
    use limitpal::concurrency::{Aimd, KeyedAdaptiveLimit};
    let limits: KeyedAdaptiveLimit<u32> = KeyedAdaptiveLimit::builder(Aimd::new())
        .initial_limit(10)
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let svc = ResilienceLayer::builder()
        .adaptive_limit_per(limits.clone(), |req: &u32| req % 2)
        .build()
        .unwrap()
        .layer(service_fn(|req: u32| async move {
            if req % 2 == 1 {
                Err::<u32, BoxError>("host 1 is overloaded".into())
            } else {
                Ok(req)
            }
        }));
    for req in 0..10_u32 {
        let answer = svc.clone().oneshot(req).await;
        assert_eq!(answer.is_ok(), req % 2 == 0, "{answer:?}");
        tokio::time::advance(Duration::from_millis(10)).await;
    }
    assert_eq!(limits.limit(&1), 5, "five failures: 10 x 0.9^5");
    assert_eq!(limits.limit(&0), 10, "host 0 keeps its limit");

    let exec = AsyncResilientExecutor::builder()
        .adaptive_limit_per(limits.clone(), |host: &u32| *host)
        .build()
        .unwrap();
    for _ in 0..3 {
        let failed = exec.run(&3, || async { Err::<(), _>(()) }).await;
        assert!(matches!(failed, Err(Error::Failed(()))), "{failed:?}");
        tokio::time::advance(Duration::from_millis(10)).await;
    }
    assert_eq!(limits.limit(&3), 7, "10 x 0.9^3");
    assert_eq!(exec.run(&0, || async { Ok::<_, ()>(1) }).await, Ok(1));
    assert_eq!(limits.limit(&0), 10);
}

/// A classifier that notes the `pushback` flag of each `verdict_with` and says success.
#[derive(Clone, Default)]
struct NotesPushback(std::sync::Arc<std::sync::Mutex<Vec<bool>>>);

impl limitpal::Classify<u32, ()> for NotesPushback {
    fn classify(&self, _: Result<&u32, &()>) -> limitpal::Outcome {
        limitpal::Outcome::Success
    }

    fn verdict_with(&self, result: Result<&u32, &()>, pushback: bool) -> limitpal::Verdict {
        self.0.lock().unwrap().push(pushback);
        self.verdict(result)
    }
}

/// The pipeline tells its classifier whether a result's wait will be held (only with a
/// limiter in the run and `respect_pushback` on), so an HTTP classifier can skip reading the
/// headers of a `2xx` that nothing would hold.
#[tokio::test(start_paused = true)]
async fn the_classifier_learns_whether_pushback_will_be_held() {
    let limiter = || {
        RateLimiter::builder(TokenBucket::new(10, 1.0).unwrap())
            .clock(TokioClock::new())
            .build()
            .unwrap()
    };
    let notes = NotesPushback::default();
    let with_limiter = AsyncResilientExecutor::builder()
        .limiter(limiter())
        .classifier(notes.clone())
        .build()
        .unwrap();
    let without = AsyncResilientExecutor::<&str>::builder()
        .classifier(notes.clone())
        .build()
        .unwrap();
    let ignoring = AsyncResilientExecutor::builder()
        .limiter(limiter())
        .respect_pushback(false)
        .classifier(notes.clone())
        .build()
        .unwrap();
    for exec in [&with_limiter, &without, &ignoring] {
        assert_eq!(exec.run(&"k", || async { Ok::<u32, ()>(1) }).await, Ok(1));
    }
    // a run without its key skips the limiter: nothing to hold either
    let _ = with_limiter
        .run_with_key(None, || async { Ok::<u32, ()>(1) })
        .await;
    assert_eq!(*notes.0.lock().unwrap(), [true, false, false, false]);
}
