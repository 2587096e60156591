use std::time::Duration;

use tower_layer::Layer;

use super::RateLimitService;
use crate::MissingKey;

/// Applies a keyed rate limit to services; see the [module docs](super).
#[derive(Debug, Clone)]
pub struct RateLimitLayer<L, X, K> {
    limiter: L,
    key: X,
    missing: MissingKey<K>,
    wait: Option<Duration>,
}

impl<L, X, K> RateLimitLayer<L, X, K> {
    /// Limits requests per key: `key` finds each request's key (a closure `Fn(&Req) -> K`
    /// or an extractor), `limiter` decides. Requests without a key are rejected with
    /// [`KeyMissing`](crate::KeyMissing) unless [`missing_key`](Self::missing_key) says
    /// otherwise.
    pub fn new(limiter: L, key: X) -> Self {
        Self {
            limiter,
            key,
            missing: MissingKey::Reject,
            wait: None,
        }
    }

    /// Shapes instead of rejecting: a request over the limit waits for its key's next slot
    /// when that is at most `max_wait` away (in arrival order, exactly on the algorithm's
    /// schedule), and is refused with [`RateLimited`](limitpal_core::RateLimited) at once when
    /// it is further. A request dropped while it waits gives its slot back where the
    /// algorithm can. The wait sleeps on tokio's timer.
    #[must_use]
    pub fn wait(mut self, max_wait: Duration) -> Self {
        self.wait = Some(max_wait);
        self
    }

    /// What to do with a request whose key cannot be found.
    #[must_use]
    pub fn missing_key(mut self, policy: MissingKey<K>) -> Self {
        self.missing = policy;
        self
    }
}

impl<S, L: Clone, X: Clone, K: Clone> Layer<S> for RateLimitLayer<L, X, K> {
    type Service = RateLimitService<S, L, X, K>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService::new(
            inner,
            self.limiter.clone(),
            self.key.clone(),
            self.missing.clone(),
            self.wait,
        )
    }
}
