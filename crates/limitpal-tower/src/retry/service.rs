use std::mem;
use std::task::{Context, Poll};

use limitpal_core::rand::RngCore;
use limitpal_core::{Classify, Clock, RetryBudget, RetryPolicy, RetryRng, RetryState};
use tower::{BoxError, Service};

use super::{ReplayRequest, ResponseFuture};
use crate::TokioClock;

/// A service whose failed calls are retried; made by [`RetryLayer`](super::RetryLayer).
///
/// Cloning it draws a new random stream from the policy, so clones never retry in lockstep.
#[derive(Debug)]
pub struct RetryService<S, Cl, R> {
    inner: S,
    policy: RetryPolicy,
    classifier: Cl,
    budget: Option<RetryBudget>,
    replay: R,
    clock: TokioClock,
    /// This instance's streams: one per request, derived without synchronisation.
    streams: RetryRng,
}

impl<S, Cl, R> RetryService<S, Cl, R> {
    pub(crate) fn new(
        inner: S,
        policy: RetryPolicy,
        classifier: Cl,
        budget: Option<RetryBudget>,
        replay: R,
    ) -> Self {
        Self {
            streams: policy.new_rng(),
            inner,
            policy,
            classifier,
            budget,
            replay,
            clock: TokioClock::new(),
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Clone, Cl: Clone, R: Clone> Clone for RetryService<S, Cl, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            policy: self.policy.clone(),
            classifier: self.classifier.clone(),
            budget: self.budget.clone(),
            replay: self.replay.clone(),
            clock: self.clock,
            streams: self.policy.new_rng(),
        }
    }
}

impl<S, Req, Cl, R> Service<Req> for RetryService<S, Cl, R>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError> + 'static,
    Cl: Classify<S::Response, S::Error>,
    R: ReplayRequest<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, Cl, R>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if let Some(budget) = &self.budget {
            budget.deposit(self.clock.now());
        }
        let replay = self.replay.replay(&req);
        // The ready service goes into the future; this service keeps a clone to ready next.
        let clone = self.inner.clone();
        let mut service = mem::replace(&mut self.inner, clone);
        let future = service.call(req);
        ResponseFuture::new(
            future,
            service,
            replay,
            RetryState::new(self.streams.next_u64()),
            self.policy.schedule(),
            self.classifier.clone(),
            self.budget.clone(),
            self.replay.clone(),
            self.clock,
        )
    }
}
