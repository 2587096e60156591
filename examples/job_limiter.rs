//! A job queue processed at a steady rate: wait for quota instead of failing.
//!
//! ```text
//! cargo run --example job_limiter --features tower
//! ```
//!
//! A `LeakyBucket` of 20 leaking 10 per second: the first 20 jobs start at once, then one
//! every 100 ms, so 100 jobs take exactly 8 s — no bursts beyond the bucket, no polling, no
//! job lost. Every job waits with `until_ready(&key, 60 s)`: it reserves its slot on the
//! limiter's schedule when it arrives (so jobs start in arrival order) and then sleeps on
//! tokio time until that slot. The example runs under paused tokio time, so it finishes
//! instantly and its figures are exact. Expected output:
//!
//! ```text
//! job   0 starts at 0.000 s
//! job  19 starts at 0.000 s
//! job  20 starts at 0.100 s
//! job  21 starts at 0.200 s
//! job  99 starts at 8.000 s
//! 100 jobs in 8.000 s; after the first 20, one every 100 ms
//! ```

use std::time::Duration;

use limitpal::tower::{TokioClock, UntilReady};
use limitpal::{Clock, LeakyBucket, RateLimiter};
use tower::BoxError;

#[tokio::main(flavor = "current_thread", start_paused = true)]
pub(crate) async fn main() -> Result<(), BoxError> {
    // One limiter for the whole queue: key "jobs". A per-tenant queue would use the tenant
    // as the key instead, each with its own 20 / 10 per second.
    let limiter = RateLimiter::builder(LeakyBucket::new(20, 10.0)?)
        .clock(TokioClock::new())
        .build()?;
    let clock = TokioClock::new();
    let start = clock.now();

    let mut jobs = Vec::new();
    for id in 0..100_u32 {
        // The reservation is taken here, in arrival order; awaiting it only sleeps.
        let ready = limiter.until_ready(&"jobs", Duration::from_secs(60));
        jobs.push(tokio::spawn(async move {
            ready.await?;
            // ... process job `id` here ...
            Ok::<_, limitpal::RateLimited>((id, clock.now() - start))
        }));
    }

    let mut started = Vec::new();
    for job in jobs {
        started.push(job.await??);
    }
    for &(id, at) in &started {
        if id == 0 || id == 19 || id == 20 || id == 21 || id == 99 {
            println!("job {id:>3} starts at {:.3} s", at.as_secs_f64());
        }
    }

    // The schedule is exact: 20 at once, then one every 100 ms.
    for &(id, at) in &started {
        let expected = Duration::from_millis(100) * id.saturating_sub(19);
        assert_eq!(at, expected, "job {id}");
    }
    let total = clock.now() - start;
    assert_eq!(total, Duration::from_secs(8));
    println!(
        "{} jobs in {:.3} s; after the first 20, one every 100 ms",
        started.len(),
        total.as_secs_f64()
    );
    Ok(())
}
