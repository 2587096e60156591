//! Steps 1–4 of an attempt (deadline, breaker, limiter, bulkhead) for the layer: what
//! `ResilienceService::call` does before the first attempt and `ResponseFuture` before each
//! retry, in one place.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;

use limitpal_core::pipeline::{Permits, Run};
use limitpal_core::{LimitCheck, RateLimited};
use tower::BoxError;

use super::layer::Shared;
use crate::bulkhead::future::{SlotWait, wait};
use crate::error::boxed;
use crate::limit::WaitForQuota;

/// What admission left to wait for before the call.
pub(crate) enum Pending {
    /// A remote limiter's answer; the slot is taken after it.
    Limit(LimitFuture),
    /// A reserved slot of the limiter; the breaker is asked again when it comes.
    Quota(WaitForQuota),
    /// A place in the bulkhead's queue.
    Slot(SlotWait),
}

/// A remote limiter's answer.
pub(crate) type LimitFuture = Pin<Box<dyn Future<Output = Result<(), RateLimited>> + Send>>;

/// Steps 1–4 of an attempt: deadline, breaker, limiter, bulkhead. `Ok` carries the permits
/// and what is left to wait for, if anything: a remote limiter's answer, or a place in the
/// bulkhead's queue (bounded by its `max_wait` cut to the deadline).
#[inline]
pub(crate) fn admit<K, Cl>(
    shared: &Shared<K, Cl>,
    run: &Run,
    key: Option<&K>,
) -> Result<(Permits, Option<Pending>), BoxError> {
    let mut permits = shared
        .pipeline
        .admit::<Infallible>(run)
        .map_err(boxed::<Infallible>)?;
    if shared.pipeline.charges(run)
        && let (Some(limiter), Some(key)) = (&shared.limiter, key)
    {
        match shared.pipeline.limit_wait(run) {
            None => match limiter.check(key) {
                LimitCheck::Now(Ok(())) => {}
                LimitCheck::Now(Err(denied)) => {
                    drop(permits); // released unrecorded: the breaker learns nothing from our own denial
                    return Err(Box::new(denied));
                }
                LimitCheck::Later(answer) => return Ok((permits, Some(Pending::Limit(answer)))),
            },
            Some(max_wait) => {
                let mut wait = WaitForQuota::new(limiter.reserve(key, max_wait));
                match wait.now() {
                    Some(Ok(reservation)) => reservation.commit(),
                    Some(Err(denied)) => {
                        drop(permits);
                        return Err(Box::new(denied));
                    }
                    None => {
                        drop(permits); // a wait holds no half-open probe
                        return Ok((Permits::default(), Some(Pending::Quota(wait))));
                    }
                }
            }
        }
    }
    let wait = take_slot(shared, run, &mut permits)?;
    Ok((permits, wait.map(Pending::Slot)))
}

/// Step 4: a bulkhead slot into `permits`, or the wait for one. A refusal drops nothing
/// itself: the caller's permits go unrecorded with it.
#[inline]
pub(crate) fn take_slot<K, Cl>(
    shared: &Shared<K, Cl>,
    run: &Run,
    permits: &mut Permits,
) -> Result<Option<SlotWait>, BoxError> {
    let Some(bulkhead) = shared.pipeline.bulkhead() else {
        return Ok(None);
    };
    if let Ok(slot) = bulkhead.try_acquire() {
        permits.hold_slot(slot);
        return Ok(None);
    }
    let mut acquire = bulkhead.acquire();
    match acquire.answer() {
        Some(Ok(slot)) => {
            permits.hold_slot(slot);
            Ok(None)
        }
        Some(Err(full)) => Err(Box::new(full)),
        None => {
            let timer = tokio::time::sleep(shared.pipeline.slot_wait(run));
            Ok(Some(wait(acquire, timer)))
        }
    }
}
