//! Configuration that deserializes from TOML, JSON or any serde format (feature `serde`) and
//! builds the same objects as the builders. Durations are humantime strings (`"250ms"`,
//! `"1m 30s"`); unknown fields are rejected; every field has the builder's default. A
//! rejected value names its path, such as `breaker.failure_threshold`.
//!
//! ```
//! use limitpal_core::config::PipelineConfig;
//!
//! let config: PipelineConfig = serde_json::from_str(r#"{
//!     "name": "payments",
//!     "limiter": { "capacity": 20, "refill_per_sec": 10.0, "idle_ttl": "1m" },
//!     "breaker": { "failure_threshold": 5, "recovery_timeout": "30s" },
//!     "retry": { "max_attempts": 3, "base_delay": "100ms", "jitter": "full" },
//!     "attempt_timeout": "2s"
//! }"#)?;
//! let executor = config.executor::<String>()?;
//! assert_eq!(executor.run(&"alice".to_string(), || Ok::<_, ()>(1)), Ok(1));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::breaker::CircuitBreakerBuilder;
use crate::concurrency::{Aimd, Gradient2, KeyedAdaptiveLimit, KeyedBulkhead};
use crate::{
    AdaptiveLimit, Backoff, Bulkhead, CircuitBreaker, ConfigError, Jitter, KeyedCircuitBreaker,
    MonotonicClock, RateLimiter, ResilientExecutor, RetryBudget, RetryPolicy, TokenBucket,
};

/// A configuration value was rejected; `path` says where (`retry.max_delay`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigPathError {
    /// The dotted path of the rejected field.
    pub path: String,
    /// Why it was rejected.
    pub error: ConfigError,
}

impl fmt::Display for ConfigPathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // "`capacity` must be ..." → "`limiter.capacity` must be ..."
        let message = self.error.to_string();
        let field = format!("`{}`", self.error.field());
        write!(
            f,
            "{}",
            message.replacen(&field, &format!("`{}`", self.path), 1)
        )
    }
}

impl std::error::Error for ConfigPathError {}

fn at(section: &str) -> impl Fn(ConfigError) -> ConfigPathError + '_ {
    move |error| ConfigPathError {
        path: format!("{section}.{}", error.field()),
        error,
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {text:?} ({e}); write it as \"250ms\", \"2s\" or \"1m 30s\""
        ))
    })
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// A keyed token-bucket limiter: `RateLimiter::builder(TokenBucket::new(..))`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimiterConfig {
    /// Burst size.
    pub capacity: u32,
    /// Tokens per second.
    pub refill_per_sec: f64,
    /// How long a full bucket is kept (default 0).
    #[serde(default, deserialize_with = "optional_duration")]
    pub idle_ttl: Option<Duration>,
    /// Hard bound on keys held.
    #[serde(default)]
    pub max_keys: Option<usize>,
    /// Report denials without enforcing them.
    #[serde(default)]
    pub shadow: bool,
    /// Metrics name.
    #[serde(default)]
    pub name: Option<String>,
}

impl LimiterConfig {
    /// Builds the limiter.
    ///
    /// # Errors
    /// [`ConfigPathError`] under `limiter.`.
    pub fn build<K: std::hash::Hash + Eq>(&self) -> Result<RateLimiter<K>, ConfigPathError> {
        let mut builder = RateLimiter::builder(
            TokenBucket::new(self.capacity, self.refill_per_sec).map_err(at("limiter"))?,
        )
        .shadow(self.shadow);
        if let Some(ttl) = self.idle_ttl {
            builder = builder.idle_ttl(ttl);
        }
        if let Some(max) = self.max_keys {
            builder = builder.max_keys(max);
        }
        if let Some(name) = &self.name {
            builder = builder.name(name.clone());
        }
        builder.build().map_err(at("limiter"))
    }
}

/// The failure-rate trigger of a breaker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureRateConfig {
    /// Failure ratio in (0, 1] that opens the breaker.
    pub ratio: f64,
    /// Calls needed in the window before the ratio counts.
    pub min_calls: u32,
    /// The sliding window.
    #[serde(deserialize_with = "duration")]
    pub window: Duration,
}

/// The error-budget trigger of a breaker: at most `max_failures` failures per `window`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBudgetConfig {
    /// Failures the budget holds (one more regained every `window / max_failures`).
    pub max_failures: u32,
    /// The window.
    #[serde(deserialize_with = "duration")]
    pub window: Duration,
}

/// A circuit breaker: `CircuitBreaker::builder()`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failures that open it (default 5).
    pub failure_threshold: u32,
    /// Optional failure-rate trigger.
    pub failure_rate: Option<FailureRateConfig>,
    /// Optional error-budget trigger.
    pub error_budget: Option<ErrorBudgetConfig>,
    /// Calls slower than this count as failures.
    #[serde(deserialize_with = "optional_duration")]
    pub slow_call: Option<Duration>,
    /// Open → half-open after this (default 30 s).
    #[serde(deserialize_with = "duration")]
    pub recovery_timeout: Duration,
    /// Probes in flight while half-open (default 1).
    pub half_open_max_calls: u32,
    /// Successful probes that close it (default 1).
    pub half_open_success_threshold: u32,
    /// Report rejections without enforcing them.
    pub shadow: bool,
    /// Metrics name.
    pub name: Option<String>,
}

impl Default for BreakerConfig {
    /// `CircuitBreaker::builder()`'s defaults.
    fn default() -> Self {
        use crate::breaker as b;
        Self {
            failure_threshold: b::DEFAULT_FAILURE_THRESHOLD,
            failure_rate: None,
            error_budget: None,
            slow_call: None,
            recovery_timeout: b::DEFAULT_RECOVERY_TIMEOUT,
            half_open_max_calls: b::DEFAULT_HALF_OPEN_MAX_CALLS,
            half_open_success_threshold: b::DEFAULT_HALF_OPEN_SUCCESS_THRESHOLD,
            shadow: false,
            name: None,
        }
    }
}

impl BreakerConfig {
    /// Builds the breaker.
    ///
    /// # Errors
    /// [`ConfigPathError`] under `breaker.`.
    pub fn build(&self) -> Result<CircuitBreaker, ConfigPathError> {
        self.configure(CircuitBreaker::builder())
            .build()
            .map_err(at("breaker"))
    }

    /// These settings on a plain or a keyed breaker's builder.
    fn configure<T>(
        &self,
        builder: CircuitBreakerBuilder<MonotonicClock, T>,
    ) -> CircuitBreakerBuilder<MonotonicClock, T> {
        let mut builder = builder
            .failure_threshold(self.failure_threshold)
            .recovery_timeout(self.recovery_timeout)
            .half_open_max_calls(self.half_open_max_calls)
            .half_open_success_threshold(self.half_open_success_threshold)
            .shadow(self.shadow);
        if let Some(rate) = &self.failure_rate {
            builder = builder.failure_rate(rate.ratio, rate.min_calls, rate.window);
        }
        if let Some(budget) = &self.error_budget {
            builder = builder.error_budget(budget.max_failures, budget.window);
        }
        if let Some(slow) = self.slow_call {
            builder = builder.slow_call(slow);
        }
        if let Some(name) = &self.name {
            builder = builder.name(name.clone());
        }
        builder
    }
}

/// A breaker per key: `KeyedCircuitBreaker::builder()` with `breaker`'s settings, plus the
/// store's bound. The key extractor is code (`circuit_breaker_per(keyed, |req| ..)`).
///
/// ```
/// use limitpal_core::config::KeyedBreakerConfig;
///
/// let config: KeyedBreakerConfig = serde_json::from_str(r#"{
///     "max_keys": 10000,
///     "breaker": { "failure_threshold": 3, "recovery_timeout": "5s" }
/// }"#)?;
/// let per_host = config.build::<String>()?;
/// for _ in 0..3 {
///     per_host.try_acquire("db-2:5432")?.failure();
/// }
/// assert!(per_host.try_acquire("db-2:5432").is_err());
/// assert!(per_host.try_acquire("db-1:5432").is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeyedBreakerConfig {
    /// Every key's breaker (the plain breaker's fields and defaults).
    pub breaker: BreakerConfig,
    /// Keys held at most (default: unbounded; fresh keys are dropped anyway).
    pub max_keys: Option<usize>,
    /// How long a key must look fresh before it may be dropped (default 0).
    #[serde(deserialize_with = "optional_duration")]
    pub idle_ttl: Option<Duration>,
}

impl KeyedBreakerConfig {
    /// Builds the keyed breaker.
    ///
    /// # Errors
    /// [`ConfigPathError`] under `breaker.` (a zero `max_keys`: `max_keys`).
    pub fn build<K: std::hash::Hash + Eq>(
        &self,
    ) -> Result<KeyedCircuitBreaker<K>, ConfigPathError> {
        let mut builder = self.breaker.configure(KeyedCircuitBreaker::builder());
        if let Some(max) = self.max_keys {
            builder = builder.max_keys(max);
        }
        if let Some(ttl) = self.idle_ttl {
            builder = builder.idle_ttl(ttl);
        }
        builder.build().map_err(keyed_at("breaker"))
    }
}

/// Errors of a keyed stage: the store's own fields at the top, the rest under `section`.
fn keyed_at(section: &str) -> impl Fn(ConfigError) -> ConfigPathError + '_ {
    move |error| match error.field() {
        "max_keys" | "forget_after" => ConfigPathError {
            path: error.field().to_owned(),
            error,
        },
        _ => at(section)(error),
    }
}

/// How delays grow, as configuration.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum BackoffConfig {
    /// `base` every time.
    Constant,
    /// `base × n`.
    Linear,
    /// `base × factor^(n−1)`.
    Exponential {
        /// Growth per retry.
        factor: f64,
    },
}

/// How delays are randomised, as configuration.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JitterConfig {
    /// No randomness.
    None,
    /// Uniform in `[0, delay]`.
    Full,
    /// Uniform in `[delay/2, delay]`.
    Equal,
    /// AWS decorrelated jitter.
    Decorrelated,
}

/// A retry policy: `RetryPolicy::builder()`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Total calls, the first included (default 3).
    pub max_attempts: u32,
    /// First delay (default 100 ms).
    #[serde(deserialize_with = "duration")]
    pub base_delay: Duration,
    /// Cap on any delay (default 10 s).
    #[serde(deserialize_with = "duration")]
    pub max_delay: Duration,
    /// Growth (default exponential ×2).
    pub backoff: BackoffConfig,
    /// Randomisation (default full).
    pub jitter: JitterConfig,
    /// A fixed seed.
    pub seed: Option<u64>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            backoff: BackoffConfig::Exponential { factor: 2.0 },
            jitter: JitterConfig::Full,
            seed: None,
        }
    }
}

impl RetryConfig {
    /// Builds the policy.
    ///
    /// # Errors
    /// [`ConfigPathError`] under `retry.`.
    pub fn build(&self) -> Result<RetryPolicy, ConfigPathError> {
        let mut builder = RetryPolicy::builder()
            .max_attempts(self.max_attempts)
            .base_delay(self.base_delay)
            .max_delay(self.max_delay)
            .backoff(match self.backoff {
                BackoffConfig::Constant => Backoff::Constant,
                BackoffConfig::Linear => Backoff::Linear,
                BackoffConfig::Exponential { factor } => Backoff::Exponential { factor },
            })
            .jitter(match self.jitter {
                JitterConfig::None => Jitter::None,
                JitterConfig::Full => Jitter::Full,
                JitterConfig::Equal => Jitter::Equal,
                JitterConfig::Decorrelated => Jitter::Decorrelated,
            });
        if let Some(seed) = self.seed {
            builder = builder.seed(seed);
        }
        builder.build().map_err(at("retry"))
    }
}

/// A retry budget: `RetryBudget::new(ttl, min_per_sec, retry_ratio)`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// The window.
    #[serde(deserialize_with = "duration")]
    pub ttl: Duration,
    /// Retries per second always allowed.
    #[serde(default)]
    pub min_per_sec: u32,
    /// Retries per request.
    pub retry_ratio: f64,
}

impl BudgetConfig {
    /// Builds the budget.
    ///
    /// # Errors
    /// [`ConfigPathError`] under `budget.`.
    pub fn build(&self) -> Result<RetryBudget, ConfigPathError> {
        RetryBudget::new(self.ttl, self.min_per_sec, self.retry_ratio).map_err(at("budget"))
    }
}

/// A bulkhead: `Bulkhead::builder(max_concurrent).queue(max_waiting, max_wait)`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkheadConfig {
    /// Calls at once.
    pub max_concurrent: u32,
    /// Callers that may wait for a slot (default 0: no queue).
    #[serde(default)]
    pub max_waiting: u32,
    /// How long each may wait (required with a queue).
    #[serde(default, deserialize_with = "optional_duration")]
    pub max_wait: Option<Duration>,
    /// Metrics name.
    #[serde(default)]
    pub name: Option<String>,
}

impl BulkheadConfig {
    /// Builds the bulkhead.
    ///
    /// # Errors
    /// [`ConfigPathError`] under `bulkhead.`.
    pub fn build(&self) -> Result<Bulkhead, ConfigPathError> {
        let mut builder = Bulkhead::builder(self.max_concurrent)
            .queue(self.max_waiting, self.max_wait.unwrap_or_default());
        if let Some(name) = &self.name {
            builder = builder.name(name.clone());
        }
        builder.build().map_err(at("bulkhead"))
    }
}

/// A bulkhead per key: `KeyedBulkhead::builder(..)` with `bulkhead`'s settings (its `name`
/// unused: keys are never metric labels), plus the store's bound.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyedBulkheadConfig {
    /// Every key's bulkhead.
    pub bulkhead: BulkheadConfig,
    /// Keys with nothing in flight held at most (default: unbounded; free keys are dropped
    /// anyway).
    #[serde(default)]
    pub max_keys: Option<usize>,
}

impl KeyedBulkheadConfig {
    /// Builds the keyed bulkhead.
    ///
    /// # Errors
    /// [`ConfigPathError`] under `bulkhead.` (a zero `max_keys`: `max_keys`).
    pub fn build<K: std::hash::Hash + Eq>(&self) -> Result<KeyedBulkhead<K>, ConfigPathError> {
        let b = &self.bulkhead;
        let mut builder = KeyedBulkhead::builder(b.max_concurrent)
            .queue(b.max_waiting, b.max_wait.unwrap_or_default());
        if let Some(max) = self.max_keys {
            builder = builder.max_keys(max);
        }
        builder.build().map_err(keyed_at("bulkhead"))
    }
}

/// Which algorithm moves an adaptive limit (each with its defaults).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlgorithmConfig {
    /// [`Aimd`]: errors and timeouts.
    Aimd,
    /// [`Gradient2`]: latency.
    Gradient2,
}

/// An adaptive limit: `AdaptiveLimit::builder(algorithm)`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveLimitConfig {
    /// The algorithm, with its defaults.
    pub algorithm: AlgorithmConfig,
    /// Starting limit (default 20).
    #[serde(default)]
    pub initial_limit: Option<u32>,
    /// Lowest limit (default 1).
    #[serde(default)]
    pub min_limit: Option<u32>,
    /// Highest limit (default 1000).
    #[serde(default)]
    pub max_limit: Option<u32>,
    /// Callers that may wait for a slot (default 0: no queue).
    #[serde(default)]
    pub max_waiting: u32,
    /// How long each may wait (required with a queue).
    #[serde(default, deserialize_with = "optional_duration")]
    pub max_wait: Option<Duration>,
    /// Metrics name.
    #[serde(default)]
    pub name: Option<String>,
}

impl AdaptiveLimitConfig {
    /// Builds the limit (on [`MonotonicClock`]).
    ///
    /// # Errors
    /// [`ConfigPathError`] under `adaptive_limit.`.
    pub fn build(&self) -> Result<AdaptiveLimit, ConfigPathError> {
        let mut builder = match self.algorithm {
            AlgorithmConfig::Aimd => AdaptiveLimit::builder(Aimd::new()),
            AlgorithmConfig::Gradient2 => AdaptiveLimit::builder(Gradient2::new()),
        }
        .queue(self.max_waiting, self.max_wait.unwrap_or_default())
        .bounds(self.initial_limit, self.min_limit, self.max_limit);
        if let Some(name) = &self.name {
            builder = builder.name(name.clone());
        }
        builder.build().map_err(at("adaptive_limit"))
    }
}

/// An adaptive limit per key: `KeyedAdaptiveLimit::builder(algorithm)` with
/// `adaptive_limit`'s settings (its `name` unused: keys are never metric labels), plus the
/// store's bound and how long an unused key's learned limit is kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyedAdaptiveLimitConfig {
    /// Every key's limit.
    pub adaptive_limit: AdaptiveLimitConfig,
    /// Keys with nothing in flight held at most (default: unbounded).
    #[serde(default)]
    pub max_keys: Option<usize>,
    /// A key unused this long forgets its limit (default: never).
    #[serde(default, deserialize_with = "optional_duration")]
    pub forget_after: Option<Duration>,
}

impl KeyedAdaptiveLimitConfig {
    /// Builds the keyed limit (on [`MonotonicClock`]).
    ///
    /// # Errors
    /// [`ConfigPathError`] under `adaptive_limit.` (`max_keys`, `forget_after` at the top).
    pub fn build<K: std::hash::Hash + Eq>(&self) -> Result<KeyedAdaptiveLimit<K>, ConfigPathError> {
        let a = &self.adaptive_limit;
        let mut builder = match a.algorithm {
            AlgorithmConfig::Aimd => KeyedAdaptiveLimit::builder(Aimd::new()),
            AlgorithmConfig::Gradient2 => KeyedAdaptiveLimit::builder(Gradient2::new()),
        }
        .queue(a.max_waiting, a.max_wait.unwrap_or_default())
        .bounds(a.initial_limit, a.min_limit, a.max_limit);
        if let Some(max) = self.max_keys {
            builder = builder.max_keys(max);
        }
        if let Some(after) = self.forget_after {
            builder = builder.forget_after(after);
        }
        builder.build().map_err(keyed_at("adaptive_limit"))
    }
}

/// A whole pipeline: every part optional, as with the builders.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Metrics name of the pipeline's retries.
    pub name: Option<String>,
    /// Rate limit.
    pub limiter: Option<LimiterConfig>,
    /// Circuit breaker.
    pub breaker: Option<BreakerConfig>,
    /// Bulkhead (not with `adaptive_limit`: one slot stage per pipeline).
    pub bulkhead: Option<BulkheadConfig>,
    /// Adaptive concurrency limit (not with `bulkhead`).
    pub adaptive_limit: Option<AdaptiveLimitConfig>,
    /// Retries.
    pub retry: Option<RetryConfig>,
    /// Retry budget.
    pub budget: Option<BudgetConfig>,
    /// Whether retries are charged by the limiter (default true).
    pub charge_retries: Option<bool>,
    /// Per-attempt timeout.
    #[serde(deserialize_with = "optional_duration")]
    pub attempt_timeout: Option<Duration>,
    /// Total deadline.
    #[serde(deserialize_with = "optional_duration")]
    pub deadline: Option<Duration>,
}

impl PipelineConfig {
    /// Builds a sync [`ResilientExecutor`] keyed by `K`.
    ///
    /// # Errors
    /// [`ConfigPathError`] naming the rejected field's path.
    pub fn executor<K>(&self) -> Result<ResilientExecutor<K>, ConfigPathError>
    where
        K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    {
        let mut builder = ResilientExecutor::builder();
        if let Some(limiter) = &self.limiter {
            builder = builder.limiter(limiter.build::<K>()?);
        }
        if let Some(breaker) = &self.breaker {
            builder = builder.breaker(breaker.build()?);
        }
        match (&self.bulkhead, &self.adaptive_limit) {
            (Some(_), Some(_)) => {
                return Err(ConfigPathError {
                    path: "adaptive_limit".to_owned(),
                    error: ConfigError::out_of_range(
                        "adaptive_limit",
                        "given",
                        "absent when `bulkhead` is given (one slot stage per pipeline)",
                    ),
                });
            }
            (Some(bulkhead), None) => builder = builder.bulkhead(bulkhead.build()?),
            (None, Some(limit)) => builder = builder.adaptive_limit(limit.build()?),
            (None, None) => {}
        }
        if let Some(retry) = &self.retry {
            builder = builder.retry(retry.build()?);
        }
        if let Some(budget) = &self.budget {
            builder = builder.budget(budget.build()?);
        }
        if let Some(charge) = self.charge_retries {
            builder = builder.charge_retries(charge);
        }
        if let Some(timeout) = self.attempt_timeout {
            builder = builder.attempt_timeout(timeout);
        }
        if let Some(deadline) = self.deadline {
            builder = builder.deadline(deadline);
        }
        if let Some(name) = &self.name {
            builder = builder.name(name.clone());
        }
        builder.build().map_err(|error| ConfigPathError {
            path: error.field().to_owned(),
            error,
        })
    }
}
