//! Properties that must hold for any input: rate bounds, composite soundness, retry delay
//! bounds, legal breaker transitions, and builders that never panic.
//!
//! Failing cases are saved under `tests/properties/regressions/` and replayed first on later
//! runs; commit them.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::{Arc, Mutex};
use std::time::Duration;

use limitpal::rand::SeedableRng;
use limitpal::rand::rngs::StdRng;
use limitpal::{
    Algorithm, Backoff, CircuitBreaker, CircuitState, ConfigError, Jitter, LeakyBucket,
    ManualClock, RateLimiter, RetryBudget, RetryPolicy, SlidingWindow, TokenBucket,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    }
}

/// (advance in ns, cost) steps.
fn steps() -> impl Strategy<Value = Vec<(u64, u32)>> {
    prop::collection::vec((0_u64..3_000_000_000, 0_u32..6), 1..120)
}

/// Runs `steps` on a fresh limiter with `algorithm`; returns (time, cost) of admissions.
fn admissions<A: Algorithm>(algorithm: A, steps: &[(u64, u32)]) -> Vec<(u64, u64)> {
    let clock = ManualClock::new();
    let limiter = RateLimiter::builder(algorithm)
        .clock(clock.clone())
        .build()
        .unwrap();
    let mut now = 0_u64;
    let mut admitted = Vec::new();
    for &(advance, cost) in steps {
        now += advance;
        clock.set(Duration::from_nanos(now));
        if limiter.check_n(&0_u8, cost).is_ok() {
            admitted.push((now, u64::from(cost)));
        }
    }
    admitted
}

/// For every interval between two admissions: cost ≤ capacity + span / T (`T` ns per token).
fn assert_gcra_bound(admitted: &[(u64, u64)], capacity: u32, window: Duration) {
    let interval = window.as_nanos() / u128::from(capacity);
    for i in 0..admitted.len() {
        let mut cost = 0_u128;
        for j in i..admitted.len() {
            cost += u128::from(admitted[j].1);
            let span = u128::from(admitted[j].0 - admitted[i].0);
            assert!(
                cost * interval <= u128::from(capacity) * interval + span,
                "admitted {cost} in {span} ns (capacity {capacity}, {interval} ns/token)"
            );
        }
    }
}

/// In every window [t, t + window) starting at an admission: cost ≤ limit.
fn assert_window_bound(admitted: &[(u64, u64)], limit: u32, window: u64) {
    for i in 0..admitted.len() {
        let cost: u64 = admitted[i..]
            .iter()
            .take_while(|(t, _)| *t < admitted[i].0 + window)
            .map(|(_, c)| c)
            .sum();
        assert!(
            cost <= u64::from(limit),
            "{cost} in one window of {window} ns"
        );
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn token_and_leaky_buckets_never_exceed_capacity_plus_refill(
        capacity in 1_u32..20, per_sec in 0.1_f64..50.0, steps in steps(), leaky in any::<bool>()
    ) {
        let admitted = if leaky {
            admissions(LeakyBucket::new(capacity, per_sec).unwrap(), &steps)
        } else {
            admissions(TokenBucket::new(capacity, per_sec).unwrap(), &steps)
        };
        let (_, window) = TokenBucket::new(capacity, per_sec).unwrap().policy();
        assert_gcra_bound(&admitted, capacity, window);
    }

    #[test]
    fn sliding_window_never_exceeds_its_limit_in_any_window(
        limit in 1_u32..20, window_ms in 1_u64..5000, steps in steps()
    ) {
        let window = Duration::from_millis(window_ms);
        let admitted = admissions(SlidingWindow::new(limit, window).unwrap(), &steps);
        assert_window_bound(&admitted, limit, window_ms * 1_000_000);
    }

    #[test]
    fn composite_admits_only_what_both_admit_and_denies_only_when_one_must(
        capacity in 1_u32..10, per_sec in 0.1_f64..20.0,
        limit in 1_u32..10, window_ms in 1_u64..5000,
        steps in steps(),
    ) {
        let a = TokenBucket::new(capacity, per_sec).unwrap();
        let b = SlidingWindow::new(limit, Duration::from_millis(window_ms)).unwrap();
        let clock = ManualClock::new();
        let both = RateLimiter::builder(a.and(b)).clock(clock.clone()).build().unwrap();
        // shadows of each part, fed only what the composite admitted
        let shadow_a = RateLimiter::builder(a).clock(clock.clone()).build().unwrap();
        let shadow_b = RateLimiter::builder(b).clock(clock.clone()).build().unwrap();
        let mut now = 0;
        for (advance, cost) in steps {
            now += advance;
            clock.set(Duration::from_nanos(now));
            let cost = cost.min(capacity.min(limit));
            if both.check_n(&0_u8, cost).is_ok() {
                prop_assert!(shadow_a.check_n(&0_u8, cost).is_ok(), "admitted beyond the bucket");
                prop_assert!(shadow_b.check_n(&0_u8, cost).is_ok(), "admitted beyond the window");
            } else {
                // a denial is justified by the parts' own state: had a denial consumed from
                // one part, the shadows would have more left than the composite acts on
                let (left_a, _) = shadow_a.quota(&0_u8);
                let (left_b, _) = shadow_b.quota(&0_u8);
                prop_assert!(left_a < cost || left_b < cost, "denied with {left_a} and {left_b} left");
            }
        }
    }

    #[test]
    fn retry_delays_stay_within_zero_and_max_delay(
        base_ms in 0_u64..100_000, extra_ms in 0_u64..1_000_000,
        backoff in prop_oneof![
            Just(Backoff::Constant), Just(Backoff::Linear),
            (1.0_f64..1e6).prop_map(|factor| Backoff::Exponential { factor }),
        ],
        jitter in prop_oneof![Just(Jitter::None), Just(Jitter::Full), Just(Jitter::Equal), Just(Jitter::Decorrelated)],
        retries in prop::collection::vec(any::<u32>(), 1..20),
        seed in any::<u64>(),
    ) {
        let max = Duration::from_millis(base_ms + extra_ms);
        let policy = RetryPolicy::builder()
            .base_delay(Duration::from_millis(base_ms))
            .max_delay(max)
            .backoff(backoff)
            .jitter(jitter)
            .build()
            .unwrap();
        let mut rng = StdRng::seed_from_u64(seed);
        for retry in retries.into_iter().chain([u32::MAX, 0, 1]) {
            prop_assert!(policy.delay(retry, &mut rng) <= max);
        }
    }

    #[test]
    fn breaker_moves_only_along_legal_edges_and_never_overfills_half_open(
        threshold in 1_u32..4, max_calls in 1_u32..4, successes in 1_u32..4,
        ops in prop::collection::vec(0_u8..6, 1..200),
    ) {
        let clock = ManualClock::new();
        let transitions = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&transitions);
        let breaker = CircuitBreaker::builder()
            .failure_threshold(threshold)
            .recovery_timeout(Duration::from_secs(1))
            .half_open_max_calls(max_calls)
            .half_open_success_threshold(successes)
            .on_state_change(move |from, to| log.lock().unwrap().push((from, to)))
            .clock(clock.clone())
            .build()
            .unwrap();
        // held permits: (permit, taken while half-open, transitions seen when taken)
        let mut held = Vec::new();
        for op in ops {
            match op {
                0 | 1 => {
                    let half_open = breaker.state() == CircuitState::HalfOpen;
                    if let Ok(permit) = breaker.try_acquire() {
                        let epoch = transitions.lock().unwrap().len();
                        held.push((permit, half_open || breaker.state() == CircuitState::HalfOpen, epoch));
                    }
                }
                2 => if let Some((p, _, _)) = held.pop() { p.success() },
                3 => if let Some((p, _, _)) = held.pop() { p.failure() },
                4 => {
                    if !held.is_empty() {
                        drop(held.remove(0)); // cancelled: records nothing
                    }
                }
                _ => clock.advance(Duration::from_millis(600)),
            }
            let current = transitions.lock().unwrap().len();
            if breaker.state() == CircuitState::HalfOpen {
                let probes = held.iter().filter(|(_, probe, e)| *probe && *e == current).count();
                prop_assert!(probes <= max_calls as usize, "{probes} probes out of {max_calls}");
            }
        }
        use CircuitState::{Closed, HalfOpen, Open};
        for &(from, to) in transitions.lock().unwrap().iter() {
            prop_assert!(
                matches!((from, to), (Closed, Open) | (Open, HalfOpen) | (HalfOpen, Closed) | (HalfOpen, Open)),
                "illegal transition {from:?} -> {to:?}"
            );
        }
    }

    #[test]
    fn builders_return_ok_or_config_error_and_what_they_build_never_panics(
        capacity in any::<u32>(), rate in any::<f64>(), window_ns in any::<u64>(),
        threshold in any::<u32>(), ratio in any::<f64>(), min_calls in any::<u32>(),
        recovery_ns in any::<u64>(), half_open in any::<u32>(),
        attempts in any::<u32>(), base_ns in any::<u64>(), max_ns in any::<u64>(), factor in any::<f64>(),
        ttl_ns in any::<u64>(), per_sec in any::<u32>(), budget_ratio in any::<f64>(),
        times in prop::collection::vec(any::<u64>(), 1..10), costs in prop::collection::vec(any::<u32>(), 1..10),
    ) {
        let clock = ManualClock::new();
        let check_all = |result: Result<(), ConfigError>| {
            if let Err(e) = result { assert!(!e.field().is_empty()); }
        };
        if let Ok(bucket) = TokenBucket::new(capacity, rate) {
            let limiter = RateLimiter::builder(bucket).clock(clock.clone()).max_keys(3).build().unwrap();
            for (&t, &n) in times.iter().zip(&costs) {
                clock.set(Duration::from_nanos(t));
                let _ = limiter.check_n(&t, n);
                let _ = limiter.acquire(&t, Duration::from_nanos(t));
                let _ = limiter.quota(&t);
            }
            prop_assert!(limiter.len() <= 3);
        } else {
            check_all(TokenBucket::new(capacity, rate).map(drop));
        }
        if let Ok(window) = SlidingWindow::new(capacity % 1000, Duration::from_nanos(window_ns)) {
            let limiter = RateLimiter::builder(window).clock(clock.clone()).build().unwrap();
            for (&t, &n) in times.iter().zip(&costs) {
                clock.set(Duration::from_nanos(t));
                let _ = limiter.check_n(&(), n % 1000);
            }
        }
        let breaker = CircuitBreaker::builder()
            .failure_threshold(threshold)
            .failure_rate(ratio, min_calls, Duration::from_nanos(window_ns))
            .recovery_timeout(Duration::from_nanos(recovery_ns))
            .half_open_max_calls(half_open)
            .clock(clock.clone())
            .build();
        if let Ok(breaker) = breaker {
            for &t in &times {
                clock.set(Duration::from_nanos(t));
                if let Ok(p) = breaker.try_acquire() { p.failure(); }
                let _ = breaker.state();
            }
        }
        let policy = RetryPolicy::builder()
            .max_attempts(attempts)
            .base_delay(Duration::from_nanos(base_ns))
            .max_delay(Duration::from_nanos(max_ns))
            .backoff(Backoff::Exponential { factor })
            .build();
        if let Ok(policy) = policy {
            let mut rng = policy.new_rng();
            for &n in &costs {
                prop_assert!(policy.delay(n, &mut rng) <= policy.max_delay());
            }
        }
        if let Ok(budget) = RetryBudget::new(Duration::from_nanos(ttl_ns), per_sec, budget_ratio) {
            for &t in &times {
                budget.deposit(Duration::from_nanos(t));
                let _ = budget.withdraw(Duration::from_nanos(t));
            }
        }
    }
}
