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
//! Then exact against leased mode (`.lease`), one hot key and a Zipf mix, cold and warm;
//! `redis_bench leases` prints that table alone.

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

    if std::env::args().nth(1).as_deref() == Some("leases") {
        return leases(&url, host, port, &sha, interval_us, burst_us).await;
    }
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
            [interval_us, burst_us],
            false,
        )?;
        println!(
            "{concurrency:>11} {ours:>12.0} {theirs:>17.0} {:>6.2}",
            ours / theirs
        );
    }
    assert_eq!(limiter.errors(), 0, "every decision came from redis");
    leases(&url, host, port, &sha, interval_us, burst_us).await?;
    Ok(())
}

/// Leased mode next to exact mode, same run: one hot key, and a Zipf mix (s = 1.0) over
/// 100 000 keys, each for one second per row; `redis-benchmark` on the hot key for scale.
async fn leases(
    url: &str,
    host: &str,
    port: &str,
    sha: &str,
    interval_us: u64,
    burst_us: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    // A burst of 50 M and 1 M/s (the script's finest rate): nothing is denied within a row,
    // so both modes do the same work per decision; keys fresh for every row and run.
    let run = std::process::id();
    let row = AtomicU64::new(0);
    let connect = |lease: bool, mode: &'static str| {
        let prefix = format!("{mode}-{run}-{}", row.fetch_add(1, Ordering::Relaxed));
        async move {
            let builder = RedisRateLimiter::<String>::builder(
                url,
                TokenBucket::new(50_000_000, 1_000_000.0)?,
            )
            .prefix(prefix)
            .on_error(FailurePolicy::Deny(Duration::from_secs(1)))
            .timeout(Duration::from_secs(2));
            let builder = if lease {
                builder.lease(1_024, Duration::from_secs(1))
            } else {
                builder
            };
            Ok::<_, Box<dyn std::error::Error>>(builder.connect().await?)
        }
    };
    let hot = vec!["hot".to_owned()];
    let zipf = zipf_keys(100_000, 1.0, 200_000);
    println!();
    println!(
        "{:<22} {:>5} {:>12} {:>12} {:>7} {:>16} {:>7}",
        "workload", "tasks", "exact/s", "leased/s", "ratio", "trips/1000 leased", "denied"
    );
    // the warm row: the second second of the same mix (most keys seen before, as in a
    // service that has been up for a while); the cold rows: the first second
    for (name, keys, warm) in [
        ("one hot key", &hot, false),
        ("Zipf, 100 000 keys", &zipf, false),
        ("Zipf, warm (2nd s)", &zipf, true),
    ] {
        for tasks in [1_usize, 16] {
            let exact = connect(false, "exact").await?;
            let leased = connect(true, "leased").await?;
            if warm {
                for_one_second(&exact, keys, tasks).await;
                for_one_second(&leased, keys, tasks).await;
            }
            let before = leased.lease_stats().map_or(0, |s| s.leases);
            let (exact_rate, _, exact_denied) = for_one_second(&exact, keys, tasks).await;
            let (leased_rate, decisions, leased_denied) =
                for_one_second(&leased, keys, tasks).await;
            let trips = leased.lease_stats().map_or(0, |s| s.leases) - before;
            #[allow(clippy::cast_precision_loss)]
            let per_thousand = trips as f64 * 1000.0 / decisions.max(1) as f64;
            println!(
                "{name:<22} {tasks:>5} {exact_rate:>12.0} {leased_rate:>12.0} {:>7.1} {per_thousand:>16.2} {:>7}",
                leased_rate / exact_rate,
                exact_denied + leased_denied
            );
        }
    }
    let theirs = redis_benchmark(host, port, 16, 50_000, sha, [interval_us, burst_us], true)?;
    println!("redis-benchmark EVALSHA, one key, 16 clients: {theirs:.0}/s");
    Ok(())
}

/// Decisions per second (and decisions made, and denied) of `tasks` tasks cycling through
/// `keys` for one second, each decision `check_now` then, if it has no answer, `check`.
async fn for_one_second(
    limiter: &RedisRateLimiter<String>,
    keys: &[String],
    tasks: usize,
) -> (f64, u64, u64) {
    let clock = MonotonicClock;
    let start = clock.now();
    let keys: Arc<Vec<String>> = Arc::new(keys.to_vec());
    let done = Arc::new(AtomicU64::new(0));
    let denied = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (limiter, keys) = (limiter.clone(), Arc::clone(&keys));
            let (done, denied) = (Arc::clone(&done), Arc::clone(&denied));
            tokio::spawn(async move {
                let mut i = t.wrapping_mul(7919);
                let (mut n, mut no) = (0_u64, 0_u64);
                while clock.now() - start < Duration::from_secs(1) {
                    for _ in 0..64 {
                        let key = &keys[i % keys.len()];
                        i = i.wrapping_add(1);
                        let answer = match limiter.check_now(key) {
                            Some(answer) => answer,
                            None => limiter.check(key).await,
                        };
                        n += 1;
                        no += u64::from(answer.is_err());
                    }
                    tokio::task::yield_now().await;
                }
                done.fetch_add(n, Ordering::Relaxed);
                denied.fetch_add(no, Ordering::Relaxed);
            })
        })
        .collect();
    for handle in handles {
        let _ = handle.await;
    }
    let decisions = done.load(Ordering::Relaxed);
    #[allow(clippy::cast_precision_loss)]
    let rate = decisions as f64 / (clock.now() - start).as_secs_f64();
    (rate, decisions, denied.load(Ordering::Relaxed))
}

/// `samples` keys drawn from a Zipf distribution with exponent `s` over `n` keys (a fixed
/// seed: every run draws the same mix).
fn zipf_keys(n: u64, s: f64, samples: usize) -> Vec<String> {
    #[allow(clippy::cast_precision_loss)]
    let weights: Vec<f64> = (1..=n).map(|k| 1.0 / (k as f64).powf(s)).collect();
    let total: f64 = weights.iter().sum();
    let mut cdf = Vec::with_capacity(weights.len());
    let mut acc = 0.0;
    for w in weights {
        acc += w / total;
        cdf.push(acc);
    }
    let mut x = 0x2545_F491_4F6C_DD1D_u64;
    (0..samples)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            #[allow(clippy::cast_precision_loss)]
            let u = (x >> 11) as f64 / (1_u64 << 53) as f64;
            let rank = cdf.partition_point(|&c| c < u);
            format!("z{rank}")
        })
        .collect()
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

/// "EVALSHA ...: 12345.67 requests per second, p50=...": the rate.
fn parse_rate(text: &str) -> Result<f64, Box<dyn std::error::Error>> {
    text.split("requests per second")
        .next()
        .and_then(|head| head.rsplit([' ', ':', '\r']).find(|w| !w.is_empty()))
        .and_then(|n| n.parse::<f64>().ok())
        .ok_or_else(|| format!("cannot read redis-benchmark output: {text}").into())
}

/// `redis-benchmark` running the same script over the bench's keys (or, `one_key`, on one
/// hot key); returns its requests per second.
fn redis_benchmark(
    host: &str,
    port: &str,
    concurrency: u64,
    total: u64,
    sha: &str,
    [interval_us, burst_us]: [u64; 2],
    one_key: bool,
) -> Result<f64, Box<dyn std::error::Error>> {
    let mut command = Command::new("redis-benchmark");
    command
        .args(["-h", host, "-p", port, "-q", "-P", "1"])
        .args(["-c", &concurrency.to_string(), "-n", &total.to_string()]);
    if one_key {
        command.args(["EVALSHA", sha, "1", "bench:{hot}"]);
    } else {
        command
            .args(["-r", &KEYS.to_string()])
            .args(["EVALSHA", sha, "1", "bench:{__rand_int__}"]);
    }
    let out = command
        .args([&interval_us.to_string(), &burst_us.to_string(), "1"])
        .output()?;
    parse_rate(&String::from_utf8_lossy(&out.stdout))
}
