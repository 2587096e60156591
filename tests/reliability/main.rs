//! Stress, hostile input and bounded memory. The soak and the 10 M-key memory run are
//! `#[ignore]`d (they take a minute or more); run them on demand with
//! `cargo test --release --test reliability -- --ignored --nocapture`.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use limitpal::{
    Algorithm, CircuitBreaker, CircuitState, Clock, ManualClock, MonotonicClock, RateLimiter,
    SlidingWindow, TokenBucket,
};

/// Runs `per_thread` calls of `f(thread, i)` on each of `threads` threads; counts `true`s.
fn hammer(threads: u64, per_thread: u64, f: impl Fn(u64, u64) -> bool + Sync) -> u64 {
    let admitted = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (f, admitted) = (&f, &admitted);
            s.spawn(move || {
                for i in 0..per_thread {
                    if f(t, i) {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    admitted.into_inner()
}

#[test]
fn threads_times_keys_on_a_frozen_clock_admit_exactly() {
    const KEYS: u64 = 64;
    let clock = ManualClock::new();
    let gcra = RateLimiter::builder(TokenBucket::new(5, 1.0).unwrap())
        .clock(clock.clone())
        .build()
        .unwrap();
    assert_eq!(
        hammer(8, 2000, |t, i| gcra.check(&((t + i) % KEYS)).is_ok()),
        5 * KEYS
    );
    let composite = RateLimiter::builder(
        TokenBucket::new(7, 1.0)
            .unwrap()
            .and(SlidingWindow::new(3, Duration::from_secs(1)).unwrap()),
    )
    .clock(clock.clone())
    .build()
    .unwrap();
    assert_eq!(
        hammer(8, 2000, |t, i| composite
            .check(&((t * 7 + i) % KEYS))
            .is_ok()),
        3 * KEYS
    );
    clock.advance(Duration::from_secs(1));
    // the window allows 3 more per key; the bucket had 7, gave 3 and refilled 1: 3 fit
    assert_eq!(
        hammer(8, 2000, |t, i| composite.check(&((t + i) % KEYS)).is_ok()),
        3 * KEYS
    );
    clock.advance(Duration::from_secs(1));
    // bucket: 7 - 3 = 4, +1 refilled = 5, - 3 = 2, +1 = 3: still 3 per key
    assert_eq!(
        hammer(8, 2000, |t, i| composite.check(&((t + i) % KEYS)).is_ok()),
        3 * KEYS
    );
    clock.advance(Duration::from_secs(1));
    // now the bucket binds: 1 token per key, though the window would allow 3
    assert_eq!(
        hammer(8, 2000, |t, i| composite.check(&((t + i) % KEYS)).is_ok()),
        KEYS
    );
}

#[test]
fn hostile_keys_of_any_size_are_limited_and_bounded() {
    let limiter = RateLimiter::builder(TokenBucket::new(1, 1.0).unwrap())
        .clock(ManualClock::new())
        .max_keys(16)
        .build()
        .unwrap();
    let huge = "x".repeat(1 << 20);
    let keys = [
        String::new(),
        huge.clone(),
        "\u{0}\u{fffd}🦀".to_owned(),
        huge + "y",
    ];
    for key in &keys {
        assert!(limiter.check(key.as_str()).is_ok());
        assert!(
            limiter.check(key.as_str()).is_err(),
            "each key has its own quota"
        );
    }
    for i in 0..10_000 {
        let _ = limiter.check(format!("attacker-{i}").as_str());
    }
    assert!(limiter.len() <= 16);
}

#[test]
#[ignore = "a one-minute soak: run on demand"]
fn soak_one_minute_of_mixed_traffic_keeps_every_invariant() {
    let clock = MonotonicClock;
    let limiter = RateLimiter::builder(TokenBucket::new(100, 1000.0).unwrap())
        .max_keys(10_000)
        .build()
        .unwrap();
    let breaker_clock = ManualClock::new();
    let breaker = CircuitBreaker::builder()
        .failure_threshold(5)
        .recovery_timeout(Duration::from_millis(50))
        .half_open_max_calls(2)
        .clock(breaker_clock.clone())
        .build()
        .unwrap();
    let end = clock.now() + Duration::from_secs(60);
    let checks = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..2_u64 {
            let (limiter, breaker, breaker_clock, checks) =
                (&limiter, &breaker, &breaker_clock, &checks);
            s.spawn(move || {
                let mut i = t;
                while clock.now() < end {
                    i += 2;
                    let _ = limiter.check(&(i.wrapping_mul(2_654_435_761) % 50_000));
                    if i % 100 == 0 {
                        breaker_clock.advance(Duration::from_millis(10));
                    }
                    if let Ok(permit) = breaker.try_acquire() {
                        if i % 7 == 0 {
                            permit.failure();
                        } else if i % 5 == 0 {
                            drop(permit); // cancelled
                        } else {
                            permit.success();
                        }
                    }
                    checks.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    let checks = checks.into_inner();
    assert!(limiter.len() <= 10_000);
    // the breaker still works after a minute of churn
    breaker.force_open();
    breaker_clock.advance(Duration::from_millis(50));
    let probes: Vec<_> = (0..2).map(|_| breaker.try_acquire().unwrap()).collect();
    assert!(breaker.try_acquire().is_err());
    probes.into_iter().for_each(limitpal::CallPermit::success);
    assert_eq!(breaker.state(), CircuitState::Closed);
    println!(
        "soak: {checks} iterations in 60 s, {} keys held",
        limiter.len()
    );
}

/// Resident memory of this process, from /proc (Linux).
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
#[ignore = "streams 10 M keys: run on demand, in release"]
fn ten_million_distinct_keys_with_max_keys_stay_bounded() {
    const BOUND_MIB: u64 = 64;
    let limiter = RateLimiter::builder(TokenBucket::new(10, 0.001).unwrap())
        .clock(ManualClock::new())
        .max_keys(100_000)
        .build()
        .unwrap();
    let before = rss_kib().unwrap_or(0);
    for key in 0..10_000_000_u64 {
        assert!(limiter.check(&key).is_ok());
        if key % 1_000_000 == 0 {
            assert!(limiter.len() <= 100_000);
        }
    }
    let grown_mib = rss_kib().unwrap_or(0).saturating_sub(before) / 1024;
    println!(
        "10 M keys, max_keys 100 000: {} held, RSS grew {grown_mib} MiB (bound {BOUND_MIB} MiB)",
        limiter.len()
    );
    assert!(limiter.len() <= 100_000);
    assert!(grown_mib <= BOUND_MIB, "RSS grew {grown_mib} MiB");
    let _ = limiter.algorithm().policy();
}
