//! `until_ready` and `RateLimitLayer::wait` under paused tokio time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use limitpal::rand::rngs::StdRng;
use limitpal::rand::{Rng, SeedableRng};
use limitpal::tower::{RateLimitLayer, TokioClock, UntilReady};
use limitpal::{Clock, LeakyBucket, RateLimited, RateLimiter, TokenBucket};
use tower::{Layer, Service, ServiceExt, service_fn};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

fn tokio_limiter<A: limitpal::Algorithm>(algorithm: A) -> RateLimiter<u64, A, TokioClock> {
    RateLimiter::builder(algorithm)
        .clock(TokioClock::new())
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn concurrent_waiters_on_one_key_are_admitted_in_order_exactly_on_the_schedule() {
    let limiter = tokio_limiter(TokenBucket::new(3, 20.0).unwrap());
    let start = TokioClock::new();
    let admitted = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..50_u32 {
        let wait = limiter.until_ready(&7, 10 * SEC); // reserves now, in this order
        let admitted = Arc::clone(&admitted);
        tasks.push(tokio::spawn(async move {
            wait.await.unwrap();
            admitted.lock().unwrap().push((i, start.now()));
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut admitted = admitted.lock().unwrap().clone();
    admitted.sort_by_key(|&(i, _)| i);
    for (i, at) in admitted {
        // a burst of 3 at once, then one every 50 ms, each caller in its turn
        let expected = 50 * MS * i.saturating_sub(2);
        assert_eq!(at, expected, "caller {i}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_thousand_waits_at_100_per_second_take_exactly_ten_seconds() {
    let limiter = tokio_limiter(LeakyBucket::new(1, 100.0).unwrap());
    limiter.check(&1).unwrap(); // the limiter is at its rate: every wait is one interval
    let start = TokioClock::new();
    for _ in 0..1_000 {
        limiter.until_ready(&1, SEC).await.unwrap();
    }
    assert_eq!(start.now(), 10 * SEC);
}

#[tokio::test(start_paused = true)]
async fn a_wait_beyond_max_wait_is_refused_at_once_and_sleeps_nothing() {
    let limiter = tokio_limiter(TokenBucket::new(1, 1.0).unwrap());
    limiter.until_ready(&1, Duration::ZERO).await.unwrap();
    let start = TokioClock::new();
    assert_eq!(
        limiter.until_ready(&1, 999 * MS).await,
        Err(RateLimited::new(SEC))
    );
    assert_eq!(start.now(), Duration::ZERO);
    limiter.until_ready(&1, SEC).await.unwrap();
    assert_eq!(start.now(), SEC);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_dropped_before_its_slot_gives_it_back() {
    let limiter = tokio_limiter(LeakyBucket::new(1, 10.0).unwrap());
    limiter.until_ready(&1, SEC).await.unwrap();
    let impatient = tokio::time::timeout(50 * MS, limiter.until_ready(&1, SEC)).await;
    assert!(
        impatient.is_err(),
        "timed out while waiting for its slot at 100 ms"
    );
    let start = TokioClock::new();
    limiter.until_ready(&1, SEC).await.unwrap();
    // the slot at 100 ms came back: the next waiter takes it 50 ms from now, not 150 ms
    assert_eq!(start.now(), 50 * MS);
}

/// For sorted admission times: any `n` of them span at least `(n - burst) × interval`.
fn assert_gcra_bound(admitted: &[Duration], burst: usize, interval: Duration) {
    for i in 0..admitted.len() {
        for j in i + burst..admitted.len() {
            let need = interval * u32::try_from(j - i + 1 - burst).unwrap();
            let span = admitted[j] - admitted[i];
            assert!(span >= need, "{} admitted within {span:?}", j - i + 1);
        }
    }
}

/// In every window [t, t + window) starting at an admission: at most `limit`.
fn assert_window_bound(admitted: &[Duration], limit: usize, window: Duration) {
    for (i, &at) in admitted.iter().enumerate() {
        let inside = admitted[i..]
            .iter()
            .take_while(|&&t| t < at + window)
            .count();
        assert!(
            inside <= limit,
            "{inside} admitted within {window:?} of {at:?}"
        );
    }
}

/// 10 000 waiters arriving at random, with random patience; a quarter dropped unpolled, a
/// quarter timed out while they wait. Returns the sorted admission times and the run's length.
async fn random_waiters<A: limitpal::Algorithm>(
    algorithm: A,
    seed: u64,
) -> (Vec<Duration>, Duration) {
    let limiter = tokio_limiter(algorithm);
    let mut rng = StdRng::seed_from_u64(seed);
    let start = TokioClock::new();
    let admitted = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    let (mut kept, mut cancelled) = (0_u32, 0_u32);
    for _ in 0..10_000 {
        // sleep, not advance: auto-advance wakes every waiter due meanwhile at its own instant
        tokio::time::sleep(MS * rng.random_range(0..3)).await;
        let max_wait = MS * rng.random_range(0..500);
        let wait = limiter.until_ready(&1, max_wait);
        match rng.random_range(0..4) {
            0 => {
                drop(wait); // never polled
                cancelled += 1;
            }
            fate => {
                let patience = (fate == 1).then(|| MS * rng.random_range(0..400));
                kept += u32::from(patience.is_none());
                cancelled += u32::from(patience.is_some());
                let admitted = Arc::clone(&admitted);
                tasks.push(tokio::spawn(async move {
                    let answer = match patience {
                        Some(patience) => match tokio::time::timeout(patience, wait).await {
                            Ok(answer) => answer,
                            Err(_) => return,
                        },
                        None => wait.await,
                    };
                    if answer.is_ok() {
                        admitted.lock().unwrap().push(start.now());
                    }
                }));
            }
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert!(
        kept > 1_000 && cancelled > 3_000,
        "{kept} kept, {cancelled} cancelled"
    );
    let mut admitted = admitted.lock().unwrap().clone();
    admitted.sort();
    (admitted, start.now())
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_random_cancellations_never_over_admit() {
    // GCRA gives back only a slot with nothing queued behind it
    let (admitted, took) = random_waiters(TokenBucket::new(5, 100.0).unwrap(), 22).await;
    assert_gcra_bound(&admitted, 5, 10 * MS);
    let quota = 5 + took.as_millis() / 10;
    assert!(
        admitted.len() as u128 * 10 >= quota * 6,
        "{} of {quota} slots used",
        admitted.len()
    );
    // a sliding window gives every cancelled slot back
    let (admitted, took) =
        random_waiters(limitpal::SlidingWindow::new(5, 50 * MS).unwrap(), 23).await;
    assert_window_bound(&admitted, 5, 50 * MS);
    let quota = 5 * (1 + took.as_millis() / 50);
    assert!(
        admitted.len() as u128 * 10 >= quota * 6,
        "{} of {quota} slots used",
        admitted.len()
    );
}

#[tokio::test(start_paused = true)]
async fn a_waiting_rate_limit_layer_shapes_instead_of_rejecting() {
    let limiter = tokio_limiter(LeakyBucket::new(1, 10.0).unwrap());
    let start = TokioClock::new();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&calls);
    let inner = service_fn(move |n: u64| {
        seen.lock().unwrap().push((n, start.now()));
        async move { Ok::<_, std::io::Error>(n) }
    });
    let svc = RateLimitLayer::new(limiter, |_: &u64| 0_u64)
        .wait(950 * MS)
        .layer(inner);
    let mut futures = Vec::new();
    for n in 0..10_u64 {
        let mut svc = svc.clone();
        // call now (the slot is reserved in call), await later
        let ready = svc.ready().await.unwrap();
        futures.push(tokio::spawn(ready.call(n)));
    }
    // the eleventh would wait 1 s, past max_wait: refused at once
    let mut late = svc.clone();
    let refused = late.ready().await.unwrap().call(10).await.unwrap_err();
    let refused = refused.downcast::<RateLimited>().unwrap();
    assert_eq!(refused.retry_after, SEC);
    for (n, f) in futures.into_iter().enumerate() {
        assert_eq!(f.await.unwrap().unwrap(), n as u64);
    }
    let calls = calls.lock().unwrap().clone();
    let expected: Vec<_> = (0..10_u32).map(|n| (u64::from(n), 100 * MS * n)).collect();
    assert_eq!(calls, expected, "one call every 100 ms, in arrival order");
}
