use std::mem;
use std::sync::Arc;
use std::task::{Context, Poll};

use limitpal_core::pipeline::Event;
use limitpal_core::rand::RngCore;
use limitpal_core::{Classify, RetryRng};
use tower::{BoxError, Service};

use super::ResponseFuture;
use super::admission::{Next, advance};
use super::future::Parts;
use super::layer::{NoStages, PerRequest, Shared};
use crate::error::boxed;
use crate::retry::ReplayRequest;
use crate::{KeyExtractor, KeyMissing, MissingKey};

/// A service behind the whole pipeline; made by [`ResilienceLayer`](super::ResilienceLayer).
pub struct ResilienceService<S, X, K, Cl, R, P = NoStages> {
    inner: S,
    shared: Arc<Shared<K, Cl>>,
    key: X,
    replay: R,
    per_key: P,
    /// This instance's random streams, one per request.
    streams: RetryRng,
}

impl<S, X, K, Cl, R, P> ResilienceService<S, X, K, Cl, R, P> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<K, Cl>>, key: X, replay: R, per_key: P) -> Self {
        let streams = new_streams(&shared);
        Self {
            inner,
            shared,
            key,
            replay,
            per_key,
            streams,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

fn new_streams<K, Cl>(shared: &Shared<K, Cl>) -> RetryRng {
    shared
        .pipeline
        .retry_policy()
        .map_or_else(|| RetryRng::new(0), limitpal_core::RetryPolicy::new_rng)
}

impl<S: Clone, X: Clone, K, Cl, R: Clone, P: Clone> Clone for ResilienceService<S, X, K, Cl, R, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            key: self.key.clone(),
            replay: self.replay.clone(),
            per_key: self.per_key.clone(),
            streams: new_streams(&self.shared),
        }
    }
}

impl<S: std::fmt::Debug, X: std::fmt::Debug, K, Cl, R, P> std::fmt::Debug
    for ResilienceService<S, X, K, Cl, R, P>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResilienceService")
            .field("inner", &self.inner)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl<S, Req, X, K, Cl, R, P> Service<Req> for ResilienceService<S, X, K, Cl, R, P>
where
    P: PerRequest<Req>,
    S: Service<Req> + Clone,
    S::Error: Into<BoxError> + 'static,
    X: KeyExtractor<Req, Key = K>,
    K: Clone,
    Cl: Classify<S::Response, S::Error>,
    R: ReplayRequest<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, K, Cl, R>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let shared = &self.shared;
        let key = match self.key.extract(&req) {
            Some(key) => Some(key),
            None => match &shared.missing {
                MissingKey::Reject => return ResponseFuture::failed(Box::new(KeyMissing)),
                MissingKey::Allow => None,
                MissingKey::Fallback(key) => Some(key.clone()),
            },
        };
        let limited = key.is_some() && shared.limiter.is_some();
        let stages = self.per_key.stages(&req);
        let mut run = shared
            .pipeline
            .start_with(self.streams.next_u64(), limited, stages);
        // a hedge needs a copy of the request, and the request's leave (`hedge_if`)
        let copy = if shared.pipeline.hedge().is_some() && self.per_key.hedge(&req) {
            let copy = self.replay.replay(&req);
            if copy.is_some() {
                run.allow_hedge();
            }
            copy
        } else {
            None
        };
        let action = shared.pipeline.step(&mut run, Event::Start);
        let timeout = match advance(shared, &mut run, key.as_ref(), action) {
            Next::Call(timeout) => timeout,
            Next::Done(result) => return ResponseFuture::finished(result.map_err(boxed)),
            Next::Lanes(_) => return ResponseFuture::failed("a hedge before the call".into()),
            Next::Wait(pending) => {
                // The ready service and the request wait in the future for the limiter's
                // answer, the quota or a slot.
                let clone = self.inner.clone();
                let service = mem::replace(&mut self.inner, clone);
                return ResponseFuture::admitting(
                    pending,
                    Parts {
                        service: Some(service),
                        request: Some(req),
                        run,
                        key,
                        shared: Arc::clone(shared),
                        replay: self.replay.clone(),
                    },
                );
            }
        };
        if shared.pipeline.retry_policy().is_none() && run.hedge_in().is_none() {
            let future = self.inner.call(req);
            return ResponseFuture::running(
                future,
                timeout,
                Parts {
                    service: None,
                    request: None,
                    run,
                    key,
                    shared: Arc::clone(shared),
                    replay: self.replay.clone(),
                },
            );
        }
        let replay = copy.or_else(|| self.replay.replay(&req));
        // The ready service goes into the future for the retries; keep a clone to ready next.
        let clone = self.inner.clone();
        let mut service = mem::replace(&mut self.inner, clone);
        let future = service.call(req);
        ResponseFuture::running(
            future,
            timeout,
            Parts {
                service: Some(service),
                request: replay,
                run,
                key,
                shared: Arc::clone(shared),
                replay: self.replay.clone(),
            },
        )
    }
}
