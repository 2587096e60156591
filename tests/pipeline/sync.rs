use std::cell::Cell;
use std::time::Duration;

use limitpal::{
    CircuitBreaker, CircuitOpen, CircuitState, Clock, Error, Jitter, ManualClock, Outcome,
    RateLimited, RateLimiter, ResilientExecutor, RetryBudget, RetryPolicy, TokenBucket,
};

const SEC: Duration = Duration::from_secs(1);

fn policy(attempts: u32, base: Duration) -> RetryPolicy {
    RetryPolicy::builder()
        .max_attempts(attempts)
        .base_delay(base)
        .jitter(Jitter::None)
        .build()
        .unwrap()
}

fn breaker(threshold: u32, recovery: Duration, clock: &ManualClock) -> CircuitBreaker<ManualClock> {
    CircuitBreaker::builder()
        .failure_threshold(threshold)
        .recovery_timeout(recovery)
        .clock(clock.clone())
        .build()
        .unwrap()
}

#[derive(Debug, Clone, PartialEq)]
struct Boom(u32);

#[test]
fn retry_succeeds_on_the_third_call_at_exactly_three_seconds() {
    let clock = ManualClock::new();
    let exec = ResilientExecutor::builder()
        .retry(policy(3, SEC))
        .clock(clock.clone())
        .build()
        .unwrap();
    let calls = Cell::new(0);
    let result = exec.run(&(), || {
        calls.set(calls.get() + 1);
        if calls.get() < 3 {
            Err(Boom(calls.get()))
        } else {
            Ok("done")
        }
    });
    assert_eq!(result, Ok("done"));
    assert_eq!(calls.get(), 3);
    assert_eq!(clock.now(), 3 * SEC);
}

#[test]
fn always_failing_is_exhausted_after_two_attempts_and_half_a_second() {
    let clock = ManualClock::new();
    let exec = ResilientExecutor::builder()
        .retry(policy(2, SEC / 2))
        .clock(clock.clone())
        .build()
        .unwrap();
    let calls = Cell::new(0);
    let result: Result<(), _> = exec.run(&(), || {
        calls.set(calls.get() + 1);
        Err(Boom(calls.get()))
    });
    assert_eq!(
        result,
        Err(Error::RetryExhausted {
            attempts: 2,
            last: Boom(2)
        })
    );
    assert_eq!(clock.now(), SEC / 2);
}

#[test]
fn two_failed_runs_open_the_breaker_and_the_third_never_calls() {
    let clock = ManualClock::new();
    let exec = ResilientExecutor::builder()
        .breaker(breaker(2, 5 * SEC, &clock))
        .clock(clock.clone())
        .build()
        .unwrap();
    let calls = Cell::new(0);
    let op = || -> Result<(), Boom> {
        calls.set(calls.get() + 1);
        Err(Boom(0))
    };
    assert_eq!(exec.run(&(), op), Err(Error::Failed(Boom(0))));
    assert_eq!(exec.run(&(), op), Err(Error::Failed(Boom(0))));
    assert_eq!(
        exec.run(&(), op),
        Err(Error::CircuitOpen(CircuitOpen::new(5 * SEC)))
    );
    assert_eq!(calls.get(), 2);
}

#[test]
fn a_spent_limiter_denies_the_second_run_without_calling() {
    let clock = ManualClock::new();
    let limiter = RateLimiter::builder(TokenBucket::new(1, 1.0).unwrap())
        .clock(clock.clone())
        .build()
        .unwrap();
    let exec = ResilientExecutor::builder()
        .limiter(limiter)
        .clock(clock)
        .build()
        .unwrap();
    let calls = Cell::new(0);
    let op = || -> Result<u32, Boom> {
        calls.set(calls.get() + 1);
        Ok(1)
    };
    assert_eq!(exec.run(&"alice", op), Ok(1));
    assert_eq!(
        exec.run(&"alice", op),
        Err(Error::RateLimited(RateLimited::new(SEC)))
    );
    assert_eq!(exec.run(&"bob", op), Ok(1), "keys are separate");
    assert_eq!(calls.get(), 2);
}

#[test]
fn an_open_breaker_does_not_charge_the_limiter() {
    let clock = ManualClock::new();
    let limiter = RateLimiter::builder(TokenBucket::new(1, 0.001).unwrap())
        .clock(clock.clone())
        .build()
        .unwrap();
    let b = breaker(1, 5 * SEC, &clock);
    b.force_open();
    let exec = ResilientExecutor::builder()
        .limiter(limiter.clone())
        .breaker(b.clone())
        .clock(clock.clone())
        .build()
        .unwrap();
    for _ in 0..5 {
        assert!(matches!(
            exec.run(&1_u8, || Ok::<_, Boom>(())),
            Err(Error::CircuitOpen(_))
        ));
    }
    assert_eq!(
        limiter.quota(&1).0,
        1,
        "the limiter's single token is untouched"
    );
}

#[test]
fn a_denied_limiter_records_nothing_in_the_breaker() {
    let clock = ManualClock::new();
    let limiter = RateLimiter::builder(TokenBucket::new(1, 0.001).unwrap())
        .clock(clock.clone())
        .build()
        .unwrap();
    let b = breaker(1, 5 * SEC, &clock);
    let exec = ResilientExecutor::builder()
        .breaker(b.clone())
        .limiter(limiter)
        .clock(clock.clone())
        .build()
        .unwrap();
    assert_eq!(exec.run(&1_u8, || Ok::<_, Boom>(())), Ok(()));
    for _ in 0..5 {
        assert!(matches!(
            exec.run(&1_u8, || Ok::<_, Boom>(())),
            Err(Error::RateLimited(_))
        ));
    }
    assert_eq!(b.state(), CircuitState::Closed);
    // and the permits the denials released left the half-open accounting alone
    b.force_open();
    clock.advance(5 * SEC);
    assert!(b.try_acquire().is_ok(), "no probe slot leaked");
}

#[test]
fn retries_are_charged_unless_told_otherwise() {
    for (charge, expected) in [(true, 2), (false, 3)] {
        let clock = ManualClock::new();
        let limiter = RateLimiter::builder(TokenBucket::new(2, 0.001).unwrap())
            .clock(clock.clone())
            .build()
            .unwrap();
        let exec = ResilientExecutor::builder()
            .limiter(limiter)
            .retry(policy(3, SEC))
            .charge_retries(charge)
            .clock(clock)
            .build()
            .unwrap();
        let calls = Cell::new(0);
        let result: Result<(), _> = exec.run(&0_u8, || {
            calls.set(calls.get() + 1);
            Err(Boom(0))
        });
        assert_eq!(calls.get(), expected, "charge_retries({charge})");
        if charge {
            assert!(matches!(result, Err(Error::RateLimited(_))));
        } else {
            assert_eq!(
                result,
                Err(Error::RetryExhausted {
                    attempts: 3,
                    last: Boom(0)
                })
            );
        }
    }
}

#[test]
fn classification_decides_failed_vs_retried_and_ok_is_never_wrapped() {
    let clock = ManualClock::new();
    let exec = ResilientExecutor::builder()
        .retry(policy(3, SEC))
        .retry_if(|e: &Boom| e.0 > 10)
        .clock(clock.clone())
        .build()
        .unwrap();
    let calls = Cell::new(0);
    let result: Result<(), _> = exec.run(&(), || {
        calls.set(calls.get() + 1);
        Err(Boom(1))
    });
    assert_eq!(result, Err(Error::Failed(Boom(1))));
    assert_eq!(calls.get(), 1);

    let by_status = ResilientExecutor::builder()
        .retry(policy(3, SEC))
        .classifier(|r: Result<&u16, &Boom>| match r {
            Ok(code) if *code >= 500 => Outcome::RETRYABLE,
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::FATAL,
        })
        .clock(clock.clone())
        .build()
        .unwrap();
    calls.set(0);
    let result = by_status.run(&(), || {
        calls.set(calls.get() + 1);
        Ok::<u16, Boom>(503)
    });
    assert_eq!(result, Ok(503), "the last 503 comes back as Ok");
    assert_eq!(calls.get(), 3);

    let no_retry = ResilientExecutor::builder().clock(clock).build().unwrap();
    assert_eq!(
        no_retry.run(&(), || Err::<(), _>(Boom(2))),
        Err(Error::Failed(Boom(2)))
    );
}

#[test]
fn one_attempt_with_a_retryable_error_is_exhausted_after_one() {
    let exec = ResilientExecutor::builder()
        .retry(policy(1, SEC))
        .clock(ManualClock::new())
        .build()
        .unwrap();
    assert_eq!(
        exec.run(&(), || Err::<(), _>(Boom(1))),
        Err(Error::RetryExhausted {
            attempts: 1,
            last: Boom(1)
        })
    );
}

#[test]
fn a_deadline_ends_the_run_with_timed_out() {
    let clock = ManualClock::new();
    let exec = ResilientExecutor::builder()
        .retry(
            RetryPolicy::builder()
                .max_attempts(10)
                .base_delay(SEC)
                .backoff(limitpal::Backoff::Constant)
                .jitter(Jitter::None)
                .build()
                .unwrap(),
        )
        .deadline(Duration::from_millis(2500))
        .clock(clock.clone())
        .build()
        .unwrap();
    let calls = Cell::new(0);
    let result: Result<(), _> = exec.run(&(), || {
        calls.set(calls.get() + 1);
        Err(Boom(0))
    });
    assert_eq!(result, Err(Error::TimedOut { attempts: 3 }));
    assert_eq!(
        calls.get(),
        3,
        "attempts at 0 s, 1 s, 2 s; the next would start at 3 s"
    );
    assert_eq!(clock.now(), 2 * SEC, "no sleep past the deadline");
}

#[test]
fn a_slow_attempt_times_out_and_is_retried() {
    let clock = ManualClock::new();
    let exec = ResilientExecutor::builder()
        .retry(policy(3, SEC))
        .attempt_timeout(SEC)
        .clock(clock.clone())
        .build()
        .unwrap();
    let calls = Cell::new(0);
    let result = exec.run(&(), || {
        calls.set(calls.get() + 1);
        if calls.get() == 1 {
            clock.advance(5 * SEC); // a call that hangs for 5 s
        }
        Ok::<_, Boom>(calls.get())
    });
    assert_eq!(result, Ok(2));
    assert_eq!(clock.now(), 6 * SEC);
}

#[test]
fn a_breaker_opened_mid_run_stops_without_sleeping() {
    let clock = ManualClock::new();
    let exec = ResilientExecutor::builder()
        .retry(policy(5, SEC))
        .breaker(breaker(2, 30 * SEC, &clock))
        .clock(clock.clone())
        .build()
        .unwrap();
    let calls = Cell::new(0);
    let result: Result<(), _> = exec.run(&(), || {
        calls.set(calls.get() + 1);
        Err(Boom(0))
    });
    assert_eq!(result, Err(Error::CircuitOpen(CircuitOpen::new(30 * SEC))));
    assert_eq!(calls.get(), 2);
    assert_eq!(
        clock.now(),
        SEC,
        "slept once (before attempt 2), not after the breaker opened"
    );
}

#[test]
fn an_inner_rate_limit_is_retried_after_its_retry_after_and_never_opens_the_breaker() {
    let clock = ManualClock::new();
    let b = breaker(1, 30 * SEC, &clock);
    let exec = ResilientExecutor::builder()
        .retry(policy(3, SEC))
        .breaker(b.clone())
        .clock(clock.clone())
        .build()
        .unwrap();
    let calls = Cell::new(0);
    let result = exec.run(&(), || {
        calls.set(calls.get() + 1);
        if calls.get() == 1 {
            Err(RateLimited::new(4 * SEC))
        } else {
            Ok(())
        }
    });
    assert_eq!(result, Ok(()));
    assert_eq!(clock.now(), 4 * SEC);
    assert_eq!(b.state(), CircuitState::Closed);
}

#[test]
fn the_budget_refuses_retries_beyond_its_ratio() {
    let clock = ManualClock::new();
    let exec = ResilientExecutor::builder()
        .retry(policy(3, Duration::from_millis(1)))
        .budget(RetryBudget::new(Duration::from_secs(3600), 0, 0.1).unwrap())
        .clock(clock)
        .build()
        .unwrap();
    let calls = Cell::new(0);
    for _ in 0..1000 {
        let _ = exec.run(&(), || {
            calls.set(calls.get() + 1);
            Err::<(), _>(Boom(0))
        });
    }
    let retries = calls.get() - 1000;
    assert!((95..=100).contains(&retries), "{retries}");
}

#[test]
fn zero_timeouts_are_config_errors() {
    let err = ResilientExecutor::<()>::builder()
        .deadline(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "deadline");
    let err = ResilientExecutor::<()>::builder()
        .attempt_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "attempt_timeout");
}

/// A limiter that answers through a future which is pending once, as a remote one would.
struct Remote(RateLimiter<u8, TokenBucket, ManualClock>);

struct OnceLater(Option<Result<(), RateLimited>>, bool);

impl std::future::Future for OnceLater {
    type Output = Result<(), RateLimited>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        if self.1 {
            return std::task::Poll::Ready(self.0.take().unwrap());
        }
        self.1 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

impl limitpal::AsyncLimiter<u8> for Remote {
    type Future = OnceLater;
    fn check(&self, key: &u8) -> OnceLater {
        OnceLater(Some(self.0.check(key)), false)
    }
}

#[test]
fn a_remote_limiter_is_swapped_in_by_type_and_waited_for() {
    let clock = ManualClock::new();
    let local = RateLimiter::builder(TokenBucket::new(2, 1.0).unwrap())
        .clock(clock.clone())
        .build()
        .unwrap();
    let exec = ResilientExecutor::builder()
        .limiter(Remote(local))
        .clock(clock)
        .build()
        .unwrap();
    let calls = Cell::new(0);
    let op = || -> Result<(), Boom> {
        calls.set(calls.get() + 1);
        Ok(())
    };
    assert_eq!(exec.run(&1, op), Ok(()));
    assert_eq!(exec.run(&1, op), Ok(()));
    assert_eq!(
        exec.run(&1, op),
        Err(Error::RateLimited(RateLimited::new(SEC)))
    );
    assert_eq!(calls.get(), 2);
}
