//! limitpal in one minute: a per-user rate limit, driven by a manual clock so the run is
//! instant and deterministic.
//!
//! ```text
//! cargo run --example quickstart
//! ```

use std::time::Duration;

use limitpal::{Clock, ConfigError, ManualClock, RateLimiter, TokenBucket};

fn main() -> Result<(), ConfigError> {
    // Each user may burst 3 requests, then 2 per second. The manual clock moves only when
    // told to; in production, leave `.clock(..)` out and the monotonic clock is used.
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
    println!("keys held: {}", per_user.len());
    Ok(())
}
