//! The public contract of `shared/DESIGN.md` ("Contract" and "Contract, part 2"), written the
//! way it is spelled there: every name, builder call and signature it lists, used as a user
//! would, with the behaviour the contract states asserted. If a rename or a changed bound
//! breaks a line here, it breaks users' code (and tests written against the contract).

#![cfg(feature = "tower")]
#![allow(clippy::unwrap_used)]
// a failed unwrap is a failed test
// the contract lists `Clone` and `Default` for types that are also `Copy` or unit structs
#![allow(clippy::clone_on_copy, clippy::default_constructed_unit_structs)]

use std::sync::Arc;
use std::time::Duration;

use limitpal::tower::{
    CircuitBreakerLayer, FaultLayer, KeyExtractor, RateLimitLayer, ResilienceLayer, RetryExhausted,
    RetryLayer, TimedOut, TokioClock, UntilReady,
};
use limitpal::{
    Algorithm, All, AsyncLimiter, Backoff, BulkheadFull, BulkheadPermit, CallPermit, CheckNError,
    CircuitBreaker, CircuitOpen, CircuitState, Clock, ConfigError, Error, Hedge, Jitter,
    KeyedBulkhead, KeyedCircuitBreaker, LeakyBucket, ManualClock, MonotonicClock, Outcome,
    RateLimited, RateLimiter, Reservation, ResilientExecutor, RetryBudget, RetryPolicy,
    SlidingWindow, TokenBucket,
};
use tower::{BoxError, Layer, ServiceExt, service_fn};

const SEC: Duration = Duration::from_secs(1);

fn shared<T: Clone + Send + Sync + std::fmt::Debug>(_: &T) {}
fn debug<T: std::fmt::Debug>(_: &T) {}

#[test]
fn time() {
    let monotonic = MonotonicClock;
    let copy = monotonic;
    let _default = MonotonicClock::default();
    let _ = (monotonic.clone(), copy.now());

    let clock = ManualClock::new();
    let other = clock.clone();
    let _default = ManualClock::default();
    clock.advance(SEC);
    assert_eq!(other.now(), SEC, "clones share one time");
    clock.set(5 * SEC);
    clock.sleep(2 * SEC); // a ManualClock advances instead of sleeping
    assert_eq!(other.now(), 7 * SEC);
    let arc: Arc<ManualClock> = Arc::new(clock.clone());
    arc.sleep(SEC); // Arc<C> forwards sleep too
    assert_eq!(Clock::now(&arc), 8 * SEC);
    let erased: Arc<dyn Clock> = Arc::new(clock);
    erased.sleep(SEC);
    assert_eq!(erased.now(), 9 * SEC);
}

#[test]
fn errors() {
    fn error<T: std::error::Error + Clone + PartialEq>(_: &T) {}
    let limited = RateLimited::new(SEC);
    assert_eq!(limited.retry_after, SEC);
    error(&limited);
    let open = CircuitOpen::new(2 * SEC);
    assert_eq!(open.retry_after, 2 * SEC);
    error(&open);
    let config: ConfigError = TokenBucket::new(0, 1.0).unwrap_err();
    assert!(!config.to_string().is_empty(), "says which field and why");
    let _ = CheckNError::RateLimited(limited.clone());
    let _ = CheckNError::InsufficientCapacity { max: 3 };

    let all: [Error<&str>; 5] = [
        Error::RateLimited(limited),
        Error::CircuitOpen(open),
        Error::RetryExhausted {
            attempts: 3,
            last: "last",
        },
        Error::Failed("failed"),
        Error::TimedOut { attempts: 2 },
    ];
    let inner: Vec<Option<&str>> = all.into_iter().map(Error::into_inner).collect();
    assert_eq!(inner, [None, None, Some("last"), Some("failed"), None]);
    fn display<E: std::error::Error + std::fmt::Display>(_: &E) {}
    display(&Error::<std::io::Error>::TimedOut { attempts: 1 });
}

#[test]
fn rate_limiting() {
    let bucket = TokenBucket::new(2, 1.0).unwrap();
    let _leaky = LeakyBucket::new(2, 1.0).unwrap();
    let window = SlidingWindow::new(3, SEC).unwrap();
    let both: All<TokenBucket, SlidingWindow> = bucket.and(window);
    let clock = ManualClock::new();
    let limiter = RateLimiter::builder(both)
        .clock(clock.clone())
        .idle_ttl(SEC)
        .max_keys(1000)
        .hasher(std::collections::hash_map::RandomState::new())
        .build()
        .unwrap();
    shared(&limiter);
    let _: RateLimiter<String, All<TokenBucket, SlidingWindow>, ManualClock, _> = limiter.clone();
    assert_eq!(limiter.check("a"), Ok(())); // &str for a String key: allocates only on insert
    assert_eq!(limiter.check_n("a", 0), Ok(()), "n == 0 is Ok");
    assert_eq!(
        limiter.check_n("a", 3),
        Err(CheckNError::InsufficientCapacity { max: 2 })
    );
    assert_eq!(limiter.check("a"), Ok(()));
    assert_eq!(limiter.check("a"), Err(RateLimited::new(SEC)));
    assert_eq!(
        limiter.acquire("a", SEC),
        Ok(()),
        "waits by reservation (ManualClock: advances)"
    );
    assert_eq!(limiter.len(), 1);
    assert!(!limiter.is_empty());

    // the defaults: no turbofish, as HashMap::new
    let plain = RateLimiter::builder(TokenBucket::new(1, 1.0).unwrap())
        .build()
        .unwrap();
    assert_eq!(plain.check(&7_u64), Ok(()));
    let _: &RateLimiter<u64> = &plain;
}

#[tokio::test]
async fn async_limiter() {
    async fn through<L: AsyncLimiter<u64>>(limiter: &L) -> Result<(), RateLimited> {
        limiter.check(&1).await
    }
    let limiter = RateLimiter::builder(TokenBucket::new(1, 1.0).unwrap())
        .build()
        .unwrap();
    assert_eq!(through(&limiter).await, Ok(()));
    assert!(through(&limiter).await.is_err());
}

#[test]
fn circuit_breaker() {
    let _: limitpal::CircuitBreakerBuilder<MonotonicClock> = CircuitBreaker::builder();
    let clock = ManualClock::new();
    let changes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = Arc::clone(&changes);
    let breaker: CircuitBreaker<ManualClock> = CircuitBreaker::builder()
        .failure_threshold(2)
        .failure_rate(0.5, 10, 10 * SEC)
        .slow_call(5 * SEC)
        .recovery_timeout(3 * SEC)
        .half_open_max_calls(1)
        .half_open_success_threshold(1)
        .error_budget(100, 10 * SEC)
        .on_state_change(move |from, to| log.lock().unwrap().push((from, to)))
        .clock(clock.clone())
        .build()
        .unwrap();
    shared(&breaker);
    let permit: CallPermit = breaker.try_acquire().unwrap();
    permit.failure();
    breaker.try_acquire().unwrap().failure();
    assert_eq!(breaker.state(), CircuitState::Open);
    assert_eq!(breaker.try_acquire().unwrap_err().retry_after, 3 * SEC);
    clock.advance(3 * SEC);
    assert_eq!(breaker.state(), CircuitState::HalfOpen, "timeout passed");
    drop(breaker.try_acquire().unwrap()); // dropped: cancelled, its probe slot freed
    breaker.try_acquire().unwrap().success();
    assert_eq!(breaker.state(), CircuitState::Closed);
    breaker.force_open();
    assert_eq!(breaker.state(), CircuitState::Open);
    breaker.reset();
    assert_eq!(breaker.state(), CircuitState::Closed);
    let state = CircuitState::Closed;
    let copy = state;
    assert_eq!(copy, state.clone());
    assert_eq!(
        changes.lock().unwrap()[0],
        (CircuitState::Closed, CircuitState::Open)
    );
}

#[test]
fn retry() {
    assert!(matches!(Backoff::default(), Backoff::Exponential { factor } if factor == 2.0));
    assert!(matches!(Jitter::default(), Jitter::Full));
    let _ = [Backoff::Constant, Backoff::Linear];
    let _ = [Jitter::None, Jitter::Equal, Jitter::Decorrelated];
    let policy = RetryPolicy::builder()
        .max_attempts(4)
        .base_delay(Duration::from_millis(100))
        .max_delay(SEC)
        .backoff(Backoff::Exponential { factor: 2.0 })
        .jitter(Jitter::None)
        .seed(7)
        .build()
        .unwrap();
    let copy = policy.clone();
    assert_eq!(copy.max_attempts(), 4);
    let mut rng = <limitpal::rand::rngs::StdRng as limitpal::rand::SeedableRng>::seed_from_u64(1);
    assert_eq!(policy.delay(1, &mut rng), Duration::from_millis(100));
    assert_eq!(policy.delay(2, &mut rng), Duration::from_millis(200));
    assert_eq!(policy.delay(20, &mut rng), SEC, "never past max_delay");
    let budget = RetryBudget::new(10 * SEC, 10, 0.2).unwrap();
    shared(&budget);
    assert!(RetryBudget::new(10 * SEC, 10, -1.0).is_err());
}

#[test]
fn sync_executor() {
    let clock = ManualClock::new();
    let limiter = RateLimiter::builder(TokenBucket::new(10, 10.0).unwrap())
        .clock(clock.clone())
        .build()
        .unwrap();
    let classifier = |result: Result<&u32, &&str>| match result {
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Failure {
            retryable: true,
            retry_after: None,
        },
    };
    let exec = ResilientExecutor::builder()
        .limiter(limiter)
        .breaker(
            CircuitBreaker::builder()
                .clock(clock.clone())
                .build()
                .unwrap(),
        )
        .retry(
            RetryPolicy::builder()
                .max_attempts(3)
                .jitter(Jitter::None)
                .build()
                .unwrap(),
        )
        .budget(RetryBudget::new(10 * SEC, 10, 0.2).unwrap())
        .classifier(classifier)
        .charge_retries(true)
        .attempt_timeout(SEC)
        .deadline(10 * SEC)
        .clock(clock.clone())
        .build()
        .unwrap();
    debug(&exec);
    let mut calls = 0;
    let result = exec.run(&"key", || {
        calls += 1;
        if calls < 3 { Err("flaky") } else { Ok(calls) }
    });
    assert_eq!(result, Ok(3));
    assert_eq!(
        clock.now(),
        Duration::from_millis(300),
        "the executor's clock slept 100 + 200 ms"
    );
    let exhausted = exec.run(&"key", || Err::<u32, _>("down"));
    assert!(matches!(
        exhausted,
        Err(Error::RetryExhausted {
            attempts: 3,
            last: "down"
        })
    ));
    let not_retried = ResilientExecutor::builder()
        .retry(RetryPolicy::builder().build().unwrap())
        .retry_if(|e: &&str| *e != "fatal")
        .clock(clock)
        .build()
        .unwrap()
        .run(&(), || Err::<(), _>("fatal"));
    assert!(matches!(not_retried, Err(Error::Failed("fatal"))));
}

#[tokio::test(start_paused = true)]
async fn async_executor_waiting_and_pushback() {
    let tokio_now = TokioClock::new();
    let limiter = RateLimiter::builder(TokenBucket::new(1, 1.0).unwrap())
        .clock(TokioClock::new())
        .build()
        .unwrap();
    assert_eq!(limiter.until_ready(&1_u64, SEC).await, Ok(()));
    let start = tokio_now.now();
    assert_eq!(limiter.until_ready(&1_u64, SEC).await, Ok(()));
    assert_eq!(tokio_now.now() - start, SEC, "waited for the next token");
    let exec = limitpal::tower::AsyncResilientExecutor::builder()
        .limiter(limiter.clone())
        .limiter_wait(2 * SEC)
        .respect_pushback(true)
        .build()
        .unwrap();
    let start = tokio_now.now();
    assert_eq!(exec.run(&1_u64, || async { Ok::<_, ()>(5) }).await, Ok(5));
    assert_eq!(tokio_now.now() - start, SEC, "shaped, not refused");

    let reservation: Reservation = limiter.reserve(&2, SEC).unwrap();
    assert_eq!(reservation.delay(), Duration::ZERO, "admitted now");
    debug(&reservation);
    limiter.hold(&3, 5 * SEC);
    assert_eq!(limiter.check(&3), Err(RateLimited::new(5 * SEC)));
}

#[test]
fn per_key_breakers_and_bulkheads() {
    let clock = ManualClock::new();
    let breakers: KeyedCircuitBreaker<String, ManualClock> = KeyedCircuitBreaker::builder()
        .failure_threshold(1)
        .recovery_timeout(5 * SEC)
        .error_budget(10, 10 * SEC)
        .max_keys(100)
        .idle_ttl(SEC)
        .clock(clock)
        .build()
        .unwrap();
    shared(&breakers);
    breakers.try_acquire("a").unwrap().failure();
    assert_eq!(breakers.state("a"), CircuitState::Open);
    assert_eq!(breakers.try_acquire("a").unwrap_err().retry_after, 5 * SEC);
    assert_eq!(breakers.state("b"), CircuitState::Closed);
    assert_eq!(breakers.len(), 1);
    breakers.reset("a");
    assert_eq!(breakers.state("a"), CircuitState::Closed);

    let bulkheads: KeyedBulkhead<String> = KeyedBulkhead::builder(1)
        .queue(0, Duration::ZERO)
        .max_keys(100)
        .build()
        .unwrap();
    shared(&bulkheads);
    let held: BulkheadPermit = bulkheads.try_acquire("t").unwrap();
    let full: BulkheadFull = bulkheads.try_acquire("t").unwrap_err();
    debug(&full);
    assert!(
        bulkheads.try_acquire("u").is_ok(),
        "another key has its own slot"
    );
    assert_eq!(bulkheads.len(), 1, "only the busy key is held");
    drop(held);
    assert!(bulkheads.try_acquire("t").is_ok());

    let exec = ResilientExecutor::builder()
        .circuit_breaker_per(breakers.clone(), |host: &&str| (*host).to_owned())
        .bulkhead_per(bulkheads, |host: &&str| (*host).to_owned())
        .build()
        .unwrap();
    assert_eq!(exec.run(&"c", || Err::<(), _>(())), Err(Error::Failed(())));
    assert!(matches!(
        exec.run(&"c", || Ok::<_, ()>(())),
        Err(Error::CircuitOpen(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn tower_layers() {
    #[derive(Clone)]
    struct Header;
    impl KeyExtractor<(u32, u32)> for Header {
        type Key = u32;
        fn extract(&self, req: &(u32, u32)) -> Option<u32> {
            Some(req.0)
        }
    }
    let _ = TokioClock::default();
    let limiter = RateLimiter::builder(TokenBucket::new(1, 1.0).unwrap())
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let echo = || service_fn(|req: (u32, u32)| async move { Ok::<_, BoxError>(req.1) });
    let limited = RateLimitLayer::new(limiter.clone(), Header).layer(echo());
    assert_eq!(limited.clone().oneshot((1, 5)).await.unwrap(), 5);
    let refused = limited.oneshot((1, 6)).await.unwrap_err();
    assert!(refused.downcast_ref::<RateLimited>().is_some(), "{refused}");
    let shaped = RateLimitLayer::new(limiter, |req: &(u32, u32)| req.0)
        .wait(2 * SEC)
        .layer(echo());
    assert_eq!(shaped.oneshot((1, 7)).await.unwrap(), 7, "waits instead");

    let breaker = CircuitBreaker::builder()
        .failure_threshold(1)
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let failing = || service_fn(|_: u32| async { Err::<u32, BoxError>("down".into()) });
    let layer = CircuitBreakerLayer::new(breaker).classifier(|r: Result<&u32, &BoxError>| {
        if r.is_ok() {
            Outcome::Success
        } else {
            Outcome::FATAL
        }
    });
    let guarded = layer.layer(failing());
    let _ = guarded.clone().oneshot(1).await.unwrap_err();
    let open = guarded.oneshot(1).await.unwrap_err();
    assert!(open.downcast_ref::<CircuitOpen>().is_some(), "{open}");

    let policy = RetryPolicy::builder()
        .max_attempts(3)
        .jitter(Jitter::None)
        .build()
        .unwrap();
    let retried = RetryLayer::new(policy.clone())
        .budget(RetryBudget::new(10 * SEC, 10, 0.2).unwrap())
        .clone_request(|req: &u32| Some(*req))
        .classifier(|r: Result<&u32, &BoxError>| {
            if r.is_ok() {
                Outcome::Success
            } else {
                Outcome::RETRYABLE
            }
        })
        .layer(failing());
    let exhausted = retried.oneshot(1).await.unwrap_err();
    let exhausted = exhausted.downcast_ref::<RetryExhausted>().unwrap();
    assert_eq!(exhausted.attempts, 3);

    let hanging = service_fn(|_: u32| std::future::pending::<Result<u32, BoxError>>());
    let stack = ResilienceLayer::builder()
        .retry(policy)
        .deadline(SEC)
        .attempt_timeout(Duration::from_millis(100))
        .hedge(Hedge::after(Duration::from_millis(50)).max_hedges(1))
        .hedge_if(|_: &u32| true)
        .build()
        .unwrap()
        .layer(hanging);
    let timed_out = stack.oneshot(1).await.unwrap_err();
    assert!(
        timed_out.downcast_ref::<TimedOut>().is_some(),
        "{timed_out}"
    );

    let fallback = ResilienceLayer::builder()
        .fallback(|_: &Error<BoxError>| Some(42_u32))
        .build()
        .unwrap()
        .layer(failing());
    assert_eq!(fallback.oneshot(1).await.unwrap(), 42);
    let _ = Hedge::percentile(95.0, 20);
}

#[tokio::test(start_paused = true)]
async fn faults() {
    let tokio_now = TokioClock::new();
    let faulty = FaultLayer::builder()
        .seed(3)
        .latency(1.0, SEC)
        .error(0.0, || BoxError::from("injected"))
        .timeout(0.0)
        .build()
        .unwrap()
        .layer(service_fn(|req: u32| async move { Ok::<_, BoxError>(req) }));
    let start = tokio_now.now();
    assert_eq!(faulty.oneshot(9).await.unwrap(), 9);
    assert_eq!(
        tokio_now.now() - start,
        SEC,
        "every call delayed by the planned latency"
    );
}

#[cfg(feature = "redis")]
#[test]
fn redis_leases_compile() {
    // the builder call as the contract spells it; building needs no server
    let _builder = limitpal::redis::RedisRateLimiter::<String>::builder(
        "redis://127.0.0.1:6379",
        TokenBucket::new(10, 10.0).unwrap(),
    )
    .lease(16, Duration::from_millis(100));
}
