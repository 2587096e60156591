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

mod extreme;

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

/// One step of a keyed run: check keys `from..from + n` (mod the key count) at `cost` each,
/// then move the clock by `advance` ns.
type KeyedStep = (u32, u32, u32, u64);

fn keyed_steps() -> impl Strategy<Value = Vec<KeyedStep>> {
    let advance = prop_oneof![
        4 => Just(0_u64),
        4 => 0_u64..2_000_000,           // within a refill period
        2 => 0_u64..4_000_000_000,       // past it: keys go idle and become reclaimable
    ];
    prop::collection::vec((any::<u32>(), 1_u32..1_000, 0_u32..3, advance), 1..40)
}

/// Runs `steps` on a keyed limiter with one shard (so every insert meets the reclaim path)
/// and on a model that never evicts: one unkeyed limiter per key on the same clock. Every
/// answer must agree, and the table must stay within the keys checked within `idle_ttl`,
/// the time `algorithm` takes to forget a check (`forget`) and the reclaim grace.
fn keyed_matches_model<A: Algorithm>(
    algorithm: &A,
    forget: Duration,
    keys: u32,
    idle_ttl: Duration,
    steps: &[KeyedStep],
) -> Result<(), TestCaseError> {
    let clock = ManualClock::new();
    let limiter = RateLimiter::builder(algorithm.clone())
        .clock(clock.clone())
        .idle_ttl(idle_ttl)
        .shards(1)
        .build()
        .unwrap();
    let mut model: std::collections::HashMap<u32, RateLimiter<(), A, ManualClock>> =
        std::collections::HashMap::new();
    let mut last_check: std::collections::HashMap<u32, Duration> = std::collections::HashMap::new();
    let (_, window) = algorithm.policy();
    let held_for = idle_ttl + forget + window.min(Duration::from_secs(1));
    let mut peak_active = 0_usize;
    let mut now = Duration::ZERO;
    for &(from, n, cost, advance) in steps {
        for i in 0..n {
            let key = from.wrapping_add(i) % keys;
            let want = model
                .entry(key)
                .or_insert_with(|| {
                    RateLimiter::builder(algorithm.clone())
                        .clock(clock.clone())
                        .build()
                        .unwrap()
                })
                .check_n(&(), cost);
            prop_assert_eq!(
                limiter.check_n(&key, cost),
                want,
                "key {} at {:?}",
                key,
                now
            );
            last_check.insert(key, now);
        }
        let active = last_check
            .values()
            .filter(|&&t| now.saturating_sub(t) <= held_for)
            .count();
        peak_active = peak_active.max(active);
        now += Duration::from_nanos(advance);
        clock.set(now);
    }
    // A table grows only when three quarters of its keys could not be reclaimed, by at most
    // a factor of two: at most 3 slots per key active at the peak, plus a small table's
    // first slots and its overflow tail.
    let one_key = RateLimiter::builder(algorithm.clone())
        .shards(1)
        .build()
        .unwrap();
    one_key.check(&0_u32).unwrap();
    let slot = one_key.table_bytes() / 15; // a first table: 8 homes and 7 window slots
    prop_assert!(
        limiter.table_bytes() <= slot * (3 * peak_active + 100),
        "{} bytes for a peak of {} active keys",
        limiter.table_bytes(),
        peak_active
    );
    prop_assert!(limiter.len() <= last_check.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..config() })]

    #[test]
    fn keyed_limiter_answers_as_one_that_never_evicts_and_stays_within_its_memory_bound(
        capacity in 1_u32..8,
        per_ms in 1_u32..4,
        keys in 1_u32..50_000,
        idle_ms in prop_oneof![Just(0_u64), 0_u64..3],
        sliding in any::<bool>(),
        steps in keyed_steps(),
    ) {
        let idle_ttl = Duration::from_millis(idle_ms);
        if sliding {
            let window = Duration::from_millis(u64::from(capacity) / u64::from(per_ms) + 1);
            let algorithm = SlidingWindow::new(capacity, window).unwrap();
            // a sliding window forgets a check after two windows (its own and the next)
            keyed_matches_model(&algorithm, 2 * window, keys, idle_ttl, &steps)?;
        } else {
            let algorithm = TokenBucket::new(capacity, f64::from(per_ms) * 1000.0).unwrap();
            let (_, window) = algorithm.policy();
            keyed_matches_model(&algorithm, window, keys, idle_ttl, &steps)?;
        }
    }
}
