use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use limitpal_core::Classify;
use limitpal_core::pipeline::{Attempt, Permits, Run, Settled};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower::{BoxError, Service};

use super::admission::{LimitFuture, Pending, admit, take_slot};
use super::layer::Shared;
use crate::bulkhead::future::{SlotWait, Waited, poll_wait};
use crate::error::boxed;
use crate::limit::WaitForQuota;
use crate::retry::ReplayRequest;

pin_project! {
    /// The response future of [`ResilienceService`](super::ResilienceService): one state
    /// machine of [wait for a slot →] call → (sleep → ready → admit [→ wait] → call)*, no
    /// allocation of its own.
    pub struct ResponseFuture<S, Req, K, Cl, R>
    where
        S: Service<Req>,
    {
        #[pin]
        kind: Kind<S, Req, K, Cl, R>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, Req, K, Cl, R>
    where
        S: Service<Req>,
    {
        Failed { error: Option<BoxError> },
        Running { #[pin] running: Running<S, Req, K, Cl, R> },
    }
}

pin_project! {
    struct Running<S, Req, K, Cl, R>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S::Future>,
        permits: Permits,
        // the ready service, kept when retries are configured or a slot is awaited
        service: Option<S>,
        // the request for the next attempt (or, while a slot is awaited, for this one)
        request: Option<Req>,
        run: Run,
        key: Option<K>,
        shared: Arc<Shared<K, Cl>>,
        replay: R,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // boxed: waiting is the slow path, and keeps the future small for the rest
        Limiting { answer: LimitFuture },
        // waiting for a reserved slot, holding no breaker permit
        Waiting { #[pin] wait: WaitForQuota },
        Queued { wait: SlotWait },
        // admitted, slot taken: call now
        Starting,
        Calling { #[pin] future: F, #[pin] timer: Option<Sleep> },
        Sleeping { #[pin] sleep: Sleep },
        Readying,
    }
}

impl<S: Service<Req>, Req, K, Cl, R> ResponseFuture<S, Req, K, Cl, R> {
    pub(crate) fn failed(error: BoxError) -> Self {
        Self {
            kind: Kind::Failed { error: Some(error) },
        }
    }

    /// The first attempt's call is made: poll it.
    pub(crate) fn running(
        future: S::Future,
        timer: Option<Sleep>,
        parts: Parts<S, Req, K, Cl, R>,
    ) -> Self {
        Self::start(State::Calling { future, timer }, parts)
    }

    /// The first attempt waits for a remote limiter, for quota or for a bulkhead slot before
    /// it calls; `parts` holds its service and request.
    pub(crate) fn admitting(pending: Pending, parts: Parts<S, Req, K, Cl, R>) -> Self {
        let state = match pending {
            Pending::Limit(answer) => State::Limiting { answer },
            Pending::Quota(wait) => State::Waiting { wait },
            Pending::Slot(wait) => State::Queued { wait },
        };
        Self::start(state, parts)
    }

    fn start(state: State<S::Future>, parts: Parts<S, Req, K, Cl, R>) -> Self {
        let Parts {
            permits,
            service,
            request,
            run,
            key,
            shared,
            replay,
        } = parts;
        Self {
            kind: Kind::Running {
                running: Running {
                    state,
                    permits,
                    service,
                    request,
                    run,
                    key,
                    shared,
                    replay,
                },
            },
        }
    }
}

/// What a request carries from one attempt to the next, as `call` hands it to the future.
pub(crate) struct Parts<S, Req, K, Cl, R> {
    /// The current attempt's breaker permit and bulkhead slot.
    pub(crate) permits: Permits,
    /// The ready service, kept when retries are configured or the first call must wait.
    pub(crate) service: Option<S>,
    /// The request for the next attempt (or, while the first waits, for this one).
    pub(crate) request: Option<Req>,
    pub(crate) run: Run,
    pub(crate) key: Option<K>,
    pub(crate) shared: Arc<Shared<K, Cl>>,
    pub(crate) replay: R,
}

impl<S, Req, K, Cl, R> Future for ResponseFuture<S, Req, K, Cl, R>
where
    S: Service<Req>,
    S::Error: Into<BoxError> + 'static,
    Cl: Classify<S::Response, S::Error>,
    R: ReplayRequest<Req>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Failed { error } => Poll::Ready(Err(error
                .take()
                .unwrap_or_else(|| "polled after completion".into()))),
            KindProj::Running { running } => running.poll(cx),
        }
    }
}

impl<S, Req, K, Cl, R> Running<S, Req, K, Cl, R>
where
    S: Service<Req>,
    S::Error: Into<BoxError> + 'static,
    Cl: Classify<S::Response, S::Error>,
    R: ReplayRequest<Req>,
{
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<S::Response, BoxError>> {
        let mut this = self.project();
        let pipeline = &this.shared.pipeline;
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { future, timer } => {
                    let attempt = if let Poll::Ready(result) = future.poll(cx) {
                        Attempt::Done(result)
                    } else if let Some(timer) = timer.as_pin_mut()
                        && timer.poll(cx).is_ready()
                    {
                        if pipeline.past_deadline(this.run) {
                            drop(std::mem::take(this.permits)); // cancelled: nothing recorded
                            return Poll::Ready(Err(boxed(
                                this.run.timed_out_in_call::<S::Error>(),
                            )));
                        }
                        Attempt::TimedOut
                    } else {
                        return Poll::Pending;
                    };
                    if this.service.is_none() || this.request.is_none() {
                        // nothing to retry with: settle as a pipeline without retries would
                        let result =
                            pipeline.settle_final(this.run, std::mem::take(this.permits), attempt);
                        pushback(this.shared, this.run, this.key.as_ref());
                        return Poll::Ready(finish(result));
                    }
                    let settled = pipeline.settle(this.run, std::mem::take(this.permits), attempt);
                    pushback(this.shared, this.run, this.key.as_ref());
                    match settled {
                        Settled::Retry(delay) => this.state.set(State::Sleeping {
                            sleep: tokio::time::sleep(delay),
                        }),
                        Settled::Done(result) => return Poll::Ready(result.map_err(boxed)),
                    }
                }
                StateProj::Sleeping { sleep } => {
                    ready!(sleep.poll(cx));
                    this.state.set(State::Readying);
                }
                StateProj::Readying => {
                    let Some(service) = this.service.as_mut() else {
                        return Poll::Ready(Err("retry without a service".into()));
                    };
                    if let Err(e) = ready!(service.poll_ready(cx)) {
                        return Poll::Ready(Err(e.into()));
                    }
                    let pending;
                    (*this.permits, pending) = match admit(this.shared, this.run, this.key.as_ref())
                    {
                        Ok(admitted) => admitted,
                        Err(error) => return Poll::Ready(Err(error)),
                    };
                    this.state.set(match pending {
                        Some(Pending::Limit(answer)) => State::Limiting { answer },
                        Some(Pending::Quota(wait)) => State::Waiting { wait },
                        Some(Pending::Slot(wait)) => State::Queued { wait },
                        None => State::Starting,
                    });
                }
                StateProj::Limiting { answer } => {
                    if let Err(denied) = ready!(answer.as_mut().poll(cx)) {
                        drop(std::mem::take(this.permits)); // unrecorded, as for a local denial
                        return Poll::Ready(Err(Box::new(denied)));
                    }
                    let wait = match take_slot(this.shared, this.run, this.permits) {
                        Ok(wait) => wait,
                        Err(error) => return Poll::Ready(Err(error)),
                    };
                    this.state.set(match wait {
                        Some(wait) => State::Queued { wait },
                        None => State::Starting,
                    });
                }
                StateProj::Waiting { wait } => {
                    let reservation = match ready!(wait.poll(cx)) {
                        Ok(reservation) => reservation,
                        Err(denied) => return Poll::Ready(Err(Box::new(denied))),
                    };
                    // the slot has come: the breaker is asked again before the call
                    *this.permits = match pipeline.admit::<Infallible>(this.run) {
                        Ok(permits) => permits,
                        Err(refused) => {
                            reservation.cancel();
                            return Poll::Ready(Err(boxed(refused)));
                        }
                    };
                    reservation.commit();
                    let wait = match take_slot(this.shared, this.run, this.permits) {
                        Ok(wait) => wait,
                        Err(error) => return Poll::Ready(Err(error)),
                    };
                    this.state.set(match wait {
                        Some(wait) => State::Queued { wait },
                        None => State::Starting,
                    });
                }
                StateProj::Queued { wait } => {
                    let slot = match ready!(poll_wait(wait, cx)) {
                        Waited::Slot(slot) => slot,
                        Waited::Full(Some(full)) => return Poll::Ready(Err(Box::new(full))),
                        Waited::Full(None) => {
                            // out of patience: the breaker permit goes unrecorded
                            drop(std::mem::take(this.permits));
                            if pipeline.past_deadline(this.run) {
                                let timed_out = this.run.timed_out_before_call::<S::Error>();
                                return Poll::Ready(Err(boxed(timed_out)));
                            }
                            let full = pipeline.bulkhead().map(limitpal_core::Bulkhead::refuse);
                            return Poll::Ready(Err(full.map_or_else(
                                || "slot wait without a bulkhead".into(),
                                |full| Box::new(full) as BoxError,
                            )));
                        }
                    };
                    this.permits.hold_slot(slot);
                    this.state.set(State::Starting);
                }
                StateProj::Starting => {
                    let (Some(service), Some(request)) =
                        (this.service.as_mut(), this.request.take())
                    else {
                        return Poll::Ready(Err("admitted without a request".into()));
                    };
                    if pipeline.retry_policy().is_some() {
                        *this.request = this.replay.replay(&request);
                    }
                    let future = service.call(request);
                    let timer = pipeline.attempt_limit(this.run).map(tokio::time::sleep);
                    this.state.set(State::Calling { future, timer });
                }
            }
        }
    }
}

/// Holds the key in the limiter when the settled attempt carried the upstream's pushback.
fn pushback<K, Cl>(shared: &Shared<K, Cl>, run: &mut Run, key: Option<&K>) {
    if let Some(hold) = run.take_pushback()
        && let (Some(limiter), Some(key)) = (&shared.limiter, key)
    {
        limiter.hold(key, hold);
    }
}

fn finish<T, E: Into<BoxError>>(result: Result<T, limitpal_core::Error<E>>) -> Result<T, BoxError> {
    result.map_err(boxed)
}

impl<S: Service<Req>, Req, K, Cl, R> std::fmt::Debug for ResponseFuture<S, Req, K, Cl, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
