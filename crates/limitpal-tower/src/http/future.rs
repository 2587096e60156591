use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use std::sync::Arc;

use http::{Response, StatusCode};
use limitpal_core::Quota;
use pin_project_lite::pin_project;
use tower::Service;

use super::headers::{Fields, insert_denial, insert_quota};
use crate::limit::WaitForQuota;

pin_project! {
    /// The response future of [`HttpRateLimitService`](super::HttpRateLimitService): the
    /// inner call, a wait for the request's reserved slot, or a ready 429 (or missing-key)
    /// response.
    pub struct ResponseFuture<F, RB, Svc = (), Req = ()> {
        #[pin]
        kind: Kind<F, RB, Svc, Req>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, RB, Svc, Req> {
        Called { #[pin] future: F, quota: Option<(Quota, Arc<Fields>)> },
        // over the limit, waiting for the reserved slot with the ready service
        Waiting { #[pin] wait: WaitForQuota, service: Svc, request: Option<Req>, quota: Option<(Quota, Arc<Fields>)> },
        Answered { response: Option<Response<RB>> },
    }
}

impl<F, RB: Default, Svc, Req> ResponseFuture<F, RB, Svc, Req> {
    pub(crate) fn waiting(
        wait: WaitForQuota,
        service: Svc,
        request: Req,
        quota: Option<Quota>,
        fields: &Arc<Fields>,
    ) -> Self {
        let quota = quota.map(|q| (q, Arc::clone(fields)));
        Self {
            kind: Kind::Waiting {
                wait,
                service,
                request: Some(request),
                quota,
            },
        }
    }

    pub(crate) fn called(future: F, quota: Option<Quota>, fields: &Arc<Fields>) -> Self {
        // an `Arc` clone only when the fields are wanted: the plain 200 path stays allocation-free
        let quota = quota.map(|q| (q, Arc::clone(fields)));
        Self {
            kind: Kind::Called { future, quota },
        }
    }

    pub(crate) fn status(status: StatusCode) -> Self {
        let mut response = Response::new(RB::default());
        *response.status_mut() = status;
        Self {
            kind: Kind::Answered {
                response: Some(response),
            },
        }
    }

    pub(crate) fn too_many(retry_after: Duration, quota: &Quota, fields: &Fields) -> Self {
        let mut response = Response::new(RB::default());
        *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        insert_denial(response.headers_mut(), retry_after, quota, fields);
        Self {
            kind: Kind::Answered {
                response: Some(response),
            },
        }
    }
}

impl<F, RB, E, Svc, Req> Future for ResponseFuture<F, RB, Svc, Req>
where
    F: Future<Output = Result<Response<RB>, E>>,
    RB: Default,
    Svc: Service<Req, Future = F>,
{
    type Output = Result<Response<RB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut kind = self.project().kind;
        if let KindProj::Waiting {
            wait,
            service,
            request,
            quota,
        } = kind.as_mut().project()
        {
            let reservation = ready!(wait.poll(cx));
            let quota = quota.take();
            let next = match (reservation, request.take()) {
                (Ok(reservation), Some(request)) => {
                    reservation.commit();
                    // `service` was ready when it was moved here from `call`.
                    Kind::Called {
                        future: service.call(request),
                        quota,
                    }
                }
                _ => Kind::Answered {
                    response: None, // cannot happen: a pending wait always ends in a slot
                },
            };
            kind.set(next);
        }
        match kind.project() {
            KindProj::Waiting { .. } => Poll::Pending,
            KindProj::Called { future, quota } => {
                let mut response = ready!(future.poll(cx))?;
                if let Some((quota, fields)) = quota.take() {
                    insert_quota(response.headers_mut(), &quota, &fields);
                }
                Poll::Ready(Ok(response))
            }
            KindProj::Answered { response } => {
                // polled again after completion: answer with an empty 500 rather than panic
                Poll::Ready(Ok(response.take().unwrap_or_else(|| {
                    let mut r = Response::new(RB::default());
                    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                    r
                })))
            }
        }
    }
}

impl<F, RB, Svc, Req> std::fmt::Debug for ResponseFuture<F, RB, Svc, Req> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
