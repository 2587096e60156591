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
    Algorithm, CircuitBreaker, CircuitState, ManualClock, RateLimiter, SlidingWindow, TokenBucket,
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
