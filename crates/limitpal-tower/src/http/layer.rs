use std::time::Duration;

use http::{HeaderValue, StatusCode};
use limitpal_core::{Algorithm, RateLimiter};
use tower_layer::Layer;

use super::HttpRateLimitService;
use super::headers::policy_value;
use crate::MissingKey;

/// A keyed rate limit for HTTP services that answers `429 Too Many Requests` itself; see
/// the [module docs](super).
#[derive(Debug)]
pub struct HttpRateLimitLayer<K, A: Algorithm, C, S, X> {
    pub(crate) limiter: RateLimiter<K, A, C, S>,
    pub(crate) key: X,
    pub(crate) missing: MissingKey<K>,
    pub(crate) missing_status: StatusCode,
    pub(crate) headers_on_success: bool,
    pub(crate) policy: HeaderValue,
    pub(crate) wait: Option<Duration>,
}

impl<K: Clone, A: Algorithm, C, S, X: Clone> Clone for HttpRateLimitLayer<K, A, C, S, X> {
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
            key: self.key.clone(),
            missing: self.missing.clone(),
            missing_status: self.missing_status,
            headers_on_success: self.headers_on_success,
            policy: self.policy.clone(),
            wait: self.wait,
        }
    }
}

impl<K, A: Algorithm, C, S, X> HttpRateLimitLayer<K, A, C, S, X> {
    /// Limits requests per key found by `key` (a [`PeerIp`](super::PeerIp),
    /// [`HeaderKey`](super::HeaderKey), … or a closure `Fn(&Request<B>) -> K`).
    pub fn new(limiter: RateLimiter<K, A, C, S>, key: X) -> Self {
        let (limit, window) = limiter.algorithm().policy();
        Self {
            limiter,
            key,
            missing: MissingKey::Reject,
            missing_status: StatusCode::INTERNAL_SERVER_ERROR,
            headers_on_success: false,
            policy: policy_value(limit, window),
            wait: None,
        }
    }

    /// Queues briefly before answering 429: a request over the limit waits for its key's
    /// next slot when that is at most `max_wait` away (in arrival order, on the algorithm's
    /// schedule) and is answered 429 at once when it is further. A request whose connection
    /// goes away while it waits gives its slot back where the algorithm can. Waiting needs
    /// the inner service to be `Clone` (as axum's `Router` is).
    #[must_use]
    pub fn wait(mut self, max_wait: Duration) -> Self {
        self.wait = Some(max_wait);
        self
    }

    /// What to do with a request whose key cannot be found (default: reject).
    #[must_use]
    pub fn missing_key(mut self, policy: MissingKey<K>) -> Self {
        self.missing = policy;
        self
    }

    /// The status of the response to a rejected keyless request (default 500; 400 suits a
    /// missing API-key header).
    #[must_use]
    pub fn missing_key_status(mut self, status: StatusCode) -> Self {
        self.missing_status = status;
        self
    }

    /// Also add the `RateLimit` field to allowed responses (default: only to 429s).
    #[must_use]
    pub fn headers_on_success(mut self, enabled: bool) -> Self {
        self.headers_on_success = enabled;
        self
    }
}

impl<Svc, K: Clone, A: Algorithm, C, S, X: Clone> Layer<Svc> for HttpRateLimitLayer<K, A, C, S, X> {
    type Service = HttpRateLimitService<Svc, K, A, C, S, X>;

    fn layer(&self, inner: Svc) -> Self::Service {
        HttpRateLimitService {
            inner,
            config: self.clone(),
        }
    }
}
