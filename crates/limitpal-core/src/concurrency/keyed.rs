//! [`KeyedBulkhead`]: a [`Bulkhead`] per key, in the bounded keyed store.

use std::borrow::Borrow;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use super::{Acquire, Bulkhead, BulkheadPermit, Queue};
use crate::clock::now_nanos;
use crate::keyed::{Cells, DefaultHashBuilder, Store, default_shards};
use crate::sync::{AtomicU64, Ordering};
use crate::{BulkheadFull, ConfigError, MonotonicClock};

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
#[derive(Debug, Clone, Copy)]
struct Slots {
    limit: u32,
    queue: Queue,
}

/// A key's bulkhead and when it was last asked for a slot.
struct SlotCell {
    bulkhead: Bulkhead,
    used: AtomicU64,
}

impl Cells for Slots {
    type Cell = SlotCell;

    fn new_cell(&self) -> SlotCell {
        SlotCell {
            bulkhead: Bulkhead::with(self.limit, self.queue, None, None),
            used: AtomicU64::new(0),
        }
    }

    /// Nothing in flight and nobody waiting: every permit and every waiter holds a clone.
    #[inline]
    fn cell_idle(&self, cell: &SlotCell, _now: u64, _idle: u64) -> bool {
        Arc::strong_count(&cell.bulkhead.shared) == 1
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
        self.cell_idle(cell, 0, 0)
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
            || now_nanos(&MonotonicClock),
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
        self.inner.store.len(&self.inner.slots, 0, 0)
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
        if self.max_keys == Some(0) {
            return Err(ConfigError::Zero { field: "max_keys" });
        }
        Ok(KeyedBulkhead {
            inner: Arc::new(Inner {
                slots: Slots {
                    limit: self.max_concurrent,
                    queue,
                },
                store: Store::new(
                    DefaultHashBuilder::default(),
                    default_shards(),
                    self.max_keys,
                ),
            }),
        })
    }
}
