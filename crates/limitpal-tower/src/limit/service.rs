use std::mem;
use std::task::{Context, Poll};
use std::time::Duration;

use limitpal_core::AsyncLimiter;
use tower::{BoxError, Service};

use super::{ResponseFuture, WaitForQuota};
use crate::{KeyExtractor, MissingKey};

/// A service behind a keyed rate limit; made by [`RateLimitLayer`](super::RateLimitLayer).
#[derive(Debug, Clone)]
pub struct RateLimitService<S, L, X, K> {
    inner: S,
    limiter: L,
    key: X,
    missing: MissingKey<K>,
    wait: Option<Duration>,
}

impl<S, L, X, K> RateLimitService<S, L, X, K> {
    pub(crate) fn new(
        inner: S,
        limiter: L,
        key: X,
        missing: MissingKey<K>,
        wait: Option<Duration>,
    ) -> Self {
        Self {
            inner,
            limiter,
            key,
            missing,
            wait,
        }
    }

    /// The shared limiter.
    pub fn limiter(&self) -> &L {
        &self.limiter
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, Req, L, X, K> Service<Req> for RateLimitService<S, L, X, K>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    X: KeyExtractor<Req, Key = K>,
    L: AsyncLimiter<K>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, L::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let extracted = self.key.extract(&req);
        let key = match (&extracted, &self.missing) {
            (Some(key), _) | (None, MissingKey::Fallback(key)) => key,
            (None, MissingKey::Allow) => return ResponseFuture::called(self.inner.call(req)),
            (None, MissingKey::Reject) => return ResponseFuture::key_missing(),
        };
        if let Some(max_wait) = self.wait {
            let mut wait = WaitForQuota::new(self.limiter.reserve(key, max_wait));
            return match wait.now() {
                Some(Ok(reservation)) => {
                    reservation.commit();
                    ResponseFuture::called(self.inner.call(req))
                }
                Some(Err(denied)) => ResponseFuture::rejected(denied),
                None => {
                    // the ready service waits in the future with the request
                    let clone = self.inner.clone();
                    let service = mem::replace(&mut self.inner, clone);
                    ResponseFuture::waiting(wait, service, req)
                }
            };
        }
        if let Some(decision) = self.limiter.check_now(key) {
            return match decision {
                Ok(()) => ResponseFuture::called(self.inner.call(req)),
                Err(denied) => ResponseFuture::rejected(denied),
            };
        }
        // A remote limiter: the ready service waits in the future for the answer.
        let check = self.limiter.check(key);
        let clone = self.inner.clone();
        let service = mem::replace(&mut self.inner, clone);
        ResponseFuture::checking(check, service, req)
    }
}
