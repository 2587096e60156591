//! [`CircuitBreakerBuilder`]: the breaker's options, checked once when it is built.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::{
    CircuitBreaker, CircuitState, Config, Extras, FailureWindow, Inner, KeyHooks, Listener,
    RateTrigger, RejectionListener, Shared, SlowState, Word,
};
use crate::clock::nanos;
use crate::metrics::BreakerMetrics;
use crate::rate::Gcra;
use crate::sync::{AtomicU64, Mutex};
use crate::{CircuitOpen, Clock, ConfigError, MonotonicClock};

/// The defaults of [`CircuitBreaker::builder`], which a config file's `[breaker]` table
/// starts from too.
pub(crate) const DEFAULT_FAILURE_THRESHOLD: u32 = 5;
pub(crate) const DEFAULT_RECOVERY_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const DEFAULT_HALF_OPEN_MAX_CALLS: u32 = 1;
pub(crate) const DEFAULT_HALF_OPEN_SUCCESS_THRESHOLD: u32 = 1;

impl CircuitBreaker {
    /// Starts a breaker with the defaults: 5 consecutive failures open it, 30 s recovery,
    /// 1 probe in flight, 1 success closes it.
    #[must_use]
    pub fn builder() -> CircuitBreakerBuilder<MonotonicClock> {
        CircuitBreakerBuilder {
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            failure_rate: None,
            error_budget: None,
            slow_call: None,
            recovery_timeout: DEFAULT_RECOVERY_TIMEOUT,
            half_open_max_calls: DEFAULT_HALF_OPEN_MAX_CALLS,
            half_open_success_threshold: DEFAULT_HALF_OPEN_SUCCESS_THRESHOLD,
            listener: None,
            shadow: false,
            on_rejection: None,
            name: None,
            clock: MonotonicClock,
            target: Single,
        }
    }
}

impl<K> super::KeyedCircuitBreaker<K> {
    /// Starts a keyed breaker with [`CircuitBreaker::builder`]'s defaults for every key, no
    /// `max_keys`, `idle_ttl` 0. The key type is inferred from use (or named:
    /// `KeyedCircuitBreaker::<String>::builder()`).
    #[must_use]
    pub fn builder() -> CircuitBreakerBuilder<MonotonicClock, Keyed<K>> {
        let single = CircuitBreaker::builder();
        CircuitBreakerBuilder {
            failure_threshold: single.failure_threshold,
            failure_rate: single.failure_rate,
            error_budget: single.error_budget,
            slow_call: single.slow_call,
            recovery_timeout: single.recovery_timeout,
            half_open_max_calls: single.half_open_max_calls,
            half_open_success_threshold: single.half_open_success_threshold,
            listener: single.listener,
            shadow: single.shadow,
            on_rejection: single.on_rejection,
            name: single.name,
            clock: single.clock,
            target: Keyed::default(),
        }
    }
}

/// Configures a [`CircuitBreaker`] (made by [`CircuitBreaker::builder`]) or a
/// [`KeyedCircuitBreaker`](super::KeyedCircuitBreaker) (made by its `builder()`, `T =`
/// [`Keyed`]): the same options for both.
pub struct CircuitBreakerBuilder<C, T = Single> {
    failure_threshold: u32,
    failure_rate: Option<(f64, u32, Duration)>,
    error_budget: Option<(u32, Duration)>,
    slow_call: Option<Duration>,
    recovery_timeout: Duration,
    half_open_max_calls: u32,
    half_open_success_threshold: u32,
    listener: Option<Listener>,
    shadow: bool,
    on_rejection: Option<RejectionListener>,
    name: Option<String>,
    clock: C,
    target: T,
}

/// What [`CircuitBreakerBuilder`] builds by default: one [`CircuitBreaker`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Single;

/// What [`CircuitBreakerBuilder`] builds for `KeyedCircuitBreaker::builder()`: a breaker per
/// key `K`, with the keyed store's bounds.
pub struct Keyed<K> {
    pub(super) max_keys: Option<usize>,
    pub(super) idle_ttl: Duration,
    pub(super) listeners: KeyListeners<K>,
}

/// The listeners that hear a key, shared by every key; each key's breaker calls them through
/// a [`BoundKey`] that holds its copy of the key.
pub(super) struct KeyListeners<K> {
    pub(super) on_change: Option<KeyChangeListener<K>>,
    pub(super) on_rejection: Option<KeyRejectionListener<K>>,
    /// Binds the listeners to a copy of a key (set with the first listener, where
    /// `K: Clone` is known).
    pub(super) bind: Option<BindKey<K>>,
}

type KeyChangeListener<K> = Arc<dyn Fn(&K, CircuitState, CircuitState) + Send + Sync>;
type KeyRejectionListener<K> = Arc<dyn Fn(&K, &CircuitOpen) + Send + Sync>;
type BindKey<K> = fn(&Arc<KeyListeners<K>>, &K) -> Arc<dyn KeyHooks>;

impl<K> Default for KeyListeners<K> {
    fn default() -> Self {
        Self {
            on_change: None,
            on_rejection: None,
            bind: None,
        }
    }
}

/// A key's copy and the listeners to call with it.
struct BoundKey<K> {
    key: K,
    listeners: Arc<KeyListeners<K>>,
}

impl<K: Send + Sync> KeyHooks for BoundKey<K> {
    fn changed(&self, from: CircuitState, to: CircuitState) {
        if let Some(listener) = &self.listeners.on_change {
            listener(&self.key, from, to);
        }
    }

    fn rejected(&self, open: &CircuitOpen) {
        if let Some(listener) = &self.listeners.on_rejection {
            listener(&self.key, open);
        }
    }
}

impl<K: Clone + Send + Sync + 'static> KeyListeners<K> {
    fn bind(listeners: &Arc<Self>, key: &K) -> Arc<dyn KeyHooks> {
        Arc::new(BoundKey {
            key: key.clone(),
            listeners: Arc::clone(listeners),
        })
    }

    /// Notes that `K: Clone`, so keys can be bound.
    pub(super) fn bindable(&mut self) {
        self.bind = Some(Self::bind);
    }
}

impl<K> Default for Keyed<K> {
    fn default() -> Self {
        Self {
            max_keys: None,
            idle_ttl: Duration::ZERO,
            listeners: KeyListeners::default(),
        }
    }
}

impl<K> fmt::Debug for Keyed<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyed")
            .field("max_keys", &self.max_keys)
            .field("idle_ttl", &self.idle_ttl)
            .field("on_key_state_change", &self.listeners.on_change.is_some())
            .field("on_key_rejection", &self.listeners.on_rejection.is_some())
            .finish()
    }
}

impl<C, T> CircuitBreakerBuilder<C, T> {
    /// Consecutive failures that open the breaker (default 5; always active).
    #[must_use]
    pub fn failure_threshold(mut self, failures: u32) -> Self {
        self.failure_threshold = failures;
        self
    }

    /// Also open when the failure ratio over the last `window` reaches `ratio` (in `(0, 1]`),
    /// once at least `min_calls` calls were seen in it. The window slides in tenths.
    #[must_use]
    pub fn failure_rate(mut self, ratio: f64, min_calls: u32, window: Duration) -> Self {
        self.failure_rate = Some((ratio, min_calls, window));
        self
    }

    /// Also open when more failures come than an error budget of `max_failures` per `window`
    /// allows, whatever the successes between them (the `breaking` library's trigger): a
    /// GCRA meter that holds `max_failures` failures and regains one every
    /// `window / max_failures`. The failure that spends the last of it opens the breaker
    /// until the budget admits a failure again; [`CircuitOpen::retry_after`] is exactly that
    /// wait (not the recovery timeout). A probe that fails while half-open reopens it for the
    /// recovery timeout as always; [`reset`](CircuitBreaker::reset) refills the budget.
    ///
    /// ```
    /// use limitpal_core::{CircuitBreaker, CircuitState, ManualClock};
    /// use std::time::Duration;
    ///
    /// let clock = ManualClock::new();
    /// let breaker = CircuitBreaker::builder()
    ///     .failure_threshold(100) // consecutive failures are not what trips it here
    ///     .error_budget(3, Duration::from_secs(60)) // 3 failures, one more every 20 s
    ///     .clock(clock.clone())
    ///     .build()?;
    /// for _ in 0..2 {
    ///     breaker.try_acquire()?.failure();
    ///     breaker.try_acquire()?.success(); // successes do not earn failures back
    /// }
    /// assert_eq!(breaker.state(), CircuitState::Closed);
    /// breaker.try_acquire()?.failure(); // the third: the budget is spent
    /// assert_eq!(breaker.state(), CircuitState::Open);
    /// assert_eq!(breaker.try_acquire().unwrap_err().retry_after, Duration::from_secs(20));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn error_budget(mut self, max_failures: u32, window: Duration) -> Self {
        self.error_budget = Some((max_failures, window));
        self
    }

    /// Count calls slower than `threshold` as failures, even when they succeed.
    #[must_use]
    pub fn slow_call(mut self, threshold: Duration) -> Self {
        self.slow_call = Some(threshold);
        self
    }

    /// How long the breaker stays Open before letting probes through (default 30 s).
    #[must_use]
    pub fn recovery_timeout(mut self, timeout: Duration) -> Self {
        self.recovery_timeout = timeout;
        self
    }

    /// Probes allowed in flight at once while half-open (default 1).
    #[must_use]
    pub fn half_open_max_calls(mut self, calls: u32) -> Self {
        self.half_open_max_calls = calls;
        self
    }

    /// Successful probes needed to close again (default 1).
    #[must_use]
    pub fn half_open_success_threshold(mut self, successes: u32) -> Self {
        self.half_open_success_threshold = successes;
        self
    }

    /// Called with `(from, to)` after every transition, outside the breaker's lock (so it may
    /// use the breaker).
    #[must_use]
    pub fn on_state_change(
        mut self,
        listener: impl Fn(CircuitState, CircuitState) + Send + Sync + 'static,
    ) -> Self {
        self.listener = Some(Arc::new(listener));
        self
    }

    /// Shadow (dry-run) mode: the breaker counts and changes state as usual and reports every
    /// rejection, but lets the calls through. How to tune thresholds on live traffic first.
    #[must_use]
    pub fn shadow(mut self, shadow: bool) -> Self {
        self.shadow = shadow;
        self
    }

    /// Called with every rejection, shadow ones included. Runs on the rejected caller's
    /// thread: keep it short.
    #[must_use]
    pub fn on_rejection(mut self, listener: impl Fn(&CircuitOpen) + Send + Sync + 'static) -> Self {
        self.on_rejection = Some(Arc::new(listener));
        self
    }

    /// A name for this breaker's metrics (feature `metrics`: label `name`).
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The clock to read (default [`MonotonicClock`]).
    pub fn clock<C2: Clock>(self, clock: C2) -> CircuitBreakerBuilder<C2, T> {
        CircuitBreakerBuilder {
            failure_threshold: self.failure_threshold,
            failure_rate: self.failure_rate,
            error_budget: self.error_budget,
            slow_call: self.slow_call,
            recovery_timeout: self.recovery_timeout,
            half_open_max_calls: self.half_open_max_calls,
            half_open_success_threshold: self.half_open_success_threshold,
            listener: self.listener,
            shadow: self.shadow,
            on_rejection: self.on_rejection,
            name: self.name,
            clock,
            target: self.target,
        }
    }

    pub(super) fn target_mut(&mut self) -> &mut T {
        &mut self.target
    }

    /// Checks every option once: what makes each breaker built from it.
    ///
    /// `named`: whether the breaker's metrics carry its `name` (a keyed breaker's keys are
    /// never labels, so it records none).
    pub(super) fn into_template(
        self,
        named: bool,
        key_rejections: bool,
    ) -> Result<(Template<C>, T), ConfigError> {
        let nonzero = |value: u32, field| {
            if value == 0 {
                Err(ConfigError::Zero { field })
            } else {
                Ok(value)
            }
        };
        let failure_threshold = nonzero(self.failure_threshold, "failure_threshold")?;
        let half_open_max_calls = nonzero(self.half_open_max_calls, "half_open_max_calls")?;
        let half_open_success_threshold = nonzero(
            self.half_open_success_threshold,
            "half_open_success_threshold",
        )?;
        let mut window = None;
        let rate = match self.failure_rate {
            None => None,
            Some((ratio, min_calls, span)) => {
                if !(ratio > 0.0 && ratio <= 1.0) {
                    return Err(ConfigError::out_of_range(
                        "failure_rate",
                        ratio,
                        "a ratio in (0, 1]",
                    ));
                }
                let min_calls = nonzero(min_calls, "min_calls")?;
                let span = nanos(span);
                if span == 0 {
                    return Err(ConfigError::Zero {
                        field: "failure_rate_window",
                    });
                }
                window = Some(FailureWindow::new(span));
                Some(RateTrigger { ratio, min_calls })
            }
        };
        let budget = self
            .error_budget
            .map(|(failures, window)| {
                Gcra::per_window(failures, "error_budget", window, "error_budget_window")
            })
            .transpose()?;
        let slow_call = match self.slow_call.map(nanos) {
            Some(0) => return Err(ConfigError::Zero { field: "slow_call" }),
            other => other,
        };
        let metrics = BreakerMetrics::new(if named { self.name.as_deref() } else { None });
        let template = Template {
            shared: Arc::new(Shared {
                config: Config {
                    failure_threshold,
                    rate,
                    budget,
                    slow_call,
                    recovery: nanos(self.recovery_timeout),
                    half_open_max_calls,
                    half_open_success_threshold,
                },
                clock: self.clock,
                listener: self.listener,
                shadow: self.shadow,
                on_rejection: self.on_rejection,
                key_rejections,
                metrics,
            }),
            window,
        };
        Ok((template, self.target))
    }
}

impl<C> CircuitBreakerBuilder<C> {
    /// Builds the breaker, Closed.
    ///
    /// # Errors
    /// [`ConfigError`] for a zero `failure_threshold`, `half_open_max_calls`,
    /// `half_open_success_threshold`, `min_calls`, `failure_rate_window`, `slow_call` or
    /// `error_budget` (its `max_failures`), a `failure_rate` ratio outside `(0, 1]`, or an
    /// `error_budget_window` shorter than one nanosecond per failure.
    pub fn build(self) -> Result<CircuitBreaker<C>, ConfigError>
    where
        C: Clock,
    {
        let (template, Single) = self.into_template(true, false)?;
        Ok(template.make())
    }
}

/// A validated configuration: makes a breaker, or one per key, each pointing at the same
/// settings.
pub(super) struct Template<C> {
    pub(super) shared: Arc<Shared<C>>,
    window: Option<FailureWindow>,
}

impl<C> Template<C> {
    /// A fresh breaker, Closed: for a plain breaker the only one, for a keyed breaker a new
    /// key's.
    pub(super) fn make(&self) -> CircuitBreaker<C> {
        self.make_with(None)
    }

    /// [`make`](Self::make), telling `key` (a key's own listeners) of its transitions and
    /// rejections.
    pub(super) fn make_with(&self, key: Option<Arc<dyn KeyHooks>>) -> CircuitBreaker<C> {
        let extras = (self.window.is_some() || key.is_some()).then(|| {
            Box::new(Extras {
                window: self.window.clone().map(Box::new),
                key,
            })
        });
        CircuitBreaker {
            inner: Arc::new(Inner {
                word: AtomicU64::new(Word::INITIAL.0),
                opened_at: AtomicU64::new(0),
                open_span: AtomicU64::new(self.shared.config.recovery),
                budget: AtomicU64::new(0),
                slow: Mutex::new(SlowState {
                    in_flight: 0,
                    successes: 0,
                    extras,
                }),
                shared: Arc::clone(&self.shared),
            }),
        }
    }

    pub(super) fn config_debug(&self) -> &impl fmt::Debug {
        &self.shared.config
    }

    /// The longest a used breaker takes to look fresh again by itself: its failure-rate
    /// window or its error budget's refill (nanoseconds).
    pub(super) fn window(&self) -> u64 {
        let rate = self.window.as_ref().map_or(0, FailureWindow::span);
        let budget = self.shared.config.budget.map_or(0, Gcra::window_nanos);
        rate.max(budget)
    }
}

impl<C, T: fmt::Debug> fmt::Debug for CircuitBreakerBuilder<C, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerBuilder")
            .field("failure_threshold", &self.failure_threshold)
            .field("failure_rate", &self.failure_rate)
            .field("error_budget", &self.error_budget)
            .field("slow_call", &self.slow_call)
            .field("recovery_timeout", &self.recovery_timeout)
            .field("half_open_max_calls", &self.half_open_max_calls)
            .field(
                "half_open_success_threshold",
                &self.half_open_success_threshold,
            )
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}
