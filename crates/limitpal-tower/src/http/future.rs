use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{HeaderValue, Response, StatusCode};
use limitpal_core::Quota;
use pin_project_lite::pin_project;

use super::headers::{insert_denial, insert_quota};

pin_project! {
    /// The response future of [`HttpRateLimitService`](super::HttpRateLimitService): the
    /// inner call, or a ready 429 (or missing-key) response.
    pub struct ResponseFuture<F, RB> {
        #[pin]
        kind: Kind<F, RB>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, RB> {
        Called { #[pin] future: F, quota: Option<Quota> },
        Answered { response: Option<Response<RB>> },
    }
}

impl<F, RB: Default> ResponseFuture<F, RB> {
    pub(crate) fn called(future: F, quota: Option<Quota>) -> Self {
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

    pub(crate) fn too_many(retry_after: Duration, quota: &Quota, policy: &HeaderValue) -> Self {
        let mut response = Response::new(RB::default());
        *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        insert_denial(response.headers_mut(), retry_after, quota, policy);
        Self {
            kind: Kind::Answered {
                response: Some(response),
            },
        }
    }
}

impl<F, RB, E> Future for ResponseFuture<F, RB>
where
    F: Future<Output = Result<Response<RB>, E>>,
    RB: Default,
{
    type Output = Result<Response<RB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called { future, quota } => {
                let mut response = ready!(future.poll(cx))?;
                if let Some(quota) = quota.take() {
                    insert_quota(response.headers_mut(), &quota);
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

impl<F, RB> std::fmt::Debug for ResponseFuture<F, RB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
