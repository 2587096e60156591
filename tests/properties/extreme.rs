//! Every component under clocks driven to their extremes: 0, `u64::MAX` nanoseconds (and
//! `Duration::MAX`, which saturates there), huge forward jumps and jumps backwards. Run in
//! debug builds, so an overflow anywhere panics and fails the property.
//!
//! What the extremes mean, as documented on [`limitpal::Clock`]: time that goes backwards is
//! no time passed; past about 584 years the clock saturates, so time stops there.

use std::cell::Cell;
use std::time::Duration;

use limitpal::concurrency::{AdaptiveLimit, Aimd, Bulkhead, Gradient2};
use limitpal::{
    Algorithm, CircuitBreaker, CircuitState, Clock, Error, Jitter, LeakyBucket, ManualClock,
    RateLimiter, ResilientExecutor, RetryBudget, RetryPolicy, SlidingWindow, TokenBucket,
};
use proptest::prelude::*;

use super::config;

/// One clock move: to an absolute instant (often an extreme) or backwards / forwards by a step.
#[derive(Debug, Clone, Copy)]
enum Move {
    To(Duration),
    Back(Duration),
    Ahead(Duration),
}

fn instant() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::from_nanos(1)),
        Just(Duration::from_nanos(u64::MAX)),
        Just(Duration::from_nanos(u64::MAX - 1)),
        Just(Duration::MAX),
        (u64::MAX - 10_000_000_000..=u64::MAX).prop_map(Duration::from_nanos),
        any::<u64>().prop_map(Duration::from_nanos),
        (0_u64..10_000_000_000).prop_map(Duration::from_nanos),
    ]
}

fn moves() -> impl Strategy<Value = Vec<Move>> {
    let step = prop_oneof![
        Just(Duration::ZERO),
        (0_u64..5_000_000_000).prop_map(Duration::from_nanos),
        any::<u64>().prop_map(Duration::from_nanos),
        Just(Duration::MAX),
    ];
    let one = prop_oneof![
        3 => instant().prop_map(Move::To),
        1 => step.clone().prop_map(Move::Back),
        2 => step.prop_map(Move::Ahead),
    ];
    prop::collection::vec(one, 1..60)
}

fn apply(clock: &ManualClock, m: Move) {
    match m {
        Move::To(t) => clock.set(t),
        Move::Back(d) => clock.set(clock.now().saturating_sub(d)),
        Move::Ahead(d) => clock.advance(d),
    }
}

/// The highest clock reading `moves` reach from 0.
fn highest(moves: &[Move]) -> u64 {
    let clock = ManualClock::new();
    let mut max = 0;
    for &m in moves {
        apply(&clock, m);
        max = max.max(clock.now_nanos());
    }
    max
}

proptest! {
    #![proptest_config(config())]

    /// A GCRA limiter admits at most `capacity + rate × (highest time − 0) + 1` over any
    /// run, whatever the clock does: going back gives nothing, saturating stops time.
    #[test]
    fn gcra_never_over_admits_under_extreme_clocks(
        moves in moves(), capacity in 1_u32..20, per_sec in 1_u32..1000, leaky in any::<bool>(),
    ) {
        let clock = ManualClock::new();
        let admitted = if leaky {
            run_limiter(LeakyBucket::new(capacity, f64::from(per_sec)).unwrap(), &clock, &moves)
        } else {
            run_limiter(TokenBucket::new(capacity, f64::from(per_sec)).unwrap(), &clock, &moves)
        };
        let span_s = u128::from(highest(&moves)) / 1_000_000_000 + 1;
        let bound = u128::from(capacity) + u128::from(per_sec) * span_s;
        prop_assert!(u128::from(admitted) <= bound, "{admitted} > {bound}");
    }

    /// A sliding window admits at most `limit` per window length, counted over the windows
    /// the highest time spans; its reservations and holds stay within range too.
    #[test]
    fn sliding_window_and_composites_never_over_admit_under_extreme_clocks(
        moves in moves(), limit in 1_u32..20, window_ms in 1_u64..5_000,
    ) {
        let clock = ManualClock::new();
        let window = Duration::from_millis(window_ms);
        let admitted = run_limiter(SlidingWindow::new(limit, window).unwrap(), &clock, &moves);
        let windows = u128::from(highest(&moves)) / window.as_nanos() + 2;
        prop_assert!(u128::from(admitted) <= u128::from(limit) * windows);

        let clock = ManualClock::new();
        let both = TokenBucket::new(limit, 10.0).unwrap().and(SlidingWindow::new(limit, window).unwrap());
        let admitted_both = run_limiter(both, &clock, &moves);
        prop_assert!(u128::from(admitted_both) <= u128::from(limit) * windows);
    }

    /// Breakers (consecutive failures, failure rate, slow calls) at extreme times: legal
    /// states, and an open breaker's `retry_after` never beyond its recovery timeout.
    #[test]
    fn breakers_stay_legal_under_extreme_clocks(
        moves in moves(), outcomes in prop::collection::vec(0_u8..4, 60),
        window_ns in prop_oneof![1_u64..30, 1_u64..u64::MAX],
    ) {
        let clock = ManualClock::new();
        let recovery = Duration::from_secs(30);
        let breaker = CircuitBreaker::builder()
            .failure_threshold(3)
            .failure_rate(0.5, 2, Duration::from_nanos(window_ns))
            .slow_call(Duration::from_millis(100))
            .recovery_timeout(recovery)
            .clock(clock.clone())
            .build()
            .unwrap();
        for (&m, &outcome) in moves.iter().zip(outcomes.iter().cycle()) {
            match breaker.try_acquire() {
                Ok(permit) => {
                    apply(&clock, m); // the call takes this long (or the clock jumps back)
                    match outcome {
                        0 => permit.success(),
                        1 | 2 => permit.failure(),
                        _ => drop(permit),
                    }
                }
                Err(open) => {
                    prop_assert!(open.retry_after <= recovery, "{open:?}");
                    apply(&clock, m);
                }
            }
            let state = breaker.state();
            prop_assert!(matches!(state, CircuitState::Closed | CircuitState::Open | CircuitState::HalfOpen));
        }
    }

    /// A retry budget at extreme times: never more retries than deposits allow (ratio 0.5,
    /// no minimum), however the clock moves.
    #[test]
    fn retry_budget_never_overspends_under_extreme_clocks(
        moves in moves(), ttl_ns in prop_oneof![1_u64..30, 1_u64..100_000_000_000],
    ) {
        let clock = ManualClock::new();
        let Ok(budget) = RetryBudget::new(Duration::from_nanos(ttl_ns), 0, 0.5) else {
            return Ok(()); // a ttl it refuses is a ConfigError, tested elsewhere
        };
        let (mut deposits, mut withdrawn) = (0_u32, 0_u32);
        for &m in &moves {
            apply(&clock, m);
            budget.deposit(clock.now());
            deposits += 1;
            if budget.withdraw(clock.now()) {
                withdrawn += 1;
            }
        }
        prop_assert!(withdrawn <= deposits.div_ceil(2), "{withdrawn} retries for {deposits} requests");
    }

    /// Retry schedules: every delay within `max_delay` for any attempt number and any
    /// base/max up to the end of the range.
    #[test]
    fn retry_delays_stay_bounded_at_extreme_durations(
        base_ns in any::<u64>(), max_ns in any::<u64>(), seed in any::<u64>(),
    ) {
        for jitter in [Jitter::None, Jitter::Full, Jitter::Equal, Jitter::Decorrelated] {
            let Ok(policy) = RetryPolicy::builder()
                .max_attempts(u32::MAX)
                .base_delay(Duration::from_nanos(base_ns))
                .max_delay(Duration::from_nanos(max_ns))
                .jitter(jitter)
                .seed(seed)
                .build()
            else {
                continue; // base > max: a ConfigError, tested elsewhere
            };
            let mut rng = policy.new_rng();
            for n in [0, 1, 2, 63, 64, 65, 1_000, u32::MAX - 1, u32::MAX] {
                prop_assert!(policy.delay(n, &mut rng) <= policy.max_delay());
            }
        }
    }

    /// Adaptive limits fed samples at extreme times (round trips of 0 when the clock went
    /// back, of centuries when it jumped): the limit stays within its bounds.
    #[test]
    fn adaptive_limits_stay_in_bounds_under_extreme_clocks(
        moves in moves(), outcomes in prop::collection::vec(any::<bool>(), 60), gradient in any::<bool>(),
    ) {
        let clock = ManualClock::new();
        let builder = if gradient {
            AdaptiveLimit::builder(Gradient2::new())
        } else {
            AdaptiveLimit::builder(Aimd::new())
        };
        let limit = builder.initial_limit(10).min_limit(2).max_limit(50).clock(clock.clone()).build().unwrap();
        let mut held = Vec::new();
        for (&m, &ok) in moves.iter().zip(outcomes.iter().cycle()) {
            if let Ok(permit) = limit.try_acquire() {
                held.push(permit);
            }
            apply(&clock, m);
            if let Some(permit) = held.pop() {
                if ok { permit.success() } else { permit.failure() }
            }
            prop_assert!((2..=50).contains(&limit.limit()), "limit {}", limit.limit());
        }
        drop(held);
        prop_assert_eq!(limit.in_flight(), 0);
    }

    /// The whole pipeline (limiter, breaker, bulkhead, retries with budget, deadline) with
    /// its clock at an extreme: it answers, never panics, never calls more than
    /// `max_attempts` times, and its waits only move the clock forward.
    #[test]
    fn the_pipeline_answers_at_extreme_clocks(
        start in instant(), fail_first in 0_u32..6, deadline_ns in any::<u64>(),
    ) {
        let clock = ManualClock::new();
        clock.set(start);
        let exec = ResilientExecutor::builder()
            .limiter(RateLimiter::builder(TokenBucket::new(3, 1.0).unwrap()).clock(clock.clone()).build().unwrap())
            .limiter_wait(Duration::from_secs(5))
            .breaker(CircuitBreaker::builder().failure_threshold(2).clock(clock.clone()).build().unwrap())
            .bulkhead(Bulkhead::new(2).unwrap())
            .retry(RetryPolicy::builder().max_attempts(4).base_delay(Duration::from_secs(1)).jitter(Jitter::None).build().unwrap())
            .budget(RetryBudget::new(Duration::from_secs(10), 1, 0.2).unwrap())
            .deadline(Duration::from_nanos(deadline_ns))
            .clock(clock.clone())
            .build()
            .unwrap();
        for _ in 0..3 {
            let before = clock.now();
            let calls = Cell::new(0_u32);
            let result = exec.run(&(), || {
                calls.set(calls.get() + 1);
                if calls.get() <= fail_first { Err("down") } else { Ok(calls.get()) }
            });
            prop_assert!(calls.get() <= 4);
            match result {
                Ok(n) => prop_assert_eq!(n, calls.get()),
                Err(Error::Failed(_) | Error::RetryExhausted { .. } | Error::CircuitOpen(_)
                    | Error::RateLimited(_) | Error::TimedOut { .. } | Error::BulkheadFull(_)) => {}
                Err(other) => prop_assert!(false, "unexpected {other:?}"),
            }
            // the run's waits only ever moved the clock forward (saturating at the end)
            prop_assert!(clock.now() >= before);
        }
    }
}

/// Checks, reservations, holds and quota reads on one key after every move; the number of
/// admissions (checks admitted, reservations admitted now, reservations committed once due).
fn run_limiter<A: Algorithm>(algorithm: A, clock: &ManualClock, moves: &[Move]) -> u32 {
    let limiter: RateLimiter<u64, A, ManualClock> = RateLimiter::builder(algorithm)
        .clock(clock.clone())
        .max_keys(4)
        .build()
        .unwrap();
    let mut admitted = 0;
    for (i, &m) in moves.iter().enumerate() {
        apply(clock, m);
        let key = (i % 3) as u64;
        if limiter.check(&0).is_ok() {
            admitted += 1;
        }
        let _ = limiter.check_n(&key, 2);
        let _ = limiter.quota(&0);
        match i % 4 {
            0 => {
                if let Ok(r) = limiter.reserve(&0, Duration::from_secs(3600)) {
                    if r.delay().is_zero() {
                        admitted += 1;
                        r.commit();
                    } else {
                        r.cancel(); // not coming: given back where the algorithm can
                    }
                }
            }
            // a hostile hold now and then; a pushback-sized one otherwise
            1 if i % 8 == 1 => limiter.hold(&key, Duration::MAX),
            1 => limiter.hold(&key, Duration::from_secs(1)),
            2 => {
                let _ = limiter.acquire(&key, Duration::from_secs(1));
            }
            _ => {
                let _ = limiter.reserve(&key, Duration::MAX).map(drop);
            }
        }
    }
    admitted
}
