//! [`PipelineBuilder`]: what every pipeline builder collects, with one set of setters.

use std::fmt;
use std::sync::Arc;

use std::hash::Hash;

use super::{AnyBreaker, FallbackFn, FallbackSlot, NoFallback, Pipeline, PipelineParts, Stages};
use crate::executor::{CheckFn, ExecutorParts, RetryIf, check_fn};
use crate::{
    AsyncLimiter, Bulkhead, Clock, ConfigError, DefaultClassifier, Error, KeyedBulkhead,
    KeyedCircuitBreaker,
};

/// A pipeline's parts being collected: limiter, classifier and the rest.
///
/// The executors' builder ([`ResilientExecutorBuilder`](crate::ResilientExecutorBuilder)),
/// `limitpal-tower`'s `ResilienceLayerBuilder` and `limitpal-reqwest`'s builder each wrap a
/// `PipelineBuilder`; the setters they share are written once (the `pipeline_setters!`
/// macro), so every name works on every builder:
///
/// | canonical | also | what |
/// |---|---|---|
/// | `circuit_breaker` | `breaker` | step 2 |
/// | `limiter_wait`, `respect_pushback`, `charge_retries` | | step 3 |
/// | `bulkhead`, `adaptive_limit` | | step 4 |
/// | `attempt_timeout`, `deadline` | | step 5, the run |
/// | `classifier`, `retry_if` | | step 6 |
/// | `retry`, `budget`, `on_retry` | | step 7 |
/// | `hedge` (layer: `hedge_if`) | | step 5, hedged |
/// | `fallback` | | the run's end |
/// | `name`, `clock` | | metrics, time |
///
/// Where the rate limiter's key comes from is the one thing that differs: an executor is
/// given the key with each run (`.limiter(l)`, `run(&key, ..)`), the layer finds it in the
/// request (`.rate_limit(l, key_extractor)`), the reqwest middleware keys per host.
///
/// ```
/// use limitpal_core::pipeline::PipelineBuilder;
/// use limitpal_core::{CircuitBreaker, ManualClock, RetryPolicy};
/// use std::sync::Arc;
///
/// let parts = PipelineBuilder::<()>::new()
///     .retry(RetryPolicy::builder().max_attempts(3).build()?)
///     .circuit_breaker(CircuitBreaker::builder().build()?)
///     .build(|| Arc::new(ManualClock::new()))?;
/// assert!(parts.limiter.is_none());
/// assert!(parts.pipeline.retry_policy().is_some());
/// # Ok::<(), limitpal_core::ConfigError>(())
/// ```
pub struct PipelineBuilder<K, Cl = DefaultClassifier, Fb = NoFallback> {
    limiter: Option<CheckFn<K>>,
    parts: PipelineParts,
    classifier: Cl,
    per_key: PerKey<K>,
    fallback: Fb,
}

/// A run's per-key stages chosen by the run's key (`circuit_breaker_per`, `bulkhead_per` on
/// the executors' builder): the breaker and the bulkhead of the key they map it to.
pub struct PerKey<K> {
    breaker: Option<StageFn<K, AnyBreaker>>,
    bulkhead: Option<StageFn<K, Bulkhead>>,
}

type StageFn<K, T> = Arc<dyn Fn(&K) -> T + Send + Sync>;

impl<K> PerKey<K> {
    /// No per-key stage.
    #[must_use]
    pub fn none() -> Self {
        Self {
            breaker: None,
            bulkhead: None,
        }
    }

    /// Whether there is a per-key stage, which needs each run's key.
    #[must_use]
    pub fn is_some(&self) -> bool {
        self.breaker.is_some() || self.bulkhead.is_some()
    }

    /// The stages of `key` (nothing without per-key stages; no allocation then).
    #[inline]
    pub fn stages(&self, key: &K) -> Stages {
        Stages {
            breaker: self.breaker.as_ref().map(|stage| stage(key)),
            bulkhead: self.bulkhead.as_ref().map(|stage| stage(key)),
        }
    }
}

impl<K> Clone for PerKey<K> {
    fn clone(&self) -> Self {
        Self {
            breaker: self.breaker.clone(),
            bulkhead: self.bulkhead.clone(),
        }
    }
}

impl<K> fmt::Debug for PerKey<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerKey")
            .field("breaker", &self.breaker.is_some())
            .field("bulkhead", &self.bulkhead.is_some())
            .finish()
    }
}

impl<K> PipelineBuilder<K> {
    /// No parts yet; add any of them, in any order.
    #[must_use]
    pub fn new() -> Self {
        Self {
            limiter: None,
            parts: PipelineParts::default(),
            classifier: DefaultClassifier,
            per_key: PerKey::none(),
            fallback: NoFallback,
        }
    }
}

impl<K> Default for PipelineBuilder<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, Cl, Fb> PipelineBuilder<K, Cl, Fb> {
    crate::pipeline_setters!();

    /// The parts the setters write (for builders that wrap this one).
    #[doc(hidden)]
    pub fn pipeline_parts(&mut self) -> &mut PipelineParts {
        &mut self.parts
    }

    /// Checks every attempt against `limiter` (step 3), keyed by the key of each run.
    #[must_use]
    pub fn limiter<L>(self, limiter: L) -> Self
    where
        L: AsyncLimiter<K> + Send + Sync + 'static,
    {
        self.keyed_limiter(Some(check_fn(limiter)))
    }

    /// Replaces the limiter with one of another key type (or none); per-key stages keyed by
    /// the old key type are dropped.
    #[must_use]
    pub fn keyed_limiter<K2>(self, limiter: Option<CheckFn<K2>>) -> PipelineBuilder<K2, Cl, Fb> {
        PipelineBuilder {
            limiter,
            parts: self.parts,
            classifier: self.classifier,
            per_key: PerKey::none(),
            fallback: self.fallback,
        }
    }

    /// A breaker per key (step 2): each run uses the breaker of `key(&run_key)` in `keyed`
    /// instead of the pipeline's own. One dead upstream opens its own breaker only.
    #[must_use]
    pub fn circuit_breaker_per<K2, C>(
        mut self,
        keyed: KeyedCircuitBreaker<K2, C>,
        key: impl Fn(&K) -> K2 + Send + Sync + 'static,
    ) -> Self
    where
        K2: Hash + Eq + Clone + Send + Sync + 'static,
        C: Clock + Clone,
    {
        self.per_key.breaker = Some(Arc::new(move |k: &K| keyed.stage(&key(k))));
        self
    }

    /// A bulkhead per key (step 4): each run takes its slot from the bulkhead of
    /// `key(&run_key)` in `keyed` instead of the pipeline's own. One tenant cannot take
    /// every slot.
    #[must_use]
    pub fn bulkhead_per<K2>(
        mut self,
        keyed: KeyedBulkhead<K2>,
        key: impl Fn(&K) -> K2 + Send + Sync + 'static,
    ) -> Self
    where
        K2: Hash + Eq + Clone + Send + Sync + 'static,
    {
        self.per_key.bulkhead = Some(Arc::new(move |k: &K| keyed.stage(&key(k))));
        self
    }

    /// An adaptive limit per key (step 4): like [`bulkhead_per`](Self::bulkhead_per), with
    /// each key's limit following that key's latency and classified outcomes.
    #[must_use]
    pub fn adaptive_limit_per<K2>(
        self,
        keyed: crate::KeyedAdaptiveLimit<K2>,
        key: impl Fn(&K) -> K2 + Send + Sync + 'static,
    ) -> Self
    where
        K2: Hash + Eq + Clone + Send + Sync + 'static,
    {
        self.bulkhead_per(keyed.into(), key)
    }

    /// Classifies results: `Fn(Result<&T, &E>) -> Outcome` (see [`Outcome`](crate::Outcome)).
    #[must_use]
    pub fn classifier<Cl2>(self, classifier: Cl2) -> PipelineBuilder<K, Cl2, Fb> {
        PipelineBuilder {
            limiter: self.limiter,
            parts: self.parts,
            classifier,
            per_key: self.per_key,
            fallback: self.fallback,
        }
    }

    /// Classifies with a predicate: an `Err` is retried only when `retryable(&err)`.
    #[must_use]
    pub fn retry_if<F, E>(self, retryable: F) -> PipelineBuilder<K, RetryIf<F>, Fb>
    where
        F: Fn(&E) -> bool + Send + Sync + 'static,
    {
        self.classifier(RetryIf::new(retryable))
    }

    /// Answers for a run that gave up: `fallback(&error)` is asked once, where the run
    /// ends with `error` (`CircuitOpen`, `RateLimited`, `RetryExhausted`, `TimedOut`,
    /// `BulkheadFull` or `Failed`), and its `Some(value)` is the run's `Ok(value)`; `None`
    /// leaves the error as it was. A fallback is never silent: it is counted
    /// (`limitpal_fallback_total{name, reason}`, feature `metrics`) and traced (INFO,
    /// feature `tracing`). May come before or after `classifier`.
    #[must_use]
    pub fn fallback<F, T, E>(self, fallback: F) -> PipelineBuilder<K, Cl, FallbackFn<F>>
    where
        F: Fn(&Error<E>) -> Option<T> + Send + Sync + 'static,
    {
        PipelineBuilder {
            limiter: self.limiter,
            parts: self.parts,
            classifier: self.classifier,
            per_key: self.per_key,
            fallback: FallbackFn::new(fallback),
        }
    }

    /// Validates the parts and builds them; `default_clock` is used when no clock was given.
    ///
    /// # Errors
    /// [`ConfigError`] for a zero `attempt_timeout` or `deadline`.
    pub fn build(
        self,
        default_clock: impl FnOnce() -> Arc<dyn Clock>,
    ) -> Result<ExecutorParts<K, Fb::With<Cl>>, ConfigError>
    where
        Fb: FallbackSlot,
    {
        let classifier = self.fallback.wrap(self.classifier);
        let pipeline: Pipeline<Fb::With<Cl>> = self.parts.build(classifier, default_clock)?;
        Ok(ExecutorParts {
            limiter: self.limiter,
            pipeline,
            per_key: self.per_key,
        })
    }
}

impl<K, Cl, Fb> fmt::Debug for PipelineBuilder<K, Cl, Fb> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipelineBuilder")
            .field("limiter", &self.limiter.is_some())
            .field("parts", &self.parts)
            .finish_non_exhaustive()
    }
}

/// The setters every pipeline builder shares, written once: expands, inside an `impl` block
/// of a builder that has a `fn pipeline_parts(&mut self) -> &mut PipelineParts`, to
/// `breaker`/`circuit_breaker`, `bulkhead`, `adaptive_limit`, `retry`, `budget`,
/// `limiter_wait`, `respect_pushback`, `charge_retries`, `attempt_timeout`, `deadline`,
/// `name`, `on_retry` and `clock`.
#[macro_export]
#[doc(hidden)]
macro_rules! pipeline_setters {
    () => {
        /// Admits attempts through `breaker` (step 2) and records their outcomes (step 6).
        /// Canonical name: `circuit_breaker`.
        #[must_use]
        pub fn circuit_breaker<C: $crate::Clock>(
            mut self,
            breaker: $crate::CircuitBreaker<C>,
        ) -> Self {
            self.pipeline_parts().breaker = Some(breaker.into());
            self
        }

        /// The same as `circuit_breaker`.
        #[must_use]
        pub fn breaker<C: $crate::Clock>(self, breaker: $crate::CircuitBreaker<C>) -> Self {
            self.circuit_breaker(breaker)
        }

        /// Runs at most the bulkhead's limit of attempts at once (step 4, after the breaker
        /// and the limiter, right before the call); callers beyond it wait in its queue (up to
        /// its `max_wait`, cut to the deadline) or get `BulkheadFull`. The sync executor
        /// blocks its thread for that wait.
        #[must_use]
        pub fn bulkhead(mut self, bulkhead: $crate::Bulkhead) -> Self {
            self.pipeline_parts().bulkhead = Some(bulkhead);
            self
        }

        /// Like `bulkhead`, with a limit that follows the callee's latency and errors: every
        /// attempt's duration and classified outcome feed it. The pipeline has one slot
        /// stage: this replaces a `bulkhead` given before, and the reverse.
        #[must_use]
        pub fn adaptive_limit(mut self, limit: $crate::AdaptiveLimit) -> Self {
            self.pipeline_parts().bulkhead = Some(limit.into());
            self
        }

        /// Retries retryable failures per `policy` (step 7).
        #[must_use]
        pub fn retry(mut self, policy: $crate::RetryPolicy) -> Self {
            self.pipeline_parts().retry = Some(policy);
            self
        }

        /// Hedges slow calls (step 5): a call still running after the hedge's delay is sent
        /// again (up to `max_hedges` times) and the first success wins, the others dropped.
        /// A hedge is charged to the limiter, takes its own breaker permit and bulkhead slot
        /// (never waiting for either), and is drawn from the retry `budget` like a retry.
        /// The async executor and the tower layer hedge (the layer only requests its
        /// `hedge_if` and replay rule allow); the sync executor calls one attempt at a time
        /// and never hedges.
        #[must_use]
        pub fn hedge(mut self, hedge: $crate::Hedge) -> Self {
            self.pipeline_parts().hedge = Some(hedge);
            self
        }

        /// Caps retries (and hedges) with a budget (shared by every clone of the budget).
        #[must_use]
        pub fn budget(mut self, budget: $crate::RetryBudget) -> Self {
            self.pipeline_parts().budget = Some(budget);
            self
        }

        /// Waits up to `max_wait` for the limiter's quota instead of failing with
        /// `RateLimited` (LimitPal's "wait for quota"): the request is shaped, not refused. A
        /// slot beyond `max_wait` or the deadline is refused at once with the exact
        /// `retry_after`. An Open breaker fails fast without waiting; a wait holds no
        /// half-open probe and no bulkhead slot, and the breaker is asked again once the slot
        /// comes (Open then: `CircuitOpen`, the quota given back). Retries wait the same way.
        #[must_use]
        pub fn limiter_wait(mut self, max_wait: ::std::time::Duration) -> Self {
            self.pipeline_parts().limiter_wait = Some(max_wait);
            self
        }

        /// Whether an upstream's own `retry_after` (HTTP `Retry-After` through the HTTP
        /// classifier, a classifier's `Outcome::Failure { retry_after, .. }`) holds the key in
        /// the limiter, so that no caller starts an attempt for it before then (default on).
        /// Callers wait through the hold (with `limiter_wait`) or get `RateLimited` with the
        /// time left. The hold is cut to the retry policy's `max_delay` (10 s without one).
        #[must_use]
        pub fn respect_pushback(mut self, respect: bool) -> Self {
            self.pipeline_parts().respect_pushback = respect;
            self
        }

        /// Whether attempts after the first are checked and charged by the limiter (default
        /// true: a retry is a real call upstream).
        #[must_use]
        pub fn charge_retries(mut self, charge: bool) -> Self {
            self.pipeline_parts().charge_retries = charge;
            self
        }

        /// Bounds each attempt; a timeout is a retryable failure (a hung half-open probe
        /// frees its slot). Async drivers abandon the call at the timeout; the sync executor
        /// counts a call that returns later than this as timed out.
        #[must_use]
        pub fn attempt_timeout(mut self, timeout: ::std::time::Duration) -> Self {
            self.pipeline_parts().attempt_timeout = Some(timeout);
            self
        }

        /// Bounds the whole run; past it the run ends with `TimedOut`.
        #[must_use]
        pub fn deadline(mut self, deadline: ::std::time::Duration) -> Self {
            self.pipeline_parts().deadline = Some(deadline);
            self
        }

        /// A name for the pipeline's retry metrics (feature `metrics`: label `name`).
        #[must_use]
        pub fn name(mut self, name: impl Into<String>) -> Self {
            self.pipeline_parts().name = Some(name.into());
            self
        }

        /// Called before every retry with (the attempt about to start, the wait before it).
        #[must_use]
        pub fn on_retry(
            mut self,
            listener: impl Fn(u32, ::std::time::Duration) + Send + Sync + 'static,
        ) -> Self {
            self.pipeline_parts().on_retry = Some(::std::sync::Arc::new(listener));
            self
        }

        /// The clock that measures deadlines, timeouts and the budget's window. The sync
        /// executor also sleeps through it (with a `ManualClock` a run of minutes of backoff
        /// completes at once); async drivers wait on tokio's timer (default clock:
        /// `TokioClock`, so paused test time drives them).
        #[must_use]
        pub fn clock<C: $crate::Clock>(mut self, clock: C) -> Self {
            self.pipeline_parts().clock = Some(::std::sync::Arc::new(clock));
            self
        }
    };
}
