use std::fmt;
use std::sync::Arc;

use std::hash::Hash;

use limitpal_core::pipeline::{
    FallbackFn, FallbackSlot, NoFallback, Pipeline, PipelineBuilder, PipelineParts, Stages,
};
use limitpal_core::{
    AsyncLimiter, CheckFn, Clock, ConfigError, DefaultClassifier, ExecutorParts, KeyedBulkhead,
    KeyedCircuitBreaker, RetryIf, check_fn,
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
pub struct ResilienceLayer<X, K, Cl, R, P = NoStages> {
    pub(crate) shared: Arc<Shared<K, Cl>>,
    pub(crate) key: X,
    pub(crate) replay: R,
    pub(crate) per_key: P,
}

impl<X: Clone, K, Cl, R: Clone, P: Clone> Clone for ResilienceLayer<X, K, Cl, R, P> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            key: self.key.clone(),
            replay: self.replay.clone(),
            per_key: self.per_key.clone(),
        }
    }
}

/// The breaker and bulkhead a request uses instead of the layer's own, chosen by keys found
/// in it (`circuit_breaker_per`, `bulkhead_per`).
pub trait PerRequest<Req> {
    /// The stages for `req`.
    fn stages(&self, req: &Req) -> Stages;

    /// Whether `req` may be hedged (when the layer has a hedge and can copy `req`): yes,
    /// unless a [`hedge_if`](ResilienceLayerBuilder::hedge_if) says otherwise.
    #[inline]
    fn hedge(&self, req: &Req) -> bool {
        let _ = req;
        true
    }
}

/// Hedges only the requests `F` marks safe, then asks `P`; made by
/// [`ResilienceLayerBuilder::hedge_if`].
pub struct HedgeIf<F, P> {
    safe: Arc<F>,
    inner: P,
}

impl<F, P: Clone> Clone for HedgeIf<F, P> {
    fn clone(&self) -> Self {
        Self {
            safe: Arc::clone(&self.safe),
            inner: self.inner.clone(),
        }
    }
}

impl<F, P: fmt::Debug> fmt::Debug for HedgeIf<F, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeIf")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<F, P> HedgeIf<F, P> {
    pub(crate) fn new(safe: F, inner: P) -> Self {
        Self {
            safe: Arc::new(safe),
            inner,
        }
    }
}

impl<Req, F, P> PerRequest<Req> for HedgeIf<F, P>
where
    F: Fn(&Req) -> bool,
    P: PerRequest<Req>,
{
    #[inline]
    fn stages(&self, req: &Req) -> Stages {
        self.inner.stages(req)
    }

    #[inline]
    fn hedge(&self, req: &Req) -> bool {
        (self.safe)(req) && self.inner.hedge(req)
    }
}

/// No per-key stage: every request uses the layer's own breaker and bulkhead.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoStages;

impl<Req> PerRequest<Req> for NoStages {
    #[inline]
    fn stages(&self, _: &Req) -> Stages {
        Stages::default()
    }
}

/// A breaker per key found in the request by `X` (then `P`'s stages); made by
/// [`ResilienceLayerBuilder::circuit_breaker_per`].
#[derive(Debug, Clone)]
pub struct BreakerPer<KC, C: Clock, X, P> {
    keyed: KeyedCircuitBreaker<KC, C>,
    key: X,
    inner: P,
}

impl<Req, KC, C, X, P> PerRequest<Req> for BreakerPer<KC, C, X, P>
where
    X: KeyExtractor<Req, Key = KC>,
    KC: Hash + Eq + Clone,
    C: Clock + 'static,
    P: PerRequest<Req>,
{
    fn stages(&self, req: &Req) -> Stages {
        let mut stages = self.inner.stages(req);
        if let Some(key) = self.key.extract(req) {
            stages.breaker = Some(self.keyed.stage(&key));
        }
        stages
    }

    fn hedge(&self, req: &Req) -> bool {
        self.inner.hedge(req)
    }
}

/// A bulkhead per key found in the request by `X` (then `P`'s stages); made by
/// [`ResilienceLayerBuilder::bulkhead_per`].
#[derive(Debug, Clone)]
pub struct BulkheadPer<KB, X, P> {
    keyed: KeyedBulkhead<KB>,
    key: X,
    inner: P,
}

impl<Req, KB, X, P> PerRequest<Req> for BulkheadPer<KB, X, P>
where
    X: KeyExtractor<Req, Key = KB>,
    KB: Hash + Eq + Clone,
    P: PerRequest<Req>,
{
    fn stages(&self, req: &Req) -> Stages {
        let mut stages = self.inner.stages(req);
        if let Some(key) = self.key.extract(req) {
            stages.bulkhead = Some(self.keyed.stage(&key));
        }
        stages
    }

    fn hedge(&self, req: &Req) -> bool {
        self.inner.hedge(req)
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
            per_key: NoStages,
        }
    }
}

impl<S, X: Clone, K, Cl, R: Clone, P: Clone> Layer<S> for ResilienceLayer<X, K, Cl, R, P> {
    type Service = ResilienceService<S, X, K, Cl, R, P>;

    fn layer(&self, inner: S) -> Self::Service {
        ResilienceService::new(
            inner,
            Arc::clone(&self.shared),
            self.key.clone(),
            self.replay.clone(),
            self.per_key.clone(),
        )
    }
}

impl<X: fmt::Debug, K, Cl, R, P> fmt::Debug for ResilienceLayer<X, K, Cl, R, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResilienceLayer")
            .field("rate_limit", &self.shared.limiter.is_some())
            .field("key", &self.key)
            .field("pipeline", &self.shared.pipeline)
            .finish_non_exhaustive()
    }
}

/// The layer a [`ResilienceLayerBuilder`] builds: its classifier paired with its fallback.
pub type BuiltLayer<X, K, Cl, R, P, Fb> =
    ResilienceLayer<X, K, <Fb as FallbackSlot>::With<Cl>, R, P>;

/// Configures a [`ResilienceLayer`]; made by [`ResilienceLayer::builder`]. The pipeline's
/// setters are [`PipelineBuilder`]'s, under the same names as on the executors' builder;
/// what is the layer's own is where the key comes from ([`rate_limit`](Self::rate_limit),
/// [`missing_key`](Self::missing_key)) and how a request is copied for a retry
/// ([`clone_request`](Self::clone_request)).
pub struct ResilienceLayerBuilder<X, K, Cl, R, P = NoStages, Fb = NoFallback> {
    pipeline: PipelineBuilder<K, Cl, Fb>,
    key: X,
    missing: MissingKey<K>,
    replay: R,
    per_key: P,
}

impl<X, K, Cl, R, P, Fb> ResilienceLayerBuilder<X, K, Cl, R, P, Fb> {
    limitpal_core::pipeline_setters!();

    fn pipeline_parts(&mut self) -> &mut PipelineParts {
        self.pipeline.pipeline_parts()
    }

    /// Checks every attempt against `limiter`, keyed by what `key` finds in the request (a
    /// closure `Fn(&Req) -> K` or an extractor): a local
    /// [`RateLimiter`](limitpal_core::RateLimiter) answers inside `call`; a remote one (the
    /// Redis limiter) is awaited by the response future before the slot and the call.
    /// Keyless requests are rejected unless [`missing_key`](Self::missing_key) says otherwise.
    pub fn rate_limit<K2, L, X2>(
        self,
        limiter: L,
        key: X2,
    ) -> ResilienceLayerBuilder<X2, K2, Cl, R, P, Fb>
    where
        L: AsyncLimiter<K2> + Send + Sync + 'static,
        K2: Clone + Send + Sync + 'static,
    {
        ResilienceLayerBuilder {
            pipeline: self.pipeline.keyed_limiter(Some(check_fn(limiter))),
            key,
            missing: MissingKey::Reject,
            replay: self.replay,
            per_key: self.per_key,
        }
    }

    /// A breaker per key (a host, a tenant) that `key` finds in the request (a closure
    /// `Fn(&Req) -> K2` or a [`KeyExtractor`]): each request is admitted by, and recorded in, its key's breaker in `keyed` instead of the
    /// layer's own, so one dead upstream opens its own breaker only. A request whose key is
    /// missing uses the layer's own breaker (if any).
    pub fn circuit_breaker_per<KC, C, XC>(
        self,
        keyed: KeyedCircuitBreaker<KC, C>,
        key: XC,
    ) -> ResilienceLayerBuilder<X, K, Cl, R, BreakerPer<KC, C, XC, P>, Fb>
    where
        C: Clock,
    {
        ResilienceLayerBuilder {
            pipeline: self.pipeline,
            key: self.key,
            missing: self.missing,
            replay: self.replay,
            per_key: BreakerPer {
                keyed,
                key,
                inner: self.per_key,
            },
        }
    }

    /// A bulkhead per key (a tenant, a host) that `key` finds in the request: each attempt
    /// takes its slot from its key's bulkhead in `keyed` instead of the layer's own, so one
    /// tenant cannot take every slot. A request whose key is missing uses the layer's own
    /// bulkhead (if any).
    pub fn bulkhead_per<KB, XB>(
        self,
        keyed: KeyedBulkhead<KB>,
        key: XB,
    ) -> ResilienceLayerBuilder<X, K, Cl, R, BulkheadPer<KB, XB, P>, Fb> {
        ResilienceLayerBuilder {
            pipeline: self.pipeline,
            key: self.key,
            missing: self.missing,
            replay: self.replay,
            per_key: BulkheadPer {
                keyed,
                key,
                inner: self.per_key,
            },
        }
    }

    /// An adaptive limit per key that `key` finds in the request: like
    /// [`bulkhead_per`](Self::bulkhead_per), each key's limit following the latency and
    /// classified outcomes of that key's attempts (one slow host is throttled, the others
    /// keep their limits).
    pub fn adaptive_limit_per<KB, XB>(
        self,
        keyed: limitpal_core::KeyedAdaptiveLimit<KB>,
        key: XB,
    ) -> ResilienceLayerBuilder<X, K, Cl, R, BulkheadPer<KB, XB, P>, Fb> {
        self.bulkhead_per(keyed.into(), key)
    }

    /// What to do with a request whose key cannot be found (default: reject with
    /// [`KeyMissing`](crate::KeyMissing)).
    #[must_use]
    pub fn missing_key(mut self, policy: MissingKey<K>) -> Self {
        self.missing = policy;
        self
    }

    /// Classifies results: `Fn(Result<&Res, &Err>) -> Outcome`.
    pub fn classifier<Cl2>(self, classifier: Cl2) -> ResilienceLayerBuilder<X, K, Cl2, R, P, Fb> {
        ResilienceLayerBuilder {
            pipeline: self.pipeline.classifier(classifier),
            key: self.key,
            missing: self.missing,
            replay: self.replay,
            per_key: self.per_key,
        }
    }

    /// Classifies with a predicate on the inner service's errors: an `Err` is retried only
    /// when `retryable(&err)`; every `Ok` is a success.
    pub fn retry_if<F, E>(self, retryable: F) -> ResilienceLayerBuilder<X, K, RetryIf<F>, R, P, Fb>
    where
        F: Fn(&E) -> bool + Send + Sync + 'static,
    {
        ResilienceLayerBuilder {
            pipeline: self.pipeline.retry_if(retryable),
            key: self.key,
            missing: self.missing,
            replay: self.replay,
            per_key: self.per_key,
        }
    }

    /// How to copy a request for a retry (default `Req::clone`; `None` = not replayable).
    pub fn clone_request<R2>(self, replay: R2) -> ResilienceLayerBuilder<X, K, Cl, R2, P, Fb> {
        ResilienceLayerBuilder {
            pipeline: self.pipeline,
            key: self.key,
            missing: self.missing,
            replay,
            per_key: self.per_key,
        }
    }

    /// Hedges only the requests `safe` accepts (with a [`hedge`](Self::hedge)); requests
    /// the replay rule cannot copy (see [`clone_request`](Self::clone_request)) are never
    /// hedged either. For HTTP, [`idempotent`](crate::http::idempotent) is the usual rule:
    /// `GET`, `HEAD`, `OPTIONS`, `TRACE`, `PUT` and `DELETE` may go twice, a `POST` never.
    pub fn hedge_if<F>(self, safe: F) -> ResilienceLayerBuilder<X, K, Cl, R, HedgeIf<F, P>, Fb>
    where
        F: Send + Sync + 'static,
    {
        ResilienceLayerBuilder {
            pipeline: self.pipeline,
            key: self.key,
            missing: self.missing,
            replay: self.replay,
            per_key: HedgeIf::new(safe, self.per_key),
        }
    }

    /// Answers for a request the pipeline gave up on: `Some(response)` from
    /// `fallback(&error)` is the request's response (see
    /// [`PipelineBuilder::fallback`]); counted and traced, never silent.
    pub fn fallback<F, Res, E>(
        self,
        fallback: F,
    ) -> ResilienceLayerBuilder<X, K, Cl, R, P, FallbackFn<F>>
    where
        F: Fn(&limitpal_core::Error<E>) -> Option<Res> + Send + Sync + 'static,
    {
        ResilienceLayerBuilder {
            pipeline: self.pipeline.fallback(fallback),
            key: self.key,
            missing: self.missing,
            replay: self.replay,
            per_key: self.per_key,
        }
    }

    /// Builds the layer.
    ///
    /// # Errors
    /// [`ConfigError`] for a zero `attempt_timeout` or `deadline`, or a bad hedge.
    pub fn build(self) -> Result<BuiltLayer<X, K, Cl, R, P, Fb>, ConfigError>
    where
        Fb: FallbackSlot,
    {
        // the layer's per-key stages are `P`, keyed by the request: the builder's own
        // (keyed by the executors' run key) are not used here
        let ExecutorParts {
            limiter, pipeline, ..
        } = self.pipeline.build(|| Arc::new(TokioClock::new()))?;
        Ok(ResilienceLayer {
            shared: Arc::new(Shared {
                limiter,
                missing: self.missing,
                pipeline,
            }),
            key: self.key,
            replay: self.replay,
            per_key: self.per_key,
        })
    }
}

impl<X: fmt::Debug, K, Cl, R, P, Fb> fmt::Debug for ResilienceLayerBuilder<X, K, Cl, R, P, Fb> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResilienceLayerBuilder")
            .field("key", &self.key)
            .field("pipeline", &self.pipeline)
            .finish_non_exhaustive()
    }
}
