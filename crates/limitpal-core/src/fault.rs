//! Faults on purpose: a seeded, deterministic plan of which calls to slow down, fail, hang or
//! lose the answer of, for testing a stack under faults (as Polly's Simmy, Envoy's fault
//! filter or tower-resilience's chaos layer do).
//!
//! [`FaultPlan`] decides; it is a pure function of its seed, the call's number and `now`, so
//! the same seed gives the same run under [`ManualClock`](crate::ManualClock) or paused tokio
//! time. [`FaultInjector`] applies a plan to sync calls (for [`ResilientExecutor`](crate::ResilientExecutor));
//! `limitpal::tower::FaultLayer` applies one to a tower service.
//!
//! ```
//! use limitpal_core::fault::{FaultInjector, FaultPlan};
//! use limitpal_core::{Clock, ManualClock};
//! use std::time::Duration;
//!
//! let clock = ManualClock::new();
//! let faults = FaultInjector::builder()
//!     .plan(|p| p.seed(7).latency(0.5, Duration::from_millis(100))) // half take 100 ms longer
//!     .error(0.2, || "injected") // one in five fails
//!     .clock(clock.clone())
//!     .build()?;
//! let results: Vec<Result<u32, &str>> = (0..1000).map(|_| faults.call(|| Ok(1))).collect();
//! let failed = results.iter().filter(|r| r.is_err()).count();
//! assert!((150..250).contains(&failed));
//! assert!(clock.now() > Duration::from_secs(40)); // ~500 × 100 ms of injected latency
//! # Ok::<(), limitpal_core::ConfigError>(())
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::RngCore;

use crate::retry::RetryRng;
use crate::sync::{Mutex, lock};
use crate::{Clock, ConfigError, MonotonicClock};

/// What a plan does to one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultKind {
    /// Nothing: the call goes through (after any [`Fault::latency`]).
    Pass,
    /// The call is not made; it fails with the injected error.
    Error,
    /// The call is not made and never completes (a tower future stays pending; a sync call
    /// sleeps the injector's hang time, then fails with the injected error).
    Timeout,
    /// The call is made, but its answer is lost: the caller gets an error instead.
    Drop,
    /// The call is not made; the caller gets the injected response.
    Respond,
}

/// One call's fault: extra latency before it, and what happens to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// Added before the call is made (zero: none).
    pub latency: Duration,
    /// What happens to the call.
    pub kind: FaultKind,
}

impl Fault {
    /// No fault at all.
    pub const NONE: Self = Self {
        latency: Duration::ZERO,
        kind: FaultKind::Pass,
    };
}

/// A seeded plan of faults, shared by its clones (one call counter).
///
/// Each call draws its own random stream from the seed and its number, so the `n`-th call
/// of a run gets the same fault every time the run is repeated, and the rates hold over any
/// long enough run. Latency is independent of the outcome; the outcomes (error, timeout,
/// drop, response) exclude each other, so their rates add up to at most 1.
#[derive(Clone)]
pub struct FaultPlan {
    inner: Arc<Plan>,
}

#[derive(Debug)]
struct Plan {
    seed: u64,
    latency: (f64, Duration, Duration),
    // cumulative thresholds: error, + timeout, + drop, + respond
    outcomes: [f64; 4],
    window: Option<(Duration, Duration)>,
    call_window: Option<(u64, u64)>,
    workers: Option<Workers>,
    calls: AtomicU64,
}

/// An upstream with a fixed number of workers, each serving one call in `service`; calls
/// beyond the workers queue in FIFO order.
#[derive(Debug)]
struct Workers {
    service: Duration,
    normal: usize,
    degraded: Option<(Duration, Duration, usize)>,
    /// When each worker is next free.
    free_at: Mutex<Vec<Duration>>,
}

impl Workers {
    /// Queues a call that arrives at `now`; returns how long until it completes.
    fn serve(&self, now: Duration) -> Duration {
        let workers = match self.degraded {
            Some((from, until, n)) if (from..until).contains(&now) => n,
            _ => self.normal,
        };
        let mut free_at = lock(&self.free_at);
        // workers that leave finish what they were given; new ones start idle
        free_at.resize(workers, now);
        let Some(first) = free_at.iter_mut().min() else {
            return self.service; // unreachable: at least one worker is validated
        };
        let done = (*first).max(now).saturating_add(self.service);
        *first = done;
        done.saturating_sub(now)
    }
}

impl FaultPlan {
    /// Starts a plan that injects nothing (seed 0).
    pub fn builder() -> FaultPlanBuilder {
        FaultPlanBuilder::default()
    }

    /// The next call's fault, at `now` (the plan's clock reading; used by
    /// [`during`](FaultPlanBuilder::during)). With a [`capacity`](FaultPlanBuilder::capacity),
    /// a call that is made (passes or has its answer dropped) also queues for a worker: its
    /// latency includes the wait and the service time.
    #[must_use]
    pub fn next(&self, now: Duration) -> Fault {
        let n = self.inner.calls.fetch_add(1, Ordering::Relaxed);
        let mut fault = self.fault(n, now);
        if let Some(workers) = &self.inner.workers
            && matches!(fault.kind, FaultKind::Pass | FaultKind::Drop)
        {
            let arrives = now.saturating_add(fault.latency);
            fault.latency = fault.latency.saturating_add(workers.serve(arrives));
        }
        fault
    }

    /// The fault of call number `n` at `now`: what [`next`](Self::next) gives the `n`-th
    /// call (counting from 0), without the time spent queueing for a
    /// [`capacity`](FaultPlanBuilder::capacity) (which depends on the calls before it).
    #[must_use]
    pub fn fault(&self, n: u64, now: Duration) -> Fault {
        let plan = &*self.inner;
        if let Some((from, until)) = plan.window
            && !(from..until).contains(&now)
        {
            return Fault::NONE;
        }
        if let Some((from, until)) = plan.call_window
            && !(from..until).contains(&n)
        {
            return Fault::NONE;
        }
        let mut rng = RetryRng::stream(plan.seed, n);
        let (rate, low, high) = plan.latency;
        let latency = if unit(&mut rng) < rate {
            let spread = high.saturating_sub(low);
            low.saturating_add(spread.mul_f64(unit(&mut rng)))
        } else {
            Duration::ZERO
        };
        let u = unit(&mut rng);
        let kinds = [
            FaultKind::Error,
            FaultKind::Timeout,
            FaultKind::Drop,
            FaultKind::Respond,
        ];
        let kind = plan
            .outcomes
            .iter()
            .zip(kinds)
            .find(|(threshold, _)| u < **threshold)
            .map_or(FaultKind::Pass, |(_, kind)| kind);
        Fault { latency, kind }
    }

    /// Calls decided so far.
    #[must_use]
    pub fn calls(&self) -> u64 {
        self.inner.calls.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for FaultPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

/// A uniform draw in `[0, 1)` with 53 bits.
fn unit(rng: &mut RetryRng) -> f64 {
    #[allow(clippy::cast_precision_loss)] // 53 bits: exact in an f64
    let mantissa = (rng.next_u64() >> 11) as f64;
    mantissa / (1_u64 << 53) as f64
}

/// Configures a [`FaultPlan`]; every rate is a probability in `[0, 1]`.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct FaultPlanBuilder {
    seed: u64,
    latency: (f64, Duration, Duration),
    error: f64,
    timeout: f64,
    drop: f64,
    respond: f64,
    window: Option<(Duration, Duration)>,
    call_window: Option<(u64, u64)>,
    capacity: Option<(usize, Duration)>,
    degraded: Option<(Duration, Duration, usize)>,
}

impl FaultPlanBuilder {
    /// The seed (default 0): the same seed gives the same faults in the same order.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Adds `delay` before a `rate` share of calls.
    pub fn latency(self, rate: f64, delay: Duration) -> Self {
        self.latency_between(rate, delay, delay)
    }

    /// Adds a delay drawn uniformly from `min..=max` before a `rate` share of calls.
    pub fn latency_between(mut self, rate: f64, min: Duration, max: Duration) -> Self {
        self.latency = (rate, min, max);
        self
    }

    /// Fails a `rate` share of calls without making them.
    pub fn error(mut self, rate: f64) -> Self {
        self.error = rate;
        self
    }

    /// Makes a `rate` share of calls never complete.
    pub fn timeout(mut self, rate: f64) -> Self {
        self.timeout = rate;
        self
    }

    /// Makes a `rate` share of calls, then loses their answer.
    pub fn drop_response(mut self, rate: f64) -> Self {
        self.drop = rate;
        self
    }

    /// Answers a `rate` share of calls with the injected response, without making them.
    pub fn respond(mut self, rate: f64) -> Self {
        self.respond = rate;
        self
    }

    /// Injects only while the clock reads within `from..until` (default: always).
    pub fn during(mut self, from: Duration, until: Duration) -> Self {
        self.window = Some((from, until));
        self
    }

    /// Injects only into the calls numbered `from..until`, counting from 0 (default: every
    /// call): `.error(1.0).only_calls(0, 2)` is an upstream whose first two calls fail, then
    /// recovers; together with [`during`](Self::during), a call must be in both.
    pub fn only_calls(mut self, from: u64, until: u64) -> Self {
        self.call_window = Some((from, until));
        self
    }

    /// Models the upstream's capacity: `workers` serve one call each in `service`, and calls
    /// beyond them queue in FIFO order, so latency climbs once the offered load passes
    /// `workers / service` calls per second (an overload or a brownout, not a random delay).
    /// Applies to the calls that are made, after any injected latency, whatever
    /// [`during`](Self::during) says.
    pub fn capacity(mut self, workers: usize, service: Duration) -> Self {
        self.capacity = Some((workers, service));
        self
    }

    /// Only `workers` of the [`capacity`](Self::capacity) serve while the clock reads within
    /// `from..until`: workers that leave finish the calls they were given; the ones that come
    /// back start idle.
    pub fn degraded(mut self, from: Duration, until: Duration, workers: usize) -> Self {
        self.degraded = Some((from, until, workers));
        self
    }

    /// Builds the plan.
    ///
    /// # Errors
    /// [`ConfigError`] naming the field when a rate is not a probability, the outcome rates
    /// add up to more than 1, the latency range is reversed, a window is empty, a capacity has
    /// no workers, or [`degraded`](Self::degraded) is set without a capacity.
    pub fn build(self) -> Result<FaultPlan, ConfigError> {
        let probability = |field: &'static str, rate: f64| {
            if (0.0..=1.0).contains(&rate) {
                Ok(rate)
            } else {
                Err(ConfigError::out_of_range(
                    field,
                    rate,
                    "a probability in [0, 1]",
                ))
            }
        };
        let (rate, min, max) = self.latency;
        let rate = probability("latency_rate", rate)?;
        if min > max {
            return Err(ConfigError::out_of_range(
                "latency_max",
                format!("{max:?}"),
                "at least the minimum latency",
            ));
        }
        let mut total = 0.0;
        let mut outcomes = [0.0; 4];
        let rates = [
            ("error_rate", self.error),
            ("timeout_rate", self.timeout),
            ("drop_rate", self.drop),
            ("respond_rate", self.respond),
        ];
        for (slot, (field, rate)) in outcomes.iter_mut().zip(rates) {
            total += probability(field, rate)?;
            if total > 1.0 + 1e-9 {
                return Err(ConfigError::out_of_range(
                    field,
                    rate,
                    "error, timeout, drop and respond rates adding up to at most 1",
                ));
            }
            *slot = total;
        }
        if let Some((from, until)) = self.window
            && from >= until
        {
            return Err(ConfigError::out_of_range(
                "during",
                format!("{from:?}..{until:?}"),
                "a window that ends after it starts",
            ));
        }
        if let Some((from, until)) = self.call_window
            && from >= until
        {
            return Err(ConfigError::out_of_range(
                "only_calls",
                format!("{from}..{until}"),
                "a range of call numbers that ends after it starts",
            ));
        }
        let workers = match (self.capacity, self.degraded) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(ConfigError::out_of_range(
                    "degraded",
                    "no capacity",
                    "a capacity(workers, service) to degrade",
                ));
            }
            (Some((0, _)), _) => {
                return Err(ConfigError::out_of_range(
                    "capacity",
                    0,
                    "at least one worker",
                ));
            }
            (Some(_), Some((_, _, 0))) => {
                return Err(ConfigError::out_of_range(
                    "degraded",
                    0,
                    "at least one worker",
                ));
            }
            (Some(_), Some((from, until, _))) if from >= until => {
                return Err(ConfigError::out_of_range(
                    "degraded",
                    format!("{from:?}..{until:?}"),
                    "a window that ends after it starts",
                ));
            }
            (Some((normal, service)), degraded) => Some(Workers {
                service,
                normal,
                degraded,
                free_at: Mutex::new(vec![Duration::ZERO; normal]),
            }),
        };
        Ok(FaultPlan {
            inner: Arc::new(Plan {
                seed: self.seed,
                latency: (rate, min, max),
                outcomes,
                window: self.window,
                call_window: self.call_window,
                workers,
                calls: AtomicU64::new(0),
            }),
        })
    }
}

/// A [`FaultPlan`] applied to sync calls: latency and hangs sleep on its clock (so a
/// [`ManualClock`](crate::ManualClock) just moves), errors come from the error maker. Put
/// it inside a [`ResilientExecutor`](crate::ResilientExecutor)'s operation:
/// `exec.run(&key, || faults.call(|| op()))`.
pub struct FaultInjector<E, C = MonotonicClock> {
    plan: FaultPlan,
    error: Arc<dyn Fn() -> E + Send + Sync>,
    hang: Duration,
    clock: C,
}

impl<E, C: Clone> Clone for FaultInjector<E, C> {
    fn clone(&self) -> Self {
        Self {
            plan: self.plan.clone(),
            error: Arc::clone(&self.error),
            hang: self.hang,
            clock: self.clock.clone(),
        }
    }
}

impl<E, C: fmt::Debug> fmt::Debug for FaultInjector<E, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultInjector")
            .field("plan", &self.plan)
            .field("hang", &self.hang)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl FaultInjector<(), MonotonicClock> {
    /// Starts an injector that injects nothing; give it an [`error`](FaultInjectorBuilder::error)
    /// maker before [`build`](FaultInjectorBuilder::build).
    pub fn builder() -> FaultInjectorBuilder<(), MonotonicClock> {
        FaultInjectorBuilder {
            plan: FaultPlan::builder(),
            error: None,
            hang: Duration::from_secs(30),
            clock: MonotonicClock,
        }
    }
}

impl<E, C: Clock> FaultInjector<E, C> {
    /// Runs `op` under the plan's next fault.
    ///
    /// # Errors
    /// The injected error (for an error, a hang after its sleep, or a dropped answer), or
    /// `op`'s own.
    pub fn call<T>(&self, op: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let fault = self.plan.next(self.clock.now());
        if !fault.latency.is_zero() {
            self.clock.sleep(fault.latency);
        }
        match fault.kind {
            FaultKind::Error | FaultKind::Respond => Err((self.error)()),
            FaultKind::Timeout => {
                self.clock.sleep(self.hang);
                Err((self.error)())
            }
            FaultKind::Drop => {
                let _lost = op();
                Err((self.error)())
            }
            FaultKind::Pass => op(),
        }
    }

    /// The plan it applies.
    #[must_use]
    pub fn plan(&self) -> &FaultPlan {
        &self.plan
    }
}

/// Configures a [`FaultInjector`].
#[must_use]
pub struct FaultInjectorBuilder<E, C> {
    plan: FaultPlanBuilder,
    error: Option<Arc<dyn Fn() -> E + Send + Sync>>,
    hang: Duration,
    clock: C,
}

impl<E, C: fmt::Debug> fmt::Debug for FaultInjectorBuilder<E, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultInjectorBuilder")
            .field("plan", &self.plan)
            .field("hang", &self.hang)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl<E, C> FaultInjectorBuilder<E, C> {
    /// Changes the plan: `injector.plan(|p| p.seed(7).latency(0.1, ms))`, with every
    /// [`FaultPlanBuilder`] option.
    pub fn plan(mut self, edit: impl FnOnce(FaultPlanBuilder) -> FaultPlanBuilder) -> Self {
        self.plan = edit(self.plan);
        self
    }

    /// How long a hanging sync call (the plan's [`timeout`](FaultPlanBuilder::timeout)) sleeps before it fails (default 30 s).
    pub fn hang(mut self, hang: Duration) -> Self {
        self.hang = hang;
        self
    }

    /// Fails a `rate` share of calls with `make()`; the same error reports hangs and lost
    /// answers.
    pub fn error<E2>(
        self,
        rate: f64,
        make: impl Fn() -> E2 + Send + Sync + 'static,
    ) -> FaultInjectorBuilder<E2, C> {
        FaultInjectorBuilder {
            plan: self.plan.error(rate),
            error: Some(Arc::new(make)),
            hang: self.hang,
            clock: self.clock,
        }
    }

    /// The clock latency and hangs sleep on (default [`MonotonicClock`]).
    pub fn clock<C2: Clock>(self, clock: C2) -> FaultInjectorBuilder<E, C2> {
        FaultInjectorBuilder {
            plan: self.plan,
            error: self.error,
            hang: self.hang,
            clock,
        }
    }

    /// Builds the injector.
    ///
    /// # Errors
    /// [`ConfigError`] from the plan, or `error` when no error maker was given.
    pub fn build(self) -> Result<FaultInjector<E, C>, ConfigError> {
        let error = self.error.ok_or_else(|| {
            ConfigError::out_of_range("error", "none", "an error maker: .error(rate, || err)")
        })?;
        Ok(FaultInjector {
            plan: self.plan.build()?,
            error,
            hang: self.hang,
            clock: self.clock,
        })
    }
}
