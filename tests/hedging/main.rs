//! Hedging and fallback through `ResilienceLayer`, `HedgeLayer` and the executors, under
//! paused tokio time: when a hedge fires, who wins, what the losers see, what the budget
//! allows, which errors a fallback answers.

#![cfg(feature = "tower")]
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

#[allow(dead_code)] // the example's `main` and plot are not used here
#[path = "../../examples/hedging.rs"]
mod example;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use limitpal::tower::{AsyncResilientExecutor, HedgeLayer, ResilienceLayer, TokioClock};
use limitpal::{
    Bulkhead, CircuitBreaker, CircuitOpen, Clock, Error, Hedge, Jitter, ManualClock, RateLimited,
    RateLimiter, ResilientExecutor, RetryBudget, RetryPolicy, TokenBucket,
};
use tower::{BoxError, Layer, Service, ServiceExt, service_fn};

const MS: Duration = Duration::from_millis(1);

/// What the upstream saw: when each call started, how many ended, how many were dropped
/// before they ended, how many run now.
#[derive(Default)]
struct Seen {
    started: Mutex<Vec<Duration>>,
    finished: AtomicU32,
    dropped: AtomicU32,
    live: AtomicU32,
}

impl Seen {
    fn calls(&self) -> usize {
        self.started.lock().unwrap().len()
    }
}

/// Counts a call as dropped unless it finished.
struct Call {
    seen: Arc<Seen>,
    done: bool,
}

impl Drop for Call {
    fn drop(&mut self) {
        self.seen.live.fetch_sub(1, Ordering::SeqCst);
        if !self.done {
            self.seen.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// An upstream whose `n`-th call (from 1) takes `latency(n)` and answers `n`.
fn upstream<Req: Send + 'static>(
    latency: impl Fn(u32) -> Duration + Send + Sync + 'static,
) -> (
    impl Service<Req, Response = u32, Error = BoxError, Future: Send> + Clone,
    Arc<Seen>,
) {
    let seen = Arc::new(Seen::default());
    let origin = TokioClock::new();
    let latency = Arc::new(latency);
    let svc = {
        let seen = Arc::clone(&seen);
        service_fn(move |_: Req| {
            let seen = Arc::clone(&seen);
            let n = {
                let mut started = seen.started.lock().unwrap();
                started.push(origin.now());
                u32::try_from(started.len()).unwrap()
            };
            seen.live.fetch_add(1, Ordering::SeqCst);
            let wait = latency(n);
            async move {
                let mut call = Call { seen, done: false };
                tokio::time::sleep(wait).await;
                call.done = true;
                call.seen.finished.fetch_add(1, Ordering::SeqCst);
                Ok::<u32, BoxError>(n)
            }
        })
    };
    (svc, seen)
}

fn slow_first(n: u32) -> Duration {
    if n == 1 { 500 * MS } else { 10 * MS }
}

#[tokio::test(start_paused = true)]
async fn a_slow_call_is_hedged_once_at_the_delay_and_the_loser_is_dropped() {
    let (svc, seen) = upstream::<u32>(slow_first);
    let layer = ResilienceLayer::builder()
        .hedge(Hedge::after(50 * MS))
        .build()
        .unwrap();
    let start = TokioClock::new();
    let answer = layer.layer(svc).oneshot(7).await.unwrap();
    assert_eq!(answer, 2, "the hedge answered first");
    assert_eq!(
        start.now(),
        60 * MS,
        "hedged at 50 ms, answered 10 ms later"
    );
    assert_eq!(*seen.started.lock().unwrap(), vec![Duration::ZERO, 50 * MS]);
    assert_eq!(
        seen.dropped.load(Ordering::SeqCst),
        1,
        "the slow call was dropped"
    );
    assert_eq!(seen.live.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_fast_call_is_never_hedged() {
    let (svc, seen) = upstream::<u32>(|_| 49 * MS);
    let svc = ResilienceLayer::builder()
        .hedge(Hedge::after(50 * MS).max_hedges(3))
        .build()
        .unwrap()
        .layer(svc);
    for _ in 0..5 {
        svc.clone().oneshot(0).await.unwrap();
    }
    assert_eq!(seen.calls(), 5);
    assert_eq!(seen.dropped.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn max_hedges_spaces_the_hedges_by_the_delay_and_stops_there() {
    // every call takes 1 s: three hedges, 100 ms apart, then the first call answers
    let (svc, seen) = upstream::<u32>(|_| 1000 * MS);
    let svc = ResilienceLayer::builder()
        .hedge(Hedge::after(100 * MS).max_hedges(3))
        .build()
        .unwrap()
        .layer(svc);
    let start = TokioClock::new();
    assert_eq!(svc.oneshot(0).await.unwrap(), 1);
    assert_eq!(start.now(), 1000 * MS);
    assert_eq!(
        *seen.started.lock().unwrap(),
        vec![Duration::ZERO, 100 * MS, 200 * MS, 300 * MS]
    );
    assert_eq!(seen.dropped.load(Ordering::SeqCst), 3);
}

// The layer keeps one timer per attempt: set for the hedge first, then for the attempt
// timeout. These pin down both orders.

/// `svc` behind a layer that hedges after 100 ms and bounds each call by `timeout`.
fn hedged_with_timeout<S, Req>(
    svc: S,
    timeout: Duration,
) -> impl Service<Req, Response = u32, Error = BoxError> + Clone
where
    S: Service<Req, Response = u32, Error = BoxError, Future: Send> + Clone + Send + 'static,
    Req: Clone + Send + 'static,
{
    ResilienceLayer::builder()
        .hedge(Hedge::after(100 * MS))
        .attempt_timeout(timeout)
        .build()
        .unwrap()
        .layer(svc)
}

#[tokio::test(start_paused = true)]
async fn the_attempt_timeout_still_bounds_a_hedged_call() {
    // the hedge at 100 ms answers at 250 ms, inside the primary's 300 ms timeout
    let (svc, seen) = upstream::<u32>(|n| if n == 1 { 1000 * MS } else { 150 * MS });
    let svc = hedged_with_timeout(svc, 300 * MS);
    let start = TokioClock::new();
    assert_eq!(svc.clone().oneshot(0).await.unwrap(), 2);
    assert_eq!(start.now(), 250 * MS);

    // every call slow: the primary times out at 300 ms, its hedge (started at 100 ms, with
    // a timeout of its own) at 400 ms, and the run fails then
    let (svc, seen_slow) = upstream::<u32>(|_| 1000 * MS);
    let svc = hedged_with_timeout(svc, 300 * MS);
    let start = TokioClock::new();
    let failed = svc.oneshot(0).await;
    assert!(failed.is_err(), "both calls timed out: {failed:?}");
    assert_eq!(start.now(), 400 * MS);
    assert_eq!(
        *seen_slow.started.lock().unwrap(),
        vec![Duration::ZERO, 100 * MS]
    );
    assert_eq!(seen_slow.dropped.load(Ordering::SeqCst), 2);
    assert_eq!(seen.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_attempt_timeout_shorter_than_the_hedge_delay_leaves_no_hedge() {
    let (svc, seen) = upstream::<u32>(|_| 1000 * MS);
    let svc = hedged_with_timeout(svc, 50 * MS);
    let start = TokioClock::new();
    assert!(svc.oneshot(0).await.is_err());
    assert_eq!(start.now(), 50 * MS, "timed out at the attempt timeout");
    assert_eq!(seen.calls(), 1, "never hedged");
}

#[tokio::test(start_paused = true)]
async fn the_executor_hedges_the_same_way() {
    let calls = Arc::new(AtomicU32::new(0));
    let exec = AsyncResilientExecutor::<()>::builder()
        .hedge(Hedge::after(50 * MS))
        .build()
        .unwrap();
    let start = TokioClock::new();
    let answer = exec
        .run(&(), || {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                tokio::time::sleep(slow_first(n)).await;
                Ok::<u32, std::io::Error>(n)
            }
        })
        .await
        .unwrap();
    assert_eq!(answer, 2);
    assert_eq!(start.now(), 60 * MS);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn run_once_is_never_hedged() {
    let exec = AsyncResilientExecutor::<()>::builder()
        .hedge(Hedge::after(MS))
        .build()
        .unwrap();
    let start = TokioClock::new();
    let answer = exec
        .run_once(&(), async {
            tokio::time::sleep(100 * MS).await;
            Ok::<u32, std::io::Error>(1)
        })
        .await;
    assert_eq!(answer.ok(), Some(1));
    assert_eq!(start.now(), 100 * MS);
}

#[cfg(feature = "http")]
mod http_methods {
    use super::*;
    use http::Request;
    use limitpal::tower::http::{idempotent, replay_idempotent};

    #[tokio::test(start_paused = true)]
    async fn hedge_if_idempotent_hedges_a_get_and_never_a_post() {
        for (method, calls) in [("GET", 2), ("PUT", 2), ("POST", 1), ("PATCH", 1)] {
            let (svc, seen) = upstream::<Request<()>>(slow_first);
            let svc = ResilienceLayer::builder()
                .hedge(Hedge::after(50 * MS))
                .hedge_if(idempotent)
                .build()
                .unwrap()
                .layer(svc);
            let req = Request::builder()
                .method(method)
                .uri("/a")
                .body(())
                .unwrap();
            svc.oneshot(req).await.unwrap();
            assert_eq!(seen.calls(), calls, "{method}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_the_replay_rule_cannot_copy_is_never_hedged() {
        let (svc, seen) = upstream::<Request<()>>(slow_first);
        let svc = ResilienceLayer::builder()
            .hedge(Hedge::after(50 * MS))
            .clone_request(replay_idempotent)
            .build()
            .unwrap()
            .layer(svc);
        let start = TokioClock::new();
        svc.oneshot(Request::post("/a").body(()).unwrap())
            .await
            .unwrap();
        assert_eq!(seen.calls(), 1);
        assert_eq!(start.now(), 500 * MS, "waited for the one call");
    }
}

#[tokio::test(start_paused = true)]
async fn the_standalone_layer_hedges_what_hedge_if_accepts() {
    let (svc, seen) = upstream::<&'static str>(|n| if n == 1 { 500 * MS } else { 10 * MS });
    let layer = HedgeLayer::new(Hedge::after(20 * MS))
        .unwrap()
        .hedge_if(|path: &&str| path.starts_with("/get"));
    let svc = layer.layer(svc);
    assert_eq!(svc.clone().oneshot("/get/1").await.unwrap(), 2);
    assert_eq!(seen.calls(), 2);
    // call 3 is the only call of a request that may not be hedged: it takes 10 ms
    assert_eq!(svc.oneshot("/post/1").await.unwrap(), 3);
    assert_eq!(seen.calls(), 3);
    assert!(HedgeLayer::new(Hedge::after(MS).max_hedges(0)).is_err());
}

/// With a 10 % budget and every call slow, hedges and retries together stay within 10 % of
/// the requests plus the budget's floor.
#[tokio::test(start_paused = true)]
async fn hedges_and_retries_share_one_budget() {
    const REQUESTS: u32 = 2_000;
    const FLOOR_PER_SEC: u32 = 2;
    const TTL: Duration = Duration::from_secs(10);
    // every call is slow (200 ms, well past the 10 ms hedge delay); one in four fails
    let (svc, seen) = upstream::<u32>(|_| 200 * MS);
    let failing = tower::service_fn({
        let svc = svc.clone();
        move |req: u32| {
            let call = svc.clone().oneshot(req);
            async move {
                match call.await {
                    Ok(n) if n % 4 == 0 => Err(std::io::Error::other("failed")),
                    Ok(n) => Ok(n),
                    Err(e) => Err(std::io::Error::other(e.to_string())),
                }
            }
        }
    });
    let budget = RetryBudget::new(TTL, FLOOR_PER_SEC, 0.1).unwrap();
    let svc = ResilienceLayer::builder()
        .hedge(Hedge::after(10 * MS).max_hedges(2))
        .retry(
            RetryPolicy::builder()
                .max_attempts(3)
                .base_delay(MS)
                .jitter(Jitter::None)
                .build()
                .unwrap(),
        )
        .budget(budget)
        .build()
        .unwrap()
        .layer(failing);
    // 2 000 requests over 8 s (one TTL window and a bit): 250 per second, 40 at a time
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..REQUESTS {
        let svc = svc.clone();
        tasks.spawn(async move {
            tokio::time::sleep(Duration::from_millis(u64::from(i) * 4)).await;
            let _ = svc.oneshot(i).await;
        });
    }
    while tasks.join_next().await.is_some() {}
    let extra = u32::try_from(seen.calls()).unwrap() - REQUESTS;
    let floor = FLOOR_PER_SEC * u32::try_from(TTL.as_secs()).unwrap();
    assert!(extra > 0, "some hedges and retries ran");
    assert!(
        extra <= REQUESTS / 10 + floor,
        "{extra} extra attempts for {REQUESTS} requests"
    );
    assert_eq!(seen.live.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_hedge_takes_its_own_slot_and_is_skipped_when_none_is_free() {
    let (svc, seen) = upstream::<u32>(|_| 100 * MS);
    let bulkhead = Bulkhead::new(1).unwrap();
    let svc = ResilienceLayer::builder()
        .hedge(Hedge::after(10 * MS))
        .bulkhead(bulkhead.clone())
        .build()
        .unwrap()
        .layer(svc);
    let start = TokioClock::new();
    assert_eq!(svc.oneshot(0).await.unwrap(), 1);
    assert_eq!(start.now(), 100 * MS);
    assert_eq!(seen.calls(), 1, "the one slot was the primary's: no hedge");
    assert_eq!(bulkhead.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_hedge_is_charged_to_the_limiter_and_skipped_when_it_refuses() {
    let (svc, seen) = upstream::<u32>(slow_first);
    // two tokens: the first request's call and its hedge; the second request's hedge is refused
    let limiter = RateLimiter::builder(TokenBucket::new(3, 0.001).unwrap())
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let svc = ResilienceLayer::builder()
        .rate_limit(limiter.clone(), |_: &u32| "k")
        .hedge(Hedge::after(50 * MS))
        .build()
        .unwrap()
        .layer(svc);
    assert_eq!(svc.clone().oneshot(0).await.unwrap(), 2);
    // the third token: call 3, which is fast, needs no hedge
    assert_eq!(svc.clone().oneshot(0).await.unwrap(), 3);
    assert_eq!(seen.calls(), 3);
    let denied = svc.oneshot(0).await.unwrap_err();
    assert!(denied.is::<RateLimited>(), "{denied}");
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_admits_no_hedge_and_a_failed_primary_waits_for_its_hedge() {
    // the primary fails after 100 ms; its hedge (from 20 ms) answers at 70 ms? no: after the
    // primary's failure the run waits for the hedge, which wins
    let calls = Arc::new(AtomicU32::new(0));
    let svc = service_fn({
        let calls = Arc::clone(&calls);
        move |_: u32| {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if n == 1 {
                    tokio::time::sleep(30 * MS).await;
                    Err::<u32, BoxError>("primary failed".into())
                } else {
                    tokio::time::sleep(50 * MS).await;
                    Ok(n)
                }
            }
        }
    });
    let svc = ResilienceLayer::builder()
        .hedge(Hedge::after(20 * MS))
        .build()
        .unwrap()
        .layer(svc);
    let start = TokioClock::new();
    assert_eq!(svc.oneshot(0).await.unwrap(), 2);
    assert_eq!(
        start.now(),
        70 * MS,
        "the hedge's answer, after the primary failed"
    );

    let breaker = CircuitBreaker::builder()
        .failure_threshold(1)
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let (svc, seen) = upstream::<u32>(slow_first);
    let svc = ResilienceLayer::builder()
        .hedge(Hedge::after(50 * MS))
        .circuit_breaker(breaker.clone())
        .build()
        .unwrap()
        .layer(svc);
    let mut call = Box::pin(svc.oneshot(0));
    // the primary is in flight when the breaker is forced open: the hedge is not admitted
    assert!(futures_poll(&mut call).is_pending());
    breaker.force_open();
    assert_eq!(call.await.unwrap(), 1);
    assert_eq!(seen.calls(), 1);
}

fn futures_poll<F: std::future::Future + Unpin>(f: &mut F) -> std::task::Poll<F::Output> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    std::pin::Pin::new(f).poll(&mut cx)
}

#[tokio::test(start_paused = true)]
async fn a_percentile_hedge_waits_for_its_samples_then_hedges_at_the_percentile() {
    // calls take 10 ms, except every 10th: 1 s (a 10 % tail)
    let (svc, seen) = upstream::<u32>(|n| if n % 10 == 0 { 1000 * MS } else { 10 * MS });
    let hedge = Hedge::percentile(0.5, 20);
    let svc = ResilienceLayer::builder()
        .hedge(hedge.clone())
        .build()
        .unwrap()
        .layer(svc);
    for _ in 0..19 {
        svc.clone().oneshot(0).await.unwrap();
    }
    assert_eq!(seen.calls(), 19, "no hedging before 20 samples");
    assert_eq!(hedge.delay(Duration::ZERO), None);
    svc.clone().oneshot(0).await.unwrap();
    let median = hedge.delay(Duration::ZERO).expect("warm after 20 samples");
    assert!(median >= 10 * MS && median < 12 * MS, "{median:?}");
    let mut slowest = Duration::ZERO;
    for _ in 0..99 {
        let start = TokioClock::new();
        svc.clone().oneshot(0).await.unwrap();
        slowest = slowest.max(start.now());
    }
    // warm: a slow call is hedged at the median (10 ms, to within a bucket) and the hedge,
    // fast, answers ~10 ms later
    assert!(slowest < 30 * MS, "{slowest:?}");
    assert!(seen.calls() > 119, "the slow calls were hedged");
}

/// Drops hedged requests at random points: no bulkhead slot, breaker permit or upstream
/// call outlives them.
#[tokio::test(start_paused = true)]
async fn ten_thousand_random_drops_leak_nothing() {
    let (svc, seen) = upstream::<u32>(|n| Duration::from_millis(u64::from(n % 7) * 10));
    let bulkhead = Bulkhead::new(64).unwrap();
    let breaker = CircuitBreaker::builder()
        .failure_threshold(1_000_000)
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let svc = ResilienceLayer::builder()
        .hedge(Hedge::after(5 * MS).max_hedges(2))
        .bulkhead(bulkhead.clone())
        .circuit_breaker(breaker.clone())
        .build()
        .unwrap()
        .layer(svc);
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let dropped_at = AtomicU64::new(0);
    for _ in 0..10_000 {
        let drop_after = Duration::from_millis(next() % 40);
        let call = svc.clone().oneshot(0);
        if tokio::time::timeout(drop_after, call).await.is_err() {
            dropped_at.fetch_add(1, Ordering::Relaxed);
        }
        assert_eq!(bulkhead.in_flight(), 0);
        assert_eq!(seen.live.load(Ordering::SeqCst), 0);
    }
    assert!(
        dropped_at.load(Ordering::Relaxed) > 1_000,
        "many requests were cut mid-call"
    );
    assert!(
        seen.dropped.load(Ordering::SeqCst) > 1_000,
        "hedged calls were dropped too"
    );
    assert_eq!(breaker.state(), limitpal::CircuitState::Closed);
    // a breaker that leaked half-open probes or permits would refuse here after a forced trip
    breaker.force_open();
    breaker.reset();
    assert!(breaker.try_acquire().is_ok());
}

/// The example's claim, as the README states it: with a 2 % tail of 500 ms calls, hedging
/// cuts p99 to at most 0.2× the unhedged p99 for at most 5 % extra load.
#[test]
fn the_example_hedges_the_tail_away_for_a_few_percent_of_load() {
    let config = example::Config {
        rate: 200,
        seconds: 10,
        ..example::Config::default()
    };
    let run = |strategy| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(example::simulate(config, strategy))
    };
    let plain = run(example::Strategy::None);
    assert_eq!(plain.quantile(0.99), 500 * MS, "the tail is the p99");
    assert!(plain.extra_load.abs() < f64::EPSILON);
    for strategy in [example::Strategy::Fixed, example::Strategy::Percentile] {
        let hedged = run(strategy);
        let p99 = hedged.quantile(0.99);
        assert!(
            p99.as_secs_f64() <= 0.2 * plain.quantile(0.99).as_secs_f64(),
            "{strategy:?}: p99 {p99:?}"
        );
        assert!(
            hedged.extra_load <= 0.05,
            "{strategy:?}: {}",
            hedged.extra_load
        );
        assert!(hedged.extra_load > 0.0, "{strategy:?} hedged nothing");
        assert_eq!(
            hedged.quantile(0.5),
            plain.quantile(0.5),
            "the median is untouched"
        );
    }
}

mod fallback {
    use super::*;

    fn open_breaker<C: Clock>(clock: C) -> CircuitBreaker<C> {
        let breaker = CircuitBreaker::builder()
            .failure_threshold(1)
            .recovery_timeout(Duration::from_secs(30))
            .clock(clock)
            .build()
            .unwrap();
        breaker.force_open();
        breaker
    }

    #[test]
    fn the_sync_executor_falls_back_for_the_errors_it_accepts_only() {
        let clock = ManualClock::new();
        let exec = ResilientExecutor::builder()
            .circuit_breaker(open_breaker(clock.clone()))
            .fallback(|e: &Error<std::io::Error>| match e {
                Error::CircuitOpen(_) => Some("cached"),
                _ => None,
            })
            .clock(clock.clone())
            .build()
            .unwrap();
        assert_eq!(exec.run(&(), || Ok("fresh")).ok(), Some("cached"));

        let limiter = RateLimiter::builder(TokenBucket::new(1, 0.001).unwrap())
            .clock(clock.clone())
            .build()
            .unwrap();
        let exec = ResilientExecutor::builder()
            .limiter(limiter)
            .fallback(|e: &Error<std::io::Error>| match e {
                Error::CircuitOpen(_) => Some("cached"),
                _ => None,
            })
            .clock(clock)
            .build()
            .unwrap();
        assert_eq!(exec.run(&"k", || Ok("fresh")).ok(), Some("fresh"));
        let denied = exec.run(&"k", || Ok("fresh"));
        assert!(matches!(denied, Err(Error::RateLimited(_))), "{denied:?}");
    }

    #[test]
    fn a_fallback_answers_a_failure_and_retries_run_first() {
        let clock = ManualClock::new();
        let exec = ResilientExecutor::builder()
            .retry(
                RetryPolicy::builder()
                    .max_attempts(3)
                    .jitter(Jitter::None)
                    .build()
                    .unwrap(),
            )
            .fallback(|e: &Error<&str>| match e {
                Error::RetryExhausted { attempts, .. } => Some(*attempts * 100),
                _ => None,
            })
            .clock(clock)
            .build()
            .unwrap();
        let mut calls = 0;
        let answer = exec.run(&(), || {
            calls += 1;
            Err::<u32, _>("down")
        });
        assert_eq!(answer, Ok(300));
        assert_eq!(calls, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_layer_and_the_async_executor_fall_back() {
        let (svc, seen) = upstream::<u32>(|_| MS);
        let svc = ResilienceLayer::builder()
            .circuit_breaker(open_breaker(TokioClock::new()))
            .fallback(|e: &Error<BoxError>| match e {
                Error::CircuitOpen(open) => {
                    Some(u32::try_from(open.retry_after.as_secs()).unwrap())
                }
                _ => None,
            })
            .build()
            .unwrap()
            .layer(svc);
        assert_eq!(svc.oneshot(0).await.unwrap(), 30);
        assert_eq!(seen.calls(), 0);

        let exec = AsyncResilientExecutor::<()>::builder()
            .attempt_timeout(10 * MS)
            .fallback(|e: &Error<std::io::Error>| match e {
                Error::TimedOut { attempts } => Some(*attempts),
                _ => None,
            })
            .build()
            .unwrap();
        let answer = exec
            .run(&(), || {
                std::future::pending::<Result<u32, std::io::Error>>()
            })
            .await;
        assert_eq!(answer.ok(), Some(1));
        // the classifier may be set after the fallback: both apply
        let exec = AsyncResilientExecutor::<()>::builder()
            .fallback(|e: &Error<std::io::Error>| match e {
                Error::Failed(_) => Some(0),
                _ => None,
            })
            .retry_if(|_: &std::io::Error| false)
            .build()
            .unwrap();
        let answer = exec
            .run(&(), || async { Err::<u32, _>(std::io::Error::other("x")) })
            .await;
        assert_eq!(answer.ok(), Some(0));
    }

    #[test]
    fn an_open_breakers_fallback_says_when_to_come_back() {
        let clock = ManualClock::new();
        let exec = ResilientExecutor::builder()
            .circuit_breaker(open_breaker(clock.clone()))
            .fallback(|e: &Error<std::io::Error>| match e {
                Error::CircuitOpen(CircuitOpen { retry_after, .. }) => Some(*retry_after),
                _ => None,
            })
            .clock(clock)
            .build()
            .unwrap();
        assert_eq!(
            exec.run(&(), || Ok(Duration::ZERO)).ok(),
            Some(Duration::from_secs(30))
        );
    }
}
