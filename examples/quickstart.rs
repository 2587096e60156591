//! limitpal in one minute, driven by a manual clock so the run is instant and deterministic.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! Part 1 is a per-user rate limit on its own. Part 2 puts a flaky upstream behind the whole
//! pipeline — per-user limit, circuit breaker, retries with backoff — and prints what
//! happened to every call: allowed, retried, rate limited, or rejected by the open circuit.

use std::time::Duration;

use limitpal::fault::FaultInjector;
use limitpal::{
    CircuitBreaker, Clock, Error, Jitter, ManualClock, RateLimiter, ResilientExecutor, RetryPolicy,
    TokenBucket,
};

fn main() -> Result<(), limitpal::ConfigError> {
    rate_limit_alone()?;
    full_pipeline()
}

fn rate_limit_alone() -> Result<(), limitpal::ConfigError> {
    println!("1. a per-user rate limit: burst 3, then 2 per second\n");
    // In production, leave `.clock(..)` out and the monotonic clock is used.
    let clock = ManualClock::new();
    let per_user = RateLimiter::builder(TokenBucket::new(3, 2.0)?)
        .clock(clock.clone())
        .build()?;
    let traffic = [
        ("alice", 0),
        ("alice", 0),
        ("alice", 0),
        ("alice", 0), // a fourth request in the same instant: denied
        ("bob", 0),   // bob has his own quota
        ("alice", 250),
        ("alice", 250), // half a second after the burst: one token back
        ("alice", 0),
    ];
    println!("{:>7}  {:<6} decision", "t", "user");
    for (user, wait_ms) in traffic {
        clock.advance(Duration::from_millis(wait_ms));
        let t = clock.now().as_secs_f64();
        match per_user.check(user) {
            Ok(()) => println!("{t:>6.3}s  {user:<6} allowed"),
            Err(denied) => println!(
                "{t:>6.3}s  {user:<6} rate limited, retry after {:?}",
                denied.retry_after
            ),
        }
    }
    // bob's bucket is full again, so his key was dropped: a fresh key answers the same.
    println!("keys held: {}\n", per_user.len());
    Ok(())
}

fn full_pipeline() -> Result<(), limitpal::ConfigError> {
    println!(
        "2. the pipeline: breaker -> per-user limit -> call -> retries, upstream down 3 s..9 s\n"
    );
    let clock = ManualClock::new();
    let exec = ResilientExecutor::builder()
        .limiter(
            RateLimiter::builder(TokenBucket::new(5, 2.0)?)
                .clock(clock.clone())
                .build()?,
        )
        .breaker(
            CircuitBreaker::builder()
                .failure_threshold(4)
                .recovery_timeout(Duration::from_secs(4))
                .clock(clock.clone())
                .build()?,
        )
        .retry(
            RetryPolicy::builder()
                .max_attempts(3)
                .base_delay(Duration::from_millis(200))
                .jitter(Jitter::None)
                .build()?,
        )
        .clock(clock.clone()) // sleeps between attempts advance the manual clock
        .build()?;
    // The upstream is down from 3 s to 9 s of the clock, and fine otherwise: a seeded fault
    // injector fails every call in that window (and counts the calls it sees).
    let upstream = FaultInjector::builder()
        .error(1.0, || "503 service unavailable".to_owned())
        .plan(|p| p.during(Duration::from_secs(3), Duration::from_secs(9)))
        .clock(clock.clone())
        .build()?;
    let calls = || upstream.plan().calls();

    println!("{:>7}  {:<6} outcome", "t", "user");
    for step in 0..30 {
        // alice calls every 500 ms; mallory sends 7 at once every 3 s (her burst is 5)
        let users: &[&str] = if step % 6 == 0 {
            &[
                "alice", "mallory", "mallory", "mallory", "mallory", "mallory", "mallory",
                "mallory",
            ]
        } else {
            &["alice"]
        };
        for user in users {
            let t = clock.now().as_secs_f64();
            let before = calls();
            let result = exec.run(user, || upstream.call(|| Ok(format!("hello {user}"))));
            let attempts = calls() - before;
            let outcome = match result {
                Ok(body) if attempts <= 1 => format!("ok: {body}"),
                Ok(body) => format!("ok after {} retries: {body}", attempts - 1),
                Err(Error::RateLimited(e)) => {
                    format!("rate limited, retry after {:?}", e.retry_after)
                }
                Err(Error::CircuitOpen(e)) if attempts == 0 => {
                    format!("circuit open, not called; retry after {:?}", e.retry_after)
                }
                Err(Error::CircuitOpen(e)) => format!(
                    "{attempts} call(s) failed and opened the circuit; retry after {:?}",
                    e.retry_after
                ),
                Err(Error::RetryExhausted { attempts, last }) => {
                    format!("failed after {attempts} attempts: {last}")
                }
                Err(other) => format!("failed: {other}"),
            };
            println!("{t:>6.2}s  {user:<7} {outcome}");
        }
        clock.advance(Duration::from_millis(500));
    }
    println!(
        "\n{} upstream calls in {:.1} s of clock time (the run itself took microseconds)",
        calls(),
        clock.now().as_secs_f64()
    );
    Ok(())
}
