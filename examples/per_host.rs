//! Per-host circuit breakers: three upstreams, one of which dies; its breaker opens, the other
//! two keep answering every request.
//!
//! ```text
//! cargo run --example per_host                   # the two simulations below
//! cargo run --example per_host --features http   # and the same over loopback HTTP
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
//!
//! With `--features http`, the breakers over real HTTP: three axum servers on loopback, a
//! hyper client stack with `circuit_breaker_per(breakers, Authority)` (a breaker per
//! `host:port`), server `b` shut down after 10 of 30 rounds. Its connections are refused,
//! three failures open its breaker, its last 17 requests fail fast without a connection
//! attempt; `a` and `c` answer all 30.

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

    #[cfg(feature = "http")]
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (seen, transitions, b) = runtime
            .block_on(over_http::run())
            .map_err(|e| e.to_string())?;
        println!(
            "\nover loopback HTTP, {} GETs per host, server b ({b}) gone from round {}:",
            over_http::ROUNDS,
            over_http::B_DIES_AT
        );
        for (host, from, to) in &transitions {
            println!("  breaker {host}: {from:?} -> {to:?}");
        }
        println!(
            "{:<6} {:>9} {:>7} {:>8} {:>12}",
            "host", "answered", "failed", "refused", "server hits"
        );
        for (host, s) in &seen {
            println!(
                "{host:<6} {:>9} {:>7} {:>8} {:>12}",
                s.answered, s.failed, s.refused, s.hits
            );
        }
    }
    #[cfg(not(feature = "http"))]
    println!("\n(with --features http: the same per-host breakers over loopback HTTP)");
    Ok(())
}

/// The same idea over real HTTP (feature `http`): three axum servers on loopback and a hyper
/// client stack whose breakers are picked per upstream by the request's authority
/// (`circuit_breaker_per(breakers, Authority)`, one line). Server `b` shuts down after 10
/// rounds; from then on its connections are refused, 3 failures open its breaker, and its
/// later requests fail fast without touching the network, while `a` and `c` answer all 30.
#[cfg(feature = "http")]
pub(crate) mod over_http {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, Mutex, PoisonError};
    use std::time::Duration;

    use http::Request;
    use http_body_util::Empty;
    use hyper::body::Bytes;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use limitpal::tower::ResilienceLayer;
    use limitpal::tower::http::{Authority, HttpClassifier};
    use limitpal::{CircuitOpen, CircuitState, KeyedCircuitBreaker};
    use tower::{BoxError, ServiceBuilder, ServiceExt};

    /// Requests sent to each host.
    pub(crate) const ROUNDS: u32 = 30;
    /// The round from which `b` is gone.
    pub(crate) const B_DIES_AT: u32 = 10;

    /// What one host saw, over HTTP.
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub(crate) struct Seen {
        /// Requests its server answered.
        pub(crate) answered: u32,
        /// Requests that failed on the way (connection refused).
        pub(crate) failed: u32,
        /// Requests its breaker refused without a call.
        pub(crate) refused: u32,
        /// Requests its server received.
        pub(crate) hits: u32,
    }

    /// Each host's counts (by name), and the breakers' transitions as `on_key_state_change`
    /// reported them (`host:port`, from, to) with `b`'s authority.
    pub(crate) type Outcome = (
        BTreeMap<&'static str, Seen>,
        Vec<(String, CircuitState, CircuitState)>,
        String,
    );

    /// A server on a loopback port answering `GET /` with `200 ok`, counting its requests,
    /// until `stop` fires.
    async fn server(
        hits: Arc<AtomicU32>,
        stop: tokio::sync::oneshot::Receiver<()>,
    ) -> Result<(String, tokio::task::JoinHandle<()>), BoxError> {
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(move || {
                hits.fetch_add(1, Ordering::SeqCst);
                async { "ok" }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let authority = listener.local_addr()?.to_string();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stop.await;
                })
                .await;
        });
        Ok((authority, task))
    }

    /// Runs the scenario.
    pub(crate) async fn run() -> Result<Outcome, BoxError> {
        let mut hosts = Vec::new();
        for name in ["a", "b", "c"] {
            let hits = Arc::new(AtomicU32::new(0));
            let (stop, stopped) = tokio::sync::oneshot::channel();
            let (authority, task) = server(Arc::clone(&hits), stopped).await?;
            hosts.push((name, authority, hits, Some((stop, task))));
        }
        let transitions = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&transitions);
        let breakers = KeyedCircuitBreaker::builder()
            .failure_threshold(3)
            .recovery_timeout(Duration::from_secs(60))
            .on_key_state_change(move |host: &String, from, to| {
                log.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((host.clone(), from, to));
            })
            .build()?;
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let stack = ServiceBuilder::new()
            .layer(
                ResilienceLayer::builder()
                    .circuit_breaker_per(breakers, Authority) // one breaker per host:port
                    .classifier(HttpClassifier)
                    .build()?,
            )
            .service(client);

        let mut seen: BTreeMap<&'static str, Seen> = BTreeMap::new();
        for round in 0..ROUNDS {
            if round == B_DIES_AT
                && let Some((stop, task)) = hosts[1].3.take()
            {
                let _ = stop.send(()); // b goes away: its listener closes
                if tokio::time::timeout(Duration::from_secs(5), task)
                    .await
                    .is_err()
                {
                    return Err("server b did not stop".into());
                }
            }
            for (name, authority, _, _) in &hosts {
                // a connection per request, so that b's shutdown has no idle connection
                // to wait for and its next request meets a closed port
                let request = Request::get(format!("http://{authority}/"))
                    .header(http::header::CONNECTION, "close")
                    .body(Empty::new())?;
                let counts = seen.entry(name).or_default();
                match stack.clone().oneshot(request).await {
                    Ok(response) if response.status().is_success() => counts.answered += 1,
                    Err(e) if e.is::<CircuitOpen>() => counts.refused += 1,
                    // an error status, or the connection refused
                    Ok(_) | Err(_) => counts.failed += 1,
                }
            }
        }
        for (name, _, hits, _) in &hosts {
            seen.entry(name).or_default().hits = hits.load(Ordering::SeqCst);
        }
        let transitions = transitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Ok((seen, transitions, hosts[1].1.clone()))
    }
}
