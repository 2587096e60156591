//! The retry-storm simulation on a small configuration: the full pipeline keeps the load on a
//! failed upstream at most 1.1× the client requests, while naive retry multiplies it.

#![cfg(feature = "tower")]
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

#[allow(dead_code)] // the example's `main` and plot are not used here
#[path = "../../examples/retry_storm.rs"]
mod storm;

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
    assert!(
        recovery <= std::time::Duration::from_millis(250),
        "{recovery:?}"
    );
    assert!(pipeline.success_rate >= naive.success_rate - 0.02);
}
