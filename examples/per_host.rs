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
//! (until then `b`'s calls are refused locally); `a` and `c` never see a refusal. With one
//! breaker for all three, `b`'s failures would open it for everybody. The breaker reports
//! each host's transitions with the host's name (`on_key_state_change`: keys are reported
//! only where you ask for them).
//!
//! Then the same three hosts behind per-host adaptive concurrency limits
//! (`KeyedAdaptiveLimit` with `Aimd`): every 10 ms the client offers each host 8 calls; `b`
//! answers "overloaded" for 400 ms. Its limit falls ×0.9 per round trip to 1, so it is sent
//! one call per round instead of 8 while it struggles, and climbs back once it recovers; `a`
//! and `c` keep every call and their limits.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use limitpal::concurrency::{Aimd, KeyedAdaptiveLimit};
use limitpal::{CircuitState, Clock, KeyedCircuitBreaker, ManualClock};

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

/// A breaker's transition: when (ms into the run), which host, from, to.
pub(crate) type Transition = (u64, String, CircuitState, CircuitState);

/// Each host's counts, `b`'s breaker state at the end, and every transition.
pub(crate) type Outcome = (BTreeMap<&'static str, Host>, CircuitState, Vec<Transition>);

/// Runs the scenario.
pub(crate) fn run() -> Result<Outcome, Box<dyn std::error::Error>> {
    let clock = ManualClock::new();
    let transitions = Arc::new(Mutex::new(Vec::new()));
    let (log, at) = (Arc::clone(&transitions), clock.clone());
    let breakers = KeyedCircuitBreaker::builder()
        .failure_threshold(3)
        .recovery_timeout(Duration::from_millis(500))
        .clock(clock.clone())
        .on_key_state_change(move |host: &String, from, to| {
            let ms = u64::try_from(at.now().as_millis()).unwrap_or(u64::MAX);
            log.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((ms, host.clone(), from, to));
        })
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
    let transitions = transitions
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    Ok((hosts, breakers.state("b"), transitions))
}

/// What each host saw behind its adaptive limit: calls offered, sent, refused locally, and
/// its limit at the end; and `b`'s lowest limit.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limited {
    pub(crate) offered: u32,
    pub(crate) sent: u32,
    pub(crate) refused: u32,
    pub(crate) limit: u32,
    pub(crate) lowest: u32,
}

/// Runs the adaptive-limit scenario: 100 rounds of 10 ms, `b` overloaded in rounds 20..60.
pub(crate) fn run_limits() -> Result<BTreeMap<&'static str, Limited>, Box<dyn std::error::Error>> {
    let clock = ManualClock::new();
    let limits = KeyedAdaptiveLimit::builder(Aimd::new())
        .initial_limit(8)
        .max_limit(16)
        .max_keys(10_000)
        .clock(clock.clone())
        .build()?;
    let mut hosts: BTreeMap<&'static str, Limited> = BTreeMap::new();
    for round in 0..100_u32 {
        let mut calls = Vec::new();
        for host in ["a", "b", "c"] {
            let counts = hosts.entry(host).or_default();
            for _ in 0..8 {
                counts.offered += 1;
                match limits.try_acquire(host) {
                    Ok(permit) => {
                        counts.sent += 1;
                        calls.push((host, permit));
                    }
                    Err(_full) => counts.refused += 1,
                }
            }
        }
        clock.advance(Duration::from_millis(10)); // the calls take 10 ms
        for (host, permit) in calls {
            if host == "b" && (20..60).contains(&round) {
                permit.failure(); // "overloaded"
            } else {
                permit.success();
            }
        }
        for (host, counts) in &mut hosts {
            counts.limit = limits.limit(*host);
            counts.lowest = if round == 0 {
                counts.limit
            } else {
                counts.lowest.min(counts.limit)
            };
        }
    }
    Ok(hosts)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (hosts, b_state, transitions) = run()?;
    for (ms, host, from, to) in &transitions {
        println!("{ms:>5} ms  {host}: {from:?} -> {to:?}");
    }
    println!();
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

    println!("\nper-host adaptive limits (8 calls offered per host every 10 ms):");
    println!(
        "{:<6} {:>8} {:>6} {:>8} {:>7} {:>10}",
        "host", "offered", "sent", "refused", "lowest", "limit now"
    );
    for (host, c) in run_limits()? {
        println!(
            "{host:<6} {:>8} {:>6} {:>8} {:>7} {:>10}",
            c.offered, c.sent, c.refused, c.lowest, c.limit
        );
    }
    Ok(())
}
