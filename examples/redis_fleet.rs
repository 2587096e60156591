//! Three processes share one key's limit through Redis with leased quota: how much each
//! admits per second, and the fleet in total, against the limit.
//!
//! ```text
//! cargo run --release --example redis_fleet --features redis [-- OUT.svg]
//! ```
//!
//! Uses `LIMITPAL_REDIS_URL` or `redis://127.0.0.1:6379`. The example spawns three copies of
//! itself (`redis_fleet worker ...`), each hammering the key `fleet:{shared}` (1 000/s, burst
//! 100) from four tasks for 5 s through `RedisRateLimiter::builder(..).lease(64, 250 ms)`,
//! and each printing its admissions per second; it prints the table and the round trips per
//! 1 000 decisions, and plots them (default `target/redis_fleet.svg`; the README shows
//! `examples/redis_fleet.svg`). tests/redis runs the same workers and checks the bounds.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[path = "common/chart.rs"]
mod chart;

use limitpal::redis::{FailurePolicy, RedisRateLimiter};
use limitpal::{AsyncLimiter, Clock, MonotonicClock, TokenBucket};

/// What one worker process does: `worker URL PREFIX KEYS SECONDS MAX_BATCH MAX_HOLD_MS
/// CAPACITY RATE`.
#[derive(Debug, Clone)]
pub(crate) struct Work {
    pub(crate) url: String,
    pub(crate) prefix: String,
    pub(crate) keys: u32,
    pub(crate) seconds: u32,
    pub(crate) max_batch: u32,
    pub(crate) max_hold: Duration,
    pub(crate) capacity: u32,
    pub(crate) rate: f64,
}

impl Work {
    pub(crate) fn args(&self) -> Vec<String> {
        vec![
            "worker".into(),
            self.url.clone(),
            self.prefix.clone(),
            self.keys.to_string(),
            self.seconds.to_string(),
            self.max_batch.to_string(),
            self.max_hold.as_millis().to_string(),
            self.capacity.to_string(),
            self.rate.to_string(),
        ]
    }

    fn parse(args: &[String]) -> Option<Self> {
        Some(Self {
            url: args.first()?.clone(),
            prefix: args.get(1)?.clone(),
            keys: args.get(2)?.parse().ok()?,
            seconds: args.get(3)?.parse().ok()?,
            max_batch: args.get(4)?.parse().ok()?,
            max_hold: Duration::from_millis(args.get(5)?.parse().ok()?),
            capacity: args.get(6)?.parse().ok()?,
            rate: args.get(7)?.parse().ok()?,
        })
    }
}

/// What one worker reported: admissions in each second, and its round trips.
#[derive(Debug, Clone, Default)]
pub(crate) struct Reported {
    pub(crate) per_second: Vec<u64>,
    pub(crate) decisions: u64,
    pub(crate) round_trips: u64,
}

impl Reported {
    pub(crate) fn admitted(&self) -> u64 {
        self.per_second.iter().sum()
    }

    /// Parses a worker's output: `second N` lines, then `decisions D round_trips R`.
    pub(crate) fn parse(out: &str) -> Self {
        let mut reported = Self::default();
        for line in out.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["second", n] => reported.per_second.push(n.parse().unwrap_or(0)),
                ["decisions", d, "round_trips", r] => {
                    reported.decisions = d.parse().unwrap_or(0);
                    reported.round_trips = r.parse().unwrap_or(0);
                }
                _ => {}
            }
        }
        reported
    }
}

/// Runs one worker: four tasks check keys round-robin as fast as they can for the run's
/// seconds, counting admissions per second; prints them (flushed each second, so a killed
/// worker has reported what it admitted so far).
async fn worker(work: Work) -> Result<(), Box<dyn std::error::Error>> {
    let limiter: RedisRateLimiter<String> =
        RedisRateLimiter::builder(&work.url, TokenBucket::new(work.capacity, work.rate)?)
            .prefix(work.prefix.clone())
            .lease(work.max_batch, work.max_hold)
            .on_error(FailurePolicy::Deny(Duration::from_millis(100)))
            .timeout(Duration::from_millis(500))
            .connect()
            .await?;
    let clock = MonotonicClock::new();
    let start = clock.now();
    let seconds = usize::try_from(work.seconds)?;
    let counts: Arc<Vec<AtomicU64>> = Arc::new((0..seconds).map(|_| AtomicU64::new(0)).collect());
    let decisions = Arc::new(AtomicU64::new(0));
    let keys: Vec<String> = (0..work.keys)
        .map(|k| {
            if work.keys == 1 {
                "shared".to_owned()
            } else {
                format!("k{k}")
            }
        })
        .collect();
    let keys = Arc::new(keys);
    let mut tasks = Vec::new();
    for t in 0..4_usize {
        let (limiter, counts, decisions, keys) = (
            limiter.clone(),
            Arc::clone(&counts),
            Arc::clone(&decisions),
            Arc::clone(&keys),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = t;
            loop {
                let elapsed = clock.now().saturating_sub(start);
                let second = usize::try_from(elapsed.as_secs()).unwrap_or(usize::MAX);
                if second >= counts.len() {
                    break;
                }
                let key = &keys[i % keys.len()];
                i = i.wrapping_add(4);
                let admitted = match limiter.check_now(key) {
                    Some(answer) => answer.is_ok(),
                    None => limiter.check(key).await.is_ok(),
                };
                decisions.fetch_add(1, Ordering::Relaxed);
                if admitted {
                    counts[second].fetch_add(1, Ordering::Relaxed);
                } else {
                    // refused: Redis said when; a caller would wait, a hammer yields
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    let mut out = std::io::stdout();
    for second in 0..seconds {
        let end = Duration::from_secs(u64::try_from(second)? + 1);
        tokio::time::sleep(end.saturating_sub(clock.now().saturating_sub(start))).await;
        // the second is over for every task (they stop counting into it)
        tokio::time::sleep(Duration::from_millis(20)).await;
        writeln!(out, "second {}", counts[second].load(Ordering::Relaxed))?;
        out.flush()?;
    }
    for task in tasks {
        task.await?;
    }
    let stats = limiter.lease_stats().unwrap_or_default();
    writeln!(
        out,
        "decisions {} round_trips {}",
        decisions.load(Ordering::Relaxed),
        stats.leases
    )?;
    out.flush()?;
    Ok(())
}

/// Spawns `n` workers of this very program, waits for them, returns their reports.
pub(crate) fn fleet(
    exe: &std::path::Path,
    work: &Work,
    n: usize,
) -> std::io::Result<Vec<Reported>> {
    let children: Vec<_> = (0..n)
        .map(|_| {
            Command::new(exe)
                .args(work.args())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    children
        .into_iter()
        .map(|child| {
            let output = child.wait_with_output()?;
            Ok(Reported::parse(&String::from_utf8_lossy(&output.stdout)))
        })
        .collect()
}

fn svg(work: &Work, reports: &[Reported]) -> String {
    let seconds = usize::try_from(work.seconds).unwrap_or(0);
    #[allow(clippy::cast_precision_loss)]
    let mut series: Vec<chart::Series> = reports
        .iter()
        .zip(chart::COLORS)
        .enumerate()
        .map(|(i, (r, color))| chart::Series {
            name: format!("process {}", i + 1),
            color,
            points: r
                .per_second
                .iter()
                .enumerate()
                .map(|(t, n)| (t as f64 + 0.5, *n as f64))
                .collect(),
            dashed: false,
        })
        .collect();
    #[allow(clippy::cast_precision_loss)]
    series.push(chart::Series {
        name: "fleet".into(),
        color: chart::COLORS[3],
        points: (0..seconds)
            .map(|t| {
                let total: u64 = reports
                    .iter()
                    .map(|r| r.per_second.get(t).copied().unwrap_or(0))
                    .sum();
                (t as f64 + 0.5, total as f64)
            })
            .collect(),
        dashed: false,
    });
    series.push(chart::Series {
        name: "limit".into(),
        color: chart::COLORS[4],
        points: vec![(0.0, work.rate), (f64::from(work.seconds), work.rate)],
        dashed: true,
    });
    chart::svg(&[chart::Panel {
        title: format!(
            "Admitted per second: 3 processes, one key limited to {}/s (burst {}), leases of up to {}",
            work.rate, work.capacity, work.max_batch
        ),
        x_max: f64::from(work.seconds),
        y_max: work.rate * 1.3,
        shade: None,
        series,
    }])
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("worker") {
        let work = Work::parse(&args[1..])
            .ok_or("worker URL PREFIX KEYS SECONDS MAX_BATCH MAX_HOLD_MS CAPACITY RATE")?;
        return tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
            .block_on(worker(work));
    }
    let out = args
        .first()
        .cloned()
        .unwrap_or_else(|| "target/redis_fleet.svg".into());
    let work = Work {
        url: std::env::var("LIMITPAL_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        prefix: format!("fleet-{}", std::process::id()),
        keys: 1,
        seconds: 5,
        max_batch: 64,
        max_hold: Duration::from_millis(250),
        capacity: 100,
        rate: 1_000.0,
    };
    let clock = MonotonicClock::new();
    let started = clock.now();
    let reports = fleet(&std::env::current_exe()?, &work, 3)?;
    // the fleet's span, from the first worker's start to the last one's end (startup
    // included): the allowance since the key's start is burst + rate × at most this
    let span = clock.now().saturating_sub(started).as_secs_f64();
    println!(
        "second  {:>9} {:>9} {:>9}  fleet",
        "process 1", "process 2", "process 3"
    );
    for t in 0..usize::try_from(work.seconds)? {
        let row: Vec<u64> = reports
            .iter()
            .map(|r| r.per_second.get(t).copied().unwrap_or(0))
            .collect();
        println!(
            "{t:>6}  {:>9} {:>9} {:>9}  {}",
            row[0],
            row[1],
            row[2],
            row.iter().sum::<u64>()
        );
    }
    let admitted: u64 = reports.iter().map(Reported::admitted).sum();
    let decisions: u64 = reports.iter().map(|r| r.decisions).sum();
    let trips: u64 = reports.iter().map(|r| r.round_trips).sum();
    #[allow(clippy::cast_precision_loss)]
    let per_thousand = trips as f64 * 1000.0 / decisions.max(1) as f64;
    println!(
        "admitted {admitted}: allowance {:.0} over the fleet's {span:.2} s (burst + rate × span), {:.0} over the {} s each worker ran; {decisions} decisions, {per_thousand:.2} round trips per 1 000",
        f64::from(work.capacity) + work.rate * span,
        f64::from(work.capacity) + work.rate * f64::from(work.seconds),
        work.seconds
    );
    std::fs::write(&out, svg(&work, &reports))?;
    println!("plot: {out}");
    Ok(())
}
