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
