//! `reserve`, `hold` and the reservation-based `acquire`, with `ManualClock`.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use limitpal::{
    Algorithm, CheckNError, Clock, LeakyBucket, ManualClock, RateLimited, RateLimiter,
    SlidingWindow, TokenBucket,
};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

fn manual<A: Algorithm>(algorithm: A) -> (RateLimiter<u64, A, ManualClock>, ManualClock) {
    let clock = ManualClock::new();
    let limiter = RateLimiter::builder(algorithm)
        .clock(clock.clone())
        .build()
        .unwrap();
    (limiter, clock)
}

/// Reserves and keeps the slot; returns its delay.
fn take<A: Algorithm>(limiter: &RateLimiter<u64, A, ManualClock>, max_wait: Duration) -> Duration {
    let reservation = limiter.reserve(&1, max_wait).unwrap();
    let delay = reservation.delay();
    reservation.commit();
    delay
}

#[test]
fn reservations_queue_on_the_gcra_schedule_and_checks_wait_behind_them() {
    let (limiter, clock) = manual(TokenBucket::new(2, 10.0).unwrap());
    let delays: Vec<_> = (0..5).map(|_| take(&limiter, SEC)).collect();
    assert_eq!(
        delays,
        [Duration::ZERO, Duration::ZERO, 100 * MS, 200 * MS, 300 * MS]
    );
    // a check arriving now queues behind the three reserved slots: exact retry_after
    assert_eq!(limiter.check(&1), Err(RateLimited::new(400 * MS)));
    clock.advance(400 * MS);
    assert_eq!(limiter.check(&1), Ok(()));
}

#[test]
fn a_slot_beyond_max_wait_is_refused_at_once_with_the_exact_wait_and_costs_nothing() {
    let (limiter, _clock) = manual(TokenBucket::new(1, 4.0).unwrap());
    assert_eq!(take(&limiter, Duration::ZERO), Duration::ZERO);
    assert_eq!(take(&limiter, SEC), 250 * MS);
    let refused = limiter.reserve(&1, 499 * MS).unwrap_err();
    assert_eq!(refused, RateLimited::new(500 * MS));
    // the refusal took nothing: the same slot is still the next one
    assert_eq!(take(&limiter, 500 * MS), 500 * MS);
}

#[test]
fn a_dropped_last_reservation_gives_its_slot_back() {
    let (limiter, _clock) = manual(LeakyBucket::new(1, 10.0).unwrap());
    assert_eq!(take(&limiter, SEC), Duration::ZERO);
    let second = limiter.reserve(&1, SEC).unwrap();
    assert_eq!(second.delay(), 100 * MS);
    drop(second); // before its time: the slot comes back
    assert_eq!(take(&limiter, SEC), 100 * MS);
}

#[test]
fn a_dropped_gcra_reservation_with_later_ones_behind_it_stays_used() {
    let (limiter, _clock) = manual(TokenBucket::new(1, 10.0).unwrap());
    assert_eq!(take(&limiter, SEC), Duration::ZERO);
    let middle = limiter.reserve(&1, SEC).unwrap();
    assert_eq!(take(&limiter, SEC), 200 * MS);
    drop(middle);
    // giving the middle slot back would let a fourth request in 100 ms after the second:
    // two admissions closer than the rate allows. It stays used.
    assert_eq!(take(&limiter, SEC), 300 * MS);
}

#[test]
fn a_sliding_window_reuses_any_slot_given_back() {
    let (limiter, _clock) = manual(SlidingWindow::new(2, SEC).unwrap());
    assert_eq!(take(&limiter, Duration::ZERO), Duration::ZERO);
    assert_eq!(take(&limiter, Duration::ZERO), Duration::ZERO);
    let first = limiter.reserve(&1, 5 * SEC).unwrap();
    let second = limiter.reserve(&1, 5 * SEC).unwrap();
    assert_eq!((first.delay(), second.delay()), (SEC, SEC));
    let third = limiter.reserve(&1, 5 * SEC).unwrap();
    assert_eq!(third.delay(), 2 * SEC);
    drop(first); // one of the two slots at 1 s comes back although others stand behind it
    assert_eq!(
        take(&limiter, 5 * SEC),
        2 * SEC,
        "arrival order: not before the queue"
    );
    drop(second);
    drop(third);
}

#[test]
fn a_reservation_kept_past_its_time_is_not_given_back() {
    let (limiter, clock) = manual(TokenBucket::new(1, 10.0).unwrap());
    assert_eq!(take(&limiter, SEC), Duration::ZERO);
    let second = limiter.reserve(&1, SEC).unwrap();
    clock.advance(second.delay());
    drop(second); // its time came: the caller may have gone ahead
    assert_eq!(limiter.check(&1), Err(RateLimited::new(100 * MS)));
}

#[test]
fn cancel_gives_the_slot_back_even_once_its_time_has_come() {
    let (limiter, clock) = manual(TokenBucket::new(1, 10.0).unwrap());
    assert_eq!(take(&limiter, SEC), Duration::ZERO);
    let second = limiter.reserve(&1, SEC).unwrap();
    clock.advance(second.delay());
    second.cancel(); // the caller did not go (say, the breaker opened meanwhile)
    assert_eq!(limiter.check(&1), Ok(()));
}

#[test]
fn a_composite_reservation_holds_every_part_or_none() {
    // a slow bucket (one token per 100 s) and at most 2 per 10 s
    let both = TokenBucket::new(3, 0.01)
        .unwrap()
        .and(SlidingWindow::new(2, 10 * SEC).unwrap());
    let (limiter, clock) = manual(both);
    assert_eq!(take(&limiter, Duration::ZERO), Duration::ZERO);
    assert_eq!(take(&limiter, Duration::ZERO), Duration::ZERO);
    // the bucket could admit a third now, the window not before 10 s: refused, and the
    // bucket keeps its last token
    assert_eq!(
        limiter.reserve(&1, SEC).unwrap_err(),
        RateLimited::new(10 * SEC)
    );
    clock.advance(10 * SEC);
    assert_eq!(
        limiter.check(&1),
        Ok(()),
        "the refused reservation took no token"
    );
    // a composite slot is the later of the parts' slots: the bucket's next token
    let next = limiter.reserve(&1, 200 * SEC).unwrap();
    assert_eq!(next.delay(), 90 * SEC);
    next.commit();
}

#[test]
fn composite_reservations_under_contention_stay_within_both_parts() {
    let both = TokenBucket::new(4, 2.0)
        .unwrap()
        .and(SlidingWindow::new(3, SEC).unwrap());
    let clock = ManualClock::new();
    let limiter = RateLimiter::builder(both)
        .clock(clock.clone())
        .build()
        .unwrap();
    let threads = 4;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let limiter = limiter.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let mut slots = Vec::new();
                for i in 0..200_u32 {
                    // a mix of patience: some refused, most queued
                    let max_wait = Duration::from_millis(
                        u64::from((i * 7 + u32::try_from(t).unwrap() * 13) % 40) * 100,
                    );
                    if let Ok(r) = limiter.reserve(&0_u8, max_wait) {
                        slots.push(r.delay());
                        r.commit();
                    }
                }
                slots
            })
        })
        .collect();
    let mut slots: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    slots.sort();
    assert!(slots.len() > 10, "{} admitted", slots.len());
    for (i, &at) in slots.iter().enumerate() {
        // the window: at most 3 in any [t, t + 1 s)
        let in_window = slots[i..].iter().take_while(|&&t| t < at + SEC).count();
        assert!(in_window <= 3, "{in_window} slots within 1 s of {at:?}");
        // the bucket: n slots need (n - 4) half-seconds since the first of them
        for (j, &later) in slots[i..].iter().enumerate() {
            let n = u32::try_from(j).unwrap() + 1;
            let need = Duration::from_millis(500) * n.saturating_sub(4);
            assert!(later - at >= need, "{n} slots in {:?}", later - at);
        }
    }
}

#[test]
fn acquire_admits_callers_in_arrival_order_on_the_schedule() {
    let (limiter, clock) = manual(LeakyBucket::new(1, 10.0).unwrap());
    for i in 0..20_u32 {
        limiter.acquire(&1, SEC).unwrap();
        assert_eq!(clock.now(), 100 * MS * i, "caller {i}");
    }
    assert_eq!(
        limiter.acquire(&1, 99 * MS),
        Err(RateLimited::new(100 * MS)),
        "a wait that cannot fit is refused at once"
    );
    assert_eq!(clock.now(), 1_900 * MS, "and sleeps nothing");
}

#[test]
fn a_hold_stops_every_caller_of_its_key_then_resumes_at_the_rate() {
    let (limiter, clock) = manual(TokenBucket::new(10, 10.0).unwrap());
    limiter.hold(&1, 2 * SEC);
    assert_eq!(limiter.check(&1), Err(RateLimited::new(2 * SEC)));
    assert_eq!(limiter.check(&2), Ok(()), "other keys are not held");
    assert_eq!(
        take(&limiter, 5 * SEC),
        2 * SEC,
        "waiters queue after the hold"
    );
    assert_eq!(
        take(&limiter, 5 * SEC),
        2_100 * MS,
        "then one per interval, no burst"
    );
    limiter.hold(&1, SEC); // a shorter hold never shortens the queue
    clock.advance(2_200 * MS);
    assert_eq!(limiter.check(&1), Ok(()));
}

#[test]
fn holds_work_on_every_algorithm_and_saturate() {
    let clock = ManualClock::new();
    let window = RateLimiter::builder(SlidingWindow::new(5, SEC).unwrap())
        .clock(clock.clone())
        .build()
        .unwrap();
    let both = RateLimiter::builder(
        TokenBucket::new(5, 5.0)
            .unwrap()
            .and(SlidingWindow::new(5, SEC).unwrap()),
    )
    .clock(clock.clone())
    .build()
    .unwrap();
    window.hold("k", 3 * SEC);
    both.hold("k", 3 * SEC);
    assert_eq!(window.check("k"), Err(RateLimited::new(3 * SEC)));
    assert_eq!(both.check("k"), Err(RateLimited::new(3 * SEC)));
    clock.advance(3 * SEC);
    assert_eq!(window.check("k"), Ok(()));
    assert_eq!(both.check("k"), Ok(()));
    window.hold("k", Duration::MAX);
    assert!(
        window.check("k").is_err(),
        "a huge hold saturates, never wraps"
    );
    window.hold("zero", Duration::ZERO);
    assert_eq!(window.check("zero"), Ok(()));
}

#[test]
fn reserve_n_is_all_at_one_slot_or_nothing() {
    let (limiter, _clock) = manual(TokenBucket::new(4, 1.0).unwrap());
    let r = limiter.reserve_n(&1, 3, Duration::ZERO).unwrap();
    r.commit();
    let r = limiter.reserve_n(&1, 3, 5 * SEC).unwrap();
    assert_eq!(r.delay(), 2 * SEC);
    r.commit();
    assert_eq!(
        limiter.reserve_n(&1, 5, Duration::MAX).unwrap_err(),
        CheckNError::InsufficientCapacity { max: 4 }
    );
    assert!(limiter.reserve_n(&1, 0, Duration::ZERO).is_ok());
}

#[test]
fn shadow_mode_never_waits() {
    let clock = ManualClock::new();
    let limiter = RateLimiter::builder(TokenBucket::new(1, 1.0).unwrap())
        .clock(clock.clone())
        .shadow(true)
        .build()
        .unwrap();
    for _ in 0..3 {
        let r = limiter.reserve(&1_u8, SEC).unwrap();
        assert_eq!(r.delay(), Duration::ZERO);
        r.commit();
        limiter.acquire(&1_u8, SEC).unwrap();
    }
    assert_eq!(clock.now(), Duration::ZERO);
}
