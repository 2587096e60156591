//! Retries can take down your own service. This simulation shows how much each strategy adds to
//! the load of an upstream that goes down, and how fast each lets it recover.
//!
//! ```text
//! cargo run --release --example retry_storm [-- OUT.svg]
//! ```
//!
//! 100 callers inside one service each send 1 request per second (open loop: a slow answer
//! does not slow the next request) through the service's one client stack — so the callers
//! share its budget and breaker, as handlers share an outbound client — to an upstream that serves up to 150 requests per second, answers in 20 ms,
//! and is down from 10 s to 25 s of a 45 s run (the outage is a `FaultLayer` in front of it:
//! `.error(1.0, ..)` during that window). Every strategy runs on the same seed under
//! paused tokio time, so the run takes about a second and is reproducible:
//!
//! - `naive`: 4 attempts, constant 100 ms, no jitter, no budget, no breaker;
//! - `exp+jitter`: 4 attempts, exponential from 100 ms, full jitter;
//! - `+budget`: the same, with a retry budget (retries ≤ 20 % of requests);
//! - `pipeline`: the same, plus a circuit breaker (5 failures, 250 ms recovery);
//! - `+hedging`: the pipeline, plus a hedge after 15 ms — every call (20 ms) is "slow", so
//!   hedges would double the load; they draw from the same budget as retries, so retries
//!   and hedges together stay within it.
//!
//! It prints one row per strategy — load amplification during the outage (upstream calls /
//! client requests), extra attempts (retries and hedges) per request over the run, time to recover after the upstream returns (from its return to the first
//! request after which 95 % of the next second's requests succeed), success rate, p99
//! latency — and writes a plot of upstream calls per second (default
//! `target/retry_storm.svg`; the README shows `examples/retry_storm.svg`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

#[path = "common/chart.rs"]
mod chart;

use limitpal::tower::fault::{FaultLayer, FaultService};
use limitpal::tower::{AsyncResilientExecutor, TokioClock};
use limitpal::{
    CircuitBreaker, Clock, Error, Jitter, RateLimiter, RetryBudget, RetryPolicy, TokenBucket,
};
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt, service_fn};

/// The knobs of one simulation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    pub(crate) clients: u32,
    pub(crate) capacity_per_sec: u32,
    pub(crate) down_from: u64,
    pub(crate) down_until: u64,
    pub(crate) seconds: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            clients: 100,
            capacity_per_sec: 150,
            down_from: 10,
            down_until: 25,
            seconds: 45,
        }
    }
}

/// The strategies compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strategy {
    Naive,
    ExpJitter,
    Budget,
    Pipeline,
    Hedged,
}

impl Strategy {
    pub(crate) const ALL: [Self; 5] = [
        Self::Naive,
        Self::ExpJitter,
        Self::Budget,
        Self::Pipeline,
        Self::Hedged,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Naive => "naive",
            Self::ExpJitter => "exp+jitter",
            Self::Budget => "+budget",
            Self::Pipeline => "pipeline",
            Self::Hedged => "+hedging",
        }
    }
}

/// What one strategy did.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    pub(crate) strategy: Strategy,
    /// Upstream calls in each second of the run.
    pub(crate) calls_per_sec: Vec<u32>,
    /// Upstream calls during the outage / client requests sent during it.
    pub(crate) amplification: f64,
    /// Extra attempts (retries and hedges: every attempt of a request after its first) per
    /// client request, over the whole run.
    pub(crate) extra: f64,
    /// From the upstream's return to the first request after which 95 % of the requests of
    /// the following second succeed.
    pub(crate) recovery: Option<Duration>,
    pub(crate) success_rate: f64,
    pub(crate) p99: Duration,
}

/// The upstream: a capacity of requests per second (beyond it, requests fail as
/// overloaded), answers after 20 ms; the outage is a [`FaultLayer`] in front of it.
struct Upstream {
    capacity: RateLimiter<(), TokenBucket, TokioClock>,
    clock: TokioClock,
    calls: Mutex<Vec<u32>>,
    outage: OutageService,
}

/// The upstream's service behind the outage: every call in `[down_from, down_until)` takes
/// its 20 ms and fails with `503 down`, without reaching the upstream.
type OutageService =
    FaultService<tower::util::BoxCloneSyncService<(), (), &'static str>, &'static str, ()>;

impl Upstream {
    /// Counts the call (every call that reaches the upstream's address), then sends it.
    async fn call(self: Arc<Self>) -> Result<(), String> {
        let t = self.clock.now().as_secs();
        if let Some(slot) = self
            .calls
            .lock()
            .expect("calls lock")
            .get_mut(usize::try_from(t).unwrap_or(usize::MAX))
        {
            *slot += 1;
        }
        self.outage
            .clone()
            .oneshot(())
            .await
            .map_err(|e| e.to_string())
    }

    async fn serve(&self) -> Result<(), &'static str> {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if self.capacity.check(&()).is_err() {
            Err("503 overloaded")
        } else {
            Ok(())
        }
    }
}

/// The outage, as a fault plan: from `down_from` to `down_until` every call takes 20 ms
/// and fails.
fn outage(config: Config, clock: TokioClock) -> FaultLayer<&'static str, ()> {
    FaultLayer::builder()
        .latency(1.0, Duration::from_millis(20))
        .error(1.0, || "503 down")
        .plan(|p| {
            p.during(
                Duration::from_secs(config.down_from),
                Duration::from_secs(config.down_until),
            )
        })
        .clock(clock)
        .build()
        .expect("a valid outage")
}

fn executor(strategy: Strategy, seed: u64) -> AsyncResilientExecutor<()> {
    let policy = RetryPolicy::builder()
        .max_attempts(4)
        .base_delay(Duration::from_millis(100))
        .seed(seed);
    let policy = match strategy {
        Strategy::Naive => policy
            .backoff(limitpal::Backoff::Constant)
            .jitter(Jitter::None),
        _ => policy.jitter(Jitter::Full),
    }
    .build()
    .expect("valid policy");
    let builder = AsyncResilientExecutor::builder().retry(policy);
    let builder = match strategy {
        Strategy::Naive | Strategy::ExpJitter => builder,
        _ => {
            builder.budget(RetryBudget::new(Duration::from_secs(10), 0, 0.2).expect("valid budget"))
        }
    };
    let builder = if strategy == Strategy::Hedged {
        builder.hedge(limitpal::Hedge::after(Duration::from_millis(15)))
    } else {
        builder
    };
    let builder = if matches!(strategy, Strategy::Pipeline | Strategy::Hedged) {
        builder.breaker(
            CircuitBreaker::builder()
                .failure_threshold(5)
                .recovery_timeout(Duration::from_millis(250))
                .clock(TokioClock::new())
                .build()
                .expect("valid breaker"),
        )
    } else {
        builder
    };
    builder.build().expect("valid executor")
}

/// Runs one strategy; must be called inside a runtime with paused time.
pub(crate) async fn simulate(config: Config, strategy: Strategy) -> Report {
    let clock = TokioClock::new();
    let capacity = config.capacity_per_sec;
    let upstream = Arc::new_cyclic(|me: &std::sync::Weak<Upstream>| {
        let me = me.clone();
        let serve = service_fn(move |()| {
            let me = me.upgrade();
            async move {
                match me {
                    Some(upstream) => upstream.serve().await,
                    None => Err("the simulation is over"),
                }
            }
        });
        Upstream {
            capacity: RateLimiter::builder(
                TokenBucket::new(capacity, f64::from(capacity)).expect("valid"),
            )
            .clock(clock)
            .build()
            .expect("valid"),
            clock,
            calls: Mutex::new(vec![0; usize::try_from(config.seconds + 5).unwrap_or(64)]),
            outage: outage(config, clock).layer(BoxCloneSyncService::new(serve)),
        }
    });
    // (second the request started, succeeded, latency)
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    #[allow(clippy::disallowed_methods)] // this run's own epoch on the paused tokio clock
    let start = tokio::time::Instant::now();
    let shared = executor(strategy, 42);
    let mut clients = Vec::new();
    for c in 0..config.clients {
        let upstream = Arc::clone(&upstream);
        let outcomes = Arc::clone(&outcomes);
        let exec = shared.clone();
        clients.push(tokio::spawn(async move {
            // clients are spread evenly over each second
            let phase = Duration::from_millis(u64::from(c) * 1000 / u64::from(config.clients));
            let mut requests = Vec::new();
            for second in 0..config.seconds {
                tokio::time::sleep_until(start + Duration::from_secs(second) + phase).await;
                let upstream = Arc::clone(&upstream);
                let outcomes = Arc::clone(&outcomes);
                let exec = exec.clone();
                requests.push(tokio::spawn(async move {
                    let started = clock.now();
                    let mut attempts = 0_u32;
                    let result = exec
                        .run(&(), || {
                            attempts += 1;
                            Arc::clone(&upstream).call()
                        })
                        .await;
                    let ok = !matches!(
                        result,
                        Err(Error::RetryExhausted { .. }
                            | Error::Failed(_)
                            | Error::CircuitOpen(_)
                            | Error::TimedOut { .. }
                            | Error::RateLimited(_))
                    );
                    outcomes.lock().expect("outcomes lock").push((
                        started,
                        ok,
                        clock.now() - started,
                        attempts,
                    ));
                }));
            }
            for r in requests {
                let _ = r.await;
            }
        }));
    }
    for c in clients {
        let _ = c.await;
    }
    let calls = upstream.calls.lock().expect("calls lock").clone();
    let outcomes = outcomes.lock().expect("outcomes lock").clone();
    report(config, strategy, calls, &outcomes)
}

fn report(
    config: Config,
    strategy: Strategy,
    calls: Vec<u32>,
    outcomes: &[(Duration, bool, Duration, u32)],
) -> Report {
    let outage = config.down_from..config.down_until;
    let sent_in_outage = outcomes
        .iter()
        .filter(|(t, ..)| outage.contains(&t.as_secs()))
        .count();
    let calls_in_outage: u32 = calls
        .iter()
        .enumerate()
        .filter(|(t, _)| outage.contains(&(*t as u64)))
        .map(|(_, n)| n)
        .sum();
    let up = Duration::from_secs(config.down_until);
    let mut after: Vec<_> = outcomes.iter().filter(|(t, ..)| *t >= up).collect();
    after.sort_by_key(|(t, ..)| *t);
    let recovery = after.iter().enumerate().find_map(|(i, (t, ok, ..))| {
        let next: Vec<_> = after[i..]
            .iter()
            .take_while(|(s, ..)| *s < *t + Duration::from_secs(1))
            .collect();
        let good = next.iter().filter(|(_, ok, ..)| *ok).count();
        (*ok && good * 100 >= next.len() * 95).then(|| *t - up)
    });
    let mut latencies: Vec<_> = outcomes.iter().map(|(_, _, l, _)| *l).collect();
    latencies.sort();
    let p99 = latencies
        .get(latencies.len() * 99 / 100)
        .copied()
        .unwrap_or_default();
    #[allow(clippy::cast_precision_loss)]
    let success_rate =
        outcomes.iter().filter(|(_, ok, ..)| *ok).count() as f64 / outcomes.len().max(1) as f64;
    #[allow(clippy::cast_precision_loss)]
    let amplification = f64::from(calls_in_outage) / sent_in_outage.max(1) as f64;
    let extra: u32 = outcomes
        .iter()
        .map(|(.., attempts)| attempts.saturating_sub(1))
        .sum();
    #[allow(clippy::cast_precision_loss)]
    let extra = f64::from(extra) / outcomes.len().max(1) as f64;
    Report {
        strategy,
        calls_per_sec: calls,
        amplification,
        extra,
        recovery,
        success_rate,
        p99,
    }
}

/// A plot of upstream calls per second, one line per strategy, the outage shaded.
fn svg(config: Config, reports: &[Report]) -> String {
    #[allow(clippy::cast_precision_loss)]
    let series = reports
        .iter()
        .zip(chart::COLORS)
        .map(|(report, color)| chart::Series {
            name: report.strategy.name().to_owned(),
            color,
            points: report
                .calls_per_sec
                .iter()
                .take(usize::try_from(config.seconds).unwrap_or(0))
                .enumerate()
                .map(|(t, n)| (t as f64, f64::from(*n)))
                .collect(),
            dashed: false,
        })
        .collect();
    let max = reports
        .iter()
        .flat_map(|r| r.calls_per_sec.iter().copied())
        .max()
        .unwrap_or(1);
    #[allow(clippy::cast_precision_loss)]
    chart::svg(&[chart::Panel {
        title: format!(
            "Upstream calls per second ({} callers, 1 req/s each, capacity {}/s, down {}-{} s)",
            config.clients, config.capacity_per_sec, config.down_from, config.down_until
        ),
        x_max: config.seconds as f64,
        y_max: f64::from(max.max(1)),
        shade: Some((config.down_from as f64, config.down_until as f64)),
        series,
    }])
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/retry_storm.svg".into());
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
        "{:<11} {:>14} {:>6} {:>10} {:>9} {:>9}",
        "strategy", "amplification", "extra", "recovery", "success", "p99"
    );
    for r in &reports {
        let recovery = r
            .recovery
            .map_or_else(|| "never".to_owned(), |d| format!("{} ms", d.as_millis()));
        println!(
            "{:<11} {:>13.2}x {:>5.0}% {:>10} {:>8.1}% {:>7.2} s",
            r.strategy.name(),
            r.amplification,
            r.extra * 100.0,
            recovery,
            r.success_rate * 100.0,
            r.p99.as_secs_f64()
        );
    }
    std::fs::write(&out, svg(config, &reports))?;
    println!("plot: {out}");
    Ok(())
}
