use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use limitpal_core::RateLimited;
use pin_project_lite::pin_project;
use tower::{BoxError, Service};

use super::WaitForQuota;
use crate::KeyMissing;

pin_project! {
    /// The response future of [`RateLimitService`](super::RateLimitService).
    pub struct ResponseFuture<S, Req, C>
    where
        S: Service<Req>,
    {
        #[pin]
        kind: Kind<S, Req, S::Future, C>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, Req, F, C> {
        Called { #[pin] future: F },
        Checking { #[pin] check: Admission<C>, service: S, request: Option<Req> },
        Rejected { error: Option<BoxError> },
    }
}

pin_project! {
    /// What a request waits for before its call: a remote limiter's answer, or its reserved
    /// slot (committed once it has come).
    #[project = AdmissionProj]
    enum Admission<C> {
        Check { #[pin] check: C },
        Wait { #[pin] wait: WaitForQuota },
    }
}

impl<C: Future<Output = Result<(), RateLimited>>> Future for Admission<C> {
    type Output = Result<(), RateLimited>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AdmissionProj::Check { check } => check.poll(cx),
            AdmissionProj::Wait { wait } => {
                Poll::Ready(ready!(wait.poll(cx)).map(limitpal_core::Reservation::commit))
            }
        }
    }
}

impl<S: Service<Req>, Req, C> ResponseFuture<S, Req, C> {
    pub(crate) fn called(future: S::Future) -> Self {
        Self {
            kind: Kind::Called { future },
        }
    }

    pub(crate) fn rejected(denied: RateLimited) -> Self {
        Self {
            kind: Kind::Rejected {
                error: Some(Box::new(denied)),
            },
        }
    }

    pub(crate) fn key_missing() -> Self {
        Self {
            kind: Kind::Rejected {
                error: Some(Box::new(KeyMissing)),
            },
        }
    }

    pub(crate) fn checking(check: C, service: S, request: Req) -> Self {
        Self {
            kind: Kind::Checking {
                check: Admission::Check { check },
                service,
                request: Some(request),
            },
        }
    }

    pub(crate) fn waiting(wait: WaitForQuota, service: S, request: Req) -> Self {
        Self {
            kind: Kind::Checking {
                check: Admission::Wait { wait },
                service,
                request: Some(request),
            },
        }
    }
}

impl<S, Req, C> Future for ResponseFuture<S, Req, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Future<Output = Result<(), RateLimited>>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut kind = self.project().kind;
        loop {
            match kind.as_mut().project() {
                KindProj::Called { future } => {
                    return future.poll(cx).map_err(Into::into);
                }
                KindProj::Rejected { error } => {
                    return Poll::Ready(Err(error
                        .take()
                        .unwrap_or_else(|| "polled after completion".into())));
                }
                KindProj::Checking {
                    check,
                    service,
                    request,
                } => {
                    if let Err(denied) = ready!(check.poll(cx)) {
                        return Poll::Ready(Err(Box::new(denied)));
                    }
                    let Some(request) = request.take() else {
                        return Poll::Ready(Err("polled after completion".into()));
                    };
                    // `service` was ready when it was moved here from `call`.
                    let future = service.call(request);
                    kind.set(Kind::Called { future });
                }
            }
        }
    }
}

impl<S: Service<Req>, Req, C> std::fmt::Debug for ResponseFuture<S, Req, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
