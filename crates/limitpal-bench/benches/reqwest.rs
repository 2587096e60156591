//! reqwest middleware per request: limitpal's `Resilience` next to reqwest-retry's
//! `RetryTransientMiddleware`, a pass-through middleware and the bare client, answered by a
//! canned `200` (the middleware's own cost) and by a loopback axum server (the round trip).
//!
//! ```text
//! cargo bench -p limitpal-bench --bench reqwest
//! ```

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use limitpal_bench::http_client::{CANNED_URL, Stack, client, client_runtime, get, server};

fn reqwest(c: &mut Criterion) {
    let rt = client_runtime();
    let loopback = format!("http://{}/", server());
    for (setting, url, canned) in [
        ("canned", CANNED_URL, true),
        ("loopback", loopback.as_str(), false),
    ] {
        for stack in Stack::ALL {
            let client = client(stack, canned);
            assert_eq!(get(&rt, &client, url), Some(200));
            c.bench_function(&format!("reqwest/{setting}/{}", stack.name()), |b| {
                b.iter(|| black_box(get(&rt, &client, url)));
            });
        }
    }
}

criterion_group!(benches, reqwest);
criterion_main!(benches);
