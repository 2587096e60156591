//! When an upstream slows down, a fixed concurrency limit lets calls queue inside it and
//! latency climbs; an adaptive limit finds the upstream's new capacity and sheds the excess
//! at once. This simulation shows both, on the retry-storm harness (paused tokio time, one
//! seed, the same plotting).
//!
//! ```text
//! cargo run --release --example adaptive_limit [-- OUT.svg]
//! ```
//!
//! Requests arrive at 4 800 per second (open loop, evenly spaced) at an upstream with 60
//! workers, each serving a call in 10 ms (capacity 6 000/s), calls beyond the workers
//! queueing in FIFO order. From 20 s to 40 s of a 60 s run, half the workers are gone: the
//! capacity falls to 30 calls at once (3 000/s), below the offered load, so the upstream's
//! latency rises with its queue. The strategies, all tower layers in front of it:
//!
//! - `no limit`: every request goes through;
//! - `fixed 60`: a `BulkheadLayer` sized for the healthy upstream;
//! - `aimd`: an `AdaptiveLimitLayer` with [`Aimd`] (a call slower than 15 ms is a drop);
//! - `gradient2`: an `AdaptiveLimitLayer` with [`Gradient2`] (defaults).
//!
//! It prints, for the degraded phase (after 5 s to settle), the mean and range of each limit
//! against the capacity of 30, the p99 latency of the calls let through, the share refused
//! and the goodput (calls completed per second), then the share refused in the 5 s after
//! the upstream recovered (a limit's cost: demand is below capacity again); and writes a plot of the limits and of p99 latency per second (default
//! `target/adaptive_limit.svg`; the README shows `examples/adaptive_limit.svg`).

#[path = "common/chart.rs"]
mod chart;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use limitpal::concurrency::{AdaptiveLimit, Aimd, Gradient2};
use limitpal::tower::{AdaptiveLimitLayer, BulkheadLayer, FaultLayer, TokioClock};
use limitpal::{Bulkhead, Clock};
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Layer, Service, ServiceExt, service_fn};

/// The knobs of one simulation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    /// Requests per second offered.
    pub(crate) rate: u32,
    /// The upstream's workers when healthy, and while degraded.
    pub(crate) workers: usize,
    pub(crate) degraded_workers: usize,
    /// Time to serve one call.
    pub(crate) service: Duration,
    pub(crate) degraded_from: u64,
    pub(crate) degraded_until: u64,
    pub(crate) seconds: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            rate: 4800,
            workers: 60,
            degraded_workers: 30,
            service: Duration::from_millis(10),
            degraded_from: 20,
            degraded_until: 40,
            seconds: 60,
        }
    }
}

impl Config {
    fn workers_at(&self, now: Duration) -> usize {
        if (self.degraded_from..self.degraded_until).contains(&now.as_secs()) {
            self.degraded_workers
        } else {
            self.workers
        }
    }
}

/// The strategies compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strategy {
    NoLimit,
    Fixed,
    Aimd,
    Gradient2,
}

impl Strategy {
    pub(crate) const ALL: [Self; 4] = [Self::NoLimit, Self::Fixed, Self::Aimd, Self::Gradient2];

    fn name(self) -> &'static str {
        match self {
            Self::NoLimit => "no limit",
            Self::Fixed => "fixed 60",
            Self::Aimd => "aimd",
            Self::Gradient2 => "gradient2",
        }
    }
}

/// What one strategy did.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    pub(crate) strategy: Strategy,
    /// The limit every 100 ms: (seconds, limit); empty without a limit.
    pub(crate) limits: Vec<(f64, f64)>,
    /// p99 latency of the calls let through, per second of arrival.
    pub(crate) p99_per_sec: Vec<Duration>,
    /// In the degraded phase after it settled: mean, min and max limit.
    pub(crate) limit_mean: f64,
    pub(crate) limit_range: (f64, f64),
    /// In the degraded phase after it settled: p99 latency of calls let through, share
    /// refused, calls completed per second.
    pub(crate) p99: Duration,
    pub(crate) refused: f64,
    pub(crate) goodput: f64,
    /// Share refused in the 5 s after the upstream recovered (demand is below capacity
    /// again, so every refusal there is a cost of the limit).
    pub(crate) refused_after: f64,
}

type Svc = BoxCloneSyncService<(), (), BoxError>;

/// The upstream: a [`FaultLayer`] capacity (workers serving calls in FIFO order, each in
/// `service`, fewer while degraded) over a service that answers at once.
fn upstream(config: Config, clock: TokioClock) -> Svc {
    let secs = Duration::from_secs;
    let faults = FaultLayer::builder()
        .capacity(config.workers, config.service)
        .degraded(
            secs(config.degraded_from),
            secs(config.degraded_until),
            config.degraded_workers,
        )
        .clock(clock)
        .build()
        .expect("valid capacity");
    BoxCloneSyncService::new(faults.layer(service_fn(|()| async { Ok::<_, Infallible>(()) })))
}

fn stack(strategy: Strategy, config: Config, clock: TokioClock) -> (Svc, Option<AdaptiveLimit>) {
    let inner = upstream(config, clock);
    match strategy {
        Strategy::NoLimit => (BoxCloneSyncService::new(inner), None),
        Strategy::Fixed => {
            let bulkhead = Bulkhead::new(60).expect("valid bulkhead");
            (
                BoxCloneSyncService::new(BulkheadLayer::new(bulkhead).layer(inner)),
                None,
            )
        }
        Strategy::Aimd | Strategy::Gradient2 => {
            let builder = if strategy == Strategy::Aimd {
                AdaptiveLimit::builder(
                    Aimd::new()
                        .timeout(Duration::from_millis(15))
                        .expect("valid timeout"),
                )
            } else {
                AdaptiveLimit::builder(Gradient2::new())
            };
            let limit = builder
                .initial_limit(20)
                .clock(TokioClock::new())
                .build()
                .expect("valid limit");
            let svc = AdaptiveLimitLayer::new(limit.clone()).layer(inner);
            (BoxCloneSyncService::new(svc), Some(limit))
        }
    }
}

/// Runs one strategy; must be called inside a runtime with paused time.
pub(crate) async fn simulate(config: Config, strategy: Strategy) -> Report {
    let clock = TokioClock::new();
    let (svc, limit) = stack(strategy, config, clock);
    let fixed = (strategy == Strategy::Fixed).then_some(60.0);
    // (arrival, let through, latency)
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let limits = Arc::new(Mutex::new(Vec::new()));
    let sample_limits = {
        let limits = Arc::clone(&limits);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            for tenth in 0..config.seconds * 10 {
                tick.tick().await;
                #[allow(clippy::cast_precision_loss)]
                let t = tenth as f64 / 10.0;
                let value = limit.as_ref().map(AdaptiveLimit::estimate).or(fixed);
                if let Some(v) = value {
                    limits.lock().expect("limits lock").push((t, v));
                }
            }
        })
    };
    let interval = Duration::from_secs(1) / config.rate;
    let total = u64::from(config.rate) * config.seconds;
    let mut requests = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    let mut ticker = tokio::time::interval(interval);
    for _ in 0..total {
        ticker.tick().await;
        let mut svc = svc.clone();
        let outcomes = Arc::clone(&outcomes);
        requests.push(tokio::spawn(async move {
            let started = clock.now();
            let result = match svc.ready().await {
                Ok(svc) => svc.call(()).await,
                Err(e) => Err(e),
            };
            outcomes.lock().expect("outcomes lock").push((
                started,
                result.is_ok(),
                clock.now() - started,
            ));
        }));
    }
    for r in requests {
        let _ = r.await;
    }
    let _ = sample_limits.await;
    let limits = limits.lock().expect("limits lock").clone();
    let outcomes = outcomes.lock().expect("outcomes lock").clone();
    report(config, strategy, limits, &outcomes)
}

fn p99(mut latencies: Vec<Duration>) -> Duration {
    latencies.sort();
    latencies
        .get(latencies.len() * 99 / 100)
        .copied()
        .unwrap_or_default()
}

fn report(
    config: Config,
    strategy: Strategy,
    limits: Vec<(f64, f64)>,
    outcomes: &[(Duration, bool, Duration)],
) -> Report {
    let p99_per_sec = (0..config.seconds)
        .map(|s| {
            p99(outcomes
                .iter()
                .filter(|(t, ok, _)| *ok && t.as_secs() == s)
                .map(|(_, _, l)| *l)
                .collect())
        })
        .collect();
    #[allow(clippy::cast_precision_loss)]
    let settled = (config.degraded_from + 5) as f64..config.degraded_until as f64;
    let in_phase: Vec<f64> = limits
        .iter()
        .filter(|(t, _)| settled.contains(t))
        .map(|(_, l)| *l)
        .collect();
    #[allow(clippy::cast_precision_loss)]
    let limit_mean = in_phase.iter().sum::<f64>() / in_phase.len().max(1) as f64;
    let limit_range = in_phase
        .iter()
        .fold((f64::INFINITY, 0.0_f64), |(lo, hi), &l| {
            (lo.min(l), hi.max(l))
        });
    let phase: Vec<_> = outcomes
        .iter()
        .filter(|(t, _, _)| settled.contains(&t.as_secs_f64()))
        .collect();
    let passed: Vec<Duration> = phase
        .iter()
        .filter(|(_, ok, _)| *ok)
        .map(|(_, _, l)| *l)
        .collect();
    #[allow(clippy::cast_precision_loss)]
    let refused = 1.0 - passed.len() as f64 / phase.len().max(1) as f64;
    let completed = outcomes
        .iter()
        .filter(|(t, ok, l)| *ok && settled.contains(&(*t + *l).as_secs_f64()))
        .count();
    #[allow(clippy::cast_precision_loss)]
    let goodput = completed as f64 / (settled.end - settled.start);
    #[allow(clippy::cast_precision_loss)]
    let after = config.degraded_until as f64..(config.degraded_until + 5) as f64;
    let (sent_after, ok_after) = outcomes
        .iter()
        .filter(|(t, _, _)| after.contains(&t.as_secs_f64()))
        .fold((0_usize, 0_usize), |(n, ok), (_, o, _)| {
            (n + 1, ok + usize::from(*o))
        });
    #[allow(clippy::cast_precision_loss)]
    let refused_after = 1.0 - ok_after as f64 / sent_after.max(1) as f64;
    Report {
        strategy,
        limits,
        p99_per_sec,
        limit_mean,
        limit_range,
        p99: p99(passed),
        refused,
        goodput,
        refused_after,
    }
}

/// Two panels: the limits against the capacity, and p99 latency per second.
fn svg(config: Config, reports: &[Report]) -> String {
    #[allow(clippy::cast_precision_loss)]
    let shade = Some((config.degraded_from as f64, config.degraded_until as f64));
    #[allow(clippy::cast_precision_loss)]
    let x_max = config.seconds as f64;
    let mut limit_series: Vec<chart::Series> = reports
        .iter()
        .zip(chart::COLORS)
        .filter(|(r, _)| !r.limits.is_empty())
        .map(|(r, color)| chart::Series {
            name: r.strategy.name().to_owned(),
            color,
            points: r.limits.clone(),
            dashed: false,
        })
        .collect();
    #[allow(clippy::cast_precision_loss)]
    let capacity = |t: f64| config.workers_at(Duration::from_secs_f64(t)) as f64;
    limit_series.push(chart::Series {
        name: "upstream capacity".to_owned(),
        color: chart::COLORS[4],
        points: (0..=config.seconds * 10)
            .map(|tenth| {
                #[allow(clippy::cast_precision_loss)]
                let t = tenth as f64 / 10.0;
                (t, capacity(t))
            })
            .collect(),
        dashed: true,
    });
    let latency_series = reports
        .iter()
        .zip(chart::COLORS)
        .map(|(r, color)| chart::Series {
            name: r.strategy.name().to_owned(),
            color,
            points: r
                .p99_per_sec
                .iter()
                .enumerate()
                .map(|(s, l)| {
                    #[allow(clippy::cast_precision_loss)]
                    let x = s as f64 + 0.5;
                    (x, l.as_secs_f64() * 1000.0)
                })
                .collect(),
            dashed: false,
        })
        .collect();
    chart::svg(&[
        chart::Panel {
            title: format!(
                "Concurrency limit vs the upstream's capacity ({} workers, {} while degraded)",
                config.workers, config.degraded_workers
            ),
            x_max,
            y_max: 100.0,
            shade,
            series: limit_series,
        },
        chart::Panel {
            title: "p99 latency of calls let through, ms (capped at 100)".to_owned(),
            x_max,
            y_max: 100.0,
            shade,
            series: latency_series,
        },
    ])
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/adaptive_limit.svg".into());
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
        "degraded phase ({}-{} s, capacity {} at once):",
        config.degraded_from + 5,
        config.degraded_until,
        config.degraded_workers
    );
    println!(
        "{:<10} {:>16} {:>10} {:>9} {:>13} {:>15}",
        "strategy", "limit (range)", "p99", "refused", "goodput", "refused after"
    );
    for r in &reports {
        let limit = if r.limits.is_empty() {
            "-".to_owned()
        } else {
            format!(
                "{:.1} ({:.0}-{:.0})",
                r.limit_mean, r.limit_range.0, r.limit_range.1
            )
        };
        println!(
            "{:<10} {:>16} {:>7.1} ms {:>8.1}% {:>11.0}/s {:>14.1}%",
            r.strategy.name(),
            limit,
            r.p99.as_secs_f64() * 1000.0,
            r.refused * 100.0,
            r.goodput,
            r.refused_after * 100.0
        );
    }
    std::fs::write(&out, svg(config, &reports))?;
    println!("plot: {out}");
    Ok(())
}
