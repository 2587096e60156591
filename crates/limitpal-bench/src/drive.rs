//! Drives tower services one request at a time, as cheaply as possible: poll directly with a
//! no-op waker inside a tokio runtime context (timers need one), and fall back to `block_on`
//! only if something is really pending.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use tokio::runtime::Runtime;
use tower::{Service, ServiceExt};

/// A current-thread runtime for the benchmarks.
#[must_use]
pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a tokio runtime")
}

/// Completes `future`, polling it directly first.
pub fn complete<F: Future>(rt: &Runtime, future: F) -> F::Output {
    let _guard = rt.enter();
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..3 {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
    rt.block_on(future)
}

/// One request through `svc`: ready, call, complete.
pub fn request<S, Req>(rt: &Runtime, svc: &mut S, req: Req) -> Result<S::Response, S::Error>
where
    S: Service<Req>,
{
    complete(rt, svc.ready())?;
    let future = svc.call(req);
    complete(rt, future)
}

/// Sends requests through `svc` for `period` of real time: tower's `Hedge` hedges (and arms
/// its timer per request) only past its first latency period, so it is measured warm.
pub fn warm<S: Service<u64>>(rt: &Runtime, svc: &mut S, period: std::time::Duration) {
    use limitpal::Clock as _;
    let clock = limitpal::MonotonicClock::new();
    let start = clock.now();
    let mut i = 0_u64;
    while clock.now().saturating_sub(start) < period {
        i += 1;
        let _ = std::hint::black_box(request(rt, svc, i));
    }
}
