use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use limitpal_core::pipeline::{Action, Event, Run};
use limitpal_core::{Classify, Reservation, ReserveFuture};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower::{BoxError, Service};

use super::admission::{LimitFuture, Next, Pending, advance};
use super::layer::Shared;
use crate::bulkhead::future::{SlotWait, Waited, poll_wait};
use crate::error::boxed;
use crate::hedge::{Lanes, poll_attempt};
use crate::retry::ReplayRequest;

pin_project! {
    /// The response future of [`ResilienceService`](super::ResilienceService): performs
    /// what the pipeline's step machine asks ([wait for the limiter, quota or a slot →]
    /// call → (sleep → ready → [wait →] call)*), no allocation of its own.
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
        Finished { result: Option<Result<S::Response, BoxError>> },
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
        // the ready service, kept when retries are configured or a slot is awaited
        service: Option<S>,
        // the request for the next attempt (or, while a slot is awaited, for this one)
        request: Option<Req>,
        run: Run,
        key: Option<K>,
        shared: Arc<Shared<K, Cl>>,
        replay: R,
        // the attempt's hedges in flight (nothing allocated until one starts)
        lanes: Lanes<S::Future>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // boxed: waiting for a remote limiter is the slow path, and keeps the future small
        Limiting { answer: LimitFuture },
        Reserving { answer: ReserveFuture },
        // waiting for a reserved slot, holding no breaker permit
        Waiting { reservation: Option<Reservation>, #[pin] sleep: Sleep },
        Queued { wait: SlotWait },
        // admitted, slot taken: call now
        Starting { timeout: Option<Duration> },
        // the primary call (`None` once it ended while hedges run), its timeout, and the
        // timer of the next hedge (armed per `Run::hedge_in` once the call is pending)
        Calling { #[pin] future: Option<F>, #[pin] timer: Option<Sleep>, #[pin] hedge: Option<Sleep> },
        Sleeping { #[pin] sleep: Sleep },
        Readying,
    }
}

impl<F> From<Pending> for State<F> {
    fn from(pending: Pending) -> Self {
        match pending {
            Pending::Limit(answer) => Self::Limiting { answer },
            Pending::Reserve(answer) => Self::Reserving { answer },
            Pending::Quota(reservation, sleep) => Self::Waiting {
                reservation: Some(reservation),
                sleep,
            },
            Pending::Slot(wait) => Self::Queued { wait },
            Pending::Retry(sleep) => Self::Sleeping { sleep },
        }
    }
}

impl<S: Service<Req>, Req, K, Cl, R> ResponseFuture<S, Req, K, Cl, R> {
    pub(crate) fn failed(error: BoxError) -> Self {
        Self::finished(Err(error))
    }

    /// The run ended before a call was made (refused at admission).
    pub(crate) fn finished(result: Result<S::Response, BoxError>) -> Self {
        Self {
            kind: Kind::Finished {
                result: Some(result),
            },
        }
    }

    /// The first attempt's call is made: poll it.
    pub(crate) fn running(
        future: S::Future,
        timer: Option<Sleep>,
        parts: Parts<S, Req, K, Cl, R>,
    ) -> Self {
        Self::start(
            State::Calling {
                future: Some(future),
                timer,
                hedge: None,
            },
            parts,
        )
    }

    /// The first attempt waits for a remote limiter, for quota or for a bulkhead slot before
    /// it calls; `parts` holds its service and request.
    pub(crate) fn admitting(pending: Pending, parts: Parts<S, Req, K, Cl, R>) -> Self {
        Self::start(pending.into(), parts)
    }

    fn start(state: State<S::Future>, parts: Parts<S, Req, K, Cl, R>) -> Self {
        let Parts {
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
                    service,
                    request,
                    run,
                    key,
                    shared,
                    replay,
                    lanes: Lanes::default(),
                },
            },
        }
    }
}

/// What a request carries from one attempt to the next, as `call` hands it to the future.
pub(crate) struct Parts<S, Req, K, Cl, R> {
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
            KindProj::Finished { result } => Poll::Ready(
                result
                    .take()
                    .unwrap_or_else(|| Err("polled after completion".into())),
            ),
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
        loop {
            let event = match this.state.as_mut().project() {
                StateProj::Calling {
                    mut future,
                    mut timer,
                    mut hedge,
                } => {
                    let attempt = future
                        .as_mut()
                        .as_pin_mut()
                        .and_then(|call| poll_attempt(call, timer.as_mut().as_pin_mut(), cx));
                    if let Some(attempt) = attempt {
                        future.set(None);
                        timer.set(None);
                        if this.service.is_none() || this.request.is_none() {
                            // nothing to retry with
                            Event::CalledOnce(attempt)
                        } else {
                            Event::Called(attempt)
                        }
                    } else if let Poll::Ready(event) = this.lanes.poll(cx) {
                        event
                    } else {
                        if hedge.is_none()
                            && let Some(delay) = this.run.hedge_in()
                        {
                            hedge.set(Some(tokio::time::sleep(delay)));
                        }
                        let due = hedge
                            .as_mut()
                            .as_pin_mut()
                            .is_some_and(|due| due.poll(cx).is_ready());
                        if !due {
                            return Poll::Pending;
                        }
                        hedge.set(None);
                        Event::HedgeDue
                    }
                }
                StateProj::Sleeping { sleep } => {
                    ready!(sleep.poll(cx));
                    this.state.set(State::Readying);
                    continue;
                }
                StateProj::Readying => {
                    let Some(service) = this.service.as_mut() else {
                        return Poll::Ready(Err("retry without a service".into()));
                    };
                    if let Err(e) = ready!(service.poll_ready(cx)) {
                        return Poll::Ready(Err(e.into()));
                    }
                    Event::Slept
                }
                StateProj::Limiting { answer } => Event::Limit(ready!(answer.as_mut().poll(cx))),
                StateProj::Reserving { answer } => {
                    Event::Reserved(ready!(answer.as_mut().poll(cx)))
                }
                StateProj::Waiting { reservation, sleep } => {
                    ready!(sleep.poll(cx));
                    let Some(reservation) = reservation.take() else {
                        return Poll::Ready(Err("polled after completion".into()));
                    };
                    Event::QuotaCame(reservation)
                }
                StateProj::Queued { wait } => match ready!(poll_wait(wait, cx)) {
                    Waited::Slot(slot) => Event::Slot(Ok(slot)),
                    Waited::Full(Some(full)) => Event::Slot(Err(full)),
                    Waited::Full(None) => Event::SlotTimedOut,
                },
                StateProj::Starting { timeout } => {
                    let timeout = *timeout;
                    let (Some(service), Some(request)) =
                        (this.service.as_mut(), this.request.take())
                    else {
                        return Poll::Ready(Err("admitted without a request".into()));
                    };
                    if this.shared.pipeline.retry_policy().is_some()
                        || this.run.hedge_in().is_some()
                    {
                        *this.request = this.replay.replay(&request);
                    }
                    let future = service.call(request);
                    let timer = timeout.map(tokio::time::sleep);
                    this.state.set(State::Calling {
                        future: Some(future),
                        timer,
                        hedge: None,
                    });
                    continue;
                }
            };
            let mut action = this.shared.pipeline.step(this.run, event);
            pushback(this.shared, this.run, this.key.as_ref());
            let action = loop {
                action = match action {
                    // the common end of a request, answered without the detour
                    Action::Done(result) => {
                        this.lanes.clear(); // the losers, dropped at once
                        return Poll::Ready(result.map_err(boxed));
                    }
                    Action::CheckHedge => {
                        let limiter = this.shared.limiter.as_ref();
                        match this.lanes.check(limiter, this.key.as_ref()) {
                            Some(answer) => this.shared.pipeline.step(this.run, answer),
                            None => Action::Await,
                        }
                    }
                    Action::Hedge { lane, timeout } => {
                        match hedge_call(this.service, this.request.as_ref(), this.replay, cx) {
                            Some(call) => {
                                this.lanes.start(lane, call, timeout);
                                Action::Await
                            }
                            None => this
                                .shared
                                .pipeline
                                .step(this.run, Event::HedgeDropped { lane }),
                        }
                    }
                    action => break action,
                };
                pushback(this.shared, this.run, this.key.as_ref());
            };
            if matches!(action, Action::Await) {
                continue; // the calls in flight (and the hedge timer) are polled again
            }
            this.lanes.clear();
            match advance(this.shared, this.run, this.key.as_ref(), action) {
                Next::Call(timeout) => this.state.set(State::Starting { timeout }),
                Next::Wait(pending) => this.state.set(pending.into()),
                Next::Done(result) => return Poll::Ready(result.map_err(boxed)),
                Next::Lanes(_) => return Poll::Ready(Err("a hedge out of a call".into())),
            }
        }
    }
}

/// A hedge's call: a copy of the request to a service ready now (a hedge does not wait
/// for readiness: it is needed now or not at all).
fn hedge_call<S, Req, R>(
    service: &mut Option<S>,
    request: Option<&Req>,
    replay: &R,
    cx: &mut Context<'_>,
) -> Option<S::Future>
where
    S: Service<Req>,
    R: ReplayRequest<Req>,
{
    let service = service.as_mut()?;
    let copy = replay.replay(request?)?;
    match service.poll_ready(cx) {
        Poll::Ready(Ok(())) => Some(service.call(copy)),
        _ => None,
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

impl<S: Service<Req>, Req, K, Cl, R> std::fmt::Debug for ResponseFuture<S, Req, K, Cl, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
