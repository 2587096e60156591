//! Metrics through the `metrics` facade (feature `metrics`), for components given a name.
//!
//! Handles are registered once, when the component is built, with the recorder installed at
//! that time (install yours first), and labelled `name`. An unnamed component registers
//! nothing and pays nothing; without the feature every call here compiles to nothing.
//!
//! | metric | kind | by |
//! |---|---|---|
//! | `limitpal_ratelimit_allowed_total` | counter | limiter |
//! | `limitpal_ratelimit_denied_total` | counter | limiter (shadow denials included) |
//! | `limitpal_breaker_rejected_total` | counter | breaker |
//! | `limitpal_breaker_state` | gauge: 0 closed, 1 open, 2 half-open | breaker |
//! | `limitpal_retry_retried_total` | counter | pipeline (executors, `ResilienceLayer`) |
//! | `limitpal_retry_exhausted_total` | counter | pipeline |
//! | `limitpal_retry_delay_seconds` | histogram | pipeline |
//! | `limitpal_fallback_total` | counter, also labelled `reason` ([`Error::reason`](crate::Error::reason)); unnamed pipelines count too, as `name=""` | pipeline with a fallback |
//! | `limitpal_hedge_total` | counter: hedged attempts started | pipeline with a hedge |
//! | `limitpal_bulkhead_rejected_total` | counter | bulkhead, adaptive limit |
//! | `limitpal_bulkhead_limit` | gauge: calls allowed at once | bulkhead, adaptive limit (moves) |

#[cfg(feature = "metrics")]
mod enabled {
    use std::time::Duration;

    use crate::CircuitState;

    fn counter(metric: &'static str, name: Option<&str>) -> Option<metrics::Counter> {
        name.map(|name| metrics::counter!(metric, "name" => name.to_owned()))
    }

    #[derive(Debug, Clone, Default)]
    pub(crate) struct LimiterMetrics {
        allowed: Option<metrics::Counter>,
        denied: Option<metrics::Counter>,
    }

    impl LimiterMetrics {
        pub(crate) fn new(name: Option<&str>) -> Self {
            Self {
                allowed: counter("limitpal_ratelimit_allowed_total", name),
                denied: counter("limitpal_ratelimit_denied_total", name),
            }
        }

        /// Whether denials are counted.
        #[inline]
        pub(crate) fn active(&self) -> bool {
            self.denied.is_some()
        }

        #[inline]
        pub(crate) fn allowed(&self) {
            if let Some(c) = &self.allowed {
                c.increment(1);
            }
        }

        pub(crate) fn denied(&self) {
            if let Some(c) = &self.denied {
                c.increment(1);
            }
        }
    }

    #[derive(Debug, Clone, Default)]
    pub(crate) struct BreakerMetrics {
        rejected: Option<metrics::Counter>,
        state: Option<metrics::Gauge>,
    }

    impl BreakerMetrics {
        pub(crate) fn new(name: Option<&str>) -> Self {
            let metrics = Self {
                rejected: counter("limitpal_breaker_rejected_total", name),
                state: name.map(
                    |name| metrics::gauge!("limitpal_breaker_state", "name" => name.to_owned()),
                ),
            };
            metrics.state(CircuitState::Closed);
            metrics
        }

        pub(crate) fn rejected(&self) {
            if let Some(c) = &self.rejected {
                c.increment(1);
            }
        }

        pub(crate) fn state(&self, state: CircuitState) {
            if let Some(g) = &self.state {
                g.set(match state {
                    CircuitState::Closed => 0.0,
                    CircuitState::Open => 1.0,
                    CircuitState::HalfOpen => 2.0,
                });
            }
        }
    }

    #[derive(Debug, Clone, Default)]
    pub(crate) struct BulkheadMetrics {
        rejected: Option<metrics::Counter>,
        limit: Option<metrics::Gauge>,
    }

    impl BulkheadMetrics {
        pub(crate) fn new(name: Option<&str>, limit: u32) -> Self {
            let metrics = Self {
                rejected: counter("limitpal_bulkhead_rejected_total", name),
                limit: name.map(
                    |name| metrics::gauge!("limitpal_bulkhead_limit", "name" => name.to_owned()),
                ),
            };
            metrics.limit(limit);
            metrics
        }

        pub(crate) fn rejected(&self) {
            if let Some(c) = &self.rejected {
                c.increment(1);
            }
        }

        pub(crate) fn limit(&self, limit: u32) {
            if let Some(g) = &self.limit {
                g.set(f64::from(limit));
            }
        }
    }

    #[derive(Debug, Clone, Default)]
    pub(crate) struct RetryMetrics {
        retried: Option<metrics::Counter>,
        exhausted: Option<metrics::Counter>,
        hedged: Option<metrics::Counter>,
        delay: Option<metrics::Histogram>,
        name: std::sync::Arc<str>,
    }

    impl RetryMetrics {
        pub(crate) fn new(name: Option<&str>) -> Self {
            Self {
                retried: counter("limitpal_retry_retried_total", name),
                exhausted: counter("limitpal_retry_exhausted_total", name),
                hedged: counter("limitpal_hedge_total", name),
                delay: name.map(|name| metrics::histogram!("limitpal_retry_delay_seconds", "name" => name.to_owned())),
                name: name.unwrap_or_default().into(),
            }
        }

        /// A fallback answered for a run that ended for `reason`: rare, so registered
        /// when it happens, and counted for unnamed pipelines too (a fallback is never
        /// silent).
        pub(crate) fn fallback(&self, reason: &'static str) {
            metrics::counter!(
                "limitpal_fallback_total",
                "name" => self.name.to_string(),
                "reason" => reason
            )
            .increment(1);
        }

        pub(crate) fn hedged(&self) {
            if let Some(c) = &self.hedged {
                c.increment(1);
            }
        }

        pub(crate) fn retried(&self, delay: Duration) {
            if let Some(c) = &self.retried {
                c.increment(1);
            }
            if let Some(h) = &self.delay {
                h.record(delay.as_secs_f64());
            }
        }

        pub(crate) fn exhausted(&self) {
            if let Some(c) = &self.exhausted {
                c.increment(1);
            }
        }
    }
}

#[cfg(not(feature = "metrics"))]
mod enabled {
    use std::time::Duration;

    use crate::CircuitState;

    #[derive(Debug, Clone, Default)]
    pub(crate) struct LimiterMetrics;

    impl LimiterMetrics {
        pub(crate) fn new(_: Option<&str>) -> Self {
            Self
        }
        #[inline]
        pub(crate) fn active(&self) -> bool {
            false
        }
        #[inline]
        pub(crate) fn allowed(&self) {}
        pub(crate) fn denied(&self) {}
    }

    #[derive(Debug, Clone, Default)]
    pub(crate) struct BreakerMetrics;

    impl BreakerMetrics {
        pub(crate) fn new(_: Option<&str>) -> Self {
            Self
        }
        pub(crate) fn rejected(&self) {}
        pub(crate) fn state(&self, _: CircuitState) {}
    }

    #[derive(Debug, Clone, Default)]
    pub(crate) struct BulkheadMetrics;

    impl BulkheadMetrics {
        pub(crate) fn new(_: Option<&str>, _: u32) -> Self {
            Self
        }
        pub(crate) fn rejected(&self) {}
        pub(crate) fn limit(&self, _: u32) {}
    }

    #[derive(Debug, Clone, Default)]
    pub(crate) struct RetryMetrics;

    impl RetryMetrics {
        pub(crate) fn new(_: Option<&str>) -> Self {
            Self
        }
        pub(crate) fn retried(&self, _: Duration) {}
        pub(crate) fn exhausted(&self) {}
        pub(crate) fn fallback(&self, _: &'static str) {}
        pub(crate) fn hedged(&self) {}
    }
}

pub(crate) use enabled::{BreakerMetrics, BulkheadMetrics, LimiterMetrics, RetryMetrics};
