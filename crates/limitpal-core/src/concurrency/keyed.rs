//! [`KeyedBulkhead`]: a [`Bulkhead`] per key, in the bounded keyed store, and
//! [`KeyedAdaptiveLimit`]: an [`AdaptiveLimit`](super::AdaptiveLimit) per key, the same
//! store and cells with a limit that moves.

use std::borrow::Borrow;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use super::adaptive::{Settings, settings_setters};
use super::{Acquire, Bulkhead, BulkheadPermit, LimitAlgorithm, Queue};
use crate::clock::{nanos, now_nanos};
use crate::keyed::{Cells, DefaultHashBuilder, Store, default_shards};
use crate::sync::{AtomicU64, Ordering};
use crate::{BulkheadFull, Clock, ConfigError, MonotonicClock};

/// At most N calls in flight *per key* (a tenant, a host), each key with its own FIFO wait
/// queue: one tenant cannot take every slot. Keys live in the same bounded store as the rate
/// limiter's: a key with nothing in flight and nobody waiting is indistinguishable from a new
/// one and is dropped unobservably; a key with calls in flight is never dropped. Clones share
/// state.
///
/// ```
/// use limitpal_core::concurrency::KeyedBulkhead;
///
/// let bulkhead = KeyedBulkhead::builder(2).build()?;
/// let _a1 = bulkhead.try_acquire("tenant-a")?;
/// let _a2 = bulkhead.try_acquire("tenant-a")?;
/// assert!(bulkhead.try_acquire("tenant-a").is_err()); // a's two slots are taken
/// let b1 = bulkhead.try_acquire("tenant-b")?; // b is unaffected
/// drop(b1); // freed on drop
/// assert_eq!(bulkhead.len(), 1, "b holds nothing now: only a is kept");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct KeyedBulkhead<K> {
    inner: Arc<Inner<K>>,
}

impl<K> Clone for KeyedBulkhead<K> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<K> {
    slots: Slots,
    store: Store<K, Slots, DefaultHashBuilder>,
}

/// What every key's bulkhead is made with.
struct Slots {
    limit: u32,
    queue: Queue,
    /// For a keyed adaptive limit: how each key's limit moves.
    adaptive: Option<Template>,
}

/// How a [`KeyedAdaptiveLimit`] makes each key's limit.
struct Template {
    settings: Settings,
    clock: Arc<dyn Clock>,
    /// A new algorithm: a clone of the one the limit was built with.
    algorithm: Box<dyn Fn() -> Box<dyn LimitAlgorithm> + Send + Sync>,
    /// A key with nothing in flight is dropped after this long unused (nanoseconds).
    forget_after: Option<u64>,
}

impl Slots {
    /// The time keys' last uses are noted on: the adaptive limit's clock, else the monotonic.
    #[inline]
    fn now(&self) -> u64 {
        self.adaptive
            .as_ref()
            .map_or_else(|| now_nanos(&MonotonicClock), |t| t.clock.now_nanos())
    }

    /// Nothing in flight and nobody waiting: every permit and every waiter holds a clone.
    #[inline]
    fn free(cell: &SlotCell) -> bool {
        Arc::strong_count(&cell.bulkhead.shared) == 1
    }
}

/// A key's bulkhead and when it was last asked for a slot.
struct SlotCell {
    bulkhead: Bulkhead,
    used: AtomicU64,
}

impl Cells for Slots {
    type Cell = SlotCell;

    fn new_cell(&self) -> SlotCell {
        let bulkhead = match &self.adaptive {
            None => Bulkhead::with(self.limit, self.queue, None, None),
            Some(t) => t
                .settings
                .limit(Arc::clone(&t.clock), (t.algorithm)(), None),
        };
        SlotCell {
            bulkhead,
            used: AtomicU64::new(0),
        }
    }

    /// Free (see [`Slots::free`]) and, for an adaptive key, back where a new key starts (or
    /// unused for `forget_after`).
    #[inline]
    fn cell_idle(&self, cell: &SlotCell, now: u64, _idle: u64) -> bool {
        Self::free(cell)
            && self.adaptive.as_ref().is_none_or(|t| {
                t.forget_after.is_some_and(|after| {
                    cell.used.load(Ordering::Relaxed).saturating_add(after) <= now
                }) || cell
                    .bulkhead
                    .shared
                    .adaptive
                    .as_ref()
                    .is_some_and(|a| a.is_fresh(self.limit))
            })
    }

    #[inline]
    fn cell_recency(&self, cell: &SlotCell) -> u64 {
        cell.used.load(Ordering::Relaxed)
    }

    fn window(&self) -> u64 {
        0 // a free bulkhead is a fresh one at once
    }

    /// A key with calls in flight is never dropped: a new bulkhead for it would let a second
    /// set of calls in.
    #[inline]
    fn cell_evictable(&self, cell: &SlotCell) -> bool {
        Self::free(cell)
    }
}

impl<K> KeyedBulkhead<K> {
    /// At most `max_concurrent` calls at once per key, no queue, unbounded keys; configure
    /// further with the builder. The key type is inferred from use (or named:
    /// `KeyedBulkhead::<String>::builder(2)`).
    #[must_use]
    pub fn builder(max_concurrent: u32) -> KeyedBulkheadBuilder<K> {
        KeyedBulkheadBuilder {
            max_concurrent,
            queue: Queue::default(),
            max_keys: None,
            key: std::marker::PhantomData,
        }
    }
}

impl<K: Hash + Eq> KeyedBulkhead<K> {
    /// `key`'s bulkhead (inserted when the key is new), its last use noted.
    fn bulkhead<Q>(&self, key: &Q) -> Bulkhead
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let inner = &*self.inner;
        inner.store.with_cell(
            &inner.slots,
            key,
            || inner.slots.now(),
            0,
            |cell, now| {
                cell.used.store(now, Ordering::Relaxed);
                cell.bulkhead.clone() // held: the key is not idle until it is dropped
            },
        )
    }

    /// `key`'s bulkhead as a pipeline stage (made when the key is new): what `bulkhead_per`
    /// gives each run. A stage held keeps its key from being dropped.
    pub fn stage<Q>(&self, key: &Q) -> Bulkhead
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.bulkhead(key)
    }

    /// Takes one of `key`'s slots now, or fails: never waits.
    ///
    /// # Errors
    /// [`BulkheadFull`] when every slot of `key` is taken (or others wait for one).
    pub fn try_acquire<Q>(&self, key: &Q) -> Result<BulkheadPermit, BulkheadFull>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.bulkhead(key).try_acquire()
    }

    /// Takes one of `key`'s slots, waiting in `key`'s FIFO queue if one is configured (bound
    /// the wait by [`max_wait`](Self::max_wait)); see [`Bulkhead::acquire`].
    pub fn acquire<Q>(&self, key: &Q) -> Acquire
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.bulkhead(key).acquire()
    }

    /// Calls of `key` holding a slot now (0 for a key not held).
    #[must_use]
    pub fn in_flight<Q>(&self, key: &Q) -> u32
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner
            .store
            .peek_cell(key, |cell| cell.bulkhead.in_flight())
            .unwrap_or(0)
    }

    /// Keys held: those with calls in flight or waiting (free keys are dropped first).
    /// `O(keys)`.
    #[must_use]
    pub fn len(&self) -> usize {
        let slots = &self.inner.slots;
        self.inner.store.len(slots, slots.now(), 0)
    }

    /// Whether no key holds a slot or waits for one.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How long a caller may wait for one of its key's slots (zero without a queue).
    #[must_use]
    pub fn max_wait(&self) -> Duration {
        self.inner.slots.queue.max_wait
    }
}

impl<K> fmt::Debug for KeyedBulkhead<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBulkhead")
            .field("max_concurrent", &self.inner.slots.limit)
            .field("queue", &self.inner.slots.queue)
            .field("adaptive", &self.inner.slots.adaptive.is_some())
            .finish_non_exhaustive()
    }
}

/// Configures a [`KeyedBulkhead`]; made by [`KeyedBulkhead::builder`].
pub struct KeyedBulkheadBuilder<K> {
    max_concurrent: u32,
    queue: Queue,
    max_keys: Option<usize>,
    key: std::marker::PhantomData<fn() -> K>,
}

impl<K> fmt::Debug for KeyedBulkheadBuilder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBulkheadBuilder")
            .field("max_concurrent", &self.max_concurrent)
            .field("queue", &self.queue)
            .field("max_keys", &self.max_keys)
            .finish()
    }
}

impl<K> KeyedBulkheadBuilder<K> {
    /// Lets up to `max_waiting` callers *per key* wait (FIFO) up to `max_wait` each for one
    /// of the key's slots; `max_waiting` 0 means no queue (the default).
    #[must_use]
    pub fn queue(mut self, max_waiting: u32, max_wait: Duration) -> Self {
        self.queue = Queue::new(max_waiting, max_wait);
        self
    }

    /// Holds at most `max_keys` keys with nothing in flight (memory bound). A key with calls
    /// in flight or waiting is never dropped, so while more than `max_keys` keys are busy at
    /// once the store holds them all (each holds at least one permit or waiter).
    #[must_use]
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = Some(max_keys);
        self
    }

    /// Builds the keyed bulkhead.
    ///
    /// # Errors
    /// [`ConfigError::Zero`] for a zero `max_concurrent` or `max_keys`, or a zero `max_wait`
    /// with a queue.
    pub fn build(self) -> Result<KeyedBulkhead<K>, ConfigError>
    where
        K: Hash + Eq,
    {
        let queue = Queue::checked(self.max_concurrent, self.queue)?;
        KeyedBulkhead::with(
            Slots {
                limit: self.max_concurrent,
                queue,
                adaptive: None,
            },
            self.max_keys,
        )
    }
}

impl<K: Hash + Eq> KeyedBulkhead<K> {
    /// The one constructor behind both keyed builders.
    fn with(slots: Slots, max_keys: Option<usize>) -> Result<Self, ConfigError> {
        if max_keys == Some(0) {
            return Err(ConfigError::Zero { field: "max_keys" });
        }
        Ok(Self {
            inner: Arc::new(Inner {
                slots,
                store: Store::new(DefaultHashBuilder::default(), default_shards(), max_keys),
            }),
        })
    }
}

/// An [`AdaptiveLimit`](super::AdaptiveLimit) *per key* (a host, a tenant): each key's
/// concurrency limit follows that key's own latency and errors, so one slow upstream is
/// throttled while the others keep their limits. Keys live in the [`KeyedBulkhead`]'s store
/// (it is one, with limits that move: `KeyedBulkhead::from(limits)` shares it, which is what
/// `bulkhead_per` takes).
///
/// A key with nothing in flight whose limit is back at `initial_limit` and whose algorithm
/// kept no history ([`LimitAlgorithm::is_fresh`]: always for [`Aimd`](super::Aimd), never
/// after its first sample for [`Gradient2`](super::Gradient2)) is indistinguishable from a
/// new one and is dropped unobservably. A key with calls in flight is never dropped. The rest
/// — keys that learned a limit — are kept until `max_keys` pressure drops the least recently
/// used of them, or until `forget_after` has passed with the key unused; either forgets what
/// it learned (the key starts again at `initial_limit`). Keys are never metric labels: a keyed
/// limit records no per-key metrics.
///
/// ```
/// use limitpal_core::concurrency::{Aimd, KeyedAdaptiveLimit};
/// use limitpal_core::ManualClock;
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let limits = KeyedAdaptiveLimit::builder(Aimd::new())
///     .initial_limit(10)
///     .max_keys(10_000)
///     .forget_after(Duration::from_secs(600))
///     .clock(clock.clone())
///     .build()?;
/// for _ in 0..3 {
///     clock.advance(Duration::from_secs(1)); // one round trip per decrease
///     limits.try_acquire("slow.example:443")?.failure(); // x0.9 each
/// }
/// assert_eq!(limits.limit("slow.example:443"), 7);
/// assert_eq!(limits.limit("fast.example:443"), 10); // the other host keeps its limit
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct KeyedAdaptiveLimit<K> {
    bulkhead: KeyedBulkhead<K>,
}

impl<K> Clone for KeyedAdaptiveLimit<K> {
    fn clone(&self) -> Self {
        Self {
            bulkhead: self.bulkhead.clone(),
        }
    }
}

impl<K> fmt::Debug for KeyedAdaptiveLimit<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let slots = &self.bulkhead.inner.slots;
        f.debug_struct("KeyedAdaptiveLimit")
            .field("initial_limit", &slots.limit)
            .field("queue", &slots.queue)
            .finish_non_exhaustive()
    }
}

impl<K> From<KeyedAdaptiveLimit<K>> for KeyedBulkhead<K> {
    fn from(limits: KeyedAdaptiveLimit<K>) -> Self {
        limits.bulkhead
    }
}

impl<K> KeyedAdaptiveLimit<K> {
    /// Each key's limit moved by its own clone of `algorithm` ([`Aimd`](super::Aimd),
    /// [`Gradient2`](super::Gradient2), or your own); starts at 20 in `[1, 1000]`, no queue,
    /// unbounded keys. The key type is inferred from use.
    #[must_use]
    pub fn builder<A: LimitAlgorithm + Clone + Sync>(algorithm: A) -> KeyedAdaptiveLimitBuilder<K> {
        KeyedAdaptiveLimitBuilder {
            algorithm: Box::new(move || Box::new(algorithm.clone())),
            settings: Settings::default(),
            max_keys: None,
            forget_after: None,
            key: std::marker::PhantomData,
        }
    }
}

impl<K: Hash + Eq> KeyedAdaptiveLimit<K> {
    /// `key`'s limit as a pipeline stage (made when the key is new); see
    /// [`KeyedBulkhead::stage`].
    pub fn stage<Q>(&self, key: &Q) -> Bulkhead
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.bulkhead.stage(key)
    }

    /// Takes one of `key`'s slots now, or fails; record the permit (`success`/`failure`,
    /// or drop it: no sample) to move `key`'s limit.
    ///
    /// # Errors
    /// [`BulkheadFull`] at `key`'s limit.
    pub fn try_acquire<Q>(&self, key: &Q) -> Result<BulkheadPermit, BulkheadFull>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.bulkhead.try_acquire(key)
    }

    /// Takes one of `key`'s slots, waiting in `key`'s FIFO queue if one is configured; see
    /// [`Bulkhead::acquire`].
    pub fn acquire<Q>(&self, key: &Q) -> Acquire
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.bulkhead.acquire(key)
    }

    /// The limit enforced on `key` now (`initial_limit` for a key not held).
    #[must_use]
    pub fn limit<Q>(&self, key: &Q) -> u32
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.bulkhead
            .inner
            .store
            .peek_cell(key, |cell| cell.bulkhead.limit())
            .unwrap_or(self.bulkhead.inner.slots.limit)
    }

    /// Calls of `key` holding a slot now (0 for a key not held).
    #[must_use]
    pub fn in_flight<Q>(&self, key: &Q) -> u32
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.bulkhead.in_flight(key)
    }

    /// Keys held: those busy or with a learned limit (keys like new ones are dropped first).
    /// `O(keys)`.
    #[must_use]
    pub fn len(&self) -> usize {
        self.bulkhead.len()
    }

    /// Whether no key is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How long a caller may wait for one of its key's slots (zero without a queue).
    #[must_use]
    pub fn max_wait(&self) -> Duration {
        self.bulkhead.max_wait()
    }
}

/// Configures a [`KeyedAdaptiveLimit`]; made by [`KeyedAdaptiveLimit::builder`].
pub struct KeyedAdaptiveLimitBuilder<K> {
    algorithm: Box<dyn Fn() -> Box<dyn LimitAlgorithm> + Send + Sync>,
    settings: Settings,
    max_keys: Option<usize>,
    forget_after: Option<Duration>,
    key: std::marker::PhantomData<fn() -> K>,
}

impl<K> fmt::Debug for KeyedAdaptiveLimitBuilder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedAdaptiveLimitBuilder")
            .field("settings", &self.settings)
            .field("max_keys", &self.max_keys)
            .field("forget_after", &self.forget_after)
            .finish_non_exhaustive()
    }
}

impl<K> KeyedAdaptiveLimitBuilder<K> {
    settings_setters!();

    /// Holds at most `max_keys` keys with nothing in flight: past it, a key like a new one
    /// goes first, else the least recently used free key (forgetting its limit). Busy keys
    /// are never dropped.
    #[must_use]
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = Some(max_keys);
        self
    }

    /// Forgets a key with nothing in flight once it has gone unused this long: it starts
    /// again at `initial_limit` (default: never; keys that learned a limit then leave only
    /// under `max_keys` pressure).
    #[must_use]
    pub fn forget_after(mut self, unused: Duration) -> Self {
        self.forget_after = Some(unused);
        self
    }

    /// Builds the keyed limit.
    ///
    /// # Errors
    /// [`ConfigError`] as for [`AdaptiveLimitBuilder::build`](super::AdaptiveLimitBuilder::build),
    /// or for a zero `max_keys` or `forget_after`.
    pub fn build(self) -> Result<KeyedAdaptiveLimit<K>, ConfigError>
    where
        K: Hash + Eq,
    {
        let clock = self.settings.checked()?;
        if self.forget_after.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::Zero {
                field: "forget_after",
            });
        }
        let slots = Slots {
            limit: self.settings.bounds.initial,
            queue: self.settings.queue,
            adaptive: Some(Template {
                settings: self.settings,
                clock,
                algorithm: self.algorithm,
                forget_after: self.forget_after.map(nanos),
            }),
        };
        Ok(KeyedAdaptiveLimit {
            bulkhead: KeyedBulkhead::with(slots, self.max_keys)?,
        })
    }
}
