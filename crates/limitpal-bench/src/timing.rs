//! Small timing loops for the `compare` binary: medians of several rounds, ns per operation.

use limitpal::{Clock, MonotonicClock};

/// Runs `a` and `b` `iters` times per round for `rounds` rounds each (after one warm-up round
/// each), their rounds alternating, so a noisy neighbour on a shared machine slows both alike
/// and their ratio stays fair: the median nanoseconds per call of `a` and of `b`.
pub fn ns_per_op_pair(
    rounds: usize,
    iters: u64,
    mut a: impl FnMut(u64),
    mut b: impl FnMut(u64),
) -> (f64, f64) {
    let each = ns_per_op_each(rounds, iters, &mut [&mut a, &mut b]);
    (each[0], each[1])
}

/// [`ns_per_op_pair`] for any number of operations: each runs one warm-up round, then their
/// timed rounds take turns; the median nanoseconds per call of each, in order.
pub fn ns_per_op_each(rounds: usize, iters: u64, ops: &mut [&mut dyn FnMut(u64)]) -> Vec<f64> {
    for op in ops.iter_mut() {
        round(iters, op);
    }
    let mut samples = vec![Vec::with_capacity(rounds); ops.len()];
    for _ in 0..rounds {
        for (op, samples) in ops.iter_mut().zip(&mut samples) {
            samples.push(round(iters, op));
        }
    }
    samples.into_iter().map(median).collect()
}

/// One timed round: nanoseconds per call.
fn round(iters: u64, op: &mut (impl FnMut(u64) + ?Sized)) -> f64 {
    let clock = MonotonicClock;
    let start = clock.now();
    for i in 0..iters {
        op(i);
    }
    #[allow(clippy::cast_precision_loss)]
    let per_op = (clock.now() - start).as_nanos() as f64 / iters as f64;
    per_op
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// [`ns_per_op_pair`] for work done by two threads at once: each round runs `a` (then `b`)
/// `iters` times on each of two threads ([`two_threads`]), rounds alternating; the median
/// wall-clock nanoseconds per call, over both threads' calls (so a perfect scaling of one
/// thread's cost halves it).
pub fn ns_per_op_pair_threads(
    rounds: usize,
    iters: u64,
    a: impl Fn(u64) + Sync,
    b: impl Fn(u64) + Sync,
) -> (f64, f64) {
    #[allow(clippy::cast_precision_loss)]
    let per_op = |d: std::time::Duration| d.as_nanos() as f64 / (2 * iters) as f64;
    two_threads(iters, &a);
    two_threads(iters, &b);
    let (mut sa, mut sb) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for _ in 0..rounds {
        sa.push(per_op(two_threads(iters, &a)));
        sb.push(per_op(two_threads(iters, &b)));
    }
    (median(sa), median(sb))
}

/// Runs `op` `iters` times on each of two threads at once; the wall time of the pair.
pub fn two_threads(iters: u64, op: impl Fn(u64) + Sync) -> std::time::Duration {
    let clock = MonotonicClock;
    let start = clock.now();
    std::thread::scope(|s| {
        for t in 0..2_u64 {
            let op = &op;
            s.spawn(move || {
                for i in 0..iters {
                    op(i.wrapping_mul(2).wrapping_add(t));
                }
            });
        }
    });
    clock.now() - start
}
