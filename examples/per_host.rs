//! Per-host circuit breakers: three upstreams, one of which dies; its breaker opens, the other
//! two keep answering every request.
//!
//! ```text
//! cargo run --example per_host
//! ```
//!
//! A client calls three hosts in turn, 10 ms apart (a `ManualClock`, so the run takes no real
//! time). Host `b` dies at request 60 and comes back at request 240. One breaker per host
//! (`KeyedCircuitBreaker`, 3 consecutive failures, 500 ms recovery): `b`'s opens, its probes
//! go every 500 ms while it is down, and it closes again at the first probe after `b` is back
//! (until then `b`'s calls are refused locally); `a` and `c` never see a refusal. With one breaker for all three, `b`'s failures would open it for everybody.

use std::collections::BTreeMap;
use std::time::Duration;

use limitpal::{CircuitState, KeyedCircuitBreaker, ManualClock};

/// What each host saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Host {
    /// Calls that reached it.
    pub(crate) reached: u32,
    /// Calls it answered.
    pub(crate) answered: u32,
    /// Calls its breaker refused without calling it.
    pub(crate) refused: u32,
}

/// Each host's counts, and `b`'s breaker state at the end.
pub(crate) type Outcome = (BTreeMap<&'static str, Host>, CircuitState);

/// Runs the scenario.
pub(crate) fn run() -> Result<Outcome, Box<dyn std::error::Error>> {
    let clock = ManualClock::new();
    let breakers = KeyedCircuitBreaker::builder()
        .failure_threshold(3)
        .recovery_timeout(Duration::from_millis(500))
        .clock(clock.clone())
        .build()?;
    let mut hosts: BTreeMap<&'static str, Host> = BTreeMap::new();
    for request in 0..300_u32 {
        let host = ["a", "b", "c"][(request % 3) as usize];
        let counts = hosts.entry(host).or_default();
        match breakers.try_acquire(host) {
            Err(_open) => counts.refused += 1,
            Ok(permit) => {
                counts.reached += 1;
                let down = host == "b" && (60..240).contains(&request);
                if down {
                    permit.failure();
                } else {
                    counts.answered += 1;
                    permit.success();
                }
            }
        }
        clock.advance(Duration::from_millis(10));
    }
    Ok((hosts, breakers.state("b")))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (hosts, b_state) = run()?;
    println!(
        "{:<6} {:>8} {:>9} {:>8}",
        "host", "reached", "answered", "refused"
    );
    for (host, counts) in &hosts {
        println!(
            "{host:<6} {:>8} {:>9} {:>8}",
            counts.reached, counts.answered, counts.refused
        );
    }
    println!("b's breaker at the end: {b_state:?}");
    Ok(())
}
