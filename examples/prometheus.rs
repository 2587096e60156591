//! limitpal's metrics in Prometheus text format, after a scripted scenario.
//!
//! ```text
//! cargo run --example prometheus --features metrics
//! ```
//!
//! Install a `metrics` recorder first (here `metrics-exporter-prometheus`), then give each
//! component a `.name(..)`: its handles are registered when it is built. A service would
//! serve `handle.render()` on `/metrics`; this example prints it.

use std::time::Duration;

use limitpal::{
    Bulkhead, CircuitBreaker, Jitter, ManualClock, RateLimiter, ResilientExecutor, RetryPolicy,
    TokenBucket,
};
use metrics_exporter_prometheus::PrometheusBuilder;

/// Installs the recorder, runs the scenario, returns the scrape.
pub(crate) fn scenario() -> Result<String, Box<dyn std::error::Error>> {
    let handle = PrometheusBuilder::new().install_recorder()?;
    let clock = ManualClock::new();
    let limiter = RateLimiter::builder(TokenBucket::new(3, 1.0)?)
        .name("api")
        .clock(clock.clone())
        .build()?;
    let exec = ResilientExecutor::builder()
        .name("upstream")
        .limiter(limiter.clone())
        .breaker(
            CircuitBreaker::builder()
                .name("upstream")
                .failure_threshold(2)
                .clock(clock.clone())
                .build()?,
        )
        .retry(
            RetryPolicy::builder()
                .max_attempts(2)
                .base_delay(Duration::from_millis(100))
                .jitter(Jitter::None)
                .build()?,
        )
        .bulkhead(Bulkhead::builder(8).name("upstream").build()?)
        .clock(clock)
        .build()?;
    // Run 1: ok. Run 2: fails twice (retried once, then exhausted), which opens the breaker.
    // Run 3: rejected by the open breaker, so the limiter is not charged. Then a direct check:
    // the limiter's burst of 3 went to the three attempts, so it is denied.
    let _ = exec.run(&"user", || Ok::<_, &str>(()));
    let _ = exec.run(&"user", || Err::<(), _>("503"));
    let _ = exec.run(&"user", || Ok::<_, &str>(()));
    let _ = limiter.check(&"user");
    // A fallback answers an open breaker: counted with its reason.
    let cached = ResilientExecutor::builder()
        .name("catalog")
        .breaker({
            let open = CircuitBreaker::builder().build()?;
            open.force_open();
            open
        })
        .fallback(|e: &limitpal::Error<&str>| {
            matches!(e, limitpal::Error::CircuitOpen(_)).then_some("cached")
        })
        .build()?;
    let _ = cached.run(&"user", || Ok::<_, &str>("fresh"));
    // A second bulkhead, full: one refusal.
    let db = Bulkhead::builder(1).name("db").build()?;
    let _held = db.try_acquire()?;
    let _ = db.try_acquire();
    Ok(handle.render())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    print!("{}", scenario()?);
    Ok(())
}
