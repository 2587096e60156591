use std::sync::Arc;
use std::time::Duration;

use limitpal_core::pipeline::RetryListener;
use limitpal_core::{DefaultClassifier, RetryBudget, RetryPolicy};
use tower_layer::Layer;

use super::RetryService;
use crate::ResilienceLayer;

/// Makes the copy of a request that a retry sends: `None` means "cannot be replayed".
///
/// Implemented by [`CloneRequest`] (any `Req: Clone`) and by closures
/// `Fn(&Req) -> Option<Req>`.
pub trait ReplayRequest<Req>: Clone {
    /// A copy of `req` for a later attempt, if it can be made.
    fn replay(&self, req: &Req) -> Option<Req>;
}

/// The default [`ReplayRequest`]: `Req::clone`. A `Copy` or `Arc` request retries with no
/// allocation.
#[derive(Debug, Clone, Copy, Default)]
pub struct CloneRequest;

impl<Req: Clone> ReplayRequest<Req> for CloneRequest {
    #[inline]
    fn replay(&self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

/// The [`ReplayRequest`] of a pipeline that never retries: nothing is copied, so any
/// request type works.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReplay;

impl<Req> ReplayRequest<Req> for NoReplay {
    #[inline]
    fn replay(&self, _: &Req) -> Option<Req> {
        None
    }
}

impl<Req, F> ReplayRequest<Req> for F
where
    F: Fn(&Req) -> Option<Req> + Clone,
{
    #[inline]
    fn replay(&self, req: &Req) -> Option<Req> {
        self(req)
    }
}

/// Retries failed calls according to a [`RetryPolicy`]; see the [module docs](super).
#[derive(Clone)]
pub struct RetryLayer<Cl = DefaultClassifier, R = CloneRequest> {
    policy: RetryPolicy,
    classifier: Cl,
    budget: Option<RetryBudget>,
    replay: R,
    name: Option<String>,
    on_retry: Option<RetryListener>,
}

impl<Cl: std::fmt::Debug, R: std::fmt::Debug> std::fmt::Debug for RetryLayer<Cl, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryLayer")
            .field("policy", &self.policy)
            .field("classifier", &self.classifier)
            .field("budget", &self.budget)
            .field("replay", &self.replay)
            .field("name", &self.name)
            .field("on_retry", &self.on_retry.is_some())
            .finish()
    }
}

impl RetryLayer {
    /// Retries every `Err` per `policy`, cloning requests with `Req::clone`.
    #[must_use]
    pub fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            classifier: DefaultClassifier,
            budget: None,
            replay: CloneRequest,
            name: None,
            on_retry: None,
        }
    }
}

impl<Cl, R> RetryLayer<Cl, R> {
    /// Decides what is retryable: any `Fn(Result<&Res, &Err>) -> Outcome`.
    #[must_use]
    pub fn classifier<Cl2>(self, classifier: Cl2) -> RetryLayer<Cl2, R> {
        RetryLayer {
            policy: self.policy,
            classifier,
            budget: self.budget,
            replay: self.replay,
            name: self.name,
            on_retry: self.on_retry,
        }
    }

    /// Caps retries with a budget shared by every clone of this layer.
    #[must_use]
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// How to copy a request for a retry, for requests that are not `Clone`: return `None`
    /// when a request cannot be replayed (a streaming body), and it is not retried.
    #[must_use]
    pub fn clone_request<R2>(self, replay: R2) -> RetryLayer<Cl, R2> {
        RetryLayer {
            policy: self.policy,
            classifier: self.classifier,
            budget: self.budget,
            replay,
            name: self.name,
            on_retry: self.on_retry,
        }
    }

    /// A name for its retry metrics (feature `metrics`: label `name`).
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Called before every retry with (the attempt about to start, the wait before it).
    #[must_use]
    pub fn on_retry(mut self, listener: impl Fn(u32, Duration) + Send + Sync + 'static) -> Self {
        self.on_retry = Some(Arc::new(listener));
        self
    }
}

impl<S, Cl: Clone, R: Clone> Layer<S> for RetryLayer<Cl, R> {
    type Service = RetryService<S, Cl, R>;

    /// A retry-only pipeline: the one retry state machine of [`ResilienceLayer`], with
    /// no limiter, breaker or timeouts.
    fn layer(&self, inner: S) -> Self::Service {
        let mut builder = ResilienceLayer::builder()
            .retry(self.policy.clone())
            .classifier(self.classifier.clone())
            .clone_request(self.replay.clone());
        if let Some(budget) = &self.budget {
            builder = builder.budget(budget.clone());
        }
        if let Some(name) = &self.name {
            builder = builder.name(name.clone());
        }
        if let Some(listener) = &self.on_retry {
            let listener = Arc::clone(listener);
            builder = builder.on_retry(move |attempt, wait| listener(attempt, wait));
        }
        builder
            .build()
            .expect("a pipeline without timeouts has nothing to reject")
            .layer(inner)
    }
}
