use std::fmt;
use std::sync::Arc;

use limitpal_core::pipeline::{Pipeline, PipelineBuilder, PipelineParts};
use limitpal_core::{
    AsyncLimiter, CheckFn, ConfigError, DefaultClassifier, ExecutorParts, RetryIf, check_fn,
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
            pipeline: PipelineBuilder::new(),
            key: NoKey,
            missing: MissingKey::Reject,
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

/// Configures a [`ResilienceLayer`]; made by [`ResilienceLayer::builder`]. The pipeline's
/// setters are [`PipelineBuilder`]'s, under the same names as on the executors' builder;
/// what is the layer's own is where the key comes from ([`rate_limit`](Self::rate_limit),
/// [`missing_key`](Self::missing_key)) and how a request is copied for a retry
/// ([`clone_request`](Self::clone_request)).
pub struct ResilienceLayerBuilder<X, K, Cl, R> {
    pipeline: PipelineBuilder<K, Cl>,
    key: X,
    missing: MissingKey<K>,
    replay: R,
}

impl<X, K, Cl, R> ResilienceLayerBuilder<X, K, Cl, R> {
    limitpal_core::pipeline_setters!();

    fn pipeline_parts(&mut self) -> &mut PipelineParts {
        self.pipeline.pipeline_parts()
    }

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
            pipeline: self.pipeline.keyed_limiter(Some(check_fn(limiter))),
            key,
            missing: MissingKey::Reject,
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

    /// Classifies results: `Fn(Result<&Res, &Err>) -> Outcome`.
    pub fn classifier<Cl2>(self, classifier: Cl2) -> ResilienceLayerBuilder<X, K, Cl2, R> {
        ResilienceLayerBuilder {
            pipeline: self.pipeline.classifier(classifier),
            key: self.key,
            missing: self.missing,
            replay: self.replay,
        }
    }

    /// Classifies with a predicate on the inner service's errors: an `Err` is retried only
    /// when `retryable(&err)`; every `Ok` is a success.
    pub fn retry_if<F, E>(self, retryable: F) -> ResilienceLayerBuilder<X, K, RetryIf<F>, R>
    where
        F: Fn(&E) -> bool + Send + Sync + 'static,
    {
        ResilienceLayerBuilder {
            pipeline: self.pipeline.retry_if(retryable),
            key: self.key,
            missing: self.missing,
            replay: self.replay,
        }
    }

    /// How to copy a request for a retry (default `Req::clone`; `None` = not replayable).
    pub fn clone_request<R2>(self, replay: R2) -> ResilienceLayerBuilder<X, K, Cl, R2> {
        ResilienceLayerBuilder {
            pipeline: self.pipeline,
            key: self.key,
            missing: self.missing,
            replay,
        }
    }

    /// Builds the layer.
    ///
    /// # Errors
    /// [`ConfigError`] for a zero `attempt_timeout` or `deadline`.
    pub fn build(self) -> Result<ResilienceLayer<X, K, Cl, R>, ConfigError> {
        let ExecutorParts { limiter, pipeline } =
            self.pipeline.build(|| Arc::new(TokioClock::new()))?;
        Ok(ResilienceLayer {
            shared: Arc::new(Shared {
                limiter,
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
            .field("key", &self.key)
            .field("pipeline", &self.pipeline)
            .finish_non_exhaustive()
    }
}
