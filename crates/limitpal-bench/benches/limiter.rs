//! Limiter checks, ours and governor's, on the same quotas and keys.
//!
//! ```text
//! cargo bench -p limitpal-bench --bench limiter
//! cargo bench -p limitpal-bench --bench limiter -- 'refilling|zipf|rotating|contention'
//! ```
//!
//! Groups: `direct` (one quota), `keyed` (live keys: a quota that never refills between two
//! checks of a key), and the workloads of `limitpal_bench::workloads`: `refilling` (every key
//! full again when it comes back: per-IP traffic), `zipf` (s = 1.0 over 1 M keys, 10/s burst
//! 20 each, real time), `rotating` (every check a new key; ours with `max_keys` 100 000),
//! `contention` (two threads on one hot key, and on the Zipf mix).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use limitpal_bench::limiters::{
    governor_denying, governor_direct, governor_keyed, governor_keyed_live, ours_denying,
    ours_direct, ours_keyed, ours_keyed_live, spread,
};
use limitpal_bench::timing::two_threads as on_two_threads;
use limitpal_bench::workloads::{
    ZipfKeys, governor_per_user, governor_refilling, ours_per_user, ours_per_user_bounded,
    ours_refilling, rotating,
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

fn refilling(c: &mut Criterion) {
    let mut group = c.benchmark_group("refilling");
    for keys in [10_000_u64, 100_000, 1_000_000] {
        let (ours, peer) = (ours_refilling(), governor_refilling());
        for k in 0..keys {
            let _ = ours.check(&k);
            let _ = peer.check_key(&k);
        }
        // Round-robin: each key comes back after the others, its quota whole again.
        let mut i = 0_u64;
        group.bench_with_input(BenchmarkId::new("limitpal", keys), &keys, |b, &n| {
            b.iter(|| {
                i += 1;
                black_box(ours.check(&(i % n)).is_ok())
            });
        });
        group.bench_with_input(BenchmarkId::new("governor", keys), &keys, |b, &n| {
            b.iter(|| {
                i += 1;
                black_box(peer.check_key(&(i % n)).is_ok())
            });
        });
    }
    group.finish();
}

fn zipf(c: &mut Criterion) {
    let mut group = c.benchmark_group("zipf");
    let zipf = ZipfKeys::standard();
    let (ours, peer) = (ours_per_user(), governor_per_user());
    let mut i = 0_u64;
    group.bench_function("limitpal", |b| {
        b.iter(|| {
            i += 1;
            black_box(ours.check(&zipf.key(i)).is_ok())
        });
    });
    group.bench_function("governor", |b| {
        b.iter(|| {
            i += 1;
            black_box(peer.check_key(&zipf.key(i)).is_ok())
        });
    });
    group.finish();
}

fn rotating_keys(c: &mut Criterion) {
    let mut group = c.benchmark_group("rotating");
    // Ours holds at most 100 000 keys; governor's map grows with every key it has seen.
    let (ours, peer) = (ours_per_user_bounded(Some(100_000)), governor_per_user());
    let (mut next_ours, mut next_peer) = (0_u64, 0_u64);
    group.bench_function("limitpal/max_keys_100000", |b| {
        b.iter(|| {
            next_ours += 1;
            black_box(ours.check(&rotating(next_ours)).is_ok())
        });
    });
    group.bench_function("governor/unbounded", |b| {
        b.iter(|| {
            next_peer += 1;
            black_box(peer.check_key(&rotating(next_peer)).is_ok())
        });
    });
    group.finish();
}

fn contention(c: &mut Criterion) {
    let mut group = c.benchmark_group("contention");
    let (ours, peer) = (ours_keyed(), governor_keyed());
    group.bench_function("limitpal/one_hot_key", |b| {
        b.iter_custom(|iters| {
            on_two_threads(iters, |_| {
                black_box(ours.check(&7).is_ok());
            })
        });
    });
    group.bench_function("governor/one_hot_key", |b| {
        b.iter_custom(|iters| {
            on_two_threads(iters, |_| {
                black_box(peer.check_key(&7).is_ok());
            })
        });
    });
    let zipf = ZipfKeys::standard();
    let (ours, peer) = (ours_per_user(), governor_per_user());
    group.bench_function("limitpal/zipf", |b| {
        b.iter_custom(|iters| {
            on_two_threads(iters, |i| {
                black_box(ours.check(&zipf.key(i)).is_ok());
            })
        });
    });
    group.bench_function("governor/zipf", |b| {
        b.iter_custom(|iters| {
            on_two_threads(iters, |i| {
                black_box(peer.check_key(&zipf.key(i)).is_ok());
            })
        });
    });
    group.finish();
}

criterion_group!(
    benches,
    direct,
    keyed,
    two_threads,
    refilling,
    zipf,
    rotating_keys,
    contention
);
criterion_main!(benches);
