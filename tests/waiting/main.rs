//! Waiting for quota: reservations in core (exact under `ManualClock`), `until_ready` and the
//! waiting layers under paused tokio time, the pipeline's wait and pushback semantics.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

#[cfg(feature = "tower")]
mod pipeline;
#[cfg(feature = "http")]
mod pushback;
mod reserve;
#[cfg(feature = "tower")]
mod until_ready;

/// The job limiter example, which asserts its own exact schedule.
#[cfg(feature = "tower")]
#[path = "../../examples/job_limiter.rs"]
mod job_limiter;

/// 100 jobs through `LeakyBucket` 20 / 10 per second: 20 at once, then one every 100 ms, 8 s.
#[cfg(feature = "tower")]
#[test]
fn the_job_limiter_example_runs_jobs_at_exactly_ten_per_second() {
    job_limiter::main().unwrap();
}
