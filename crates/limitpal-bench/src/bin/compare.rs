//! A quick side-by-side run (well under two minutes): one line per metric,
//! `name ours peer ratio target`, then `targets: N met, M missed`. It measures every time;
//! it never prints remembered numbers.
//!
//! ```text
//! cargo run --release -p limitpal-bench --bin compare
//! ```

use std::hint::black_box;

use limitpal_bench::alloc::{self, Counting};
use limitpal_bench::limiters::{
    governor_denying, governor_direct, governor_keyed, ours_denying, ours_direct, ours_keyed,
    spread,
};
use limitpal_bench::timing::ns_per_op;

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
        println!("{name:<34} {ours:>10.1} {peer:>10.1} {unit:<6} {ratio:>6.2}  {verdict}");
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
            "{name:<34} {ours:>10.1} {:>10} {unit:<6} {:>6}  target <= {max}: {verdict}",
            "-", "-"
        );
    }
}

fn main() {
    let mut report = Report { met: 0, missed: 0 };
    println!(
        "{:<34} {:>10} {:>10} {:<6} {:>6}",
        "metric", "ours", "peer", "unit", "ratio"
    );

    // ---- direct (unkeyed), each library's default clock ----
    let ours = ours_direct();
    let peer = governor_direct();
    let ours_allow = ns_per_op(ROUNDS, 2_000_000, |_| {
        black_box(ours.check(&()).is_ok());
    });
    let peer_allow = ns_per_op(ROUNDS, 2_000_000, |_| {
        black_box(peer.check().is_ok());
    });
    report.line(
        "direct check, allow (vs governor)",
        ours_allow,
        peer_allow,
        "ns",
        Some(1.5),
    );
    let ours = ours_denying();
    let peer = governor_denying();
    let ours_deny = ns_per_op(ROUNDS, 2_000_000, |_| {
        black_box(ours.check(&()).is_err());
    });
    let peer_deny = ns_per_op(ROUNDS, 2_000_000, |_| {
        black_box(peer.check().is_err());
    });
    report.line(
        "direct check, deny (vs governor)",
        ours_deny,
        peer_deny,
        "ns",
        None,
    );
    report.line(
        "direct deny / our allow",
        ours_deny,
        ours_allow,
        "ns",
        Some(1.1),
    );

    // ---- keyed ----
    for keys in [1_u64, 10_000, 1_000_000] {
        let ours = ours_keyed();
        let peer = governor_keyed();
        for k in 0..keys {
            let _ = ours.check(&k);
            let _ = peer.check_key(&k);
        }
        let iters = 2_000_000;
        let ours_ns = ns_per_op(ROUNDS, iters, |i| {
            black_box(ours.check(&(spread(i) % keys)).is_ok());
        });
        let peer_ns = ns_per_op(ROUNDS, iters, |i| {
            black_box(peer.check_key(&(spread(i) % keys)).is_ok());
        });
        let target = match keys {
            1 => Some(1.0),
            1_000_000 => Some(0.7),
            _ => None,
        };
        report.line(
            &format!("keyed check, {keys} keys (vs governor)"),
            ours_ns,
            peer_ns,
            "ns",
            target,
        );
    }

    // ---- memory per key at 1 M live keys, idle eviction on (the default) ----
    let before = alloc::live_bytes();
    let ours = ours_keyed();
    for k in 0..1_000_000_u64 {
        let _ = ours.check(&k);
    }
    #[allow(clippy::cast_precision_loss)]
    let ours_bytes = (alloc::live_bytes() - before) as f64 / 1e6;
    let before = alloc::live_bytes();
    let peer = governor_keyed();
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

    println!("targets: {} met, {} missed", report.met, report.missed);
}
