use std::task::{Context, Poll};

use limitpal_core::{CircuitBreaker, Classify, Clock};
use tower::{BoxError, Service};

use super::ResponseFuture;

/// A service behind a [`CircuitBreaker`]; made by
/// [`CircuitBreakerLayer`](super::CircuitBreakerLayer).
#[derive(Debug, Clone)]
pub struct CircuitBreakerService<S, C, Cl> {
    inner: S,
    breaker: CircuitBreaker<C>,
    classifier: Cl,
}

impl<S, C, Cl> CircuitBreakerService<S, C, Cl> {
    pub(crate) fn new(inner: S, breaker: CircuitBreaker<C>, classifier: Cl) -> Self {
        Self {
            inner,
            breaker,
            classifier,
        }
    }

    /// The shared breaker.
    pub fn breaker(&self) -> &CircuitBreaker<C> {
        &self.breaker
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, Req, C, Cl> Service<Req> for CircuitBreakerService<S, C, Cl>
where
    S: Service<Req>,
    S::Error: Into<BoxError> + 'static,
    C: Clock,
    Cl: Classify<S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, Cl>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        match self.breaker.try_acquire() {
            Ok(permit) => {
                ResponseFuture::called(self.inner.call(req), permit, self.classifier.clone())
            }
            Err(open) => ResponseFuture::rejected(open),
        }
    }
}
