//! The layer's side of the pipeline's step machine: performs the actions that need no
//! waiting (a local limiter's answer), and turns the others into what the response future
//! waits for. `ResilienceService::call` and `ResponseFuture` both go through [`advance`].

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use limitpal_core::pipeline::{Action, Event, Run};
use limitpal_core::{
    Classify, Error, LimitCheck, RateLimited, Reservation, Reserve, ReserveFuture,
};
use tokio::time::Sleep;

use super::layer::Shared;
use crate::bulkhead::future::{SlotWait, wait};

/// What the run waits for before its next event.
pub(crate) enum Pending {
    /// A remote limiter's answer to a check.
    Limit(LimitFuture),
    /// A remote limiter's answer to a reservation.
    Reserve(ReserveFuture),
    /// A reserved slot's time, holding no breaker permit.
    Quota(Reservation, Sleep),
    /// A place in the bulkhead's queue.
    Slot(SlotWait),
    /// The backoff before a retry.
    Retry(Sleep),
}

/// A remote limiter's answer.
pub(crate) type LimitFuture = Pin<Box<dyn Future<Output = Result<(), RateLimited>> + Send>>;

/// Where the run stands after [`advance`].
pub(crate) enum Next<T, E> {
    /// Call the service now, bounded by this timeout.
    Call(Option<Duration>),
    /// Wait for this, then report what came.
    Wait(Pending),
    /// The run is over.
    Done(Result<T, Error<E>>),
    /// A hedging action, for the calls in flight (only while they run).
    Lanes(Action<T, E>),
}

/// Performs `action` and those that follow it while none needs waiting.
#[inline(always)]
pub(crate) fn advance<K, Cl, T, E>(
    shared: &Shared<K, Cl>,
    run: &mut Run,
    key: Option<&K>,
    mut action: Action<T, E>,
) -> Next<T, E>
where
    Cl: Classify<T, E>,
    E: 'static,
{
    loop {
        action = match action {
            Action::CheckLimit { max_wait } => {
                let event = match (&shared.limiter, key, max_wait) {
                    // a run without a limiter and a key is never asked to check one
                    (None, _, _) | (_, None, _) => Event::Limit(Ok(())),
                    (Some(limiter), Some(key), None) => match limiter.check(key) {
                        LimitCheck::Now(answer) => Event::Limit(answer),
                        LimitCheck::Later(answer) => return Next::Wait(Pending::Limit(answer)),
                    },
                    (Some(limiter), Some(key), Some(max_wait)) => {
                        match limiter.reserve(key, max_wait) {
                            Reserve::Now(answer) => Event::Reserved(answer),
                            Reserve::Later(answer) => {
                                return Next::Wait(Pending::Reserve(answer));
                            }
                        }
                    }
                };
                shared.pipeline.step(run, event)
            }
            Action::WaitQuota(reservation) => {
                let sleep = tokio::time::sleep(reservation.delay());
                return Next::Wait(Pending::Quota(reservation, sleep));
            }
            Action::TakeSlot { acquire, max_wait } => {
                let timer = tokio::time::sleep(max_wait);
                return Next::Wait(Pending::Slot(wait(acquire, timer)));
            }
            Action::Call { timeout } => return Next::Call(timeout),
            Action::Sleep(delay) => return Next::Wait(Pending::Retry(tokio::time::sleep(delay))),
            Action::Done(result) => return Next::Done(result),
            action @ (Action::CheckHedge | Action::Hedge { .. } | Action::Await) => {
                return Next::Lanes(action);
            }
        };
    }
}
