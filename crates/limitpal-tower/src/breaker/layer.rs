use limitpal_core::{CircuitBreaker, DefaultClassifier, MonotonicClock};
use tower_layer::Layer;

use super::CircuitBreakerService;

/// Wraps services in a shared [`CircuitBreaker`]; see the [module docs](super).
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer<C = MonotonicClock, Cl = DefaultClassifier> {
    breaker: CircuitBreaker<C>,
    classifier: Cl,
}

impl<C> CircuitBreakerLayer<C> {
    /// A layer recording outcomes with the [`DefaultClassifier`] (`Err` = failure).
    #[must_use]
    pub fn new(breaker: CircuitBreaker<C>) -> Self {
        Self {
            breaker,
            classifier: DefaultClassifier,
        }
    }
}

impl<C, Cl> CircuitBreakerLayer<C, Cl> {
    /// Decides which results are failures: any `Fn(Result<&Res, &Err>) -> Outcome`.
    #[must_use]
    pub fn classifier<Cl2>(self, classifier: Cl2) -> CircuitBreakerLayer<C, Cl2> {
        CircuitBreakerLayer {
            breaker: self.breaker,
            classifier,
        }
    }
}

impl<S, C, Cl: Clone> Layer<S> for CircuitBreakerLayer<C, Cl> {
    type Service = CircuitBreakerService<S, C, Cl>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService::new(inner, self.breaker.clone(), self.classifier.clone())
    }
}
