//! Limiter checks, ours and governor's, on the same quotas and keys.
//!
//! ```text
//! cargo bench -p limitpal-bench --bench limiter
//! ```

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use limitpal_bench::limiters::{
    governor_denying, governor_direct, governor_keyed, governor_keyed_live, ours_denying,
    ours_direct, ours_keyed, ours_keyed_live, spread,
};

fn direct(c: &mut Criterion) {
    let mut group = c.benchmark_group("direct");
    let ours = ours_direct();
    group.bench_function("limitpal/allow", |b| {
        b.iter(|| black_box(ours.check(&()).is_ok()));
    });
    let peer = governor_direct();
    group.bench_function("governor/allow", |b| {
        b.iter(|| black_box(peer.check().is_ok()));
    });
    let ours = ours_denying();
    group.bench_function("limitpal/deny", |b| {
        b.iter(|| black_box(ours.check(&()).is_err()));
    });
    let peer = governor_denying();
    group.bench_function("governor/deny", |b| {
        b.iter(|| black_box(peer.check().is_err()));
    });
    group.finish();
}

fn keyed(c: &mut Criterion) {
    let mut group = c.benchmark_group("keyed");
    for keys in [1_u64, 10_000, 1_000_000] {
        // At 1 M keys a key can wait over a second between checks: the live quota keeps every
        // key live, so this measures lookups, not idle eviction and re-insertion (as `compare`).
        let (ours, peer) = if keys == 1_000_000 {
            (ours_keyed_live(), governor_keyed_live())
        } else {
            (ours_keyed(), governor_keyed())
        };
        for k in 0..keys {
            let _ = ours.check(&k);
            let _ = peer.check_key(&k);
        }
        let mut i = 0_u64;
        group.bench_with_input(BenchmarkId::new("limitpal", keys), &keys, |b, &n| {
            b.iter(|| {
                i += 1;
                black_box(ours.check(&(spread(i) % n)).is_ok())
            });
        });
        group.bench_with_input(BenchmarkId::new("governor", keys), &keys, |b, &n| {
            b.iter(|| {
                i += 1;
                black_box(peer.check_key(&(spread(i) % n)).is_ok())
            });
        });
    }
    group.finish();
}

fn two_threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("keyed_2_threads_10k_keys");
    let ours = ours_keyed();
    let peer = governor_keyed();
    for k in 0..10_000 {
        let _ = ours.check(&k);
        let _ = peer.check_key(&k);
    }
    group.bench_function("limitpal", |b| {
        b.iter_custom(|iters| {
            limitpal_bench::timing::two_threads(iters, |i| {
                black_box(ours.check(&(spread(i) % 10_000)).is_ok());
            })
        });
    });
    group.bench_function("governor", |b| {
        b.iter_custom(|iters| {
            limitpal_bench::timing::two_threads(iters, |i| {
                black_box(peer.check_key(&(spread(i) % 10_000)).is_ok());
            })
        });
    });
    group.finish();
}

criterion_group!(benches, direct, keyed, two_threads);
criterion_main!(benches);
