use limitpal_core::{AdaptiveLimit, Bulkhead, DefaultClassifier};
use tower_layer::Layer;

use super::BulkheadService;

/// At most a [`Bulkhead`]'s limit of calls at once; see the [module docs](super).
#[derive(Debug, Clone)]
pub struct BulkheadLayer {
    bulkhead: Bulkhead,
}

impl BulkheadLayer {
    /// Limits calls through the services it makes to `bulkhead`, shared by every clone.
    #[must_use]
    pub fn new(bulkhead: Bulkhead) -> Self {
        Self { bulkhead }
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = BulkheadService<S, DefaultClassifier>;

    fn layer(&self, inner: S) -> Self::Service {
        BulkheadService::new(inner, self.bulkhead.clone(), DefaultClassifier)
    }
}

/// At most an [`AdaptiveLimit`]'s current limit of calls at once, fed by every call's
/// duration and outcome; see the [module docs](super).
#[derive(Debug, Clone)]
pub struct AdaptiveLimitLayer<Cl = DefaultClassifier> {
    limit: AdaptiveLimit,
    classifier: Cl,
}

impl AdaptiveLimitLayer {
    /// Limits calls to `limit`; an `Err` is a failure (a drop, to the algorithm).
    #[must_use]
    pub fn new(limit: AdaptiveLimit) -> Self {
        Self {
            limit,
            classifier: DefaultClassifier,
        }
    }
}

impl<Cl> AdaptiveLimitLayer<Cl> {
    /// What counts as a failure (an HTTP 503 is an `Ok` to tower): any
    /// `Fn(Result<&Res, &Err>) -> Outcome`; `Ignore` teaches the limit nothing.
    #[must_use]
    pub fn classifier<Cl2>(self, classifier: Cl2) -> AdaptiveLimitLayer<Cl2> {
        AdaptiveLimitLayer {
            limit: self.limit,
            classifier,
        }
    }
}

impl<S, Cl: Clone> Layer<S> for AdaptiveLimitLayer<Cl> {
    type Service = BulkheadService<S, Cl>;

    fn layer(&self, inner: S) -> Self::Service {
        BulkheadService::new(inner, self.limit.clone().into(), self.classifier.clone())
    }
}
