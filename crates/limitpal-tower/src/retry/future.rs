use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use limitpal_core::{
    Classify, Clock, OwnRejection, RetryBudget, RetrySchedule, RetryState, RetryStep,
};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower::{BoxError, Service};

use super::{ReplayRequest, RetryExhausted};
use crate::TokioClock;

pin_project! {
    /// The response future of [`RetryService`](super::RetryService): a state machine of
    /// call → (sleep → ready → call)*, with no allocation of its own.
    pub struct ResponseFuture<S, Req, Cl, R>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S::Future>,
        service: S,
        request: Option<Req>,
        retry: RetryState,
        schedule: RetrySchedule,
        classifier: Cl,
        budget: Option<RetryBudget>,
        replay: R,
        clock: TokioClock,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Calling { #[pin] future: F },
        Sleeping { #[pin] sleep: Sleep },
        Readying,
    }
}

impl<S, Req, Cl, R> ResponseFuture<S, Req, Cl, R>
where
    S: Service<Req>,
{
    #[allow(clippy::too_many_arguments)] // one constructor, called from one place
    pub(crate) fn new(
        future: S::Future,
        service: S,
        request: Option<Req>,
        retry: RetryState,
        schedule: RetrySchedule,
        classifier: Cl,
        budget: Option<RetryBudget>,
        replay: R,
        clock: TokioClock,
    ) -> Self {
        Self {
            state: State::Calling { future },
            service,
            request,
            retry,
            schedule,
            classifier,
            budget,
            replay,
            clock,
        }
    }
}

/// What to do with a finished attempt.
enum Verdict {
    Return,
    Retry {
        retry_after: Option<std::time::Duration>,
    },
}

fn judge<T, E: 'static, Cl: Classify<T, E>>(classifier: &Cl, result: &Result<T, E>) -> Verdict {
    if let Err(e) = result {
        match OwnRejection::find(e) {
            Some(OwnRejection::RateLimited(wait)) => {
                return Verdict::Retry {
                    retry_after: Some(wait),
                };
            }
            Some(OwnRejection::CircuitOpen) => return Verdict::Return,
            None => {}
        }
    }
    let verdict = classifier.verdict(result.as_ref());
    if verdict.retry {
        Verdict::Retry {
            retry_after: verdict.retry_after,
        }
    } else {
        Verdict::Return
    }
}

impl<S, Req, Cl, R> Future for ResponseFuture<S, Req, Cl, R>
where
    S: Service<Req>,
    S::Error: Into<BoxError> + 'static,
    Cl: Classify<S::Response, S::Error>,
    R: ReplayRequest<Req>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { future } => {
                    let result = ready!(future.poll(cx));
                    let Verdict::Retry { retry_after } = judge(&*this.classifier, &result) else {
                        return Poll::Ready(result.map_err(Into::into));
                    };
                    if this.request.is_none() {
                        // the request cannot be replayed: this outcome is final
                        return Poll::Ready(result.map_err(Into::into));
                    }
                    let step = this.retry.after_failure(
                        this.schedule,
                        retry_after,
                        this.budget.as_ref(),
                        this.clock.now(),
                        None,
                    );
                    match step {
                        RetryStep::Retry(delay) => {
                            this.state.set(State::Sleeping {
                                sleep: tokio::time::sleep(delay),
                            });
                        }
                        RetryStep::GiveUp => return Poll::Ready(result.map_err(Into::into)),
                        RetryStep::Exhausted => {
                            let attempts = this.retry.attempts();
                            return Poll::Ready(result.map_err(|e| {
                                Box::new(RetryExhausted::new(attempts, e.into())) as BoxError
                            }));
                        }
                    }
                }
                StateProj::Sleeping { sleep } => {
                    ready!(sleep.poll(cx));
                    this.state.set(State::Readying);
                }
                StateProj::Readying => {
                    if let Err(e) = ready!(this.service.poll_ready(cx)) {
                        return Poll::Ready(Err(e.into()));
                    }
                    let Some(request) = this.request.take() else {
                        return Poll::Ready(Err("retry polled after completion".into()));
                    };
                    *this.request = this.replay.replay(&request);
                    let future = this.service.call(request);
                    this.state.set(State::Calling { future });
                }
            }
        }
    }
}

impl<S, Req, Cl, R> std::fmt::Debug for ResponseFuture<S, Req, Cl, R>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("attempts", &self.retry.attempts())
            .finish_non_exhaustive()
    }
}
