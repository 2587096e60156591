use std::hash::{BuildHasher, Hash};
use std::task::{Context, Poll};

use http::{Request, Response};
use limitpal_core::{Algorithm, Clock, Quota, Reserve};
use tower::Service;

use super::ResponseFuture;
use super::layer::HttpRateLimitLayer;
use crate::limit::WaitForQuota;
use crate::{KeyExtractor, MissingKey};

/// An HTTP service behind a keyed rate limit; made by
/// [`HttpRateLimitLayer`](super::HttpRateLimitLayer).
#[derive(Debug)]
pub struct HttpRateLimitService<Svc, K, A: Algorithm, C, S, X> {
    pub(crate) inner: Svc,
    pub(crate) config: HttpRateLimitLayer<K, A, C, S, X>,
}

impl<Svc: Clone, K: Clone, A: Algorithm, C, S, X: Clone> Clone
    for HttpRateLimitService<Svc, K, A, C, S, X>
{
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: self.config.clone(),
        }
    }
}

impl<Svc, K, A: Algorithm, C, S, X> HttpRateLimitService<Svc, K, A, C, S, X> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &Svc {
        &self.inner
    }
}

impl<Svc, B, RB, K, A, C, S, X> Service<Request<B>> for HttpRateLimitService<Svc, K, A, C, S, X>
where
    Svc: Service<Request<B>, Response = Response<RB>> + Clone,
    RB: Default,
    K: Hash + Eq + Clone + Send + Sync + 'static,
    A: Algorithm,
    C: Clock,
    S: BuildHasher + Send + Sync + 'static,
    X: KeyExtractor<Request<B>, Key = K>,
{
    type Response = Response<RB>;
    type Error = Svc::Error;
    type Future = ResponseFuture<Svc::Future, RB, Svc, Request<B>>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Request<B>) -> Self::Future {
        let config = &self.config;
        let extracted = config.key.extract(&req);
        let key = match (&extracted, &config.missing) {
            (Some(key), _) | (None, MissingKey::Fallback(key)) => key,
            (None, MissingKey::Allow) => {
                return ResponseFuture::called(self.inner.call(req), None, &config.fields);
            }
            (None, MissingKey::Reject) => {
                return ResponseFuture::status(config.missing_status);
            }
        };
        if let Some(max_wait) = config.wait {
            let quota = || config.limiter.quota(key);
            let mut wait = WaitForQuota::new(Reserve::Now(config.limiter.reserve(key, max_wait)));
            return match wait.now() {
                Some(Ok(reservation)) => {
                    reservation.commit();
                    let quota = config.headers_on_success.then(|| quota_of(config, quota()));
                    ResponseFuture::called(self.inner.call(req), quota, &config.fields)
                }
                Some(Err(denied)) => ResponseFuture::too_many(
                    denied.retry_after,
                    &quota_of(config, quota()),
                    &config.fields,
                ),
                None => {
                    let quota = config.headers_on_success.then(|| quota_of(config, quota()));
                    let clone = self.inner.clone();
                    let service = std::mem::replace(&mut self.inner, clone);
                    ResponseFuture::waiting(wait, service, req, quota, &config.fields)
                }
            };
        }
        let (decision, quota) = config.limiter.check_with_quota(key);
        match decision {
            Ok(()) => ResponseFuture::called(
                self.inner.call(req),
                config.headers_on_success.then_some(quota),
                &config.fields,
            ),
            Err(denied) => ResponseFuture::too_many(denied.retry_after, &quota, &config.fields),
        }
    }
}

/// A key's quota as the `RateLimit` field reports it.
fn quota_of<K, A: Algorithm, C, S, X>(
    config: &HttpRateLimitLayer<K, A, C, S, X>,
    (remaining, reset): (u32, std::time::Duration),
) -> Quota {
    Quota {
        limit: config.limiter.algorithm().max_batch(),
        remaining,
        reset,
    }
}
