//! Running a future to completion on the calling thread, for the sync API: the executor
//! consulting a remote limiter, a bulkhead caller waiting for a slot.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use crate::{Clock, MonotonicClock};

struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `future` on this thread, parking it while the future waits, for at most `timeout`
/// of real time (`None`: for as long as it takes). Returns `None` if the time ran out first;
/// dropping the future then is what cancels its wait. The future must not need this thread
/// to make progress (a Redis limiter's needs a tokio runtime running elsewhere).
pub(crate) fn block_on<F: Future>(future: F, timeout: Option<Duration>) -> Option<F::Output> {
    let clock = MonotonicClock;
    let until = timeout.map(|t| clock.now().saturating_add(t));
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return Some(out);
        }
        match until {
            None => std::thread::park(),
            Some(until) => {
                let left = until.saturating_sub(clock.now());
                if left.is_zero() {
                    return None;
                }
                std::thread::park_timeout(left);
            }
        }
    }
}
