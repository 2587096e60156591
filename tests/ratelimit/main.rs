//! Keyed rate limiting through the facade: exact times with `ManualClock`, no sleeps.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use limitpal::{
    Algorithm, CheckNError, Clock, ConfigError, LeakyBucket, ManualClock, RateLimited, RateLimiter,
    SlidingWindow, TokenBucket,
};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

fn manual<K: std::hash::Hash + Eq + Send + Sync + 'static, A: Algorithm>(
    algorithm: A,
) -> (RateLimiter<K, A, ManualClock>, ManualClock) {
    let clock = ManualClock::new();
    let limiter = RateLimiter::builder(algorithm)
        .clock(clock.clone())
        .build()
        .expect("valid limiter");
    (limiter, clock)
}

#[test]
fn token_bucket_denies_with_exact_retry_after_then_refills() {
    let (limiter, clock) = manual::<u64, _>(TokenBucket::new(1, 2.0).unwrap());
    assert_eq!(limiter.check(&1), Ok(()));
    assert_eq!(limiter.check(&1), Err(RateLimited::new(500 * MS)));
    clock.advance(500 * MS);
    assert_eq!(limiter.check(&1), Ok(()));
    assert!(limiter.check(&1).is_err());
}

#[test]
fn refill_never_loses_fractions() {
    let (limiter, clock) = manual::<(), _>(TokenBucket::new(1, 1.0).unwrap());
    limiter.check(&()).unwrap();
    for step in 1..1000_u32 {
        clock.advance(MS);
        let denied = limiter.check(&()).expect_err("not refilled yet");
        assert_eq!(denied.retry_after, (1000 - step) * MS, "step {step}");
    }
    clock.advance(MS);
    assert_eq!(
        limiter.check(&()),
        Ok(()),
        "exactly one token after 1000 × 1 ms"
    );
    assert!(limiter.check(&()).is_err(), "and only one");
}

#[test]
fn leaky_bucket_is_the_same_meter() {
    let (tb, tb_clock) = manual::<u8, _>(TokenBucket::new(3, 4.0).unwrap());
    let (lb, lb_clock) = manual::<u8, _>(LeakyBucket::new(3, 4.0).unwrap());
    for step in 0..200_u32 {
        let advance = Duration::from_millis(u64::from(step * 37 % 400));
        tb_clock.advance(advance);
        lb_clock.advance(advance);
        let n = step % 4;
        assert_eq!(tb.check_n(&0, n), lb.check_n(&0, n), "step {step}");
    }
}

#[test]
fn check_n_tells_not_now_from_never() {
    let (limiter, clock) = manual::<String, _>(TokenBucket::new(10, 5.0).unwrap());
    assert_eq!(limiter.check_n("k", 0), Ok(()));
    assert_eq!(limiter.check_n("k", 8), Ok(()));
    assert_eq!(
        limiter.check_n("k", 4),
        Err(CheckNError::RateLimited(RateLimited::new(400 * MS)))
    );
    assert_eq!(
        limiter.check_n("k", 11),
        Err(CheckNError::InsufficientCapacity { max: 10 })
    );
    clock.advance(400 * MS);
    assert_eq!(limiter.check_n("k", 4), Ok(()));
}

#[test]
fn acquire_waits_only_when_the_wait_fits() {
    let (limiter, clock) = manual::<u64, _>(TokenBucket::new(1, 4.0).unwrap());
    limiter.check(&9).unwrap();
    assert_eq!(
        limiter.acquire(&9, 249 * MS),
        Err(RateLimited::new(250 * MS))
    );
    assert_eq!(
        clock.now(),
        Duration::ZERO,
        "a wait that does not fit is not slept"
    );
    assert_eq!(limiter.acquire(&9, SEC), Ok(()));
    assert_eq!(clock.now(), 250 * MS, "slept exactly the wait");
    assert_eq!(
        limiter.acquire(&9, 250 * MS),
        Ok(()),
        "a wait equal to the timeout fits"
    );
    assert_eq!(clock.now(), 500 * MS);
}

#[test]
fn acquire_on_a_clock_that_does_not_move_returns_the_denial() {
    #[derive(Debug)]
    struct Frozen;
    impl Clock for Frozen {
        fn now(&self) -> Duration {
            Duration::from_secs(5)
        }
        fn sleep(&self, _: Duration) {}
    }
    let limiter = RateLimiter::builder(TokenBucket::new(1, 1.0).unwrap())
        .clock(Frozen)
        .build()
        .unwrap();
    limiter.check(&()).unwrap();
    assert_eq!(limiter.acquire(&(), 10 * SEC), Err(RateLimited::new(SEC)));
}

#[test]
fn composite_admits_only_when_both_do() {
    let both = TokenBucket::new(1, 1.0)
        .unwrap()
        .and(LeakyBucket::new(1, 1.0).unwrap());
    let (limiter, clock) = manual::<u64, _>(both);
    assert_eq!(limiter.check(&1), Ok(()));
    assert_eq!(limiter.check(&1), Err(RateLimited::new(SEC)));
    clock.advance(SEC);
    assert_eq!(limiter.check(&1), Ok(()));
}

#[test]
fn composite_denial_by_the_second_leaves_the_first_untouched() {
    // The first part refills once per 1000 s, so any token it lost would show.
    let both = TokenBucket::new(2, 0.001)
        .unwrap()
        .and(SlidingWindow::new(1, SEC).unwrap());
    let (limiter, clock) = manual::<u64, _>(both);
    assert_eq!(limiter.check(&1), Ok(()));
    for _ in 0..100 {
        assert_eq!(limiter.check(&1), Err(RateLimited::new(SEC)));
    }
    clock.advance(SEC);
    assert_eq!(
        limiter.check(&1),
        Ok(()),
        "the token bucket still had its second token"
    );
    clock.advance(SEC);
    let denied = limiter.check(&1).expect_err("token bucket empty");
    assert_eq!(denied.retry_after, Duration::from_secs(998));
}

#[test]
fn composite_denials_consume_nothing_under_contention() {
    let both = TokenBucket::new(1000, 1e-6)
        .unwrap()
        .and(SlidingWindow::new(10, SEC).unwrap());
    let (limiter, clock) = manual::<u64, _>(both);
    let mut admitted = 0;
    for _window in 0..101 {
        admitted += hammer(&limiter, 8, 1000, |l| l.check(&7).is_ok());
        clock.advance(SEC);
    }
    assert_eq!(
        admitted, 1000,
        "10 per window until the token bucket's 1000 run out"
    );
}

/// Runs `threads` × `per_thread` calls of `f` concurrently; returns how many returned true.
fn hammer<L: Send + Sync>(
    limiter: &L,
    threads: usize,
    per_thread: usize,
    f: impl Fn(&L) -> bool + Sync,
) -> u32 {
    let admitted = AtomicU32::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..per_thread {
                    if f(limiter) {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    admitted.into_inner()
}

#[test]
fn eight_threads_on_a_frozen_clock_admit_exactly_capacity() {
    let (keyed, _) = manual::<u64, _>(TokenBucket::new(1000, 1.0).unwrap());
    assert_eq!(hammer(&keyed, 8, 10_000, |l| l.check(&3).is_ok()), 1000);
    let (unkeyed, _) = manual::<(), _>(TokenBucket::new(1000, 1.0).unwrap());
    assert_eq!(hammer(&unkeyed, 8, 10_000, |l| l.check(&()).is_ok()), 1000);
    let (window, _) = manual::<u64, _>(SlidingWindow::new(1000, SEC).unwrap());
    assert_eq!(hammer(&window, 8, 10_000, |l| l.check(&3).is_ok()), 1000);
}

#[test]
fn many_threads_many_new_keys_each_key_admits_exactly_capacity() {
    let (limiter, _) = manual::<u64, _>(TokenBucket::new(3, 1.0).unwrap());
    let admitted = AtomicU32::new(0);
    // Every thread walks the same 2000 keys, so inserts race with each other.
    hammer(&limiter, 8, 1, |l| {
        let n = (0..2000_u64).filter(|k| l.check(k).is_ok()).count();
        admitted.fetch_add(u32::try_from(n).unwrap(), Ordering::Relaxed);
        true
    });
    assert_eq!(admitted.into_inner(), 3 * 2000);
    assert_eq!(limiter.len(), 2000);
}

#[test]
fn keys_are_isolated_and_borrowed() {
    let (limiter, _) = manual::<String, _>(TokenBucket::new(1, 1.0).unwrap());
    assert_eq!(limiter.check("alice"), Ok(()));
    assert!(limiter.check("alice").is_err());
    assert_eq!(
        limiter.check("bob"),
        Ok(()),
        "alice's denial does not touch bob"
    );
    assert!(limiter.check(&String::from("bob")).is_err());
    assert_eq!(limiter.len(), 2);
}

#[test]
fn idle_keys_are_dropped_after_idle_ttl() {
    let clock = ManualClock::new();
    let limiter = RateLimiter::builder(TokenBucket::new(2, 1.0).unwrap())
        .clock(clock.clone())
        .idle_ttl(10 * SEC)
        .build()
        .unwrap();
    limiter.check(&"a").unwrap();
    limiter.check(&"a").unwrap();
    assert_eq!(limiter.len(), 1);
    clock.advance(2 * SEC); // full again: indistinguishable from fresh from now on
    assert_eq!(limiter.len(), 1, "kept for idle_ttl");
    clock.advance(10 * SEC - MS);
    assert_eq!(limiter.len(), 1);
    clock.advance(MS);
    assert_eq!(limiter.len(), 0);
    assert!(limiter.is_empty());
    // and the dropped key answers as a fresh one
    assert_eq!(limiter.check_n(&"a", 2), Ok(()));
}

#[test]
fn keys_that_go_idle_are_reclaimed_once_the_table_would_grow() {
    // 1 per ms: a key is full again 1 ms after its check, and reclaimable 1 ms (the grace of
    // one refill period) after that.
    let (limiter, clock) = manual::<u64, _>(TokenBucket::new(1, 1000.0).unwrap());
    for key in 0..10_000 {
        limiter.check(&key).unwrap();
    }
    let bytes_at_peak = limiter.table_bytes();
    clock.advance(MS);
    for round in 1..=40_u64 {
        for key in 0..10_000 {
            limiter.check(&(round * 1_000_000 + key)).unwrap();
        }
        clock.advance(MS);
    }
    // 410 000 distinct keys went through, and the table holds at most the three rounds
    // checked within two refill periods: memory stayed flat.
    assert!(
        limiter.table_bytes() <= 4 * bytes_at_peak,
        "{} > 4 × {bytes_at_peak}",
        limiter.table_bytes()
    );
    assert_eq!(limiter.len(), 0, "every key is idle by now");
}

#[test]
fn a_million_idle_keys_are_reclaimed_by_other_keys_without_growing_the_table() {
    let (limiter, clock) = manual::<u64, _>(TokenBucket::new(10, 10.0).unwrap());
    for key in 0..1_000_000 {
        limiter.check(&key).unwrap();
    }
    let bytes = limiter.table_bytes();
    clock.advance(2 * SEC); // a refill period (1 s) and the grace (1 s): all reclaimable
    for key in 1_000_000..2_000_000 {
        limiter.check(&key).unwrap();
    }
    // No shard grew; at most a run at a table's end spilled a few slots into its tail.
    assert!(
        limiter.table_bytes() <= bytes + bytes / 1000,
        "the second million took the first million's slots: {} > {bytes}",
        limiter.table_bytes()
    );
    for key in (0..1_000_000).step_by(997) {
        assert_eq!(
            limiter.check_n(&key, 10),
            Ok(()),
            "a reclaimed key starts full"
        );
    }
    for key in (1_000_000..2_000_000).step_by(997) {
        assert!(
            limiter.check_n(&key, 10).is_err(),
            "a held key kept its state"
        );
    }
}

#[test]
fn a_key_that_comes_back_after_refilling_keeps_its_entry() {
    let (limiter, clock) = manual::<u64, _>(TokenBucket::new(10, 10.0).unwrap());
    for key in 0..100_000 {
        limiter.check(&key).unwrap();
    }
    let bytes = limiter.table_bytes();
    // Every key is full again after 100 ms; checked round-robin for 10 rounds, each key
    // finds its entry (the table neither grows nor reclaims), and answers as a full key.
    for _ in 0..10 {
        clock.advance(100 * MS);
        for key in 0..100_000 {
            assert_eq!(limiter.check(&key), Ok(()));
        }
    }
    assert_eq!(limiter.table_bytes(), bytes);
    assert_eq!(limiter.len(), 100_000, "none is idle: each holds 9 of 10");
}

#[test]
fn max_keys_is_never_exceeded_under_a_million_distinct_keys() {
    let clock = ManualClock::new();
    let limiter = RateLimiter::builder(TokenBucket::new(1, 1.0).unwrap())
        .clock(clock)
        .max_keys(1000)
        .build()
        .unwrap();
    for key in 0..1_000_000_u64 {
        assert_eq!(limiter.check(&key), Ok(()), "a new key starts full");
        if key % 50_000 == 0 {
            assert!(limiter.len() <= 1000, "len {} at key {key}", limiter.len());
        }
    }
    let held = limiter.len();
    assert!((1..=1000).contains(&held), "{held}");
}

#[test]
fn max_keys_prefers_idle_keys_as_victims() {
    let clock = ManualClock::new();
    let limiter = RateLimiter::builder(TokenBucket::new(1, 1.0).unwrap())
        .clock(clock.clone())
        .shards(1)
        .max_keys(4)
        .build()
        .unwrap();
    for key in 0..4_u64 {
        limiter.check(&key).unwrap();
    }
    clock.advance(SEC); // keys 0..4 are idle now
    limiter.check(&10).unwrap();
    limiter.check(&11).unwrap();
    limiter.check(&12).unwrap();
    limiter.check(&13).unwrap();
    // the four live keys survived: the idle ones were dropped for them
    for key in 10..14_u64 {
        assert!(limiter.check(&key).is_err(), "key {key} was evicted");
    }
}

#[test]
fn unkeyed_limiter_has_one_quota() {
    let (limiter, clock) = manual::<(), _>(TokenBucket::new(2, 1.0).unwrap());
    assert!(limiter.is_empty());
    limiter.check(&()).unwrap();
    assert_eq!(limiter.len(), 1);
    limiter.check(&()).unwrap();
    assert_eq!(limiter.check(&()), Err(RateLimited::new(SEC)));
    assert_eq!(limiter.quota(&()), (0, 2 * SEC));
    clock.advance(2 * SEC);
    assert!(limiter.is_empty());
}

#[test]
fn quota_reports_remaining_without_consuming() {
    let (limiter, clock) = manual::<u64, _>(TokenBucket::new(5, 1.0).unwrap());
    assert_eq!(limiter.quota(&1), (5, Duration::ZERO));
    limiter.check_n(&1, 3).unwrap();
    assert_eq!(limiter.quota(&1), (2, 3 * SEC));
    assert_eq!(limiter.quota(&1), (2, 3 * SEC));
    clock.advance(SEC);
    assert_eq!(limiter.quota(&1), (3, 2 * SEC));
}

#[test]
fn sliding_window_counts_any_interval_not_aligned_ones() {
    let (limiter, clock) = manual::<u64, _>(SlidingWindow::new(3, 10 * SEC).unwrap());
    clock.set(9 * SEC);
    limiter.check_n(&1, 3).unwrap();
    clock.set(10 * SEC); // a fixed window would reset here and allow a double burst
    assert_eq!(limiter.check(&1), Err(RateLimited::new(9 * SEC)));
    clock.set(19 * SEC);
    assert_eq!(limiter.check_n(&1, 3), Ok(()));
}

/// A cost of any size is one entry of a sliding window's state: a `check_n` of four billion
/// units neither allocates four billion timestamps nor answers differently from small ones.
#[test]
fn sliding_window_takes_a_cost_of_billions_in_one_entry() {
    let (limiter, clock) = manual::<u64, _>(SlidingWindow::new(u32::MAX, 10 * SEC).unwrap());
    assert_eq!(limiter.check_n(&1, u32::MAX - 1), Ok(()));
    clock.set(2 * SEC);
    assert_eq!(
        limiter.check_n(&1, 1),
        Ok(()),
        "the last unit of the window"
    );
    assert_eq!(
        limiter.check(&1),
        Err(RateLimited::new(8 * SEC)),
        "full until the first run leaves the window"
    );
    assert_eq!(
        limiter.check_n(&2, u32::MAX),
        Ok(()),
        "a whole window at once"
    );
    let r = limiter
        .reserve(&1, 20 * SEC)
        .expect("a slot once the run at 0 has left");
    assert_eq!(r.delay(), 8 * SEC);
    clock.set(10 * SEC);
    assert_eq!(
        limiter.check_n(&1, u32::MAX - 2),
        Ok(()),
        "the run at 0 has left: all but the unit at 2 s and the reservation fit"
    );
}

#[test]
fn clock_going_backwards_never_over_admits() {
    for algorithm in 0..3 {
        let clock = ManualClock::new();
        clock.set(100 * SEC);
        let check: Box<dyn Fn() -> bool> = match algorithm {
            0 => {
                let l = RateLimiter::builder(TokenBucket::new(2, 1.0).unwrap())
                    .clock(clock.clone())
                    .build()
                    .unwrap();
                Box::new(move || l.check(&()).is_ok())
            }
            1 => {
                let l = RateLimiter::builder(SlidingWindow::new(2, 2 * SEC).unwrap())
                    .clock(clock.clone())
                    .build()
                    .unwrap();
                Box::new(move || l.check(&()).is_ok())
            }
            _ => {
                let both = TokenBucket::new(2, 1.0)
                    .unwrap()
                    .and(SlidingWindow::new(2, 2 * SEC).unwrap());
                let l = RateLimiter::builder(both)
                    .clock(clock.clone())
                    .build()
                    .unwrap();
                Box::new(move || l.check(&()).is_ok())
            }
        };
        assert!(check() && check() && !check());
        clock.set(Duration::ZERO);
        assert!(
            !check(),
            "algorithm {algorithm}: going back refills nothing"
        );
        clock.set(Duration::MAX);
        assert!(check(), "algorithm {algorithm}: and far future works");
    }
}

#[test]
fn huge_values_saturate_instead_of_panicking() {
    let (limiter, clock) = manual::<u64, _>(TokenBucket::new(u32::MAX, 1e9).unwrap());
    clock.set(Duration::MAX);
    assert!(limiter.check_n(&1, u32::MAX).is_ok());
    assert!(limiter.acquire(&1, Duration::MAX).is_ok());
    let (slow, clock) = manual::<u64, _>(TokenBucket::new(1, 1e-10).unwrap());
    slow.check(&1).unwrap();
    assert_eq!(
        slow.acquire(&1, Duration::MAX),
        Ok(()),
        "a 317-year wait fits a Duration::MAX timeout"
    );
    assert_eq!(
        clock.now(),
        Duration::from_nanos(10_000_000_000_000_000_000)
    );
}

#[test]
fn every_bad_argument_is_a_config_error_naming_the_field() {
    let cases: Vec<(Result<(), ConfigError>, &str)> = vec![
        (TokenBucket::new(0, 1.0).map(drop), "capacity"),
        (TokenBucket::new(1, 0.0).map(drop), "refill_per_sec"),
        (TokenBucket::new(1, -1.0).map(drop), "refill_per_sec"),
        (TokenBucket::new(1, f64::NAN).map(drop), "refill_per_sec"),
        (
            TokenBucket::new(1, f64::INFINITY).map(drop),
            "refill_per_sec",
        ),
        (
            TokenBucket::new(1, f64::NEG_INFINITY).map(drop),
            "refill_per_sec",
        ),
        (TokenBucket::new(1, 2e9).map(drop), "refill_per_sec"),
        (TokenBucket::new(1, 1e-12).map(drop), "refill_per_sec"),
        (
            TokenBucket::new(1, f64::MIN_POSITIVE).map(drop),
            "refill_per_sec",
        ),
        (TokenBucket::new(u32::MAX, 1e-9).map(drop), "capacity"),
        (LeakyBucket::new(0, 1.0).map(drop), "capacity"),
        (LeakyBucket::new(1, f64::NAN).map(drop), "leak_per_sec"),
        (SlidingWindow::new(0, SEC).map(drop), "limit"),
        (SlidingWindow::new(1, Duration::ZERO).map(drop), "window"),
        (
            RateLimiter::<u64>::builder(TokenBucket::new(1, 1.0).unwrap())
                .max_keys(0)
                .build()
                .map(drop),
            "max_keys",
        ),
        (
            RateLimiter::<u64>::builder(TokenBucket::new(1, 1.0).unwrap())
                .shards(0)
                .build()
                .map(drop),
            "shards",
        ),
    ];
    for (result, field) in cases {
        let err = result.expect_err(field);
        assert_eq!(err.field(), field, "{err}");
        assert!(err.to_string().contains(field), "{err}");
    }
}

#[test]
fn clones_share_state_and_handles_are_send_sync() {
    fn assert_shared<T: Clone + Send + Sync + std::fmt::Debug>() {}
    assert_shared::<RateLimiter<String>>();
    assert_shared::<RateLimiter<u64, SlidingWindow, ManualClock>>();
    let (limiter, _) = manual::<u64, _>(TokenBucket::new(1, 1.0).unwrap());
    let clone = limiter.clone();
    limiter.check(&1).unwrap();
    assert!(clone.check(&1).is_err());
    let shared = Arc::new(limiter);
    assert!(shared.check(&1).is_err());
}

#[test]
fn builder_needs_no_turbofish() {
    let limiter = RateLimiter::builder(TokenBucket::new(1, 1.0).unwrap())
        .build()
        .unwrap();
    assert!(limiter.check(&42_u32).is_ok());
    assert!(format!("{limiter:?}").contains("TokenBucket"));
}

/// A hasher under which every key collides, as a flood of chosen keys would.
#[derive(Default)]
struct Colliding;

impl std::hash::Hasher for Colliding {
    fn finish(&self) -> u64 {
        42
    }

    fn write(&mut self, _: &[u8]) {}
}

#[test]
fn keys_that_all_collide_keep_exact_answers() {
    let limiter = RateLimiter::builder(TokenBucket::new(2, 1.0).unwrap())
        .clock(ManualClock::new())
        .hasher(std::hash::BuildHasherDefault::<Colliding>::default())
        .build()
        .unwrap();
    // 50 000 colliding keys: their shard turns to SipHash, so this stays linear.
    for key in 0..50_000_u64 {
        assert_eq!(limiter.check(&key), Ok(()));
    }
    for key in 0..50_000_u64 {
        assert_eq!(limiter.check(&key), Ok(()), "key {key}: its second token");
        assert_eq!(
            limiter.check(&key),
            Err(RateLimited::new(SEC)),
            "key {key}: no third"
        );
    }
    assert_eq!(limiter.len(), 50_000);
}
