//! The bulkhead on its own: limits, FIFO hand-over, cancellation, validation.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use limitpal::concurrency::Acquire;
use limitpal::{Bulkhead, BulkheadFull, ConfigError, ResilientExecutor};

struct Flag(std::sync::atomic::AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

fn waker() -> (Arc<Flag>, Waker) {
    let flag = Arc::new(Flag(std::sync::atomic::AtomicBool::new(false)));
    (Arc::clone(&flag), Waker::from(flag))
}

fn poll(
    acquire: &mut Acquire,
    waker: &Waker,
) -> Poll<Result<limitpal::BulkheadPermit, BulkheadFull>> {
    std::pin::Pin::new(acquire).poll(&mut Context::from_waker(waker))
}

#[test]
fn at_most_the_limit_at_once_and_dropped_permits_free_their_slot() {
    let bulkhead = Bulkhead::new(3).unwrap();
    let permits: Vec<_> = (0..3).map(|_| bulkhead.try_acquire().unwrap()).collect();
    assert_eq!(bulkhead.in_flight(), 3);
    assert_eq!(bulkhead.try_acquire().unwrap_err(), BulkheadFull::new(3));
    // without a queue, acquire answers at once
    let mut acquire = bulkhead.acquire();
    assert!(!acquire.is_waiting());
    assert_eq!(acquire.answer().unwrap().unwrap_err().limit, 3);
    drop(permits);
    assert_eq!(bulkhead.in_flight(), 0);
    bulkhead.try_acquire().unwrap().success();
    assert_eq!(bulkhead.in_flight(), 0);
}

#[test]
fn a_freed_slot_goes_to_the_oldest_waiter_and_newcomers_do_not_overtake() {
    let bulkhead = Bulkhead::builder(1)
        .queue(2, Duration::from_secs(1))
        .build()
        .unwrap();
    let held = bulkhead.try_acquire().unwrap();
    let (first_woken, w1) = waker();
    let (_, w2) = waker();
    let mut first = bulkhead.acquire();
    let mut second = bulkhead.acquire();
    assert!(first.is_waiting() && second.is_waiting());
    assert!(poll(&mut first, &w1).is_pending());
    assert!(poll(&mut second, &w2).is_pending());
    // the queue holds 2: a third is refused, and try_acquire never jumps the queue
    assert!(bulkhead.acquire().answer().unwrap().is_err());
    drop(held);
    assert!(first_woken.0.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(bulkhead.in_flight(), 1, "handed over, not freed");
    assert!(
        bulkhead.try_acquire().is_err(),
        "the second waiter is still ahead"
    );
    let Poll::Ready(Ok(p1)) = poll(&mut first, &w1) else {
        panic!("the oldest waiter gets the slot")
    };
    assert!(poll(&mut second, &w2).is_pending());
    drop(p1);
    assert!(matches!(poll(&mut second, &w2), Poll::Ready(Ok(_))));
    assert_eq!(bulkhead.waiting(), 0);
}

#[test]
fn dropping_a_wait_leaves_the_queue_and_a_slot_handed_over_meanwhile_is_freed() {
    let bulkhead = Bulkhead::builder(1)
        .queue(4, Duration::from_secs(1))
        .build()
        .unwrap();
    let held = bulkhead.try_acquire().unwrap();
    let gone = bulkhead.acquire();
    let granted_unpolled = bulkhead.acquire();
    assert_eq!(bulkhead.waiting(), 2);
    drop(gone); // cancelled while queued
    assert_eq!(bulkhead.waiting(), 1);
    drop(held); // handed to `granted_unpolled`, which never looks
    assert_eq!((bulkhead.in_flight(), bulkhead.waiting()), (1, 0));
    drop(granted_unpolled);
    assert_eq!((bulkhead.in_flight(), bulkhead.waiting()), (0, 0));
    bulkhead.try_acquire().unwrap().success();
}

/// 10 000 waits cancelled at random points of their life leave no slot and no queue place.
#[test]
fn random_cancellation_never_leaks_a_slot() {
    let bulkhead = Bulkhead::builder(4)
        .queue(16, Duration::from_secs(1))
        .build()
        .unwrap();
    let (_, w) = waker();
    let mut live: Vec<Acquire> = Vec::new();
    let mut permits = Vec::new();
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    for _ in 0..10_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        match seed % 5 {
            0 | 1 => live.push(bulkhead.acquire()),
            2 if !live.is_empty() => {
                let i = usize::try_from(seed >> 8).unwrap() % live.len();
                drop(live.swap_remove(i));
            }
            3 if !permits.is_empty() => drop(permits.swap_remove(0)),
            _ => {
                for acquire in &mut live {
                    if let Poll::Ready(Ok(p)) = poll(acquire, &w) {
                        permits.push(p);
                    }
                }
            }
        }
        assert!(bulkhead.in_flight() <= 4);
        assert!(bulkhead.waiting() <= 16);
    }
    drop(live);
    drop(permits);
    assert_eq!((bulkhead.in_flight(), bulkhead.waiting()), (0, 0));
}

#[test]
fn acquire_blocking_waits_for_another_thread_and_gives_up_after_max_wait() {
    let bulkhead = Bulkhead::builder(1)
        .queue(1, Duration::from_secs(5))
        .build()
        .unwrap();
    let held = bulkhead.try_acquire().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiting = bulkhead.clone();
    let thread = std::thread::spawn(move || {
        let permit = waiting.acquire_blocking();
        tx.send(permit.is_ok()).unwrap();
    });
    // release once the other thread is queued (observed, not slept for)
    while bulkhead.waiting() == 0 {
        std::thread::yield_now();
    }
    drop(held);
    assert!(rx.recv().unwrap());
    thread.join().unwrap();

    let short = Bulkhead::builder(1)
        .queue(1, Duration::from_millis(1))
        .build()
        .unwrap();
    let _held = short.try_acquire().unwrap();
    assert_eq!(short.acquire_blocking().unwrap_err().limit, 1);
    assert_eq!(short.waiting(), 0, "the timed-out wait left the queue");
}

#[test]
fn the_sync_executor_takes_a_slot_per_attempt_and_reports_bulkhead_full() {
    let bulkhead = Bulkhead::new(1).unwrap();
    let exec = ResilientExecutor::builder()
        .bulkhead(bulkhead.clone())
        .build()
        .unwrap();
    let inner = exec.clone();
    let result = exec.run(&(), || {
        assert_eq!(bulkhead.in_flight(), 1);
        // a nested run finds the one slot taken
        Ok::<_, ()>(inner.run(&(), || Ok::<_, ()>(())))
    });
    assert!(matches!(
        result,
        Ok(Err(limitpal::Error::BulkheadFull(BulkheadFull {
            limit: 1,
            ..
        })))
    ));
    assert_eq!(bulkhead.in_flight(), 0);
}

#[test]
fn bad_configuration_is_a_config_error_naming_the_field() {
    assert_eq!(Bulkhead::new(0).unwrap_err().field(), "max_concurrent");
    let err = Bulkhead::builder(1)
        .queue(1, Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err, ConfigError::Zero { field: "max_wait" });
    // a queue of 0 is no queue, whatever the wait
    assert!(
        Bulkhead::builder(1)
            .queue(0, Duration::ZERO)
            .build()
            .is_ok()
    );
}

#[test]
fn bulkhead_full_is_an_error_a_boxed_error_downcasts_to() {
    let err: Box<dyn std::error::Error + Send + Sync> = Box::new(BulkheadFull::new(7));
    assert_eq!(err.to_string(), "bulkhead full: 7 calls in flight");
    assert!(err.downcast_ref::<BulkheadFull>().is_some());
}
