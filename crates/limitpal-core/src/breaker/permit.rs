//! What a call holds while it runs: a [`CallPermit`] (or a pipeline's [`BreakerTicket`]),
//! resolved into the breaker that issued it, or freed unrecorded when dropped.

use std::fmt;
use std::sync::Arc;

use super::{Inner, Ticket, Verdict};
use crate::{Clock, Outcome};

/// The breaker side of a permit, with the clock type erased so `CallPermit` has none.
pub(super) trait Sink: Send + Sync {
    fn record(&self, ticket: Ticket, verdict: Verdict);
}

impl<C: Clock> Sink for Inner<C> {
    fn record(&self, ticket: Ticket, verdict: Verdict) {
        Inner::record(self, ticket, verdict);
    }
}

/// Permission to make one call; resolve it with [`success`](Self::success) or
/// [`failure`](Self::failure).
///
/// Dropped unresolved (a cancelled future, a panic), it records nothing and frees its
/// half-open probe slot: no probe slot can leak.
#[must_use = "resolve the permit with .success() or .failure(); dropping it records nothing"]
pub struct CallPermit {
    pub(super) breaker: Option<Arc<dyn Sink>>,
    pub(super) ticket: Ticket,
}

impl CallPermit {
    /// The call worked (unless slower than the breaker's `slow_call`, then it failed).
    pub fn success(mut self) {
        self.resolve(Verdict::Success);
    }

    /// The call failed.
    pub fn failure(mut self) {
        self.resolve(Verdict::Failure);
    }

    /// Records what a classifier said: `Success`, `Failure`, or nothing for `Ignore`.
    pub fn record(mut self, outcome: Outcome) {
        self.resolve(Verdict::of(outcome));
    }

    fn resolve(&mut self, verdict: Verdict) {
        if let Some(breaker) = self.breaker.take() {
            breaker.record(self.ticket, verdict);
        }
    }
}

/// A breaker's admission as a pipeline's [`Run`](crate::pipeline::Run) holds it:
/// resolved by the pipeline that issued it. Dropped unresolved, it records nothing and frees
/// its half-open probe slot, as a [`CallPermit`] does.
#[derive(Debug)]
pub struct BreakerTicket(pub(super) Admission);

#[derive(Debug)]
pub(super) enum Admission {
    /// Closed state: nothing to release on drop, so no reference to the breaker.
    Closed(Ticket),
    /// A half-open probe (or a shadow-mode waiver): a full permit.
    Permit(CallPermit),
}

impl Drop for CallPermit {
    fn drop(&mut self) {
        self.resolve(Verdict::Cancelled);
    }
}

impl fmt::Debug for CallPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallPermit")
            .field("epoch", &self.ticket.epoch)
            .field("probe", &self.ticket.probe)
            .field("resolved", &self.breaker.is_none())
            .finish()
    }
}
