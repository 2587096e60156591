use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use limitpal_core::{CallPermit, CircuitOpen, Classify};
use pin_project_lite::pin_project;
use tower::BoxError;

pin_project! {
    /// The response future of [`CircuitBreakerService`](super::CircuitBreakerService): the
    /// inner call holding its permit, or an immediate [`CircuitOpen`].
    #[derive(Debug)]
    pub struct ResponseFuture<F, Cl> {
        #[pin]
        kind: Kind<F, Cl>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F, Cl> {
        Called {
            #[pin]
            future: F,
            permit: Option<CallPermit>,
            classifier: Cl,
        },
        Rejected {
            open: Option<CircuitOpen>,
        },
    }
}

impl<F, Cl> ResponseFuture<F, Cl> {
    pub(crate) fn called(future: F, permit: CallPermit, classifier: Cl) -> Self {
        Self {
            kind: Kind::Called {
                future,
                permit: Some(permit),
                classifier,
            },
        }
    }

    pub(crate) fn rejected(open: CircuitOpen) -> Self {
        Self {
            kind: Kind::Rejected { open: Some(open) },
        }
    }
}

impl<F, T, E, Cl> Future for ResponseFuture<F, Cl>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError> + 'static,
    Cl: Classify<T, E>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called {
                future,
                permit,
                classifier,
            } => {
                let result = ready!(future.poll(cx));
                if let Some(permit) = permit.take() {
                    crate::error::settle(permit, classifier, &result);
                }
                Poll::Ready(result.map_err(Into::into))
            }
            KindProj::Rejected { open } => Poll::Ready(Err(open
                .take()
                .map_or_else(|| "polled after completion".into(), Into::into))),
        }
    }
}
