//! Bulkhead and adaptive limit as tower layers and in the async pipeline, under paused time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use limitpal::Clock;
use limitpal::concurrency::{AdaptiveLimit, Aimd};
use limitpal::tower::{
    AdaptiveLimitLayer, AsyncResilientExecutor, BulkheadLayer, ResilienceLayer, TimedOut,
    TokioClock,
};
use limitpal::{
    Bulkhead, BulkheadFull, CircuitBreaker, CircuitOpen, Error, Jitter, RateLimited, RateLimiter,
    RetryPolicy, TokenBucket,
};
use tokio::time::advance;
use tower::{BoxError, Layer, Service, ServiceExt, service_fn};

/// A service answering after `ms` milliseconds of (paused) time.
fn sleeper() -> impl Service<u64, Response = u64, Error = BoxError, Future = impl Send> + Clone {
    service_fn(|ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, BoxError>(ms)
    })
}

#[tokio::test(start_paused = true)]
async fn poll_ready_takes_no_slot_and_call_does() {
    let bulkhead = Bulkhead::new(1).unwrap();
    let mut a = BulkheadLayer::new(bulkhead.clone()).layer(sleeper());
    let mut b = a.clone();
    for _ in 0..100 {
        a.ready().await.unwrap();
        b.ready().await.unwrap();
    }
    assert_eq!(bulkhead.in_flight(), 0, "readiness holds nothing");
    let running = a.call(10);
    assert_eq!(bulkhead.in_flight(), 1, "the slot is taken in call");
    let refused = b.call(10).await.unwrap_err();
    assert_eq!(
        refused.downcast_ref::<BulkheadFull>(),
        Some(&BulkheadFull::new(1))
    );
    assert_eq!(running.await.unwrap(), 10);
    assert_eq!(bulkhead.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_queued_call_runs_when_a_slot_frees_within_max_wait() {
    let bulkhead = Bulkhead::builder(1)
        .queue(1, Duration::from_millis(100))
        .build()
        .unwrap();
    let mut svc = BulkheadLayer::new(bulkhead.clone()).layer(sleeper());
    let clock = TokioClock::new();
    let start = clock.now();
    let first = tokio::spawn(svc.ready().await.unwrap().call(60));
    let second = svc.ready().await.unwrap().call(5);
    assert_eq!(bulkhead.waiting(), 1);
    assert_eq!(second.await.unwrap(), 5);
    assert_eq!(
        clock.now() - start,
        Duration::from_millis(65),
        "waited 60 ms, ran 5 ms"
    );
    assert_eq!(first.await.unwrap().unwrap(), 60);
    assert_eq!((bulkhead.in_flight(), bulkhead.waiting()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_queued_call_gives_up_after_max_wait() {
    let bulkhead = Bulkhead::builder(1)
        .queue(1, Duration::from_millis(30))
        .build()
        .unwrap();
    let mut svc = BulkheadLayer::new(bulkhead.clone()).layer(sleeper());
    let _first = tokio::spawn(svc.ready().await.unwrap().call(1000));
    let clock = TokioClock::new();
    let start = clock.now();
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(err.is::<BulkheadFull>());
    assert_eq!(clock.now() - start, Duration::from_millis(30));
    assert_eq!(bulkhead.waiting(), 0);
}

#[tokio::test(start_paused = true)]
async fn dropped_response_futures_free_their_slot_or_queue_place() {
    let bulkhead = Bulkhead::builder(2)
        .queue(2, Duration::from_secs(10))
        .build()
        .unwrap();
    let mut svc = BulkheadLayer::new(bulkhead.clone()).layer(sleeper());
    let mut futures = Vec::new();
    for _ in 0..4 {
        futures.push(Box::pin(svc.ready().await.unwrap().call(1000)));
    }
    assert_eq!((bulkhead.in_flight(), bulkhead.waiting()), (2, 2));
    // poll each once (two run, two queue), then the clients go away mid-flight
    for future in &mut futures {
        let _ = tokio::time::timeout(Duration::ZERO, future.as_mut()).await;
    }
    drop(futures);
    assert_eq!((bulkhead.in_flight(), bulkhead.waiting()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn in_the_pipeline_the_slot_is_taken_after_the_breaker_and_the_limiter() {
    let bulkhead = Bulkhead::new(1).unwrap();
    let limiter = RateLimiter::builder(TokenBucket::new(1, 0.001).unwrap())
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let breaker = CircuitBreaker::builder()
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let seen = Arc::new(AtomicU32::new(0));
    let observed = Arc::clone(&seen);
    let probe = bulkhead.clone();
    let svc = service_fn(move |_: u32| {
        observed.store(probe.in_flight(), Ordering::SeqCst);
        async { Ok::<_, BoxError>(()) }
    });
    let mut svc = ResilienceLayer::builder()
        .bulkhead(bulkhead.clone())
        .rate_limit(limiter, |_: &u32| ())
        .circuit_breaker(breaker.clone())
        .build()
        .unwrap()
        .layer(svc);
    svc.ready().await.unwrap().call(1).await.unwrap();
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "the call ran holding the slot"
    );
    let denied = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(denied.is::<RateLimited>());
    breaker.force_open();
    let open = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(open.is::<CircuitOpen>());
    assert_eq!(
        bulkhead.in_flight(),
        0,
        "refused requests never held a slot"
    );
}

#[tokio::test(start_paused = true)]
async fn retries_give_the_slot_back_while_they_back_off() {
    let bulkhead = Bulkhead::new(1).unwrap();
    // the first call fails, the rest answer
    let faults = limitpal::tower::fault::FaultLayer::builder()
        .error(1.0, || "503")
        .only_calls(0, 1)
        .build()
        .unwrap();
    let flaky = faults.layer(service_fn(|()| async { Ok::<u32, BoxError>(1) }));
    let policy = RetryPolicy::builder()
        .base_delay(Duration::from_millis(100))
        .jitter(Jitter::None)
        .build()
        .unwrap();
    let mut svc = ResilienceLayer::builder()
        .retry(policy)
        .bulkhead(bulkhead.clone())
        .build()
        .unwrap()
        .layer(flaky);
    let fut = tokio::spawn(svc.ready().await.unwrap().call(()));
    tokio::task::yield_now().await;
    advance(Duration::from_millis(50)).await;
    assert_eq!(
        bulkhead.in_flight(),
        0,
        "no slot held while sleeping between attempts"
    );
    assert_eq!(fut.await.unwrap().unwrap(), 1);
    assert_eq!(faults.plan().calls(), 2, "one failure, one retry");
}

#[tokio::test(start_paused = true)]
async fn the_async_executor_waits_for_a_slot_but_not_past_its_deadline() {
    let bulkhead = Bulkhead::builder(1)
        .queue(1, Duration::from_secs(10))
        .build()
        .unwrap();
    let exec = AsyncResilientExecutor::builder()
        .bulkhead(bulkhead.clone())
        .deadline(Duration::from_millis(40))
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let hog = bulkhead.try_acquire().unwrap();
    let clock = TokioClock::new();
    let start = clock.now();
    let result = exec.run(&(), || async { Ok::<_, ()>(()) }).await;
    assert_eq!(result, Err(Error::TimedOut { attempts: 0 }));
    assert_eq!(clock.now() - start, Duration::from_millis(40));
    // with the slot freed in time it runs
    let exec2 = exec.clone();
    let waiting = tokio::spawn(async move { exec2.run(&(), || async { Ok::<_, ()>(7) }).await });
    tokio::task::yield_now().await;
    drop(hog);
    assert_eq!(waiting.await.unwrap(), Ok(7));
}

#[tokio::test(start_paused = true)]
async fn a_layer_deadline_ends_a_slot_wait_with_timed_out() {
    let bulkhead = Bulkhead::builder(1)
        .queue(1, Duration::from_secs(10))
        .build()
        .unwrap();
    let _hog = bulkhead.try_acquire().unwrap();
    let mut svc = ResilienceLayer::builder()
        .bulkhead(bulkhead)
        .deadline(Duration::from_millis(25))
        .build()
        .unwrap()
        .layer(sleeper());
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(err.is::<TimedOut>(), "{err}");
}

#[tokio::test(start_paused = true)]
async fn the_adaptive_layer_shrinks_on_failures_its_classifier_reports() {
    let limit = AdaptiveLimit::builder(Aimd::new())
        .initial_limit(20)
        .clock(TokioClock::new())
        .build()
        .unwrap();
    // the upstream answers with a status; 503 is an Ok to tower
    let upstream = service_fn(|status: u16| async move { Ok::<_, BoxError>(status) });
    let mut svc = AdaptiveLimitLayer::new(limit.clone())
        .classifier(|r: Result<&u16, &BoxError>| match r {
            Ok(503) | Err(_) => limitpal::Outcome::RETRYABLE,
            Ok(_) => limitpal::Outcome::Success,
        })
        .layer(upstream);
    for _ in 0..5 {
        assert_eq!(svc.ready().await.unwrap().call(503).await.unwrap(), 503);
    }
    // 20 × 0.9^5 = 11.8
    assert_eq!(limit.limit(), 11);
    assert_eq!(svc.ready().await.unwrap().call(200).await.unwrap(), 200);
    assert_eq!(
        limit.limit(),
        11,
        "one call in flight of 11: not busy enough to grow"
    );
}
