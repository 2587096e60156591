//! The circuit breaker through the facade: state sequences, permits, concurrency, the layer.

#![cfg(feature = "tower")]
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::{Arc, Mutex};
use std::time::Duration;

use limitpal::tower::{CircuitBreakerLayer, TokioClock};
use limitpal::{
    CircuitBreaker, CircuitOpen, CircuitState, ConfigError, ManualClock, Outcome, RateLimited,
};
use tower::{BoxError, Layer, Service, ServiceExt};
use tower_test::mock;

const SEC: Duration = Duration::from_secs(1);

fn breaker(threshold: u32, recovery: Duration) -> (CircuitBreaker<ManualClock>, ManualClock) {
    let clock = ManualClock::new();
    let breaker = CircuitBreaker::builder()
        .failure_threshold(threshold)
        .recovery_timeout(recovery)
        .clock(clock.clone())
        .build()
        .unwrap();
    (breaker, clock)
}

#[test]
fn opens_after_threshold_half_opens_after_recovery_and_closes_on_success() {
    let (b, clock) = breaker(2, 5 * SEC);
    assert_eq!(b.state(), CircuitState::Closed);
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), CircuitState::Closed);
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), CircuitState::Open);
    assert_eq!(b.try_acquire().unwrap_err(), CircuitOpen::new(5 * SEC));
    clock.advance(2 * SEC);
    assert_eq!(b.try_acquire().unwrap_err().retry_after, 3 * SEC);
    clock.advance(3 * SEC);
    assert_eq!(b.state(), CircuitState::HalfOpen);
    b.try_acquire().unwrap().success();
    assert_eq!(b.state(), CircuitState::Closed);
}

#[test]
fn a_success_resets_the_consecutive_count() {
    let (b, _) = breaker(2, 5 * SEC);
    b.try_acquire().unwrap().failure();
    b.try_acquire().unwrap().success();
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), CircuitState::Closed);
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), CircuitState::Open);
}

#[test]
fn half_open_admits_one_probe_and_a_dropped_probe_frees_its_slot() {
    let (b, clock) = breaker(1, 5 * SEC);
    b.try_acquire().unwrap().failure();
    clock.advance(5 * SEC);
    let probe = b.try_acquire().unwrap();
    assert_eq!(
        b.try_acquire().unwrap_err(),
        CircuitOpen::new(Duration::ZERO),
        "the only probe slot is taken"
    );
    drop(probe); // cancelled: records nothing, frees the slot
    assert_eq!(b.state(), CircuitState::HalfOpen);
    let probe = b.try_acquire().expect("the slot was freed");
    probe.failure();
    assert_eq!(b.state(), CircuitState::Open);
    assert_eq!(
        b.try_acquire().unwrap_err().retry_after,
        5 * SEC,
        "a failed probe reopens for a full recovery timeout"
    );
    clock.advance(5 * SEC - Duration::from_nanos(1));
    assert_eq!(b.state(), CircuitState::Open);
}

#[test]
fn half_open_success_threshold_and_max_calls() {
    let clock = ManualClock::new();
    let b = CircuitBreaker::builder()
        .failure_threshold(1)
        .recovery_timeout(SEC)
        .half_open_max_calls(2)
        .half_open_success_threshold(3)
        .clock(clock.clone())
        .build()
        .unwrap();
    b.try_acquire().unwrap().failure();
    clock.advance(SEC);
    let p1 = b.try_acquire().unwrap();
    let p2 = b.try_acquire().unwrap();
    assert!(b.try_acquire().is_err());
    p1.success();
    p2.success();
    assert_eq!(b.state(), CircuitState::HalfOpen, "two of three successes");
    b.try_acquire().unwrap().success();
    assert_eq!(b.state(), CircuitState::Closed);
}

#[test]
fn failure_rate_opens_only_past_min_calls_and_old_calls_slide_out() {
    let clock = ManualClock::new();
    let b = CircuitBreaker::builder()
        .failure_threshold(u32::MAX)
        .failure_rate(0.5, 10, 10 * SEC)
        .clock(clock.clone())
        .build()
        .unwrap();
    // 4 failures in 9 calls: below min_calls
    for i in 0..9 {
        let p = b.try_acquire().unwrap();
        if i % 2 == 0 && i < 8 {
            p.failure();
        } else {
            p.success();
        }
    }
    assert_eq!(b.state(), CircuitState::Closed);
    // the 10th call fails: 5 of 10
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), CircuitState::Open);

    // old calls slide out: 9 failures long ago do not count 10 s later
    let b = CircuitBreaker::builder()
        .failure_threshold(u32::MAX)
        .failure_rate(0.5, 10, 10 * SEC)
        .clock(clock.clone())
        .build()
        .unwrap();
    for _ in 0..9 {
        b.try_acquire().unwrap().failure();
    }
    clock.advance(10 * SEC);
    for _ in 0..9 {
        b.try_acquire().unwrap().success();
    }
    b.try_acquire().unwrap().failure();
    assert_eq!(
        b.state(),
        CircuitState::Closed,
        "1 failure in the last 10 calls"
    );
}

#[test]
fn concurrent_failures_lose_no_update() {
    for _ in 0..20 {
        let (b, _) = breaker(100, 5 * SEC);
        std::thread::scope(|s| {
            for _ in 0..20 {
                s.spawn(|| {
                    for _ in 0..5 {
                        b.try_acquire().unwrap().failure();
                    }
                });
            }
        });
        assert_eq!(
            b.state(),
            CircuitState::Open,
            "exactly 100 failures must open it"
        );
    }
    let (b, _) = breaker(10, 5 * SEC);
    std::thread::scope(|s| {
        for _ in 0..20 {
            s.spawn(|| {
                for _ in 0..5 {
                    if let Ok(p) = b.try_acquire() {
                        p.failure();
                    }
                }
            });
        }
    });
    assert_eq!(b.state(), CircuitState::Open);
}

#[test]
fn outcomes_of_permits_from_before_a_transition_are_dropped() {
    let (b, clock) = breaker(1, SEC);
    let stale = b.try_acquire().unwrap();
    b.try_acquire().unwrap().failure(); // opens
    clock.advance(SEC);
    b.try_acquire().unwrap().success(); // half-open probe closes it
    stale.failure(); // issued in the first Closed epoch: ignored
    assert_eq!(b.state(), CircuitState::Closed);

    let stale = b.try_acquire().unwrap();
    b.reset();
    stale.failure();
    assert_eq!(b.state(), CircuitState::Closed, "reset starts a new epoch");
}

#[test]
fn force_open_and_reset() {
    let (b, clock) = breaker(5, 10 * SEC);
    clock.advance(SEC);
    b.force_open();
    assert_eq!(b.try_acquire().unwrap_err().retry_after, 10 * SEC);
    b.reset();
    assert_eq!(b.state(), CircuitState::Closed);
    assert!(b.try_acquire().is_ok());
}

#[test]
fn slow_successes_count_as_failures() {
    let clock = ManualClock::new();
    let b = CircuitBreaker::builder()
        .failure_threshold(2)
        .slow_call(SEC)
        .clock(clock.clone())
        .build()
        .unwrap();
    for _ in 0..2 {
        let p = b.try_acquire().unwrap();
        clock.advance(SEC);
        p.success();
    }
    assert_eq!(b.state(), CircuitState::Open);
}

#[test]
fn listener_sees_every_transition_and_may_use_the_breaker() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let clock = ManualClock::new();
    let log = Arc::clone(&seen);
    let b = CircuitBreaker::builder()
        .failure_threshold(1)
        .recovery_timeout(SEC)
        .on_state_change(move |from, to| log.lock().unwrap().push((from, to)))
        .clock(clock.clone())
        .build()
        .unwrap();
    b.try_acquire().unwrap().failure();
    clock.advance(SEC);
    b.try_acquire().unwrap().success();
    use CircuitState::{Closed, HalfOpen, Open};
    assert_eq!(
        *seen.lock().unwrap(),
        vec![(Closed, Open), (Open, HalfOpen), (HalfOpen, Closed)]
    );
}

#[test]
fn record_follows_the_classifier_outcome() {
    let (b, _) = breaker(1, SEC);
    b.try_acquire().unwrap().record(Outcome::Ignore);
    b.try_acquire().unwrap().record(Outcome::Success);
    assert_eq!(b.state(), CircuitState::Closed);
    b.try_acquire().unwrap().record(Outcome::FATAL);
    assert_eq!(b.state(), CircuitState::Open);
}

#[test]
fn every_bad_argument_is_a_config_error() {
    let cases = [
        (
            CircuitBreaker::builder()
                .failure_threshold(0)
                .build()
                .map(drop),
            "failure_threshold",
        ),
        (
            CircuitBreaker::builder()
                .half_open_max_calls(0)
                .build()
                .map(drop),
            "half_open_max_calls",
        ),
        (
            CircuitBreaker::builder()
                .half_open_success_threshold(0)
                .build()
                .map(drop),
            "half_open_success_threshold",
        ),
        (
            CircuitBreaker::builder()
                .failure_rate(0.0, 1, SEC)
                .build()
                .map(drop),
            "failure_rate",
        ),
        (
            CircuitBreaker::builder()
                .failure_rate(1.5, 1, SEC)
                .build()
                .map(drop),
            "failure_rate",
        ),
        (
            CircuitBreaker::builder()
                .failure_rate(f64::NAN, 1, SEC)
                .build()
                .map(drop),
            "failure_rate",
        ),
        (
            CircuitBreaker::builder()
                .failure_rate(0.5, 0, SEC)
                .build()
                .map(drop),
            "min_calls",
        ),
        (
            CircuitBreaker::builder()
                .failure_rate(0.5, 1, Duration::ZERO)
                .build()
                .map(drop),
            "failure_rate_window",
        ),
        (
            CircuitBreaker::builder()
                .slow_call(Duration::ZERO)
                .build()
                .map(drop),
            "slow_call",
        ),
    ];
    for (result, field) in cases {
        let err: ConfigError = result.expect_err(field);
        assert_eq!(err.field(), field);
    }
    // huge durations saturate instead of panicking
    let b = CircuitBreaker::builder()
        .recovery_timeout(Duration::MAX)
        .failure_threshold(1)
        .build()
        .unwrap();
    b.try_acquire().unwrap().failure();
    assert!(b.try_acquire().unwrap_err().retry_after > Duration::from_secs(500 * 365 * 86_400));
}

// ---- the layer ----

type Mock = mock::Mock<&'static str, &'static str>;

fn layered(
    breaker: &CircuitBreaker<TokioClock>,
) -> (
    limitpal::tower::breaker::CircuitBreakerService<Mock, TokioClock, limitpal::DefaultClassifier>,
    mock::Handle<&'static str, &'static str>,
) {
    let (service, handle) = mock::pair();
    (
        CircuitBreakerLayer::new(breaker.clone()).layer(service),
        handle,
    )
}

#[tokio::test(start_paused = true)]
async fn layer_opens_rejects_without_calling_half_opens_and_closes() {
    let breaker = CircuitBreaker::builder()
        .failure_threshold(2)
        .recovery_timeout(5 * SEC)
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let (mut svc, mut handle) = layered(&breaker);

    for _ in 0..2 {
        let call = svc.ready().await.unwrap().call("req");
        let (_, respond) = handle.next_request().await.unwrap();
        respond.send_error(std::io::Error::other("upstream down"));
        assert!(call.await.is_err());
    }
    assert_eq!(breaker.state(), CircuitState::Open);

    let err = svc.ready().await.unwrap().call("req").await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<CircuitOpen>(),
        Some(&CircuitOpen::new(5 * SEC))
    );

    tokio::time::advance(5 * SEC).await;
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    let call = svc.ready().await.unwrap().call("probe");
    let (req, respond) = handle.next_request().await.unwrap();
    assert_eq!(
        req, "probe",
        "the rejected request never reached the inner service"
    );
    respond.send_response("ok");
    assert_eq!(call.await.unwrap(), "ok");
    assert_eq!(breaker.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_probe_frees_its_slot_through_the_layer() {
    let breaker = CircuitBreaker::builder()
        .failure_threshold(1)
        .recovery_timeout(SEC)
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let (mut svc, mut handle) = layered(&breaker);
    breaker.force_open();
    tokio::time::advance(SEC).await;
    let probe = svc.ready().await.unwrap().call("probe");
    let _ = handle.next_request().await.unwrap();
    assert!(svc.ready().await.unwrap().call("second").await.is_err());
    drop(probe);
    let call = svc.ready().await.unwrap().call("third");
    let (_, respond) = handle.next_request().await.unwrap();
    respond.send_response("ok");
    assert_eq!(call.await.unwrap(), "ok");
    assert_eq!(breaker.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn our_own_errors_from_inner_layers_are_not_failures() {
    let breaker = CircuitBreaker::builder()
        .failure_threshold(1)
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let svc =
        CircuitBreakerLayer::new(breaker.clone()).layer(tower::service_fn(|kind: u8| async move {
            match kind {
                0 => Err::<(), BoxError>(Box::new(RateLimited::new(SEC))),
                _ => Err(Box::new(CircuitOpen::new(SEC)) as BoxError),
            }
        }));
    assert!(
        svc.clone()
            .oneshot(0)
            .await
            .unwrap_err()
            .is::<RateLimited>()
    );
    assert!(
        svc.clone()
            .oneshot(1)
            .await
            .unwrap_err()
            .is::<CircuitOpen>()
    );
    assert_eq!(breaker.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_custom_classifier_decides_failures_and_clones_share_the_breaker() {
    let breaker = CircuitBreaker::builder()
        .failure_threshold(2)
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let layer = CircuitBreakerLayer::new(breaker.clone()).classifier(
        |r: Result<&u16, &std::convert::Infallible>| match r {
            Ok(status) if *status >= 500 => Outcome::RETRYABLE,
            _ => Outcome::Success,
        },
    );
    let status = |code: u16| {
        tower::service_fn(move |_: ()| async move { Ok::<_, std::convert::Infallible>(code) })
    };
    let a = layer.clone().layer(status(503));
    let b = layer.layer(status(503));
    assert_eq!(
        a.oneshot(()).await.unwrap(),
        503,
        "a 503 is returned unchanged"
    );
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(b.oneshot(()).await.unwrap(), 503);
    assert_eq!(
        breaker.state(),
        CircuitState::Open,
        "both clones fed one breaker"
    );
}

fn budgeted(max_failures: u32, window: Duration) -> (CircuitBreaker<ManualClock>, ManualClock) {
    let clock = ManualClock::new();
    let breaker = CircuitBreaker::builder()
        .failure_threshold(1000) // only the budget trips these
        .recovery_timeout(30 * SEC)
        .error_budget(max_failures, window)
        .clock(clock.clone())
        .build()
        .unwrap();
    (breaker, clock)
}

/// The error budget counts failures whatever the successes between them, opens on the one
/// that spends it, and stays open exactly until it admits a failure again (not the recovery
/// timeout); it regains one failure per `window / max_failures`.
#[test]
fn an_error_budget_opens_when_spent_until_it_admits_a_failure_again() {
    let (b, clock) = budgeted(3, 3 * SEC); // one failure back every second
    for _ in 0..2 {
        b.try_acquire().unwrap().failure();
        for _ in 0..10 {
            b.try_acquire().unwrap().success();
        }
    }
    assert_eq!(b.state(), CircuitState::Closed, "two of three spent");
    clock.advance(SEC / 2); // half a failure back
    b.try_acquire().unwrap().failure(); // the third spends the budget
    assert_eq!(b.state(), CircuitState::Open);
    assert_eq!(
        b.try_acquire().unwrap_err().retry_after,
        SEC / 2,
        "exactly the budget's wait: the half failure left becomes a whole one"
    );
    clock.advance(SEC / 2);
    assert_eq!(b.state(), CircuitState::HalfOpen);
    b.try_acquire().unwrap().success();
    assert_eq!(b.state(), CircuitState::Closed);
    // one whole failure is back: the next failure spends it, and the next one is a second off
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), CircuitState::Open);
    assert_eq!(b.try_acquire().unwrap_err().retry_after, SEC);
}

/// Failures spread out slower than the budget refills never open it; `reset` refills it.
#[test]
fn failures_within_the_budget_never_open_it_and_reset_refills_it() {
    let (b, clock) = budgeted(2, 10 * SEC); // one back every 5 s
    for _ in 0..20 {
        b.try_acquire().unwrap().failure();
        clock.advance(5 * SEC);
    }
    assert_eq!(
        b.state(),
        CircuitState::Closed,
        "one failure per 5 s is within it"
    );
    b.try_acquire().unwrap().failure();
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), CircuitState::Open);
    b.reset();
    b.try_acquire().unwrap().failure();
    assert_eq!(
        b.state(),
        CircuitState::Closed,
        "reset gave the whole budget back"
    );
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), CircuitState::Open);
}

#[test]
fn a_bad_error_budget_is_a_config_error() {
    let zero = CircuitBreaker::builder()
        .error_budget(0, SEC)
        .build()
        .unwrap_err();
    assert_eq!(
        zero,
        ConfigError::Zero {
            field: "error_budget"
        }
    );
    let short = CircuitBreaker::builder()
        .error_budget(10, Duration::from_nanos(5))
        .build()
        .unwrap_err();
    assert!(
        matches!(
            short,
            ConfigError::OutOfRange {
                field: "error_budget_window",
                ..
            }
        ),
        "{short:?}"
    );
}

mod keyed {
    use super::SEC;
    use limitpal::{CircuitBreaker, CircuitState, ConfigError, KeyedCircuitBreaker, ManualClock};
    use std::collections::HashMap;
    use std::time::Duration;

    fn keyed(threshold: u32) -> (KeyedCircuitBreaker<u64, ManualClock>, ManualClock) {
        let clock = ManualClock::new();
        let breakers = KeyedCircuitBreaker::builder()
            .failure_threshold(threshold)
            .recovery_timeout(5 * SEC)
            .clock(clock.clone())
            .build()
            .unwrap();
        (breakers, clock)
    }

    /// Failures on one key open that key only, with four threads calling three keys.
    #[test]
    fn failures_on_one_key_open_that_key_only_under_contention() {
        let (breakers, _clock) = keyed(3);
        let threads: Vec<_> = (0..4_u64)
            .map(|t| {
                let breakers = breakers.clone();
                std::thread::spawn(move || {
                    let mut refused_healthy = 0;
                    for i in 0..3_000_u64 {
                        let key = (i + t) % 3;
                        match breakers.try_acquire(&key) {
                            Ok(permit) if key == 0 => permit.failure(),
                            Ok(permit) => permit.success(),
                            Err(_) if key != 0 => refused_healthy += 1,
                            Err(_) => {}
                        }
                    }
                    refused_healthy
                })
            })
            .collect();
        let refused: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(refused, 0, "keys 1 and 2 were never refused");
        assert_eq!(breakers.state(&0), CircuitState::Open);
        assert_eq!(breakers.state(&1), CircuitState::Closed);
        assert_eq!(breakers.state(&2), CircuitState::Closed);
    }

    fn settings<T>(
        b: limitpal::CircuitBreakerBuilder<ManualClock, T>,
    ) -> limitpal::CircuitBreakerBuilder<ManualClock, T> {
        b.failure_threshold(2)
            .failure_rate(0.5, 4, Duration::from_secs(2))
            .error_budget(3, Duration::from_secs(3))
            .recovery_timeout(Duration::from_secs(1))
    }

    /// Random sequences of outcomes, clock moves and keys give the same answers as a model
    /// that keeps one `CircuitBreaker` per key for ever: dropping fresh keys is unobservable.
    #[test]
    fn eviction_is_unobservable_against_a_model_that_never_evicts() {
        use proptest::prelude::*;
        let op = (0_u64..6, 0_u8..4, 0_u64..3_000);
        proptest!(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() }, |(ops in proptest::collection::vec(op, 1..300))| {
            let clock = ManualClock::new();
            let breakers = settings(KeyedCircuitBreaker::<u64>::builder().clock(clock.clone()))
                .build()
                .unwrap();
            let mut model: HashMap<u64, CircuitBreaker<ManualClock>> = HashMap::new();
            for (key, what, advance_ms) in ops {
                let reference = model
                    .entry(key)
                    .or_insert_with(|| settings(CircuitBreaker::builder().clock(clock.clone())).build().unwrap());
                let ours = breakers.try_acquire(&key);
                let theirs = reference.try_acquire();
                prop_assert_eq!(ours.as_ref().err(), theirs.as_ref().err(), "key {}", key);
                if let (Ok(ours), Ok(theirs)) = (ours, theirs) {
                    match what {
                        0 => { ours.failure(); theirs.failure(); }
                        1 | 2 => { ours.success(); theirs.success(); }
                        _ => { drop(ours); drop(theirs); }
                    }
                }
                prop_assert_eq!(breakers.state(&key), reference.state());
                clock.advance(Duration::from_millis(advance_ms));
                let _ = breakers.len(); // drops every fresh key now
            }
            for (key, reference) in &model {
                prop_assert_eq!(breakers.state(key), reference.state(), "key {}", key);
            }
        });
    }

    /// Under `max_keys` pressure an open breaker is never dropped, nor one with a permit out.
    #[test]
    fn open_breakers_and_outstanding_permits_survive_eviction_pressure() {
        let clock = ManualClock::new();
        let breakers: KeyedCircuitBreaker<u64, ManualClock> = KeyedCircuitBreaker::builder()
            .failure_threshold(1)
            .recovery_timeout(60 * SEC)
            .max_keys(8)
            .clock(clock.clone())
            .build()
            .unwrap();
        for key in 0..4 {
            breakers.try_acquire(&key).unwrap().failure();
        }
        let pending = breakers.try_acquire(&4).unwrap();
        for key in 1_000..101_000 {
            breakers.try_acquire(&key).unwrap().success();
        }
        for key in 0..4 {
            assert_eq!(breakers.state(&key), CircuitState::Open, "key {key} kept");
            assert!(breakers.try_acquire(&key).is_err());
        }
        pending.failure(); // recorded: key 4's breaker was kept for its permit
        assert_eq!(breakers.state(&4), CircuitState::Open);
        assert!(breakers.len() <= 8, "len {}", breakers.len());
    }

    /// Ten million rotating keys through `max_keys` 100 000 (half of them holding a count,
    /// so only `max_keys` drops them): the bound holds, memory stops growing once the table
    /// is full, nothing panics.
    #[test]
    fn ten_million_rotating_keys_stay_within_max_keys_and_memory() {
        let breakers: KeyedCircuitBreaker<u64> = KeyedCircuitBreaker::builder()
            .max_keys(100_000)
            .build()
            .unwrap();
        let rotate = |keys: std::ops::Range<u64>| {
            for key in keys {
                let permit = breakers.try_acquire(&key).unwrap();
                if key % 2 == 0 {
                    permit.failure(); // a count: not fresh
                } else {
                    permit.success();
                }
            }
        };
        rotate(0..1_000_000);
        assert!(breakers.len() <= 100_000, "len {}", breakers.len());
        let full = resident_bytes();
        rotate(1_000_000..10_000_000);
        assert!(breakers.len() <= 100_000, "len {}", breakers.len());
        if let (Some(full), Some(after)) = (full, resident_bytes()) {
            // 9 M more keys at a registry's few hundred bytes each would be gigabytes
            assert!(
                after.saturating_sub(full) < 64 << 20,
                "resident {full} -> {after} bytes over 9 M more keys"
            );
        }
    }

    /// This process's resident memory (Linux: `/proc/self/statm`), if the system says.
    fn resident_bytes() -> Option<u64> {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        Some(pages * 4096)
    }

    #[test]
    fn keyed_settings_are_checked_like_the_plain_ones() {
        let zero = KeyedCircuitBreaker::<u64>::builder()
            .max_keys(0)
            .build()
            .unwrap_err();
        assert_eq!(zero, ConfigError::Zero { field: "max_keys" });
        let threshold = KeyedCircuitBreaker::<String>::builder()
            .failure_threshold(0)
            .build()
            .unwrap_err();
        assert_eq!(
            threshold,
            ConfigError::Zero {
                field: "failure_threshold"
            }
        );
    }

    /// `on_key_state_change` hears every transition with its key, outside the lock (it asks
    /// the keyed breaker about that key), next to the keyless `on_state_change`; a key
    /// dropped as fresh and made again still reports, and a failure-rate window (kept beside
    /// the key's listener) still trips.
    #[test]
    fn key_listener_hears_each_keys_transitions_and_the_plain_one_no_keys() {
        use std::sync::{Arc, Mutex, OnceLock};
        type Heard = Arc<Mutex<Vec<(String, CircuitState, CircuitState, CircuitState)>>>;
        let clock = ManualClock::new();
        let keyed: Heard = Arc::default();
        let plain = Arc::new(Mutex::new(Vec::new()));
        let me: Arc<OnceLock<KeyedCircuitBreaker<String, ManualClock>>> = Arc::default();
        let (log, back, unkeyed) = (Arc::clone(&keyed), Arc::clone(&me), Arc::clone(&plain));
        let breakers = KeyedCircuitBreaker::<String, _>::builder()
            .failure_threshold(2)
            .failure_rate(0.5, 4, Duration::from_secs(10))
            .recovery_timeout(5 * SEC)
            .clock(clock.clone())
            .on_state_change(move |from, to| unkeyed.lock().unwrap().push((from, to)))
            .on_key_state_change(move |key: &String, from, to| {
                let now = back.get().map_or(to, |b| b.state(key)); // may use the breaker
                log.lock().unwrap().push((key.clone(), from, to, now));
            })
            .build()
            .unwrap();
        me.set(breakers.clone()).unwrap();
        use CircuitState::{Closed, HalfOpen, Open};

        breakers.try_acquire("a").unwrap().failure();
        breakers.try_acquire("a").unwrap().failure(); // a: Closed -> Open
        breakers.try_acquire("b").unwrap().success(); // b: nothing to say
        clock.advance(5 * SEC);
        breakers.try_acquire("a").unwrap().success(); // a: Open -> HalfOpen -> Closed
        clock.advance(10 * SEC); // b's success slides out of the window
        assert_eq!(breakers.len(), 0, "both look fresh: dropped");
        // the failure-rate trigger: 2 of 4 fail, never 2 in a row
        for fail in [true, false, false, true] {
            let permit = breakers.try_acquire("c").unwrap();
            if fail {
                permit.failure();
            } else {
                permit.success();
            }
        }
        breakers.try_acquire("a").unwrap().failure();
        breakers.try_acquire("a").unwrap().failure(); // a again, made anew: Closed -> Open
        let a = |from, to| ("a".to_owned(), from, to, to);
        assert_eq!(
            *keyed.lock().unwrap(),
            [
                a(Closed, Open),
                a(Open, HalfOpen),
                a(HalfOpen, Closed),
                ("c".to_owned(), Closed, Open, Open),
                a(Closed, Open),
            ]
        );
        assert_eq!(
            *plain.lock().unwrap(),
            [
                (Closed, Open),
                (Open, HalfOpen),
                (HalfOpen, Closed),
                (Closed, Open),
                (Closed, Open)
            ]
        );
    }

    /// `on_key_rejection` hears each refusal with its key and its `retry_after`, after the
    /// keyless `on_rejection`, through `try_acquire` and through a pipeline's
    /// `circuit_breaker_per`; shadow-mode refusals too, whose calls go ahead.
    #[test]
    fn key_rejection_listener_hears_each_refusal_with_its_key() {
        use std::sync::{Arc, Mutex};
        let clock = ManualClock::new();
        let heard = Arc::new(Mutex::new(Vec::new()));
        let (log, order) = (Arc::clone(&heard), Arc::clone(&heard));
        let breakers = KeyedCircuitBreaker::<String, _>::builder()
            .failure_threshold(1)
            .recovery_timeout(5 * SEC)
            .clock(clock.clone())
            .on_rejection(move |_| order.lock().unwrap().push(("(any key)".to_owned(), None)))
            .on_key_rejection(move |key: &String, open| {
                log.lock()
                    .unwrap()
                    .push((key.clone(), Some(open.retry_after)));
            })
            .build()
            .unwrap();
        breakers.try_acquire("a").unwrap().failure();
        breakers.try_acquire("b").unwrap().success();
        clock.advance(2 * SEC);
        assert!(breakers.try_acquire("a").is_err());
        assert!(
            breakers.try_acquire("b").is_ok(),
            "b is closed: nothing to hear"
        );
        let exec = limitpal::ResilientExecutor::builder()
            .circuit_breaker_per(breakers.clone(), |host: &&str| (*host).to_owned())
            .build()
            .unwrap();
        clock.advance(SEC);
        let refused = exec.run(&"a", || Ok::<_, ()>(()));
        assert!(
            matches!(refused, Err(limitpal::Error::CircuitOpen(_))),
            "{refused:?}"
        );
        let any = || ("(any key)".to_owned(), None);
        assert_eq!(
            *heard.lock().unwrap(),
            [
                any(),
                ("a".to_owned(), Some(3 * SEC)),
                any(),
                ("a".to_owned(), Some(2 * SEC)),
            ]
        );

        let heard = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&heard);
        let shadow = KeyedCircuitBreaker::<u64, _>::builder()
            .failure_threshold(1)
            .shadow(true)
            .clock(clock.clone())
            .on_key_rejection(move |key: &u64, _| log.lock().unwrap().push(*key))
            .build()
            .unwrap();
        shadow.try_acquire(&9).unwrap().failure();
        shadow
            .try_acquire(&9)
            .expect("shadow mode lets the call through")
            .success();
        assert_eq!(*heard.lock().unwrap(), [9]);
        assert_eq!(shadow.state(&9), CircuitState::Open);
    }

    #[test]
    fn reset_closes_one_key() {
        let (breakers, _clock) = keyed(1);
        breakers.try_acquire(&7).unwrap().failure();
        breakers.try_acquire(&8).unwrap().failure();
        breakers.reset(&7);
        assert_eq!(breakers.state(&7), CircuitState::Closed);
        assert_eq!(breakers.state(&8), CircuitState::Open);
    }
}

#[allow(dead_code)] // the example's `main` is not used here
#[path = "../../examples/per_host.rs"]
mod per_host;

/// The example's numbers: `a` and `c` answer all their 100 requests and are never refused;
/// `b`, down for 60 of its requests, is reached by 3 failures plus one probe per recovery
/// timeout, and closes again at the first probe after it is back.
#[test]
fn the_per_host_example_isolates_the_dead_host() {
    let (hosts, b_state, transitions) = per_host::run().unwrap();
    // only b moved, and the listener named it: opened, probed and reopened while it was
    // down, closed at the first probe after it came back (request 240: 2.4 s)
    assert!(transitions.iter().all(|t| t.1 == "b"), "{transitions:?}");
    let states: Vec<_> = transitions.iter().map(|t| (t.2, t.3)).collect();
    assert_eq!(
        states.first(),
        Some(&(CircuitState::Closed, CircuitState::Open))
    );
    assert_eq!(
        states.last(),
        Some(&(CircuitState::HalfOpen, CircuitState::Closed))
    );
    assert!(transitions.last().unwrap().0 >= 2_400, "{transitions:?}");
    assert!(
        states.windows(2).all(|pair| pair[0].1 == pair[1].0),
        "each transition starts where the last ended: {states:?}"
    );
    for host in ["a", "c"] {
        assert_eq!(
            hosts[host],
            per_host::Host {
                reached: 100,
                answered: 100,
                refused: 0
            },
            "{host}"
        );
    }
    let b = hosts["b"];
    assert_eq!(b.reached + b.refused, 100);
    // down 1.8 s: 3 failures open it, then one failed probe per 500 ms recovery
    let failed_calls = b.reached - b.answered;
    assert!((3..=3 + 4).contains(&failed_calls), "{b:?}");
    // 20 answered before it died; once back, the first probe (within a recovery timeout,
    // about 17 of b's requests) closes it and the rest are answered
    assert!(b.answered > 20 && b.answered <= 40, "{b:?}");
    assert!(
        b.refused >= 60 - 7,
        "the dead host was spared its calls: {b:?}"
    );
    assert_eq!(
        b_state,
        CircuitState::Closed,
        "closed again once b answered"
    );
}

/// The example over loopback HTTP: `circuit_breaker_per(breakers, Authority)` on a hyper
/// client. After server `b` is gone its connections are refused: 3 failures open its
/// breaker, the other 17 requests fail fast without reaching the network; `a` and `c`
/// answer all 30, and the key listener names `b`'s authority.
#[cfg(feature = "http")]
#[tokio::test]
async fn the_per_host_example_over_http_opens_only_the_dead_hosts_breaker() {
    use per_host::over_http::{B_DIES_AT, ROUNDS, Seen, run};
    let (seen, transitions, b) = run().await.unwrap();
    for host in ["a", "c"] {
        assert_eq!(
            seen[host],
            Seen {
                answered: ROUNDS,
                failed: 0,
                refused: 0,
                hits: ROUNDS
            },
            "{host}"
        );
    }
    assert_eq!(
        seen["b"],
        Seen {
            answered: B_DIES_AT,
            failed: 3,
            refused: ROUNDS - B_DIES_AT - 3,
            hits: B_DIES_AT
        }
    );
    assert_eq!(
        transitions,
        [(b, CircuitState::Closed, CircuitState::Open)],
        "only b's breaker moved, reported with its host:port"
    );
}

/// The example's adaptive-limit numbers: `a` and `c` send every call and never shrink; `b`'s
/// limit falls to 1 while it is overloaded (one call per round instead of 8: most of its
/// 320 calls in those 40 rounds are refused locally) and climbs back after.
#[test]
fn the_per_host_example_throttles_only_the_overloaded_host() {
    let hosts = per_host::run_limits().unwrap();
    for host in ["a", "c"] {
        let h = hosts[host];
        assert_eq!(
            (h.offered, h.sent, h.refused),
            (800, 800, 0),
            "{host}: {h:?}"
        );
        assert!(h.lowest >= 8, "{host}: {h:?}");
    }
    let b = hosts["b"];
    assert_eq!(b.offered, 800);
    assert_eq!(b.lowest, 1, "{b:?}");
    assert!(
        b.refused >= 200,
        "b was spared most calls while overloaded: {b:?}"
    );
    assert!(b.limit > 8, "and recovered its limit after: {b:?}");
}
