//! The pipeline's wait step: `limiter_wait` on `ResilienceLayer` and both executors.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use limitpal::tower::fault::FaultLayer;
use limitpal::tower::{AsyncResilientExecutor, ResilienceLayer, TokioClock};
use limitpal::{
    CircuitBreaker, CircuitOpen, Clock, Error, Jitter, LeakyBucket, ManualClock, RateLimited,
    RateLimiter, ResilientExecutor, RetryPolicy,
};
use tower::{BoxError, Layer, Service, ServiceBuilder, ServiceExt, service_fn};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

/// One request per second, no burst, keyed by the request.
fn per_second() -> RateLimiter<u32, LeakyBucket, TokioClock> {
    RateLimiter::builder(LeakyBucket::new(1, 1.0).unwrap())
        .clock(TokioClock::new())
        .build()
        .unwrap()
}

fn breaker() -> CircuitBreaker<TokioClock> {
    CircuitBreaker::builder()
        .failure_threshold(1)
        .recovery_timeout(10 * SEC)
        .clock(TokioClock::new())
        .build()
        .unwrap()
}

/// Answers the request after recording when it was called; fails the first `failures` calls
/// (a `FaultLayer` whose plan counts the calls, behind the recorder so failed calls are
/// recorded too).
type Calls = Arc<Mutex<Vec<(u32, Duration)>>>;

fn recorder(
    failures: u32,
) -> (
    impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone,
    Calls,
) {
    let start = TokioClock::new();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&calls);
    let faults = FaultLayer::builder()
        .error(if failures == 0 { 0.0 } else { 1.0 }, || {
            std::io::Error::other("upstream failed")
        })
        .only_calls(0, u64::from(failures.max(1)))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .map_request(move |n: u32| {
            seen.lock().unwrap().push((n, start.now()));
            n
        })
        .layer(faults)
        .service(service_fn(|n: u32| async move { Ok::<u32, BoxError>(n) }));
    (svc, calls)
}

#[tokio::test(start_paused = true)]
async fn the_layer_waits_for_quota_instead_of_rejecting() {
    let (upstream, calls) = recorder(0);
    let layer = ResilienceLayer::builder()
        .rate_limit(per_second(), |_: &u32| 0_u32)
        .limiter_wait(5 * SEC)
        .build()
        .unwrap();
    let svc = layer.layer(upstream);
    let tasks: Vec<_> = (0..4)
        .map(|n| {
            let svc = svc.clone();
            tokio::spawn(async move { svc.oneshot(n).await.unwrap() })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let mut times: Vec<_> = calls.lock().unwrap().iter().map(|&(_, t)| t).collect();
    times.sort();
    assert_eq!(times, [Duration::ZERO, SEC, 2 * SEC, 3 * SEC]);
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_fails_fast_without_waiting_or_charging() {
    let limiter = per_second();
    let breaker = breaker();
    let (upstream, calls) = recorder(0);
    let svc = ResilienceLayer::builder()
        .rate_limit(limiter.clone(), |n: &u32| *n)
        .circuit_breaker(breaker.clone())
        .limiter_wait(5 * SEC)
        .build()
        .unwrap()
        .layer(upstream);
    limiter.check(&1).unwrap(); // key 1 would have to wait a second
    breaker.force_open();
    let start = TokioClock::new();
    let error = svc.clone().oneshot(1).await.unwrap_err();
    assert!(error.downcast_ref::<CircuitOpen>().is_some(), "{error}");
    assert_eq!(
        start.now(),
        Duration::ZERO,
        "no wait behind an open breaker"
    );
    assert!(calls.lock().unwrap().is_empty());
    assert_eq!(limiter.check(&2), Ok(()), "key 2 was never charged");
}

#[tokio::test(start_paused = true)]
async fn a_breaker_that_opens_during_the_wait_fails_the_request_and_the_quota_comes_back() {
    let limiter = per_second();
    let breaker = breaker();
    let (upstream, calls) = recorder(0);
    let svc = ResilienceLayer::builder()
        .rate_limit(limiter.clone(), |_: &u32| 0_u32)
        .circuit_breaker(breaker.clone())
        .limiter_wait(5 * SEC)
        .build()
        .unwrap()
        .layer(upstream);
    svc.clone().oneshot(0).await.unwrap(); // takes the quota of t = 0
    let waiting = tokio::spawn(svc.clone().oneshot(1)); // its slot is t = 1 s
    tokio::time::sleep(500 * MS).await;
    breaker.force_open();
    let error = waiting.await.unwrap().unwrap_err();
    assert!(error.downcast_ref::<CircuitOpen>().is_some(), "{error}");
    assert_eq!(calls.lock().unwrap().len(), 1, "the waiter never called");
    // the slot at 1 s was given back: a request now passes at once
    assert_eq!(limiter.check(&0), Ok(()));
}

#[tokio::test(start_paused = true)]
async fn a_wait_holds_no_half_open_probe() {
    let limiter = per_second();
    let breaker = CircuitBreaker::builder()
        .failure_threshold(1)
        .recovery_timeout(SEC)
        .half_open_max_calls(1)
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let (upstream, calls) = recorder(0);
    let svc = ResilienceLayer::builder()
        .rate_limit(limiter.clone(), |n: &u32| *n)
        .circuit_breaker(breaker.clone())
        .limiter_wait(5 * SEC)
        .build()
        .unwrap()
        .layer(upstream);
    breaker.force_open();
    tokio::time::sleep(SEC).await; // the breaker is half-open: one probe at a time
    limiter.check(&1).unwrap(); // key 1 must wait a second for its next slot
    let waiter = tokio::spawn(svc.clone().oneshot(1));
    tokio::task::yield_now().await;
    // the waiter holds no probe: another key's request probes and closes the breaker
    assert_eq!(svc.clone().oneshot(2).await.unwrap(), 2);
    assert_eq!(waiter.await.unwrap().unwrap(), 1);
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls, [(2, SEC), (1, 2 * SEC)]);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_shorter_than_the_wait_is_refused_at_once() {
    let limiter = per_second();
    let (upstream, calls) = recorder(0);
    let svc = ResilienceLayer::builder()
        .rate_limit(limiter.clone(), |_: &u32| 0_u32)
        .limiter_wait(10 * SEC)
        .deadline(500 * MS)
        .build()
        .unwrap()
        .layer(upstream);
    svc.clone().oneshot(0).await.unwrap();
    let start = TokioClock::new();
    let error = svc.clone().oneshot(1).await.unwrap_err();
    let denied = error.downcast_ref::<RateLimited>().unwrap();
    assert_eq!(denied.retry_after, SEC, "the exact wait, not a doomed one");
    assert_eq!(start.now(), Duration::ZERO);
    assert_eq!(calls.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn retries_wait_for_quota_the_same_way() {
    let (upstream, calls) = recorder(2);
    let svc = ResilienceLayer::builder()
        .rate_limit(per_second(), |_: &u32| 0_u32)
        .retry(
            RetryPolicy::builder()
                .max_attempts(3)
                .base_delay(10 * MS)
                .jitter(Jitter::None)
                .build()
                .unwrap(),
        )
        .limiter_wait(5 * SEC)
        .build()
        .unwrap()
        .layer(upstream);
    assert_eq!(svc.oneshot(7).await.unwrap(), 7);
    let times: Vec<_> = calls.lock().unwrap().iter().map(|&(_, t)| t).collect();
    assert_eq!(
        times,
        [Duration::ZERO, SEC, 2 * SEC],
        "each attempt charged and shaped"
    );
}

#[tokio::test(start_paused = true)]
async fn the_async_executor_waits_and_fails_fast_like_the_layer() {
    let limiter = per_second();
    let breaker = breaker();
    let exec = AsyncResilientExecutor::builder()
        .limiter(limiter.clone())
        .breaker(breaker.clone())
        .limiter_wait(5 * SEC)
        .deadline(3 * SEC)
        .build()
        .unwrap();
    let start = TokioClock::new();
    for _ in 0..3 {
        exec.run(&0_u32, || async { Ok::<_, std::io::Error>(()) })
            .await
            .unwrap();
    }
    assert_eq!(start.now(), 2 * SEC);
    // the next slot is 1 s away; the deadline allows 3 s: it waits
    exec.run(&0, || async { Ok::<_, std::io::Error>(()) })
        .await
        .unwrap();
    assert_eq!(start.now(), 3 * SEC);
    breaker.force_open();
    let open = exec.run(&0, || async { Ok::<_, std::io::Error>(()) }).await;
    assert!(matches!(open, Err(Error::CircuitOpen(_))), "{open:?}");
    assert_eq!(start.now(), 3 * SEC, "an open breaker: no wait");
}

#[test]
fn the_sync_executor_waits_through_its_clock() {
    let clock = ManualClock::new();
    let limiter = RateLimiter::builder(LeakyBucket::new(1, 2.0).unwrap())
        .clock(clock.clone())
        .build()
        .unwrap();
    let exec = ResilientExecutor::builder()
        .limiter(limiter.clone())
        .limiter_wait(SEC)
        .clock(clock.clone())
        .build()
        .unwrap();
    for i in 0..4_u32 {
        exec.run(&"k", || Ok::<_, std::io::Error>(())).unwrap();
        assert_eq!(clock.now(), 500 * MS * i);
    }
    // three more reservations queue the key 2 s ahead: beyond the executor's 1 s
    for _ in 0..3 {
        limiter.reserve(&"k", 5 * SEC).unwrap().commit();
    }
    let refused = exec.run(&"k", || Ok::<_, std::io::Error>(()));
    assert_eq!(
        refused.unwrap_err().to_string(),
        Error::<std::io::Error>::RateLimited(RateLimited::new(2 * SEC)).to_string()
    );
    assert_eq!(clock.now(), 1_500 * MS, "refused at once");
}
