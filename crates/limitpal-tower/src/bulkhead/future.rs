use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use limitpal_core::concurrency::Acquire;
use limitpal_core::{Bulkhead, BulkheadFull, BulkheadPermit, Classify};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower::{BoxError, Service};

pin_project! {
    /// A wait for a bulkhead slot, bounded by a timer (`max_wait`, or a deadline).
    #[project = WaitProj]
    pub(crate) struct Wait {
        acquire: Acquire,
        #[pin]
        timer: Sleep,
    }
}

/// A wait for a slot, boxed: waiting is the slow path, and the box keeps every other
/// request's future small.
pub(crate) type SlotWait = Pin<Box<Wait>>;

/// Boxes a wait for a slot.
pub(crate) fn wait(acquire: Acquire, timer: Sleep) -> SlotWait {
    Box::pin(Wait { acquire, timer })
}

/// How a wait for a slot ended.
pub(crate) enum Waited {
    /// The slot.
    Slot(BulkheadPermit),
    /// Refused at once (no room), or the timer fired first.
    Full(Option<BulkheadFull>),
}

/// Polls a wait: the slot, a refusal, or (timer fired) `Full(None)`.
pub(crate) fn poll_wait(wait: &mut SlotWait, cx: &mut Context<'_>) -> Poll<Waited> {
    let WaitProj { acquire, timer } = wait.as_mut().project();
    match Pin::new(acquire).poll(cx) {
        Poll::Ready(Ok(slot)) => Poll::Ready(Waited::Slot(slot)),
        Poll::Ready(Err(full)) => Poll::Ready(Waited::Full(Some(full))),
        Poll::Pending => timer.poll(cx).map(|()| Waited::Full(None)),
    }
}

pin_project! {
    /// The response future of [`BulkheadService`](super::BulkheadService): [a wait for a
    /// slot →] the call holding its slot, or an immediate [`BulkheadFull`]. No allocation
    /// unless it waits.
    pub struct ResponseFuture<S, Req, Cl>
    where
        S: Service<Req>,
    {
        #[pin]
        kind: Kind<S, Req, Cl>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, Req, Cl>
    where
        S: Service<Req>,
    {
        Called {
            #[pin]
            future: S::Future,
            permit: Option<BulkheadPermit>,
            classifier: Cl,
        },
        Waiting {
            wait: SlotWait,
            service: S,
            request: Option<Req>,
            classifier: Cl,
            bulkhead: Bulkhead,
        },
        Rejected {
            full: Option<BulkheadFull>,
        },
    }
}

impl<S: Service<Req>, Req, Cl> ResponseFuture<S, Req, Cl> {
    pub(crate) fn called(future: S::Future, permit: BulkheadPermit, classifier: Cl) -> Self {
        Self {
            kind: Kind::Called {
                future,
                permit: Some(permit),
                classifier,
            },
        }
    }

    pub(crate) fn waiting(
        wait: SlotWait,
        service: S,
        request: Req,
        classifier: Cl,
        bulkhead: Bulkhead,
    ) -> Self {
        Self {
            kind: Kind::Waiting {
                wait,
                service,
                request: Some(request),
                classifier,
                bulkhead,
            },
        }
    }

    pub(crate) fn rejected(full: BulkheadFull) -> Self {
        Self {
            kind: Kind::Rejected { full: Some(full) },
        }
    }
}

impl<S, Req, Cl> Future for ResponseFuture<S, Req, Cl>
where
    S: Service<Req>,
    S::Error: Into<BoxError> + 'static,
    Cl: Classify<S::Response, S::Error>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project().kind.project() {
                KindProj::Called {
                    future,
                    permit,
                    classifier,
                } => {
                    let result = ready!(future.poll(cx));
                    if let Some(permit) = permit.take() {
                        crate::error::settle(permit, classifier, &result);
                    }
                    return Poll::Ready(result.map_err(Into::into));
                }
                KindProj::Waiting {
                    wait,
                    service,
                    request,
                    classifier,
                    bulkhead,
                } => match ready!(poll_wait(wait, cx)) {
                    Waited::Slot(permit) => {
                        let Some(request) = request.take() else {
                            return Poll::Ready(Err("polled after completion".into()));
                        };
                        Kind::Called {
                            future: service.call(request),
                            permit: Some(permit),
                            classifier: classifier.clone(),
                        }
                    }
                    Waited::Full(full) => {
                        let full = full.unwrap_or_else(|| bulkhead.refuse());
                        return Poll::Ready(Err(Box::new(full)));
                    }
                },
                KindProj::Rejected { full } => {
                    return Poll::Ready(Err(full
                        .take()
                        .map_or_else(|| "polled after completion".into(), Into::into)));
                }
            };
            self.as_mut().project().kind.set(next);
        }
    }
}

impl<S: Service<Req>, Req, Cl> std::fmt::Debug for ResponseFuture<S, Req, Cl> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
