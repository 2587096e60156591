//! loom models of the crate's concurrent state, on the atomics and locks it ships (see
//! `src/sync.rs`). Run with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p limitpal-core --test loom --release
//! ```

#![cfg(loom)]
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed model

use std::sync::Arc;
use std::time::Duration;

use limitpal_core::{
    Algorithm, CircuitBreaker, CircuitState, ManualClock, RateLimiter, RetryBudget, SlidingWindow,
    TokenBucket,
};
use loom::thread;

/// Runs `f` on two loom threads and returns their answers.
fn both<T: Send + 'static>(f: impl Fn(usize) -> T + Send + Sync + 'static) -> (T, T) {
    let f = Arc::new(f);
    let g = Arc::clone(&f);
    let other = thread::spawn(move || g(1));
    let mine = f(0);
    (mine, other.join().unwrap())
}

#[test]
fn gcra_cas_admits_exactly_the_capacity() {
    loom::model(|| {
        let limiter = Arc::new(
            RateLimiter::builder(TokenBucket::new(1, 1.0).unwrap())
                .clock(ManualClock::new())
                .build()
                .unwrap(),
        );
        let l = Arc::clone(&limiter);
        let (a, b) = both(move |_| l.check(&()).is_ok());
        assert!(a ^ b, "exactly one of two admitted: {a} {b}");
        assert!(limiter.check(&()).is_err());
    });
}

/// The lock-free retry budget: a deposit racing a withdrawal is never lost, and two
/// withdrawals racing for the last retry get it once.
#[test]
fn retry_budget_withdrawals_race_for_the_last_retry_exactly_once() {
    loom::model(|| {
        let budget = RetryBudget::new(Duration::from_secs(10), 0, 0.5).unwrap();
        let now = Duration::from_secs(1);
        budget.deposit(now);
        let b = budget.clone();
        let (a, c) = both(move |i| {
            if i == 0 {
                b.deposit(now); // the second half of a retry
                false
            } else {
                b.withdraw(now)
            }
        });
        assert!(!a);
        // two deposits at 0.5 buy one retry, whoever came first
        assert_eq!(u64::from(c) + budget.available(now), 1);
        let b = budget.clone();
        let (x, y) = both(move |_| b.withdraw(now));
        assert!(!(x && y), "the last retry given twice");
    });
}

#[test]
fn composite_denials_consume_nothing_under_contention() {
    loom::model(|| {
        let algorithm = TokenBucket::new(2, 1e-6)
            .unwrap()
            .and(SlidingWindow::new(1, Duration::from_secs(1)).unwrap());
        let clock = ManualClock::new();
        let limiter = Arc::new(
            RateLimiter::builder(algorithm)
                .clock(clock.clone())
                .build()
                .unwrap(),
        );
        let l = Arc::clone(&limiter);
        let (a, b) = both(move |_| l.check(&()).is_ok());
        assert!(a ^ b, "the window admits one");
        // the loser consumed nothing from the bucket: it still has one token
        clock.advance(Duration::from_secs(1));
        assert!(limiter.check(&()).is_ok());
    });
}

#[test]
fn half_open_slots_are_never_overfilled_and_cancelled_probes_free_them() {
    loom::model(|| {
        let clock = ManualClock::new();
        let breaker = CircuitBreaker::builder()
            .failure_threshold(1)
            .recovery_timeout(Duration::from_secs(1))
            .half_open_max_calls(1)
            .clock(clock.clone())
            .build()
            .unwrap();
        breaker.force_open();
        clock.advance(Duration::from_secs(1));
        let b = breaker.clone();
        // each thread takes a probe if it can and drops it (a cancelled call)
        let (a, c) = both(move |_| b.try_acquire().map(drop).is_ok());
        assert!(a || c, "the slot was free for at least one");
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
        let probe = breaker
            .try_acquire()
            .expect("every cancelled probe freed its slot");
        assert!(breaker.try_acquire().is_err(), "one slot only");
        probe.success();
        assert_eq!(breaker.state(), CircuitState::Closed);
    });
}

#[test]
fn keyed_inserts_and_evictions_keep_max_keys() {
    loom::model(|| {
        let limiter = Arc::new(
            RateLimiter::builder(TokenBucket::new(1, 1.0).unwrap())
                .clock(ManualClock::new())
                .shards(1)
                .max_keys(1)
                .build()
                .unwrap(),
        );
        let l = Arc::clone(&limiter);
        let (a, b) = both(move |i| l.check(&(i as u64)).is_ok());
        assert!(a && b, "new keys start full");
        assert_eq!(limiter.len(), 1, "the bound held through the race");
    });
}

/// Polls `acquire` until it answers, yielding to the other loom thread in between.
fn wait(mut acquire: limitpal_core::concurrency::Acquire) -> Option<limitpal_core::BulkheadPermit> {
    use std::future::Future;
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        match std::pin::Pin::new(&mut acquire).poll(&mut cx) {
            std::task::Poll::Ready(answer) => return answer.ok(),
            std::task::Poll::Pending => thread::yield_now(),
        }
    }
}

#[test]
fn bulkhead_hands_a_released_slot_to_a_waiter_exactly_once() {
    loom::model(|| {
        let bulkhead = limitpal_core::Bulkhead::builder(1)
            .queue(1, Duration::from_secs(1))
            .build()
            .unwrap();
        let held = bulkhead.try_acquire().unwrap();
        let b = bulkhead.clone();
        let waiter = thread::spawn(move || {
            let permit = wait(b.acquire());
            assert!(permit.is_some(), "the queued caller gets the slot");
            assert_eq!(b.in_flight(), 1);
        });
        drop(held);
        waiter.join().unwrap();
        assert_eq!((bulkhead.in_flight(), bulkhead.waiting()), (0, 0));
    });
}

#[test]
fn keyed_bulkhead_hands_a_keys_slot_over_once_and_keys_stay_apart() {
    loom::model(|| {
        let bulkheads = limitpal_core::concurrency::KeyedBulkhead::<u64>::builder(1)
            .queue(1, Duration::from_secs(1))
            .max_keys(1)
            .build()
            .unwrap();
        let held = bulkheads.try_acquire(&1).unwrap();
        let b = bulkheads.clone();
        let waiter = thread::spawn(move || {
            let permit = wait(b.acquire(&1));
            assert!(permit.is_some(), "the queued caller gets key 1's slot");
            assert_eq!(b.in_flight(&1), 1);
        });
        // key 2's slot is its own, whatever key 1's queue does (and key 1, busy, is kept
        // past max_keys 1)
        let other = bulkheads.try_acquire(&2).unwrap();
        assert!(bulkheads.try_acquire(&2).is_err(), "key 2 has one slot");
        drop(held);
        waiter.join().unwrap();
        drop(other);
        assert_eq!((bulkheads.in_flight(&1), bulkheads.in_flight(&2)), (0, 0));
    });
}

#[test]
fn bulkhead_wait_cancelled_while_the_slot_is_released_leaks_nothing() {
    loom::model(|| {
        let bulkhead = limitpal_core::Bulkhead::builder(1)
            .queue(1, Duration::from_secs(1))
            .build()
            .unwrap();
        let held = bulkhead.try_acquire().unwrap();
        let b = bulkhead.clone();
        let waiter = thread::spawn(move || drop(b.acquire())); // queues, then gives up
        drop(held);
        waiter.join().unwrap();
        assert_eq!((bulkhead.in_flight(), bulkhead.waiting()), (0, 0));
        drop(bulkhead.try_acquire().unwrap());
    });
}

#[test]
fn bulkhead_never_exceeds_its_limit_under_contention() {
    loom::model(|| {
        let bulkhead = limitpal_core::Bulkhead::new(1).unwrap();
        let b = bulkhead.clone();
        let (x, y) = both(move |_| {
            let permit = b.try_acquire();
            let ok = permit.is_ok();
            if ok {
                assert_eq!(b.in_flight(), 1);
            }
            ok
        });
        assert!(x || y, "one of them gets the slot");
        assert_eq!(bulkhead.in_flight(), 0);
    });
}
