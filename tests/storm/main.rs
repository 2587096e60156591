//! The simulations on small configurations: the full pipeline keeps the load on a failed
//! upstream at most 1.1× the client requests, while naive retry multiplies it; an adaptive
//! limit finds a degraded upstream's capacity within 10 % and keeps p99 latency bounded.

#![cfg(feature = "tower")]
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test
#![allow(clippy::duplicate_mod)] // both examples, standalone programs, bring their own chart module

#[allow(dead_code)] // the example's `main` and plot are not used here
#[path = "../../examples/retry_storm.rs"]
mod storm;

#[allow(dead_code)] // the example's `main` and plot are not used here
#[path = "../../examples/adaptive_limit.rs"]
mod adaptive;

use std::time::Duration;

use storm::{Config, Strategy, simulate};

fn run(strategy: Strategy) -> storm::Report {
    let config = Config {
        clients: 20,
        capacity_per_sec: 30,
        down_from: 5,
        down_until: 12,
        seconds: 20,
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(simulate(config, strategy))
}

#[test]
fn the_pipeline_does_not_amplify_an_outage_and_naive_retry_does() {
    let naive = run(Strategy::Naive);
    let pipeline = run(Strategy::Pipeline);
    assert!(
        naive.amplification >= 3.5,
        "naive: {:.2}x",
        naive.amplification
    );
    assert!(
        pipeline.amplification <= 1.1,
        "pipeline: {:.2}x",
        pipeline.amplification
    );
    // the breaker costs at most its recovery timeout (250 ms) after the upstream returns
    let recovery = pipeline.recovery.expect("the pipeline recovers");
    assert!(recovery <= Duration::from_millis(250), "{recovery:?}");
    assert!(pipeline.success_rate >= naive.success_rate - 0.02);
}

/// Hedges (after 15 ms, every call takes 20 ms: all would be hedged) draw from the retry
/// budget (20 %): retries and hedges together stay within it over the whole run, and the
/// outage is not amplified beyond the pipeline's bound.
#[test]
fn hedges_and_retries_together_stay_within_the_budget_in_the_storm() {
    let pipeline = run(Strategy::Pipeline);
    let hedged = run(Strategy::Hedged);
    // the budget: 20 % of requests (no floor), over a 10 s window
    assert!(
        hedged.extra > pipeline.extra + 0.05,
        "hedges ran: {:.3}",
        hedged.extra
    );
    assert!(
        hedged.extra <= 0.2 + 0.01,
        "{:.3} extra attempts per request",
        hedged.extra
    );
    assert!(
        hedged.amplification <= 1.2,
        "hedged: {:.2}x during the outage",
        hedged.amplification
    );
    assert!(pipeline.extra <= 0.2 + 0.01, "{:.3}", pipeline.extra);
    assert!(hedged.success_rate >= pipeline.success_rate - 0.02);
}

fn degrade(strategy: adaptive::Strategy) -> adaptive::Report {
    let config = adaptive::Config {
        rate: 2400,
        workers: 60,
        degraded_workers: 30,
        service: Duration::from_millis(20),
        degraded_from: 8,
        degraded_until: 20,
        seconds: 24,
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(adaptive::simulate(config, strategy))
}

#[test]
fn an_adaptive_limit_finds_a_degraded_upstreams_capacity_and_bounds_latency() {
    let gradient = degrade(adaptive::Strategy::Gradient2);
    let (lo, hi) = gradient.limit_range;
    assert!(
        (gradient.limit_mean - 30.0).abs() <= 3.0 && lo >= 27.0 && hi <= 33.0,
        "limit {:.1} ({lo:.1}..{hi:.1}) vs capacity 30",
        gradient.limit_mean
    );
    // calls let through wait at most a little upstream: p99 under twice the service time
    assert!(
        gradient.p99 <= Duration::from_millis(40),
        "{:?}",
        gradient.p99
    );
    // without a limit the queue (and latency) grows for the whole degraded phase
    let unlimited = degrade(adaptive::Strategy::NoLimit);
    assert!(
        unlimited.p99 >= Duration::from_secs(1),
        "{:?}",
        unlimited.p99
    );
    assert!(
        gradient.goodput >= 0.95 * unlimited.goodput,
        "goodput {:.0}/s vs {:.0}/s without a limit",
        gradient.goodput,
        unlimited.goodput
    );
}
