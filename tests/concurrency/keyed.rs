//! `KeyedBulkhead`: a bulkhead per key in the bounded keyed store.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use limitpal::concurrency::KeyedBulkhead;
use limitpal::{BulkheadFull, ConfigError};

#[test]
fn each_key_has_its_own_slots() {
    let bulkhead = KeyedBulkhead::builder(2).build().unwrap();
    let a: Vec<_> = (0..2).map(|_| bulkhead.try_acquire("a").unwrap()).collect();
    assert_eq!(bulkhead.try_acquire("a").unwrap_err(), BulkheadFull::new(2));
    let b = bulkhead.try_acquire("b").unwrap();
    assert_eq!((bulkhead.in_flight("a"), bulkhead.in_flight("b")), (2, 1));
    drop(a);
    assert_eq!(bulkhead.in_flight("a"), 0, "freed on drop");
    assert_eq!(bulkhead.len(), 1, "a is free again: only b is held");
    drop(b);
    assert!(bulkhead.is_empty());
    assert!(bulkhead.try_acquire("a").is_ok(), "a free key is a new one");
}

/// Eight threads hammer three keys through a store that may hold one: no key ever has more
/// than its cap in flight (a busy key dropped and made again would let a second call in).
#[test]
fn the_per_key_cap_is_exact_under_eight_threads() {
    const CAP: u32 = 1;
    let bulkhead: KeyedBulkhead<u32> = KeyedBulkhead::builder(CAP).max_keys(1).build().unwrap();
    let in_flight: Arc<Vec<AtomicU32>> = Arc::new((0..3).map(|_| AtomicU32::new(0)).collect());
    let worst = Arc::new(AtomicU32::new(0));
    let threads: Vec<_> = (0..8_u32)
        .map(|t| {
            let (bulkhead, in_flight, worst) =
                (bulkhead.clone(), Arc::clone(&in_flight), Arc::clone(&worst));
            std::thread::spawn(move || {
                let mut admitted = 0_u32;
                for i in 0..20_000_u32 {
                    let key = (i + t) % 3;
                    if let Ok(permit) = bulkhead.try_acquire(&key) {
                        let now = in_flight[key as usize].fetch_add(1, Ordering::SeqCst) + 1;
                        worst.fetch_max(now, Ordering::SeqCst);
                        for _ in 0..50 {
                            std::hint::spin_loop();
                        }
                        in_flight[key as usize].fetch_sub(1, Ordering::SeqCst);
                        drop(permit);
                        admitted += 1;
                    }
                }
                admitted
            })
        })
        .collect();
    let admitted: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(admitted > 0);
    assert!(
        worst.load(Ordering::SeqCst) <= CAP,
        "max_keys 1 over 3 busy keys never dropped a busy one: {} in flight",
        worst.load(Ordering::SeqCst)
    );
    assert!(bulkhead.is_empty(), "every permit was dropped");
}

/// With `max_keys`, free keys make room; busy keys are never dropped (their slots stay
/// counted), so the store holds more than `max_keys` only while that many are busy.
#[test]
fn max_keys_drops_free_keys_and_never_a_busy_one() {
    let bulkhead: KeyedBulkhead<u64> = KeyedBulkhead::builder(1).max_keys(4).build().unwrap();
    let held: Vec<_> = (0..8).map(|k| bulkhead.try_acquire(&k).unwrap()).collect();
    for k in 0..8 {
        assert!(bulkhead.try_acquire(&k).is_err(), "key {k} is still full");
    }
    assert_eq!(bulkhead.len(), 8, "busy keys are all kept");
    drop(held);
    for k in 100..10_100_u64 {
        drop(bulkhead.try_acquire(&k).unwrap());
    }
    assert_eq!(bulkhead.len(), 0, "free keys are dropped");
}

#[tokio::test(start_paused = true)]
async fn each_key_waits_in_its_own_fifo_queue() {
    let bulkhead: KeyedBulkhead<String> = KeyedBulkhead::builder(1)
        .queue(2, Duration::from_secs(5))
        .build()
        .unwrap();
    let first = bulkhead.try_acquire("a").unwrap();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let waiters: Vec<_> = (0..2)
        .map(|n| {
            let (wait, order) = (bulkhead.acquire("a"), Arc::clone(&order));
            tokio::spawn(async move {
                let permit = wait.await.unwrap();
                order.lock().unwrap().push(n);
                tokio::time::sleep(Duration::from_millis(10)).await;
                drop(permit);
            })
        })
        .collect();
    // another key is not queued behind a's
    assert!(bulkhead.try_acquire("b").is_ok());
    tokio::time::sleep(Duration::from_millis(1)).await;
    drop(first);
    for w in waiters {
        w.await.unwrap();
    }
    assert_eq!(
        *order.lock().unwrap(),
        vec![0, 1],
        "first come, first served"
    );
}

#[test]
fn bad_settings_are_config_errors() {
    let zero = KeyedBulkhead::<u64>::builder(0).build().unwrap_err();
    assert_eq!(
        zero,
        ConfigError::Zero {
            field: "max_concurrent"
        }
    );
    let keys = KeyedBulkhead::<String>::builder(1)
        .max_keys(0)
        .build()
        .unwrap_err();
    assert_eq!(keys, ConfigError::Zero { field: "max_keys" });
    let wait: Result<KeyedBulkhead<u64>, _> =
        KeyedBulkhead::builder(1).queue(1, Duration::ZERO).build();
    let wait = wait.unwrap_err();
    assert_eq!(wait, ConfigError::Zero { field: "max_wait" });
}

/// `KeyedAdaptiveLimit`: an adaptive limit per key, in the same store.
mod adaptive_per_key {
    use std::collections::HashMap;
    use std::time::Duration;

    use limitpal::concurrency::{
        AdaptiveLimit, Aimd, Gradient2, KeyedAdaptiveLimit, LimitAlgorithm,
    };
    use limitpal::{BulkheadPermit, ConfigError, ManualClock};
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    fn aimd_limits(clock: &ManualClock) -> KeyedAdaptiveLimit<String> {
        KeyedAdaptiveLimit::builder(Aimd::new())
            .initial_limit(10)
            .clock(clock.clone())
            .build()
            .unwrap()
    }

    /// Failures on one host lower that host's limit only, and each key's limit moves as a
    /// lone `AdaptiveLimit` fed the same calls would.
    #[test]
    fn one_slow_key_is_throttled_and_the_others_keep_their_limits() {
        let clock = ManualClock::new();
        let limits = aimd_limits(&clock);
        let alone = AdaptiveLimit::builder(Aimd::new())
            .initial_limit(10)
            .clock(clock.clone())
            .build()
            .unwrap();
        for _ in 0..5 {
            clock.advance(100 * MS);
            limits.try_acquire("slow").unwrap().failure();
            alone.try_acquire().unwrap().failure();
            limits.try_acquire("fast").unwrap().success();
        }
        assert_eq!(limits.limit("slow"), alone.limit());
        assert_eq!(limits.limit("slow"), 5, "10 x 0.9^5 = 5.9");
        assert_eq!(
            limits.limit("fast"),
            10,
            "one call at a time: nothing learned"
        );
        let held: Vec<BulkheadPermit> = (0..5)
            .map(|_| limits.try_acquire("slow").unwrap())
            .collect();
        assert!(
            limits.try_acquire("slow").is_err(),
            "slow is at its limit of 5"
        );
        assert!(limits.try_acquire("fast").is_ok(), "fast is not");
        assert_eq!(limits.in_flight("slow"), 5);
        drop(held);
    }

    /// A key with nothing learned is dropped; a key that learned a limit is kept (with
    /// nothing in flight) until `forget_after` has passed unused; a busy key is never
    /// dropped, even past `forget_after`.
    #[test]
    fn fresh_keys_go_learned_keys_stay_until_forgotten() {
        let clock = ManualClock::new();
        let limits: KeyedAdaptiveLimit<String> = KeyedAdaptiveLimit::builder(Aimd::new())
            .initial_limit(10)
            .forget_after(Duration::from_secs(60))
            .clock(clock.clone())
            .build()
            .unwrap();
        limits.try_acquire("idle").unwrap().success();
        limits.try_acquire("learned").unwrap().failure();
        let busy = limits.try_acquire("busy").unwrap();
        assert_eq!(limits.len(), 2, "idle is like a new key: dropped");
        clock.advance(Duration::from_secs(59));
        assert_eq!(limits.len(), 2);
        assert_eq!(limits.limit("learned"), 9, "remembered");
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            limits.len(),
            1,
            "learned forgotten after 60 s unused; busy kept"
        );
        assert_eq!(limits.limit("learned"), 10, "starts again at initial_limit");
        assert_eq!(limits.in_flight("busy"), 1);
        busy.success();
        assert!(limits.is_empty());
    }

    /// Under `max_keys` pressure, free keys go (the learned ones too: they start over) and a
    /// key with calls in flight never does.
    #[test]
    fn max_keys_never_drops_a_busy_key() {
        let clock = ManualClock::new();
        let limits: KeyedAdaptiveLimit<u64> = KeyedAdaptiveLimit::builder(Aimd::new())
            .initial_limit(2)
            .max_keys(4)
            .clock(clock.clone())
            .build()
            .unwrap();
        let busy: Vec<_> = (0..2).map(|_| limits.try_acquire(&7).unwrap()).collect();
        for key in 100..10_100_u64 {
            clock.advance(MS);
            limits.try_acquire(&key).unwrap().failure(); // each learns a limit of 1.8
        }
        assert!(
            limits.try_acquire(&7).is_err(),
            "key 7 still holds both slots"
        );
        assert_eq!(limits.in_flight(&7), 2);
        assert!(limits.len() <= 5, "len {}", limits.len());
        drop(busy);
    }

    #[test]
    fn bad_settings_are_config_errors() {
        let build =
            |b: limitpal::concurrency::KeyedAdaptiveLimitBuilder<u64>| b.build().unwrap_err();
        assert_eq!(
            build(KeyedAdaptiveLimit::builder(Aimd::new()).max_keys(0)),
            ConfigError::Zero { field: "max_keys" }
        );
        assert_eq!(
            build(KeyedAdaptiveLimit::builder(Aimd::new()).forget_after(Duration::ZERO)),
            ConfigError::Zero {
                field: "forget_after"
            }
        );
        assert_eq!(
            build(KeyedAdaptiveLimit::builder(Aimd::new()).min_limit(0)),
            ConfigError::Zero { field: "min_limit" }
        );
        assert!(matches!(
            build(KeyedAdaptiveLimit::builder(Aimd::new()).initial_limit(5000)),
            ConfigError::OutOfRange {
                field: "initial_limit",
                ..
            }
        ));
        assert_eq!(
            build(KeyedAdaptiveLimit::builder(Aimd::new()).queue(1, Duration::ZERO)),
            ConfigError::Zero { field: "max_wait" }
        );
    }

    /// Random calls (held, then recorded as successes or failures, or dropped), clock moves
    /// and keys give the same admissions and limits as a model keeping one `AdaptiveLimit`
    /// per key for ever: dropping keys like new ones is unobservable, for both algorithms.
    fn unobservable<A: LimitAlgorithm + Clone + Sync>(algorithm: &A) {
        let op = (0_u64..4, 0_u8..5, 0_u64..40);
        proptest!(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() }, |(ops in proptest::collection::vec(op, 1..300))| {
            let clock = ManualClock::new();
            let limits: KeyedAdaptiveLimit<u64> = KeyedAdaptiveLimit::builder(algorithm.clone())
                .initial_limit(3)
                .max_limit(8)
                .clock(clock.clone())
                .build()
                .unwrap();
            let mut model: HashMap<u64, AdaptiveLimit> = HashMap::new();
            let mut held: Vec<(BulkheadPermit, BulkheadPermit)> = Vec::new();
            for (key, what, advance_ms) in ops {
                let reference = model.entry(key).or_insert_with(|| {
                    AdaptiveLimit::builder(algorithm.clone())
                        .initial_limit(3)
                        .max_limit(8)
                        .clock(clock.clone())
                        .build()
                        .unwrap()
                });
                match what {
                    0..=2 => {
                        let ours = limits.try_acquire(&key);
                        let theirs = reference.try_acquire();
                        prop_assert_eq!(ours.is_ok(), theirs.is_ok(), "key {}", key);
                        if let (Ok(ours), Ok(theirs)) = (ours, theirs) {
                            held.push((ours, theirs));
                        }
                    }
                    3 => {
                        // the oldest call ends: a failure for odd keys
                        if !held.is_empty() {
                            let (ours, theirs) = held.remove(0);
                            if key % 2 == 1 { ours.failure(); theirs.failure(); }
                            else { ours.success(); theirs.success(); }
                        }
                    }
                    _ => {
                        if let Some((ours, theirs)) = held.pop() { drop(ours); drop(theirs); }
                    }
                }
                prop_assert_eq!(limits.limit(&key), reference.limit(), "key {}", key);
                clock.advance(Duration::from_millis(advance_ms));
                let _ = limits.len(); // drops every key like a new one now
            }
            for (key, reference) in &model {
                prop_assert_eq!(limits.limit(key), reference.limit(), "key {}", key);
                prop_assert_eq!(limits.in_flight(key), reference.in_flight(), "key {}", key);
            }
        });
    }

    #[test]
    fn eviction_is_unobservable_with_aimd() {
        unobservable(&Aimd::new().timeout(20 * MS).unwrap());
    }

    #[test]
    fn eviction_is_unobservable_with_gradient2() {
        unobservable(
            &Gradient2::new()
                .window(30 * MS, 2)
                .unwrap()
                .probe_interval(3),
        );
    }
}
