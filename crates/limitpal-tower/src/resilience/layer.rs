use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use limitpal_core::pipeline::{Pipeline, PipelineParts};
use limitpal_core::{
    AdaptiveLimit, AsyncLimiter, Bulkhead, CheckFn, CircuitBreaker, Clock, ConfigError,
    DefaultClassifier, RetryBudget, RetryPolicy, check_fn,
};
use tower_layer::Layer;

use super::ResilienceService;
use crate::retry::CloneRequest;
use crate::{KeyExtractor, MissingKey, TokioClock};

/// The key extractor of a pipeline with no rate limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoKey;

impl<Req> KeyExtractor<Req> for NoKey {
    type Key = ();

    #[inline]
    fn extract(&self, _: &Req) -> Option<()> {
        Some(())
    }
}

/// What every service of a layer shares: limiter, missing-key policy, the pipeline.
pub(crate) struct Shared<K, Cl> {
    pub(crate) limiter: Option<CheckFn<K>>,
    pub(crate) missing: MissingKey<K>,
    pub(crate) pipeline: Pipeline<Cl>,
}

/// The resilience pipeline as one tower layer; see the [module docs](super).
pub struct ResilienceLayer<X, K, Cl, R> {
    pub(crate) shared: Arc<Shared<K, Cl>>,
    pub(crate) key: X,
    pub(crate) replay: R,
}

impl<X: Clone, K, Cl, R: Clone> Clone for ResilienceLayer<X, K, Cl, R> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            key: self.key.clone(),
            replay: self.replay.clone(),
        }
    }
}

impl ResilienceLayer<NoKey, (), DefaultClassifier, CloneRequest> {
    /// Starts a pipeline with no parts; add any of them, in any order.
    #[must_use]
    pub fn builder() -> ResilienceLayerBuilder<NoKey, (), DefaultClassifier, CloneRequest> {
        ResilienceLayerBuilder {
            limiter: None,
            key: NoKey,
            missing: MissingKey::Reject,
            parts: PipelineParts::default(),
            classifier: DefaultClassifier,
            replay: CloneRequest,
        }
    }
}

impl<S, X: Clone, K, Cl, R: Clone> Layer<S> for ResilienceLayer<X, K, Cl, R> {
    type Service = ResilienceService<S, X, K, Cl, R>;

    fn layer(&self, inner: S) -> Self::Service {
        ResilienceService::new(
            inner,
            Arc::clone(&self.shared),
            self.key.clone(),
            self.replay.clone(),
        )
    }
}

impl<X: fmt::Debug, K, Cl, R> fmt::Debug for ResilienceLayer<X, K, Cl, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResilienceLayer")
            .field("rate_limit", &self.shared.limiter.is_some())
            .field("key", &self.key)
            .field("pipeline", &self.shared.pipeline)
            .finish_non_exhaustive()
    }
}

/// Configures a [`ResilienceLayer`]; made by [`ResilienceLayer::builder`].
pub struct ResilienceLayerBuilder<X, K, Cl, R> {
    limiter: Option<CheckFn<K>>,
    key: X,
    missing: MissingKey<K>,
    parts: PipelineParts,
    classifier: Cl,
    replay: R,
}

impl<X, K, Cl, R> ResilienceLayerBuilder<X, K, Cl, R> {
    /// Checks every attempt against `limiter`, keyed by what `key` finds in the request (a
    /// closure `Fn(&Req) -> K` or an extractor): a local
    /// [`RateLimiter`](limitpal_core::RateLimiter) answers inside `call`; a remote one (the
    /// Redis limiter) is awaited by the response future before the slot and the call.
    /// Keyless requests are rejected unless [`missing_key`](Self::missing_key) says otherwise.
    pub fn rate_limit<K2, L, X2>(self, limiter: L, key: X2) -> ResilienceLayerBuilder<X2, K2, Cl, R>
    where
        L: AsyncLimiter<K2> + Send + Sync + 'static,
        K2: Clone + Send + Sync + 'static,
    {
        ResilienceLayerBuilder {
            limiter: Some(check_fn(limiter)),
            key,
            missing: MissingKey::Reject,
            parts: self.parts,
            classifier: self.classifier,
            replay: self.replay,
        }
    }

    /// What to do with a request whose key cannot be found (default: reject with
    /// [`KeyMissing`](crate::KeyMissing)).
    #[must_use]
    pub fn missing_key(mut self, policy: MissingKey<K>) -> Self {
        self.missing = policy;
        self
    }

    /// Admits attempts through `breaker` and records their outcomes.
    #[must_use]
    pub fn circuit_breaker<C: Clock>(mut self, breaker: CircuitBreaker<C>) -> Self {
        self.parts.breaker = Some(breaker.into());
        self
    }

    /// The same as [`circuit_breaker`](Self::circuit_breaker), under the name the executors'
    /// builder uses: one set of names works on the layer and both executors.
    #[must_use]
    pub fn breaker<C: Clock>(self, breaker: CircuitBreaker<C>) -> Self {
        self.circuit_breaker(breaker)
    }

    /// Runs at most the bulkhead's limit of attempts at once, after the breaker and the rate
    /// limit and right before the call; callers beyond it wait in its queue (up to its
    /// `max_wait`, cut to the deadline) or get [`BulkheadFull`](limitpal_core::BulkheadFull).
    #[must_use]
    pub fn bulkhead(mut self, bulkhead: Bulkhead) -> Self {
        self.parts.bulkhead = Some(bulkhead);
        self
    }

    /// Like [`bulkhead`](Self::bulkhead), with a limit that follows the callee: every
    /// attempt's duration and classified outcome feed it. One slot stage per pipeline: this
    /// replaces a `bulkhead` given before, and the reverse.
    #[must_use]
    pub fn adaptive_limit(mut self, limit: AdaptiveLimit) -> Self {
        self.parts.bulkhead = Some(limit.into());
        self
    }

    /// Retries retryable failures per `policy`.
    #[must_use]
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.parts.retry = Some(policy);
        self
    }

    /// Caps retries with a budget shared by every clone.
    #[must_use]
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.parts.budget = Some(budget);
        self
    }

    /// Classifies results: `Fn(Result<&Res, &Err>) -> Outcome`.
    pub fn classifier<Cl2>(self, classifier: Cl2) -> ResilienceLayerBuilder<X, K, Cl2, R> {
        ResilienceLayerBuilder {
            limiter: self.limiter,
            key: self.key,
            missing: self.missing,
            parts: self.parts,
            classifier,
            replay: self.replay,
        }
    }

    /// Waits up to `max_wait` for the limiter's quota instead of failing with
    /// [`RateLimited`](limitpal_core::RateLimited): the request is shaped, not refused. A slot
    /// beyond `max_wait` or the deadline is refused at once with the exact `retry_after`. An
    /// Open breaker fails fast without waiting; a wait holds no half-open probe and no
    /// bulkhead slot, and the breaker is asked again once the slot comes (Open then:
    /// `CircuitOpen`, the quota given back). Every retry waits the same way.
    #[must_use]
    pub fn limiter_wait(mut self, max_wait: Duration) -> Self {
        self.parts.limiter_wait = Some(max_wait);
        self
    }

    /// Whether an upstream's own `retry_after` (HTTP `Retry-After` through the HTTP
    /// classifier, or a classifier's `Outcome::Failure { retry_after, .. }`) holds the
    /// request's key in the limiter, so that no caller starts an attempt for it before then
    /// (default on). Callers wait through the hold (with [`limiter_wait`](Self::limiter_wait))
    /// or get `RateLimited` with the time left. The hold is cut to the retry policy's
    /// `max_delay` (10 s without one).
    #[must_use]
    pub fn respect_pushback(mut self, respect: bool) -> Self {
        self.parts.respect_pushback = respect;
        self
    }

    /// Whether retries are checked and charged by the limiter (default true).
    #[must_use]
    pub fn charge_retries(mut self, charge: bool) -> Self {
        self.parts.charge_retries = charge;
        self
    }

    /// Abandons an attempt after `timeout` (a retryable failure; a hung half-open probe
    /// frees its slot).
    #[must_use]
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.parts.attempt_timeout = Some(timeout);
        self
    }

    /// Ends the whole request with [`TimedOut`](crate::TimedOut) after `deadline`.
    #[must_use]
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.parts.deadline = Some(deadline);
        self
    }

    /// How to copy a request for a retry (default `Req::clone`; `None` = not replayable).
    pub fn clone_request<R2>(self, replay: R2) -> ResilienceLayerBuilder<X, K, Cl, R2> {
        ResilienceLayerBuilder {
            limiter: self.limiter,
            key: self.key,
            missing: self.missing,
            parts: self.parts,
            classifier: self.classifier,
            replay,
        }
    }

    /// A name for the pipeline's retry metrics (feature `metrics`: label `name`).
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.parts.name = Some(name.into());
        self
    }

    /// Called before every retry with (the attempt about to start, the wait before it).
    #[must_use]
    pub fn on_retry(mut self, listener: impl Fn(u32, Duration) + Send + Sync + 'static) -> Self {
        self.parts.on_retry = Some(Arc::new(listener));
        self
    }

    /// The clock measuring deadlines and the budget's window (default [`TokioClock`]);
    /// waits always use tokio's timer.
    #[must_use]
    pub fn clock<C: Clock>(mut self, clock: C) -> Self {
        self.parts.clock = Some(Arc::new(clock));
        self
    }

    /// Builds the layer.
    ///
    /// # Errors
    /// [`ConfigError`] for a zero `attempt_timeout` or `deadline`.
    pub fn build(self) -> Result<ResilienceLayer<X, K, Cl, R>, ConfigError> {
        let pipeline = self
            .parts
            .build(self.classifier, || Arc::new(TokioClock::new()))?;
        Ok(ResilienceLayer {
            shared: Arc::new(Shared {
                limiter: self.limiter,
                missing: self.missing,
                pipeline,
            }),
            key: self.key,
            replay: self.replay,
        })
    }
}

impl<X: fmt::Debug, K, Cl, R> fmt::Debug for ResilienceLayerBuilder<X, K, Cl, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResilienceLayerBuilder")
            .field("rate_limit", &self.limiter.is_some())
            .field("key", &self.key)
            .field("parts", &self.parts)
            .finish_non_exhaustive()
    }
}
