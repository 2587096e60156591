//! What a call holds while it runs in a [`Bulkhead`]: a [`BulkheadPermit`], and the
//! [`Acquire`] future that waits for one.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::semaphore::{Semaphore, Waiter};
use super::{Bulkhead, BulkheadFull, Sample};
use crate::{Clock, Outcome};

/// A slot in a [`Bulkhead`] or [`AdaptiveLimit`](super::AdaptiveLimit), freed when recorded or dropped.
///
/// For an adaptive limit, [`record`](Self::record) (or `success`/`failure`) feeds the call's
/// latency and outcome to the algorithm; a permit dropped unrecorded is a cancelled call:
/// it frees the slot and teaches nothing.
#[must_use = "the slot is freed when the permit is dropped"]
pub struct BulkheadPermit {
    pub(super) bulkhead: Option<Bulkhead>,
    /// For an adaptive limit: the start time in nanoseconds...
    pub(super) started_nanos: u64,
    /// ...and the calls in flight then, this one included (0: not adaptive).
    pub(super) in_flight: u32,
}

impl BulkheadPermit {
    /// The call succeeded.
    pub fn success(self) {
        self.record(Outcome::Success);
    }

    /// The call failed (or timed out): for an adaptive limit, the callee may be overloaded.
    pub fn failure(self) {
        self.record(Outcome::RETRYABLE);
    }

    /// Records `outcome` (`Ignore`: nothing learned) and frees the slot.
    pub fn record(mut self, outcome: Outcome) {
        let Some(bulkhead) = self.bulkhead.take() else {
            return;
        };
        // freed after the sample (a lowered limit must not hand the slot on), and freed even
        // if a user's algorithm panics
        let _release = Release(&bulkhead.shared.semaphore);
        if let Some(adaptive) = &bulkhead.shared.adaptive
            && outcome != Outcome::Ignore
        {
            let now = adaptive.clock.now();
            let start = Duration::from_nanos(self.started_nanos);
            let sample = Sample::new(
                now,
                now.saturating_sub(start),
                self.in_flight,
                matches!(outcome, Outcome::Failure { .. }),
            );
            adaptive.sample(
                &bulkhead.shared.semaphore,
                &bulkhead.shared.metrics,
                &sample,
            );
        }
    }
}

/// Frees a slot when dropped.
struct Release<'a>(&'a Semaphore);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl Drop for BulkheadPermit {
    fn drop(&mut self) {
        if let Some(bulkhead) = self.bulkhead.take() {
            bulkhead.shared.semaphore.release();
        }
    }
}

impl fmt::Debug for BulkheadPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadPermit")
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

/// Waits for a slot; made by [`Bulkhead::acquire`]. Dropping it gives up the place in the
/// queue (or the slot handed over meanwhile): cancel-safe.
#[must_use = "futures do nothing unless polled"]
pub struct Acquire {
    pub(super) bulkhead: Bulkhead,
    pub(super) state: AcquireState,
}

pub(super) enum AcquireState {
    Ready(Result<BulkheadPermit, BulkheadFull>),
    Waiting(Arc<Waiter>),
    Done,
}

impl Acquire {
    /// Whether this caller waits in the queue (rather than having its answer already).
    #[must_use]
    pub fn is_waiting(&self) -> bool {
        matches!(self.state, AcquireState::Waiting(_))
    }

    /// The answer, if it was decided without waiting (a slot, or full with no room to
    /// wait); `None` while this caller waits in the queue.
    pub fn answer(&mut self) -> Option<Result<BulkheadPermit, BulkheadFull>> {
        if !matches!(self.state, AcquireState::Ready(_)) {
            return None;
        }
        match std::mem::replace(&mut self.state, AcquireState::Done) {
            AcquireState::Ready(answer) => Some(answer),
            _ => None,
        }
    }
}

impl Future for Acquire {
    type Output = Result<BulkheadPermit, BulkheadFull>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &self.state {
            AcquireState::Waiting(waiter) => {
                if waiter.poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.state = AcquireState::Done;
                Poll::Ready(Ok(self.bulkhead.permit()))
            }
            AcquireState::Ready(_) => {
                let answer = self.answer().unwrap_or_else(|| Err(self.bulkhead.full()));
                Poll::Ready(answer)
            }
            AcquireState::Done => Poll::Ready(Err(self.bulkhead.full())),
        }
    }
}

impl Drop for Acquire {
    fn drop(&mut self) {
        if let AcquireState::Waiting(waiter) = &self.state {
            self.bulkhead.shared.semaphore.leave(waiter);
        }
    }
}

impl fmt::Debug for Acquire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acquire")
            .field("waiting", &self.is_waiting())
            .finish_non_exhaustive()
    }
}
