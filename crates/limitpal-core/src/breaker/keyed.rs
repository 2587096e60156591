//! [`KeyedCircuitBreaker`]: a [`CircuitBreaker`] per key, in the bounded keyed store.

use std::borrow::Borrow;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use super::builder::{CircuitBreakerBuilder, KeyListeners, Keyed, Template};
use super::{CallPermit, CircuitBreaker, CircuitState, KeyHooks};
use crate::clock::{nanos, now_nanos};
use crate::keyed::{Cells, DefaultHashBuilder, Store, default_shards};
use crate::sync::{AtomicU64, Ordering, lock};
use crate::{CircuitOpen, Clock, ConfigError, MonotonicClock};

/// A circuit breaker per key (a host, a tenant): one dead upstream opens its own breaker
/// and no other. Every key runs the [`CircuitBreaker`] state machine itself, with the
/// options given to [`builder`](KeyedCircuitBreaker::builder) (every `CircuitBreaker`
/// option, plus `max_keys` and `idle_ttl`). Clones share state.
///
/// Keys live in the same bounded store as the rate limiter's. A key whose breaker is Closed
/// with nothing counted (no consecutive failure, an empty failure-rate window, a full error
/// budget) and no permit out is indistinguishable from a new key and is dropped
/// unobservably once it has been so for `idle_ttl`. An Open or `HalfOpen` breaker is never
/// dropped, nor one with a permit out; under `max_keys` pressure the least recently used
/// Closed key goes first, and while every key held is Open or busy the store holds them all
/// (more than `max_keys`) rather than forget an open breaker. Keys are never metric labels
/// and never logged: a keyed breaker records no per-key metrics, and its `on_state_change`
/// and `on_rejection` listeners hear no key. To hear which key moved or refused a call, opt
/// in with [`on_key_state_change`](CircuitBreakerBuilder::on_key_state_change) and
/// [`on_key_rejection`](CircuitBreakerBuilder::on_key_rejection).
///
/// ```
/// use limitpal_core::{CircuitState, KeyedCircuitBreaker, ManualClock};
/// use std::time::Duration;
///
/// let breakers = KeyedCircuitBreaker::builder()
///     .failure_threshold(2)
///     .recovery_timeout(Duration::from_secs(5))
///     .clock(ManualClock::new())
///     .build()?;
/// for _ in 0..2 {
///     breakers.try_acquire("db-1")?.failure();
/// }
/// assert_eq!(breakers.state("db-1"), CircuitState::Open);
/// assert!(breakers.try_acquire("db-1").is_err());
/// breakers.try_acquire("db-2")?.success(); // another key is unaffected
/// assert_eq!(breakers.state("db-2"), CircuitState::Closed);
/// assert_eq!(breakers.len(), 1, "db-2 looks fresh again: only db-1 is held");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct KeyedCircuitBreaker<K, C: Clock = MonotonicClock> {
    inner: Arc<Inner<K, C>>,
}

impl<K, C: Clock> Clone for KeyedCircuitBreaker<K, C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<K, C: Clock> {
    breakers: Breakers<K, C>,
    store: Store<K, Breakers<K, C>, DefaultHashBuilder>,
    idle_ttl: u64,
    /// Whether a key's last use matters (an `idle_ttl` to wait out, or `max_keys` to pick
    /// the least recent by): only then does an admission of a held key read the clock.
    recency: bool,
}

/// How every key's breaker is made.
struct Breakers<K, C> {
    template: Template<C>,
    /// The listeners that hear keys, if any was given.
    listeners: Option<Arc<KeyListeners<K>>>,
}

impl<K, C> Breakers<K, C> {
    /// A new key's cell: its breaker, its listeners bound to a copy of the key if so asked.
    fn cell_for(&self, key: &K) -> KeyCell<C> {
        self.cell(
            self.listeners
                .as_ref()
                .and_then(|listeners| listeners.bind.map(|bind| bind(listeners, key))),
        )
    }

    fn cell(&self, key: Option<Arc<dyn KeyHooks>>) -> KeyCell<C> {
        KeyCell {
            breaker: self.template.make_with(key),
            used: AtomicU64::new(0),
        }
    }
}

/// A key's breaker and when it was last asked for a permit.
struct KeyCell<C> {
    breaker: CircuitBreaker<C>,
    used: AtomicU64,
}

impl<K, C: Clock> Cells for Breakers<K, C> {
    type Cell = KeyCell<C>;

    /// A cell that names no key: the store's plain insert path, which this stage does not
    /// take (its keys are made with [`Breakers::cell_for`], so that a listener knows them).
    fn new_cell(&self) -> KeyCell<C> {
        self.cell(None)
    }

    fn cell_idle(&self, cell: &KeyCell<C>, now: u64, idle: u64) -> bool {
        cell.used.load(Ordering::Relaxed).saturating_add(idle) <= now && cell.breaker.is_fresh(now)
    }

    fn cell_recency(&self, cell: &KeyCell<C>) -> u64 {
        cell.used.load(Ordering::Relaxed)
    }

    fn window(&self) -> u64 {
        self.template.window()
    }

    /// Only a Closed breaker with no permit out may go under `max_keys` pressure.
    fn cell_evictable(&self, cell: &KeyCell<C>) -> bool {
        Arc::strong_count(&cell.breaker.inner) == 1
            && cell.breaker.inner.load().state() == CircuitState::Closed
    }
}

impl<C: Clock> CircuitBreaker<C> {
    /// Whether this breaker answers every question as a new one would: Closed, nothing
    /// counted, no permit out (every permit holds a reference).
    fn is_fresh(&self, now: u64) -> bool {
        let inner = &*self.inner;
        let w = inner.load();
        if Arc::strong_count(&self.inner) != 1
            || w.state() != CircuitState::Closed
            || w.failures() != 0
        {
            return false;
        }
        if let Some(budget) = inner.shared.config.budget
            && !budget.cell_full(&inner.budget, now)
        {
            return false;
        }
        let slow = lock(&inner.slow);
        slow.in_flight == 0 && slow.window().is_none_or(|w| w.is_empty(now))
    }
}

impl<K: Hash + Eq, C: Clock> CircuitBreakerBuilder<C, Keyed<K>> {
    /// Holds at most `max_keys` keys whose breakers are Closed and idle (memory bound); see
    /// [`KeyedCircuitBreaker`] for what is dropped first.
    #[must_use]
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.target_mut().max_keys = Some(max_keys);
        self
    }

    /// How long a key must look fresh before it may be dropped (default 0: at once).
    #[must_use]
    pub fn idle_ttl(mut self, idle_ttl: std::time::Duration) -> Self {
        self.target_mut().idle_ttl = idle_ttl;
        self
    }

    /// Called with `(key, from, to)` after every transition of a key's breaker, outside its
    /// lock (so it may use the keyed breaker): the opt-in way to hear which host or tenant
    /// moved, for a log line or a metric of your own. Runs after
    /// [`on_state_change`](CircuitBreakerBuilder::on_state_change), which never sees keys.
    ///
    /// Each key held keeps a copy of itself for this and
    /// [`on_key_rejection`](Self::on_key_rejection) (56 bytes in two allocations when the key
    /// is made, for a `u64` key, for either listener or both; none per call); a key dropped as
    /// fresh and made again hears its transitions as before.
    ///
    /// ```
    /// use limitpal_core::{CircuitState, KeyedCircuitBreaker, ManualClock};
    /// use std::sync::{Arc, Mutex};
    ///
    /// let opened = Arc::new(Mutex::new(Vec::new()));
    /// let log = Arc::clone(&opened);
    /// let breakers = KeyedCircuitBreaker::<String, _>::builder()
    ///     .failure_threshold(1)
    ///     .clock(ManualClock::new())
    ///     .on_key_state_change(move |host: &String, _from, to| {
    ///         if to == CircuitState::Open {
    ///             log.lock().unwrap().push(host.clone());
    ///         }
    ///     })
    ///     .build()?;
    /// breakers.try_acquire("db-1")?.failure();
    /// breakers.try_acquire("db-2")?.success();
    /// assert_eq!(*opened.lock().unwrap(), ["db-1"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn on_key_state_change(
        mut self,
        listener: impl Fn(&K, CircuitState, CircuitState) + Send + Sync + 'static,
    ) -> Self
    where
        K: Clone + Send + Sync + 'static,
    {
        let listeners = &mut self.target_mut().listeners;
        listeners.on_change = Some(Arc::new(listener));
        listeners.bindable();
        self
    }

    /// Called with `(key, &CircuitOpen)` for every call a key's breaker refuses (shadow-mode
    /// refusals too), after [`on_rejection`](CircuitBreakerBuilder::on_rejection), which never
    /// sees keys: the opt-in way to count fail-fast calls per host or tenant. Runs on the
    /// refused caller's thread, outside the breaker's lock: keep it short. Through a pipeline
    /// (`circuit_breaker_per`) it hears the pipeline's refusals as well.
    ///
    /// The key is the copy its breaker holds (see
    /// [`on_key_state_change`](Self::on_key_state_change)): nothing is made per refusal.
    ///
    /// ```
    /// use limitpal_core::{KeyedCircuitBreaker, ManualClock};
    /// use std::sync::{Arc, Mutex};
    /// use std::time::Duration;
    ///
    /// let refused = Arc::new(Mutex::new(Vec::new()));
    /// let log = Arc::clone(&refused);
    /// let breakers = KeyedCircuitBreaker::<String, _>::builder()
    ///     .failure_threshold(1)
    ///     .recovery_timeout(Duration::from_secs(5))
    ///     .clock(ManualClock::new())
    ///     .on_key_rejection(move |host: &String, open| {
    ///         log.lock().unwrap().push((host.clone(), open.retry_after));
    ///     })
    ///     .build()?;
    /// breakers.try_acquire("db-1")?.failure();
    /// assert!(breakers.try_acquire("db-1").is_err());
    /// breakers.try_acquire("db-2")?.success();
    /// assert_eq!(*refused.lock().unwrap(), [("db-1".to_string(), Duration::from_secs(5))]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn on_key_rejection(
        mut self,
        listener: impl Fn(&K, &CircuitOpen) + Send + Sync + 'static,
    ) -> Self
    where
        K: Clone + Send + Sync + 'static,
    {
        let listeners = &mut self.target_mut().listeners;
        listeners.on_rejection = Some(Arc::new(listener));
        listeners.bindable();
        self
    }

    /// Builds the keyed breaker, every key Closed.
    ///
    /// # Errors
    /// As [`CircuitBreakerBuilder::build`], and [`ConfigError::Zero`] for a zero `max_keys`.
    pub fn build(mut self) -> Result<KeyedCircuitBreaker<K, C>, ConfigError> {
        let key_rejections = self.target_mut().listeners.on_rejection.is_some();
        let (template, keyed) = self.into_template(false, key_rejections)?;
        if keyed.max_keys == Some(0) {
            return Err(ConfigError::Zero { field: "max_keys" });
        }
        Ok(KeyedCircuitBreaker {
            inner: Arc::new(Inner {
                breakers: Breakers {
                    template,
                    listeners: keyed
                        .listeners
                        .bind
                        .is_some()
                        .then(|| Arc::new(keyed.listeners)),
                },
                store: Store::new(
                    DefaultHashBuilder::default(),
                    default_shards(),
                    keyed.max_keys,
                ),
                idle_ttl: nanos(keyed.idle_ttl),
                recency: keyed.max_keys.is_some() || !keyed.idle_ttl.is_zero(),
            }),
        })
    }
}

impl<K: Hash + Eq, C: Clock> KeyedCircuitBreaker<K, C> {
    fn now(&self) -> u64 {
        now_nanos(&self.inner.breakers.template.shared.clock)
    }

    /// `f` of `key`'s breaker (made when the key is new), its use noted (when it matters:
    /// without `max_keys` and `idle_ttl` a held key's admission reads no clock).
    #[inline]
    fn with_breaker<Q, R>(&self, key: &Q, f: impl Fn(&CircuitBreaker<C>) -> R) -> R
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let inner = &*self.inner;
        if !inner.recency
            && let Some(answer) = inner.store.peek_cell(key, |cell| f(&cell.breaker))
        {
            return answer;
        }
        inner.store.with_cell_made(
            &inner.breakers,
            key,
            || self.now(),
            inner.idle_ttl,
            |key| inner.breakers.cell_for(key),
            |cell, now| {
                cell.used.store(now, Ordering::Relaxed);
                f(&cell.breaker)
            },
        )
    }

    /// `key`'s breaker (made when the key is new), its use noted.
    fn breaker<Q>(&self, key: &Q) -> CircuitBreaker<C>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.with_breaker(key, CircuitBreaker::clone)
    }

    /// `key`'s breaker as a pipeline stage (made when the key is new): what
    /// `circuit_breaker_per` gives each run. A stage held keeps its key from being dropped.
    pub fn stage<Q>(&self, key: &Q) -> crate::pipeline::AnyBreaker
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        C: 'static,
    {
        self.breaker(key).into()
    }

    /// Asks to make a call to `key`; see [`CircuitBreaker::try_acquire`].
    ///
    /// # Errors
    /// [`CircuitOpen`] when `key`'s breaker is open.
    pub fn try_acquire<Q>(&self, key: &Q) -> Result<CallPermit, CircuitOpen>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        // a closed breaker admits in the store (no clone of the key's breaker to take and
        // drop); any other runs outside the store's lock, as its listeners may call back
        match self.with_breaker(key, |breaker| {
            breaker.try_acquire_closed().ok_or_else(|| breaker.clone())
        }) {
            Ok(permit) => Ok(permit),
            Err(breaker) => breaker.try_acquire(),
        }
    }

    /// `key`'s state now (Closed for a key not held: a new key's).
    pub fn state<Q>(&self, key: &Q) -> CircuitState
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner
            .store
            .peek_cell(key, |cell| cell.breaker.state())
            .unwrap_or(CircuitState::Closed)
    }

    /// Closes `key`'s breaker and forgets its counts (see [`CircuitBreaker::reset`]).
    pub fn reset<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner.store.peek_cell(key, |cell| cell.breaker.reset());
    }

    /// Keys held, after dropping those that look fresh. `O(keys)`.
    #[must_use]
    pub fn len(&self) -> usize {
        let inner = &*self.inner;
        inner.store.len(&inner.breakers, self.now(), inner.idle_ttl)
    }

    /// Whether no key is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K, C: Clock> fmt::Debug for KeyedCircuitBreaker<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreaker")
            .field("config", &self.inner.breakers.template.config_debug())
            .finish_non_exhaustive()
    }
}
