//! Hedged requests cut the tail: an upstream whose calls take 10–20 ms, except 2 % that take
//! 500 ms (a slow replica, a GC pause, a lost packet). This simulation sends the same open-loop
//! traffic through `ResilienceLayer` three ways and compares latency and upstream load:
//!
//! ```text
//! cargo run --release --example hedging [-- OUT.svg]
//! ```
//!
//! - `no hedge`: every request waits for its one call;
//! - `after 50 ms`: a call still running after 50 ms is sent again (`Hedge::after`);
//! - `p97 + budget`: hedged after the p97 of recent calls (`Hedge::percentile(0.97, 200)`),
//!   hedges drawn from a 5 % `RetryBudget` so the extra load can never pass 5 %.
//!
//! Which call is slow is decided by a seeded hash of the call's number, so every run is the
//! same; under paused tokio time the 30 s of traffic take well under a second. It prints
//! p50, p99, p99.9 and the extra load (upstream calls / requests − 1) per strategy and writes
//! a plot of latency by percentile (default `target/hedging.svg`; the README shows
//! `examples/hedging.svg`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[path = "common/chart.rs"]
mod chart;

use limitpal::tower::{ResilienceLayer, TokioClock};
use limitpal::{Clock, Hedge, RetryBudget};
use tower::{Layer, ServiceExt, service_fn};

/// The traffic and the upstream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    /// Requests per second, open loop.
    pub(crate) rate: u32,
    pub(crate) seconds: u32,
    /// The share of calls that are slow, and how slow.
    pub(crate) tail: f64,
    pub(crate) tail_latency: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            rate: 200,
            seconds: 30,
            tail: 0.02,
            tail_latency: Duration::from_millis(500),
        }
    }
}

/// The strategies compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strategy {
    None,
    Fixed,
    Percentile,
}

impl Strategy {
    pub(crate) const ALL: [Self; 3] = [Self::None, Self::Fixed, Self::Percentile];

    fn name(self) -> &'static str {
        match self {
            Self::None => "no hedge",
            Self::Fixed => "after 50 ms",
            Self::Percentile => "p97 + budget",
        }
    }
}

/// What one strategy did.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    pub(crate) strategy: Strategy,
    /// Every request's latency, sorted.
    pub(crate) latencies: Vec<Duration>,
    /// Upstream calls / requests − 1.
    pub(crate) extra_load: f64,
}

impl Report {
    /// The latency at quantile `q` (0.99: the p99).
    pub(crate) fn quantile(&self, q: f64) -> Duration {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let rank = ((self.latencies.len() as f64) * q).ceil() as usize;
        self.latencies
            .get(rank.saturating_sub(1))
            .copied()
            .unwrap_or_default()
    }
}

/// A deterministic uniform number in [0, 1) for call `n`.
fn uniform(n: u64, salt: u64) -> f64 {
    let mut z = n.wrapping_add(salt).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    #[allow(clippy::cast_precision_loss)]
    let u = (z >> 11) as f64 / (1_u64 << 53) as f64;
    u
}

/// How long upstream call `n` takes: 10–20 ms, or the tail's latency.
fn latency(config: Config, n: u64) -> Duration {
    if uniform(n, 1) < config.tail {
        config.tail_latency
    } else {
        Duration::from_millis(10).mul_f64(1.0 + uniform(n, 2))
    }
}

/// Runs one strategy; must be called inside a runtime with paused time.
pub(crate) async fn simulate(config: Config, strategy: Strategy) -> Report {
    let calls = Arc::new(AtomicU64::new(0));
    let upstream = service_fn({
        let calls = Arc::clone(&calls);
        move |_: u32| {
            let n = calls.fetch_add(1, Ordering::Relaxed);
            let wait = latency(config, n);
            async move {
                tokio::time::sleep(wait).await;
                Ok::<_, std::io::Error>(n)
            }
        }
    });
    let builder = ResilienceLayer::builder();
    let layer = match strategy {
        Strategy::None => builder.build(),
        Strategy::Fixed => builder
            .hedge(Hedge::after(Duration::from_millis(50)))
            .build(),
        Strategy::Percentile => builder
            .hedge(Hedge::percentile(0.97, 200))
            .budget(RetryBudget::new(Duration::from_secs(10), 0, 0.05).expect("a valid budget"))
            .build(),
    }
    .expect("a valid layer");
    let svc = layer.layer(upstream);
    let clock = TokioClock::new();
    let requests = config.rate * config.seconds;
    let gap = Duration::from_secs(1) / config.rate;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..requests {
        let at = gap * i;
        tokio::time::sleep(at.saturating_sub(clock.now())).await;
        let svc = svc.clone();
        tasks.spawn(async move {
            let start = clock.now();
            let _ = svc.oneshot(i).await;
            clock.now() - start
        });
    }
    let mut latencies = Vec::new();
    while let Some(latency) = tasks.join_next().await {
        latencies.push(latency.expect("a request task"));
    }
    latencies.sort();
    #[allow(clippy::cast_precision_loss)]
    let extra_load = calls.load(Ordering::Relaxed) as f64 / f64::from(requests) - 1.0;
    Report {
        strategy,
        latencies,
        extra_load,
    }
}

/// Latency by percentile from p90 to p100, one line per strategy.
fn svg(reports: &[Report]) -> String {
    let series = reports
        .iter()
        .zip(chart::COLORS)
        .map(|(report, color)| chart::Series {
            name: report.strategy.name().to_owned(),
            color,
            points: (0..=100)
                .map(|step| {
                    let p = 90.0 + f64::from(step) / 10.0;
                    let q = (p / 100.0).min(1.0);
                    (p - 90.0, report.quantile(q).as_secs_f64() * 1000.0)
                })
                .collect(),
            dashed: false,
        })
        .collect();
    chart::svg(&[chart::Panel {
        title: "Latency (ms) by percentile, p90 (left) to p100 (right); 2 % of calls take 500 ms"
            .to_owned(),
        x_max: 10.0,
        y_max: 550.0,
        shade: None,
        series,
    }])
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/hedging.svg".into());
    let config = Config::default();
    let mut reports = Vec::new();
    for strategy in Strategy::ALL {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()?;
        reports.push(rt.block_on(simulate(config, strategy)));
    }
    println!(
        "{:<13} {:>8} {:>8} {:>8} {:>11}",
        "strategy", "p50", "p99", "p99.9", "extra load"
    );
    for r in &reports {
        println!(
            "{:<13} {:>5} ms {:>5} ms {:>5} ms {:>10.1}%",
            r.strategy.name(),
            r.quantile(0.5).as_millis(),
            r.quantile(0.99).as_millis(),
            r.quantile(0.999).as_millis(),
            r.extra_load * 100.0
        );
    }
    std::fs::write(&out, svg(&reports))?;
    println!("plot: {out}");
    Ok(())
}
