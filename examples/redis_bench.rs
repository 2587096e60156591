//! Decisions per second of `RedisRateLimiter` next to `redis-benchmark` running the very same
//! script (`EVALSHA`, one key per decision over 100 000 keys, no pipelining: `-P 1`) at the
//! same concurrency, in the same run.
//!
//! ```text
//! cargo run --release --example redis_bench --features redis [-- DECISIONS]
//! ```
//!
//! Uses `LIMITPAL_REDIS_URL` or `redis://127.0.0.1:6379`; needs `redis-benchmark` on PATH.
//! Prints `concurrency ours/s redis-benchmark/s ratio`. The design target is a ratio ≥ 0.80.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use limitpal::redis::{FailurePolicy, RedisRateLimiter, script_source};
use limitpal::{AsyncLimiter, Clock, MonotonicClock, TokenBucket};

const KEYS: u64 = 100_000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url =
        std::env::var("LIMITPAL_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let decisions: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(50_000);
    let client = redis::Client::open(url.as_str())?;
    let info = client.get_connection_info().addr().to_string();
    let (host, port) = info.rsplit_once(':').ok_or("redis url without a port")?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(script_source())
        .query_async(&mut conn)
        .await?;

    // A quota so large nothing is ever denied: both sides do the same work per decision.
    let algorithm = TokenBucket::new(1_000_000, 1_000.0)?;
    let (capacity, window) = limitpal::Algorithm::policy(&algorithm);
    let burst_us = u64::try_from(window.as_micros())?;
    let interval_us = burst_us / u64::from(capacity);
    let limiter: RedisRateLimiter<String> = RedisRateLimiter::builder(&url, algorithm)
        .prefix("bench")
        .on_error(FailurePolicy::Deny(Duration::from_secs(1)))
        .timeout(Duration::from_secs(2))
        .connect()
        .await?;

    println!("{decisions} decisions per run, EVALSHA -P 1, {KEYS} keys, redis at {host}:{port}");
    println!(
        "{:>11} {:>12} {:>17} {:>6}",
        "concurrency", "ours/s", "redis-benchmark/s", "ratio"
    );
    for concurrency in [1_u64, 16, 50] {
        let ours = ours(&limiter, concurrency, decisions).await;
        let theirs = redis_benchmark(
            host,
            port,
            concurrency,
            decisions,
            &sha,
            interval_us,
            burst_us,
        )?;
        println!(
            "{concurrency:>11} {ours:>12.0} {theirs:>17.0} {:>6.2}",
            ours / theirs
        );
    }
    assert_eq!(limiter.errors(), 0, "every decision came from redis");
    Ok(())
}

/// Decisions per second with `concurrency` tasks sharing `total` decisions.
async fn ours(limiter: &RedisRateLimiter<String>, concurrency: u64, total: u64) -> f64 {
    let next = Arc::new(AtomicU64::new(0));
    let clock = MonotonicClock;
    let start = clock.now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let limiter = limiter.clone();
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        break;
                    }
                    let key = (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) % KEYS).to_string();
                    let _ = limiter.check(&key).await;
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    #[allow(clippy::cast_precision_loss)]
    let rate = total as f64 / (clock.now() - start).as_secs_f64();
    rate
}

/// `redis-benchmark` running the same script; returns its requests per second.
fn redis_benchmark(
    host: &str,
    port: &str,
    concurrency: u64,
    total: u64,
    sha: &str,
    interval_us: u64,
    burst_us: u64,
) -> Result<f64, Box<dyn std::error::Error>> {
    let out = Command::new("redis-benchmark")
        .args(["-h", host, "-p", port, "-q", "-P", "1"])
        .args(["-c", &concurrency.to_string(), "-n", &total.to_string()])
        .args(["-r", &KEYS.to_string()])
        .args(["EVALSHA", sha, "1", "bench:{__rand_int__}"])
        .args([&interval_us.to_string(), &burst_us.to_string(), "1"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "EVALSHA ...: 12345.67 requests per second, p50=..."
    let rate = text
        .split("requests per second")
        .next()
        .and_then(|head| head.rsplit([' ', ':', '\r']).find(|w| !w.is_empty()))
        .and_then(|n| n.parse::<f64>().ok())
        .ok_or_else(|| format!("cannot read redis-benchmark output: {text}"))?;
    Ok(rate)
}
