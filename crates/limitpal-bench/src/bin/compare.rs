//! A quick side-by-side run (well under two minutes): one line per metric,
//! `name ours peer ratio target`, then `targets: N met, M missed`. It measures every time;
//! it never prints remembered numbers.
//!
//! ```text
//! cargo run --release -p limitpal-bench --bin compare
//! ```
//!
//! `compare waiting` compares waiting for quota (about a minute: it waits in real time).
//!
//! `compare reqwest` compares reqwest middleware: limitpal's `Resilience` next to reqwest-retry,
//! the overhead alone (a canned answer) and the loopback round trip, time and allocations.
//!
//! `compare budget` times the retry budget next to tower's `TpsBudget`: a request's deposit on
//! one thread and on two sharing the budget, and a deposit with a withdrawal.
//!
//! `compare layers` times only the tower layers (overheads, allocations, metrics on / off),
//! for comparing two builds in turn.
//!
//! `compare keyed 10000 200000 1000000` times only keyed checks, at each live-key count given
//! (every key kept live, as in the 1 M-key line), to see where the tables leave the caches.

use std::hint::black_box;
use std::time::Duration;

use limitpal_bench::alloc::{self, Counting};
use limitpal_bench::drive::{complete, request, runtime};
use limitpal_bench::layers::{
    Echo, ours_adaptive, ours_breaker, ours_bulkhead, ours_rate_limit, ours_resilience,
    ours_resilience_named, ours_retry, tower_builtin_stack, tower_concurrency_limit,
    tower_resilience_stack,
};
use limitpal_bench::limiters::{
    governor_denying, governor_direct, governor_keyed, governor_keyed_live, ours_denying,
    ours_direct, ours_keyed, ours_keyed_live, spread,
};
use limitpal_bench::timing::{ns_per_op_each, ns_per_op_pair, ns_per_op_pair_threads};
use limitpal_bench::waiting::{self, WaitRun, Waiter};
use limitpal_bench::workloads::{
    ZipfKeys, governor_per_user, governor_refilling, ours_per_user, ours_per_user_bounded,
    ours_refilling, rotating,
};
use tokio::runtime::Runtime;
use tower::{Service, ServiceExt};

#[global_allocator]
static ALLOC: Counting = Counting;

const ROUNDS: usize = 7;

struct Report {
    met: u32,
    missed: u32,
}

impl Report {
    /// Prints a ratio line; `target` is the largest acceptable ours/peer ratio, if any.
    fn line(&mut self, name: &str, ours: f64, peer: f64, unit: &str, target: Option<f64>) {
        let ratio = ours / peer;
        let verdict = match target {
            Some(t) if ratio <= t => {
                self.met += 1;
                format!("target <= {t:.2}: met")
            }
            Some(t) => {
                self.missed += 1;
                format!("target <= {t:.2}: MISSED")
            }
            None => String::new(),
        };
        println!("{name:<40} {ours:>10.1} {peer:>10.1} {unit:<6} {ratio:>6.2}  {verdict}");
    }

    /// Prints an absolute line checked against `max`.
    fn absolute(&mut self, name: &str, ours: f64, unit: &str, max: f64) {
        let ok = ours <= max;
        if ok {
            self.met += 1;
        } else {
            self.missed += 1;
        }
        let verdict = if ok { "met" } else { "MISSED" };
        println!(
            "{name:<40} {ours:>10.1} {:>10} {unit:<6} {:>6}  target <= {max}: {verdict}",
            "-", "-"
        );
    }
}

fn main() {
    let mut report = Report { met: 0, missed: 0 };
    println!(
        "{:<40} {:>10} {:>10} {:<6} {:>6}",
        "metric", "ours", "peer", "unit", "ratio"
    );
    let args: Vec<String> = std::env::args().skip(1).collect();
    // one section alone, then its targets
    let section: Option<fn(&mut Report)> = match args.first().map(String::as_str) {
        Some("workloads") => Some(workloads),
        Some("waiting") => Some(waiting),
        Some("reqwest") => Some(reqwest),
        Some("hedging") => Some(hedging),
        Some("layers") => Some(|report| {
            layers(report);
            metrics_overhead(report);
        }),
        Some("breakers") => Some(breakers),
        Some("budget") => Some(budget),
        _ => None,
    };
    if let Some(section) = section {
        section(&mut report);
        println!("targets: {} met, {} missed", report.met, report.missed);
        return;
    }
    if args.first().map(String::as_str) == Some("keyed") {
        for keys in &args[1..] {
            let Ok(keys) = keys.parse::<u64>() else {
                eprintln!("not a key count: {keys}");
                std::process::exit(2);
            };
            let (ours, peer) = (ours_keyed_live(), governor_keyed_live());
            keyed(&mut report, keys.max(1), &ours, &peer, None);
        }
        return;
    }

    // ---- direct (unkeyed), each library's default clock ----
    let ours = ours_direct();
    let peer = governor_direct();
    let (ours_allow, peer_allow) = pair_calls(|| ours.check(&()).is_ok(), || peer.check().is_ok());
    report.line(
        "direct check, allow (vs governor)",
        ours_allow,
        peer_allow,
        "ns",
        Some(1.5),
    );
    let ours = ours_denying();
    let peer = governor_denying();
    let (ours_deny, peer_deny) = pair_calls(|| ours.check(&()).is_err(), || peer.check().is_err());
    report.line(
        "direct check, deny (vs governor)",
        ours_deny,
        peer_deny,
        "ns",
        None,
    );
    // deny / allow: our two paths timed side by side
    let allowing = ours_direct();
    let (ours_allow, ours_deny) =
        pair_calls(|| allowing.check(&()).is_ok(), || ours.check(&()).is_err());
    report.line(
        "direct deny / our allow",
        ours_deny,
        ours_allow,
        "ns",
        Some(1.1),
    );

    // ---- keyed ----
    for keys in [1_u64, 10_000, 1_000_000] {
        // At 1 M keys a key waits ~1 s between checks: the live quota keeps every key live,
        // so the run measures lookups, not idle eviction and re-insertion.
        let (ours, peer) = if keys == 1_000_000 {
            (ours_keyed_live(), governor_keyed_live())
        } else {
            (ours_keyed(), governor_keyed())
        };
        let target = match keys {
            1 => Some(1.0),
            1_000_000 => Some(0.7),
            _ => None,
        };
        keyed(&mut report, keys, &ours, &peer, target);
    }

    // ---- memory per key at 1 M live keys, idle eviction on (the default) ----
    let before = alloc::live_bytes();
    let ours = ours_keyed_live();
    for k in 0..1_000_000_u64 {
        let _ = ours.check(&k);
    }
    #[allow(clippy::cast_precision_loss)]
    let ours_bytes = (alloc::live_bytes() - before) as f64 / 1e6;
    let before = alloc::live_bytes();
    let peer = governor_keyed_live();
    for k in 0..1_000_000_u64 {
        let _ = peer.check_key(&k);
    }
    #[allow(clippy::cast_precision_loss)]
    let peer_bytes = (alloc::live_bytes() - before) as f64 / 1e6;
    assert_eq!(ours.len(), 1_000_000, "all keys are live");
    report.line(
        "bytes per u64 key, 1 M keys",
        ours_bytes,
        peer_bytes,
        "B",
        None,
    );
    report.absolute("bytes per u64 key, 1 M keys", ours_bytes, "B", 36.0);
    drop(ours);
    drop(peer);

    workloads(&mut report);
    layers(&mut report);
    metrics_overhead(&mut report);
    hedging(&mut report);
    http(&mut report);
    waiting(&mut report);
    budget(&mut report);
    println!("targets: {} met, {} missed", report.met, report.missed);
}

/// The retry budget against tower's `TpsBudget` (same ttl, floor and ratio): ours is given
/// the time by its caller, so each of its calls here reads the clock too.
fn budget(report: &mut Report) {
    use limitpal::{Clock, MonotonicClock, RetryBudget};
    use tower::retry::budget::{Budget, TpsBudget};
    let ttl = Duration::from_secs(10);
    let ours = RetryBudget::new(ttl, 10, 0.2).expect("valid budget");
    let peer = TpsBudget::new(ttl, 10, 0.2);
    let clock = MonotonicClock;
    let (ours_ns, peer_ns) = pair_calls(
        || {
            ours.deposit(clock.now());
            true
        },
        || {
            peer.deposit();
            true
        },
    );
    report.line(
        "budget deposit (vs tower TpsBudget)",
        ours_ns,
        peer_ns,
        "ns",
        None,
    );
    let (ours_ns, peer_ns) = pair_calls(
        || {
            let now = clock.now();
            ours.deposit(now);
            ours.withdraw(now)
        },
        || {
            peer.deposit();
            peer.withdraw()
        },
    );
    report.line(
        "budget deposit + withdraw (vs tower TpsBudget)",
        ours_ns,
        peer_ns,
        "ns",
        None,
    );
    let (ours_ns, peer_ns) = ns_per_op_pair_threads(
        ROUNDS,
        1_000_000,
        |_| ours.deposit(clock.now()),
        |_| peer.deposit(),
    );
    report.line(
        "budget deposit, 2 threads (vs tower TpsBudget)",
        ours_ns,
        peer_ns,
        "ns",
        None,
    );
}

/// Keyed checks spread over `keys` keys (inserted first), ours against governor's.
fn keyed(
    report: &mut Report,
    keys: u64,
    ours: &limitpal::RateLimiter<u64>,
    peer: &governor::DefaultKeyedRateLimiter<u64>,
    target: Option<f64>,
) {
    for k in 0..keys {
        let _ = ours.check(&k);
        let _ = peer.check_key(&k);
    }
    let (ours_ns, peer_ns) = ns_per_op_pair(
        ROUNDS,
        2_000_000,
        |i| {
            black_box(ours.check(&(spread(i) % keys)).is_ok());
        },
        |i| {
            black_box(peer.check_key(&(spread(i) % keys)).is_ok());
        },
    );
    report.line(
        &format!("keyed check, {keys} keys (vs governor)"),
        ours_ns,
        peer_ns,
        "ns",
        target,
    );
}

/// Keyed breaker admissions (`try_acquire(&key)` then `success()`), keys checked in a
/// pseudo-random walk after all were inserted: at 1 key against one plain `CircuitBreaker`,
/// and at every count against a `DashMap<u64, CircuitBreaker>` registry (what users write by
/// hand), with the heap each holds per key and allocations per admission of a known key.
fn breakers(report: &mut Report) {
    use dashmap::DashMap;
    use limitpal::{CircuitBreaker, KeyedCircuitBreaker};
    let registry_admit = |map: &DashMap<u64, CircuitBreaker>, key: u64| {
        let breaker = match map.get(&key) {
            Some(breaker) => breaker.clone(),
            None => map
                .entry(key)
                .or_insert_with(|| CircuitBreaker::builder().build().expect("valid breaker"))
                .clone(),
        };
        breaker
            .try_acquire()
            .map(limitpal::CallPermit::success)
            .is_ok()
    };
    let plain = CircuitBreaker::builder().build().expect("valid breaker");
    let one: KeyedCircuitBreaker<u64> = KeyedCircuitBreaker::builder().build().expect("valid");
    let (ours, peer) = pair_calls(
        || {
            one.try_acquire(&7)
                .map(limitpal::CallPermit::success)
                .is_ok()
        },
        || {
            plain
                .try_acquire()
                .map(limitpal::CallPermit::success)
                .is_ok()
        },
    );
    report.line(
        "keyed breaker, 1 key (vs plain breaker)",
        ours,
        peer,
        "ns",
        Some(1.3),
    );
    for keys in [1_u64, 10_000, 1_000_000] {
        let before = heap();
        let ours: KeyedCircuitBreaker<u64> = KeyedCircuitBreaker::builder().build().expect("valid");
        for k in 0..keys {
            let _ = ours.try_acquire(&k).map(limitpal::CallPermit::failure);
        }
        let ours_heap = heap() - before;
        let before = heap();
        let peer: DashMap<u64, CircuitBreaker> = DashMap::new();
        for k in 0..keys {
            let _ = registry_admit(&peer, k);
        }
        let peer_heap = heap() - before;
        let (ours_ns, peer_ns) = ns_per_op_pair(
            ROUNDS,
            1_000_000,
            |i| {
                let key = spread(i) % keys;
                black_box(
                    ours.try_acquire(&key)
                        .map(limitpal::CallPermit::success)
                        .is_ok(),
                );
            },
            |i| {
                black_box(registry_admit(&peer, spread(i) % keys));
            },
        );
        report.line(
            &format!("keyed breaker, {keys} keys (vs DashMap registry)"),
            ours_ns,
            peer_ns,
            "ns",
            (keys == 1_000_000).then_some(0.7),
        );
        memory(
            &format!("keyed breaker, {keys} keys"),
            ours_heap,
            peer_heap,
            usize::try_from(keys).unwrap_or(usize::MAX),
        );
        let calls = alloc::calls();
        for i in 0..10_000 {
            let _ = black_box(
                ours.try_acquire(&(spread(i) % keys))
                    .map(limitpal::CallPermit::success),
            );
        }
        #[allow(clippy::cast_precision_loss)]
        let allocs = (alloc::calls() - calls) as f64 / 10_000.0;
        report.absolute(
            &format!("allocs/admission, known key, {keys} keys"),
            allocs,
            "allocs",
            0.0,
        );
    }
}

/// Live heap bytes now (the counting allocator's figure).
#[allow(clippy::cast_precision_loss)]
fn heap() -> f64 {
    alloc::live_bytes() as f64
}

/// Prints the heap each side holds after a workload: total and per key.
fn memory(name: &str, ours: f64, peer: f64, keys: usize) {
    #[allow(clippy::cast_precision_loss)]
    let keys = keys.max(1) as f64;
    println!(
        "{:<40} {:>10.1} {:>10.1} {:<6} {:>6.2}",
        format!("  heap MB, {name}"),
        ours / 1e6,
        peer / 1e6,
        "MB",
        ours / peer
    );
    println!(
        "{:<40} {:>10.1} {:>10.1} {:<6}",
        format!("  bytes per key touched, {name}"),
        ours / keys,
        peer / keys,
        "B"
    );
}

/// The workloads users run (see `limitpal_bench::workloads`), each side by side with
/// governor on the same keys, and the heap each side holds afterwards.
fn workloads(report: &mut Report) {
    // ---- refilling: every key's quota is whole again at its next check ----
    for keys in [10_000_u64, 100_000, 1_000_000] {
        let base = heap();
        let ours = ours_refilling();
        for k in 0..keys {
            let _ = ours.check(&k);
        }
        let ours_heap = heap() - base;
        let base = heap();
        let peer = governor_refilling();
        for k in 0..keys {
            let _ = peer.check_key(&k);
        }
        let peer_heap = heap() - base;
        let (ours_ns, peer_ns) = ns_per_op_pair(
            ROUNDS,
            2_000_000,
            |i| {
                black_box(ours.check(&(i % keys)).is_ok());
            },
            |i| {
                black_box(peer.check_key(&(i % keys)).is_ok());
            },
        );
        let name = format!("refilling, {keys} keys");
        report.line(
            &format!("{name} (vs governor)"),
            ours_ns,
            peer_ns,
            "ns",
            Some(0.8),
        );
        #[allow(clippy::cast_possible_truncation)]
        memory(&name, ours_heap, peer_heap, keys as usize);
    }

    // ---- Zipf mix: 10/s burst 20 per key, real time ----
    let zipf = ZipfKeys::standard();
    let base = heap();
    let ours = ours_per_user();
    let ours_base = heap() - base;
    let base = heap();
    let peer = governor_per_user();
    let peer_base = heap() - base;
    let (ours_ns, peer_ns) = ns_per_op_pair(
        ROUNDS,
        2_000_000,
        |i| {
            black_box(ours.check(&zipf.key(i)).is_ok());
        },
        |i| {
            black_box(peer.check_key(&zipf.key(i)).is_ok());
        },
    );
    report.line(
        "Zipf mix, 1 M keys (vs governor)",
        ours_ns,
        peer_ns,
        "ns",
        Some(0.8),
    );
    // both sides' heap: measured as the growth since each was built (the other side's
    // growth in between is subtracted by measuring each alone below)
    let touched = zipf.distinct().min(2_000_000);
    let ours_zipf = ours_per_user();
    let base = heap();
    for i in 0..2_000_000 {
        let _ = ours_zipf.check(&zipf.key(i));
    }
    let ours_heap = heap() - base + ours_base;
    drop(ours_zipf);
    let peer_zipf = governor_per_user();
    let base = heap();
    for i in 0..2_000_000 {
        let _ = peer_zipf.check_key(&zipf.key(i));
    }
    let peer_heap = heap() - base + peer_base;
    drop(peer_zipf);
    memory("Zipf mix, 2 M checks", ours_heap, peer_heap, touched);

    // ---- contention: two threads ----
    let (ours_ns, peer_ns) = ns_per_op_pair_threads(
        ROUNDS,
        1_000_000,
        |i| {
            black_box(ours.check(&zipf.key(i)).is_ok());
        },
        |i| {
            black_box(peer.check_key(&zipf.key(i)).is_ok());
        },
    );
    report.line(
        "Zipf mix, 2 threads (vs governor)",
        ours_ns,
        peer_ns,
        "ns",
        Some(0.8),
    );
    drop((ours, peer));
    let (ours, peer) = (ours_keyed(), governor_keyed());
    // which thread holds the one hot line decides a round: more rounds for a steadier median
    let (ours_ns, peer_ns) = ns_per_op_pair_threads(
        3 * ROUNDS,
        500_000,
        |_| {
            black_box(ours.check(&7).is_ok());
        },
        |_| {
            black_box(peer.check_key(&7).is_ok());
        },
    );
    report.line(
        "one hot key, 2 threads (vs governor)",
        ours_ns,
        peer_ns,
        "ns",
        Some(1.0),
    );

    // ---- rotating: every check a never-seen key; ours bounded by max_keys ----
    const MAX_KEYS: usize = 100_000;
    const ROTATING_ITERS: u64 = 500_000;
    // Each side's heap: ours is its table (u64 keys own no heap), governor's the rest.
    let base = heap();
    let ours = ours_per_user_bounded(Some(MAX_KEYS));
    let peer = governor_per_user();
    let (mut next_ours, mut next_peer) = (0_u64, 0_u64);
    let (ours_ns, peer_ns) = ns_per_op_pair(
        ROUNDS,
        ROTATING_ITERS,
        |_| {
            black_box(ours.check(&rotating(next_ours)).is_ok());
            next_ours += 1;
        },
        |_| {
            black_box(peer.check_key(&rotating(next_peer)).is_ok());
            next_peer += 1;
        },
    );
    #[allow(clippy::cast_precision_loss)]
    let ours_heap = ours.table_bytes() as f64;
    let peer_heap = heap() - base - ours_heap;
    report.line(
        &format!("rotating keys, max_keys {MAX_KEYS} (vs governor)"),
        ours_ns,
        peer_ns,
        "ns",
        Some(1.0),
    );
    #[allow(clippy::cast_possible_truncation)]
    memory(
        &format!("rotating, {next_peer} keys"),
        ours_heap,
        peer_heap,
        next_peer as usize,
    );
    #[allow(clippy::cast_precision_loss)]
    report.absolute(
        "rotating: our table bytes / max_keys",
        ours_heap / MAX_KEYS as f64,
        "B",
        32.0,
    );
    assert!(ours.len() <= MAX_KEYS, "max_keys holds");
}

/// ns per call of `a` and of `b`: 2 M calls a round, their rounds alternating.
fn pair_calls(a: impl Fn() -> bool, b: impl Fn() -> bool) -> (f64, f64) {
    ns_per_op_pair(
        ROUNDS,
        2_000_000,
        |_| {
            black_box(a());
        },
        |_| {
            black_box(b());
        },
    )
}

/// Allocations per request through `svc`, after a warm-up request.
fn allocations<S: Service<u64>>(rt: &Runtime, mut svc: S) -> f64 {
    let _ = request(rt, &mut svc, 0);
    let before = alloc::calls();
    for i in 0..10_000 {
        let _ = black_box(request(rt, &mut svc, i));
    }
    #[allow(clippy::cast_precision_loss)]
    let allocs = (alloc::calls() - before) as f64 / 10_000.0;
    allocs
}

/// ns per request through `a` and through `b`, their rounds alternating.
fn measure_pair<A: Service<u64>, B: Service<u64>>(rt: &Runtime, mut a: A, mut b: B) -> (f64, f64) {
    ns_per_op_pair(
        ROUNDS,
        300_000,
        |i| {
            let _ = black_box(request(rt, &mut a, i));
        },
        |i| {
            let _ = black_box(request(rt, &mut b, i));
        },
    )
}

/// tower's built-in `RateLimit` → `Retry` (its `RateLimit` creates a timer when built).
fn builtin(rt: &Runtime) -> impl Service<u64> + use<> {
    let _guard = rt.enter();
    tower_builtin_stack()
}

fn layers(report: &mut Report) {
    let rt = runtime();
    for (name, allocs) in [
        ("RateLimitLayer", allocations(&rt, ours_rate_limit())),
        ("CircuitBreakerLayer", allocations(&rt, ours_breaker())),
        ("RetryLayer", allocations(&rt, ours_retry())),
        (
            "ResilienceLayer (limit+breaker+retry)",
            allocations(&rt, ours_resilience()),
        ),
        ("BulkheadLayer", allocations(&rt, ours_bulkhead())),
        ("AdaptiveLimitLayer", allocations(&rt, ours_adaptive())),
    ] {
        report.absolute(&format!("allocs/request {name}"), allocs, "allocs", 0.0);
    }
    // Each overhead: the layer and the bare service timed side by side, rounds alternating.
    let overheads = [
        ("RateLimitLayer", measure_pair(&rt, Echo, ours_rate_limit())),
        (
            "CircuitBreakerLayer",
            measure_pair(&rt, Echo, ours_breaker()),
        ),
        ("RetryLayer", measure_pair(&rt, Echo, ours_retry())),
        ("BulkheadLayer", measure_pair(&rt, Echo, ours_bulkhead())),
        (
            "AdaptiveLimitLayer",
            measure_pair(&rt, Echo, ours_adaptive()),
        ),
    ];
    let (bare, resilience_ns) = measure_pair(&rt, Echo, ours_resilience());
    println!(
        "{:<40} {bare:>10.1} {:>10} {:<6}",
        "bare service", "-", "ns"
    );
    for (name, (bare, ns)) in overheads {
        println!(
            "{:<40} {:>10.1} {:>10} {:<6}",
            format!("overhead {name}"),
            ns - bare,
            "-",
            "ns"
        );
    }
    report.absolute(
        "overhead ResilienceLayer",
        resilience_ns - bare,
        "ns",
        150.0,
    );
    let (ours_ns, peer_ns) = measure_pair(&rt, ours_resilience(), tower_resilience_stack());
    report.line(
        "ResilienceLayer vs tower-resilience",
        ours_ns,
        peer_ns,
        "ns",
        Some(1.0),
    );
    let peer_allocs = allocations(&rt, tower_resilience_stack());
    println!(
        "{:<40} {peer_allocs:>10.1} {:>10} {:<6}",
        "allocs/request tower-resilience", "-", "allocs"
    );
    let (ours_ns, builtin_ns) = measure_pair(&rt, ours_resilience(), builtin(&rt));
    report.line(
        "ResilienceLayer vs tower built-ins",
        ours_ns,
        builtin_ns,
        "ns",
        None,
    );
    let builtin_allocs = allocations(&rt, builtin(&rt));
    println!(
        "{:<40} {builtin_allocs:>10.1} {:>10} {:<6}",
        "allocs/request tower built-ins", "-", "allocs"
    );
    let (bulkhead_ns, concurrency_ns) =
        measure_pair(&rt, ours_bulkhead(), tower_concurrency_limit());
    report.line(
        "BulkheadLayer vs tower ConcurrencyLimit",
        bulkhead_ns,
        concurrency_ns,
        "ns",
        None,
    );
}

/// The hedge stage: what an idle hedge (none fires: the service answers at once) adds to the
/// full pipeline, its allocations, and `HedgeLayer` alone side by side with tower's `Hedge`.
fn hedging(report: &mut Report) {
    use limitpal_bench::layers::{
        ours_hedge, ours_hedge_pending, ours_hedge_percentile, ours_resilience_hedged,
        ours_resilience_pending, tower_hedge, tower_hedge_pending,
    };
    let rt = runtime();
    // tower's Hedge makes its timer in `call`, inside the runtime
    let _guard = rt.enter();
    report.absolute(
        "allocs/request ResilienceLayer + idle hedge",
        allocations(&rt, ours_resilience_hedged()),
        "allocs",
        0.0,
    );
    report.absolute(
        "allocs/request HedgeLayer (fixed)",
        allocations(&rt, ours_hedge()),
        "allocs",
        0.0,
    );
    let (plain, hedged) = measure_pair(&rt, ours_resilience(), ours_resilience_hedged());
    println!(
        "{:<40} {plain:>10.1} {hedged:>10.1} {:<6}",
        "ResilienceLayer without / with hedge", "ns"
    );
    report.absolute(
        "overhead of an idle hedge stage",
        hedged - plain,
        "ns",
        30.0,
    );
    // tower's Hedge hedges from the previous period's histogram: run it past its first
    // 1 s period so that, like ours, it arms a hedge for every request
    let warm = || {
        let mut peer = tower_hedge();
        limitpal_bench::drive::warm(&rt, &mut peer, Duration::from_millis(1_100));
        peer
    };
    let tower_allocs = allocations(&rt, warm());
    println!(
        "{:<40} {tower_allocs:>10.1} {:>10} {:<6}",
        "allocs/request tower Hedge", "-", "allocs"
    );
    let peer = warm;
    let (ours_ns, peer_ns) = measure_pair(&rt, ours_hedge(), peer());
    report.line(
        "HedgeLayer (fixed) vs tower Hedge",
        ours_ns,
        peer_ns,
        "ns",
        Some(1.0),
    );
    let (ours_ns, peer_ns) = measure_pair(&rt, ours_hedge_percentile(), peer());
    report.line(
        "HedgeLayer (p95) vs tower Hedge (p95)",
        ours_ns,
        peer_ns,
        "ns",
        Some(1.0),
    );
    // a call still in flight when first polled: both stages arm a hedge timer that never
    // fires
    report.absolute(
        "allocs/request pending call + idle hedge",
        allocations(&rt, ours_resilience_pending(true)),
        "allocs",
        0.0,
    );
    let (plain, hedged) = measure_pair(
        &rt,
        ours_resilience_pending(false),
        ours_resilience_pending(true),
    );
    println!(
        "{:<40} {plain:>10.1} {hedged:>10.1} {:<6}",
        "pending call: without / with hedge", "ns"
    );
    println!(
        "{:<40} {:>10.1} {:>10} {:<6}",
        "pending call: hedge timer armed",
        hedged - plain,
        "-",
        "ns"
    );
    let warm_pending = || {
        let mut peer = tower_hedge_pending();
        limitpal_bench::drive::warm(&rt, &mut peer, Duration::from_millis(1_100));
        peer
    };
    let (ours_ns, peer_ns) = measure_pair(&rt, ours_hedge_pending(), warm_pending());
    report.line(
        "pending call: HedgeLayer vs tower Hedge",
        ours_ns,
        peer_ns,
        "ns",
        Some(1.0),
    );
}

/// The full pipeline with metrics recorded (every part named, a Prometheus recorder
/// installed) against the same pipeline unnamed (records nothing).
fn metrics_overhead(report: &mut Report) {
    let rt = runtime();
    let _ = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder();
    let (named, plain) = measure_pair(&rt, ours_resilience_named(), ours_resilience());
    report.line(
        "ResilienceLayer metrics on / off",
        named,
        plain,
        "ns",
        Some(1.1),
    );
}

fn http(report: &mut Report) {
    use limitpal_bench::http::{governor, ours, request as http_request};
    let rt = runtime();
    let time = |a: axum::Router, b: axum::Router| {
        let request = |router: &axum::Router| {
            let response = complete(&rt, router.clone().oneshot(http_request()));
            black_box(response.map(|r| r.status()).ok());
        };
        ns_per_op_pair(ROUNDS, 50_000, |_| request(&a), |_| request(&b))
    };
    let (ours_200, peer_200) = time(ours(true), governor(true));
    let (ours_429, peer_429) = time(ours(false), governor(false));
    let (ours_200_paired, ours_429_paired) = time(ours(true), ours(false));
    assert_eq!(
        complete(&rt, ours(false).oneshot(http_request()))
            .map(|r| r.status().as_u16())
            .ok(),
        Some(429)
    );
    report.line(
        "HTTP 200 (vs tower_governor)",
        ours_200,
        peer_200,
        "ns",
        None,
    );
    report.line(
        "HTTP 429 (vs tower_governor)",
        ours_429,
        peer_429,
        "ns",
        None,
    );
    report.line(
        "HTTP our 429 / our 200",
        ours_429_paired,
        ours_200_paired,
        "ns",
        Some(2.0),
    );
}

/// Waiting for quota, each waiter at the same configured rate: CPU per admitted request
/// (reserve + sleep + wake, every thread counted), sequential and with many tasks waiting
/// at once; then how exactly 1 000 waits through 100/s keep to their 10 s schedule.
fn waiting(report: &mut Report) {
    const WAIT_ROUNDS: usize = 3;
    let rt = waiting::wait_runtime(false);
    let cpu_us = |run: WaitRun, n: u32| {
        run.cpu
            .map_or(f64::NAN, |cpu| cpu.as_secs_f64() * 1e6 / f64::from(n))
    };
    type Case = fn(&tokio::runtime::Runtime, Waiter, u32, u32) -> WaitRun;
    let cases: [(&str, Case, u32, u32); 2] = [
        ("1 task, 1000 waits", waiting::sequential, 1_000, 1_000),
        ("1000 tasks at once", waiting::concurrent, 1_000, 1_000),
    ];
    for (name, case, per_sec, n) in cases {
        let mut samples: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
        let mut elapsed = [Duration::ZERO; 3];
        for _ in 0..WAIT_ROUNDS {
            for (i, waiter) in Waiter::ALL.into_iter().enumerate() {
                let run = case(&rt, waiter, per_sec, n);
                samples[i].push(cpu_us(run, n));
                elapsed[i] = run.elapsed;
            }
        }
        let [ours, gov, tow] = samples.map(|mut s| {
            s.sort_by(f64::total_cmp);
            s[s.len() / 2]
        });
        report.line(
            &format!("wait {name} (vs governor)"),
            ours,
            gov,
            "us",
            Some(1.0),
        );
        report.line(
            &format!("wait {name} (vs tower)"),
            ours,
            tow,
            "us",
            Some(1.0),
        );
        for (waiter, elapsed) in Waiter::ALL.into_iter().zip(elapsed) {
            println!(
                "  {name}, {}: last run took {:.3} s",
                waiter.name(),
                elapsed.as_secs_f64()
            );
        }
    }

    // Precision: 1 000 waits at 100/s after the burst is spent is exactly 10 s.
    let schedule = Duration::from_secs(10);
    let paused = waiting::wait_runtime(true);
    for waiter in [Waiter::Ours, Waiter::Tower] {
        // governor keeps its own clock and timer thread: paused tokio time cannot drive it
        let run = waiting::sequential(&paused, waiter, 100, 1_000);
        let off_us = run.elapsed.abs_diff(schedule).as_secs_f64() * 1e6;
        report.absolute(
            &format!("paused 1000 waits at 100/s: {}, off", waiter.name()),
            off_us,
            "us",
            1000.0,
        );
    }
    // Real time: the three run at once on their own threads (they sleep almost all the time).
    let runs: Vec<(Waiter, WaitRun)> = std::thread::scope(|s| {
        let handles: Vec<_> = Waiter::ALL
            .into_iter()
            .map(|waiter| {
                s.spawn(move || {
                    let rt = waiting::wait_runtime(false);
                    (waiter, waiting::sequential(&rt, waiter, 100, 1_000))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("no panic"))
            .collect()
    });
    // 2 % of 10 s is 200 ms
    let ours_off_ms = runs[0].1.elapsed.abs_diff(schedule).as_secs_f64() * 1e3;
    for (waiter, run) in &runs {
        let off = run.elapsed.abs_diff(schedule).as_secs_f64() / schedule.as_secs_f64() * 100.0;
        println!(
            "  real time: 1000 waits at 100/s, {}: {:.4} s ({off:.3} % off)",
            waiter.name(),
            run.elapsed.as_secs_f64()
        );
    }
    report.absolute(
        "real 1000 waits at 100/s: ours, off",
        ours_off_ms,
        "ms",
        200.0,
    );
}

/// reqwest middleware, each stack of `Stack::ALL` on the same client: first answered by a
/// canned `200` (the middleware's own cost: its time minus the bare client's), then by a
/// loopback axum server (the whole round trip). Allocations are counted on the client's
/// thread only, so the server's are not in them.
fn reqwest(report: &mut Report) {
    use limitpal_bench::http_client::{CANNED_URL, Stack, client, client_runtime, get, server};
    let rt = &client_runtime();
    let addr = server();
    let loopback = format!("http://{addr}/");
    for (setting, url, canned, iters) in [
        ("canned", CANNED_URL, true, 20_000),
        ("loopback", loopback.as_str(), false, 2_000),
    ] {
        let clients = Stack::ALL.map(|stack| client(stack, canned));
        for c in &clients {
            assert_eq!(
                get(rt, c, url),
                Some(200),
                "{setting}: every stack answers 200"
            );
        }
        let mut ops = clients.each_ref().map(|c| {
            move |_: u64| {
                black_box(get(rt, c, url));
            }
        });
        let mut ops: Vec<&mut dyn FnMut(u64)> =
            ops.iter_mut().map(|op| op as &mut dyn FnMut(u64)).collect();
        let ns = ns_per_op_each(ROUNDS, iters, &mut ops);
        let allocs = clients.each_ref().map(|c| {
            let before = alloc::thread_calls();
            for _ in 0..1_000 {
                black_box(get(rt, c, url));
            }
            (alloc::thread_calls() - before) as f64 / 1_000.0
        });
        for ((stack, ns), allocs) in Stack::ALL.iter().zip(&ns).zip(&allocs) {
            println!(
                "  {setting}, {:<48} {:>9.0} ns/request {allocs:>6.1} allocs/request",
                stack.name(),
                ns
            );
        }
        let [bare, _, peer, ours, pipeline] = [0, 1, 2, 3, 4].map(|i| ns[i]);
        let [_, _, peer_allocs, ours_allocs, pipeline_allocs] = [0, 1, 2, 3, 4].map(|i| allocs[i]);
        if canned {
            report.line(
                "reqwest overhead, retry (vs reqwest-retry)",
                ours - bare,
                peer - bare,
                "ns",
                Some(1.0),
            );
            report.line(
                "reqwest overhead, pipeline (vs reqwest-retry)",
                pipeline - bare,
                peer - bare,
                "ns",
                None,
            );
        } else {
            report.line(
                "reqwest loopback, retry (vs reqwest-retry)",
                ours,
                peer,
                "ns",
                None,
            );
            report.line(
                "reqwest loopback, pipeline (vs reqwest-retry)",
                pipeline,
                peer,
                "ns",
                None,
            );
        }
        report.line(
            &format!("reqwest {setting} allocs, retry (vs reqwest-retry)"),
            ours_allocs,
            peer_allocs,
            "allocs",
            None,
        );
        report.line(
            &format!("reqwest {setting} allocs, pipeline (vs retry)"),
            pipeline_allocs,
            ours_allocs,
            "allocs",
            None,
        );
    }
}
