use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use limitpal_core::pipeline::{Action, Attempt, Event, Run};
use limitpal_core::{Classify, Reservation, ReserveFuture};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower::{BoxError, Service};

use super::admission::{LimitFuture, Next, Pending, advance};
use super::layer::Shared;
use crate::bulkhead::future::{SlotWait, Waited, poll_wait};
use crate::clock::deadline_in;
use crate::error::boxed;
use crate::hedge::Lanes;
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
        // the primary call (`None` once it ended while hedges run) and its one timer: the
        // attempt timeout, or first the next hedge (armed per `Run::hedge_in` once the call
        // is pending), one `Sleep` either way to keep every request's future small
        Calling { #[pin] future: Option<F>, #[pin] timer: Option<Sleep>, timing: Timing },
        Sleeping { #[pin] sleep: Sleep },
        Readying,
    }
}

/// What the attempt's timer is set for.
#[derive(Debug, Clone, Copy)]
enum Timing {
    /// The attempt timeout (no timer: none).
    Timeout,
    /// The next hedge, or the attempt timeout `then` if that comes first (and after the
    /// hedge, the timer is set to `then`).
    Hedge { then: Option<Instant> },
}

/// What the attempt's timer said.
enum Fired {
    Timeout,
    Hedge,
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

    /// The first attempt's call is made: poll it, bounded by `timeout`.
    #[inline(always)]
    pub(crate) fn running(
        future: S::Future,
        timeout: Option<Duration>,
        parts: Parts<S, Req, K, Cl, R>,
    ) -> Self {
        // Built apart: a `None` timer moved in copied the whole of a `Sleep`'s bytes into
        // every request's future (5 % of a request, with a store-forwarding stall)
        let timer = match timeout {
            None => {
                return Self::start(
                    State::Calling {
                        future: Some(future),
                        timer: None,
                        timing: Timing::Timeout,
                    },
                    parts,
                );
            }
            Some(timeout) => tokio::time::sleep(timeout),
        };
        Self::start(
            State::Calling {
                future: Some(future),
                timer: Some(timer),
                timing: Timing::Timeout,
            },
            parts,
        )
    }

    /// The first attempt waits for a remote limiter, for quota or for a bulkhead slot before
    /// it calls; `parts` holds its service and request.
    pub(crate) fn admitting(pending: Pending, parts: Parts<S, Req, K, Cl, R>) -> Self {
        Self::start(pending.into(), parts)
    }

    #[inline(always)]
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
            // whether the primary call just ended (a hedge may still run)
            let mut ended = false;
            let event = match this.state.as_mut().project() {
                StateProj::Calling {
                    mut future,
                    mut timer,
                    timing,
                } => {
                    // nothing to retry with: `CalledOnce`
                    let again = this.service.is_some() && this.request.is_some();
                    if let Some(call) = future.as_mut().as_pin_mut()
                        && let Poll::Ready(result) = call.poll(cx)
                    {
                        ended = true;
                        called(again, Attempt::Done(result))
                    } else {
                        if matches!(timing, Timing::Timeout)
                            && let Some(delay) = this.run.hedge_in()
                        {
                            *timing = arm_hedge(timer.as_mut(), delay);
                        }
                        match poll_timer(timer, timing, cx) {
                            Some(Fired::Hedge) => Event::HedgeDue,
                            Some(Fired::Timeout) if future.is_some() => {
                                ended = true;
                                called(again, Attempt::TimedOut)
                            }
                            _ => match this.lanes.poll(cx) {
                                Poll::Ready(event) => event,
                                Poll::Pending => return Poll::Pending,
                            },
                        }
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
                        timing: Timing::Timeout,
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
                if ended {
                    primary_ended(this.state.as_mut());
                }
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

/// How a primary call ended, as the machine hears it: `again`, whether the request can be
/// sent again.
fn called<T, E>(again: bool, attempt: Attempt<T, E>) -> Event<T, E> {
    if again {
        Event::Called(attempt)
    } else {
        Event::CalledOnce(attempt)
    }
}

/// Sets the attempt's timer for the hedge due in `delay`, unless its timeout comes first.
fn arm_hedge(mut timer: Pin<&mut Option<Sleep>>, delay: Duration) -> Timing {
    let at = deadline_in(delay);
    if let Some(sleep) = timer.as_mut().as_pin_mut() {
        let then = sleep.deadline();
        sleep.reset(at.min(then));
        Timing::Hedge { then: Some(then) }
    } else {
        timer.set(Some(tokio::time::sleep_until(at)));
        Timing::Hedge { then: None }
    }
}

/// Polls the attempt's timer: whether the hedge is due (the timer then set to the timeout)
/// or the attempt timed out.
fn poll_timer(
    mut timer: Pin<&mut Option<Sleep>>,
    timing: &mut Timing,
    cx: &mut Context<'_>,
) -> Option<Fired> {
    let mut sleep = timer.as_mut().as_pin_mut()?;
    if sleep.as_mut().poll(cx).is_pending() {
        return None;
    }
    let Timing::Hedge { then } = *timing else {
        return Some(Fired::Timeout);
    };
    if then.is_some_and(|then| then <= sleep.deadline()) {
        return Some(Fired::Timeout); // the timeout came first
    }
    *timing = Timing::Timeout;
    match then {
        Some(then) => sleep.reset(then),
        None => timer.set(None),
    }
    Some(Fired::Hedge)
}

/// The primary call ended while its hedges run: it goes, and so does its timeout; a timer
/// set for the next hedge stays.
fn primary_ended<F>(state: Pin<&mut State<F>>) {
    let StateProj::Calling {
        mut future,
        mut timer,
        timing,
    } = state.project()
    else {
        return;
    };
    future.set(None);
    let deadline = timer.as_ref().as_pin_ref().map(|sleep| sleep.deadline());
    match *timing {
        Timing::Hedge { then } if deadline.is_some() && deadline != then => {
            *timing = Timing::Hedge { then: None };
        }
        _ => {
            timer.set(None);
            *timing = Timing::Timeout;
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
