use std::mem;
use std::task::{Context, Poll};

use limitpal_core::{Bulkhead, Classify};
use tower::{BoxError, Service};

use super::ResponseFuture;
use super::future::wait;

/// A service behind a [`BulkheadLayer`](super::BulkheadLayer) or
/// [`AdaptiveLimitLayer`](super::AdaptiveLimitLayer).
#[derive(Debug, Clone)]
pub struct BulkheadService<S, Cl> {
    inner: S,
    bulkhead: Bulkhead,
    classifier: Cl,
}

impl<S, Cl> BulkheadService<S, Cl> {
    pub(crate) fn new(inner: S, bulkhead: Bulkhead, classifier: Cl) -> Self {
        Self {
            inner,
            bulkhead,
            classifier,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, Req, Cl> Service<Req> for BulkheadService<S, Cl>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError> + 'static,
    Cl: Classify<S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, Cl>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // readiness only: the slot is taken in `call`
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if let Ok(permit) = self.bulkhead.try_acquire() {
            let future = self.inner.call(req);
            return ResponseFuture::called(future, permit, self.classifier.clone());
        }
        let mut acquire = self.bulkhead.acquire();
        match acquire.answer() {
            Some(Ok(permit)) => {
                let future = self.inner.call(req);
                ResponseFuture::called(future, permit, self.classifier.clone())
            }
            Some(Err(full)) => ResponseFuture::rejected(full),
            None => {
                // the ready service waits with the request; a clone is readied next
                let clone = self.inner.clone();
                let service = mem::replace(&mut self.inner, clone);
                let timer = tokio::time::sleep(self.bulkhead.max_wait());
                ResponseFuture::waiting(
                    wait(acquire, timer),
                    service,
                    req,
                    self.classifier.clone(),
                    self.bulkhead.clone(),
                )
            }
        }
    }
}
