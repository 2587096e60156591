use std::time::Duration;

use std::sync::Arc;

use http::StatusCode;
use limitpal_core::{Algorithm, ConfigError, RateLimiter};
use tower_layer::Layer;

use super::HttpRateLimitService;
use super::headers::{Fields, RateLimitFields};
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
    pub(crate) fields: Arc<Fields>,
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
            fields: self.fields.clone(),
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
            fields: Arc::new(Fields::new(limit, window)),
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

    /// Also add the `RateLimit-Policy` and `RateLimit` fields to allowed responses (default:
    /// only to 429s).
    #[must_use]
    pub fn headers_on_success(mut self, enabled: bool) -> Self {
        self.headers_on_success = enabled;
        self
    }

    /// The policy's name in the `RateLimit-Policy` and `RateLimit` fields (default
    /// `"default"`): name each layer when two apply to one request (`"per-ip"`,
    /// `"per-key"`), so a client can tell which quota it is spending.
    ///
    /// # Errors
    /// [`ConfigError`] when `name` is empty or not printable ASCII (an sf-string).
    pub fn policy_name(mut self, name: &str) -> Result<Self, ConfigError> {
        self.fields = Arc::new((*self.fields).clone().with_name(name)?);
        Ok(self)
    }

    /// Which form of the fields to write (default [`RateLimitFields::Current`]);
    /// [`RateLimitFields::Draft07`] for clients written against the expired draft.
    #[must_use]
    pub fn fields(mut self, form: RateLimitFields) -> Self {
        self.fields = Arc::new((*self.fields).clone().with_form(form));
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
