//! The keyed store: a sharded hash table from key to an algorithm's cell.
//!
//! Each shard is a [`Table`] of inline `(tag, key, cell)` slots behind an `RwLock`: the key is
//! hashed once (the low bits pick the shard, the high 31 bits are the tag that picks the slot),
//! lookups of existing keys take the read lock and read one run of adjacent slots, and only
//! inserting a new key takes the write lock. A GCRA slot for a `u64` key is 24 bytes.
//!
//! Eviction runs inside inserts, never in the background (so a `ManualClock` drives it):
//! - a key whose state has equalled a fresh key's for `idle_ttl` is *idle*; dropping it is
//!   unobservable, because re-creating it gives the same answers;
//! - every insert sweeps a few slots from a rolling cursor and drops idle keys there;
//! - before a shard's table would grow, it drops all its idle keys first, so memory is bounded
//!   by the keys that are not idle;
//! - with `max_keys`, a full shard drops an idle key if its sample holds one, else the least
//!   recently used key of the sample (approximate LRU by state). This is observable: the
//!   dropped key starts again with a full quota.

use std::hash::{BuildHasher, Hash};
use std::sync::PoisonError;

use crate::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::Algorithm;
use super::table::{FAR_BYTES, TAG_BITS, Table};

/// The default hasher for keys: std's `RandomState` (SipHash-1-3 with a random per-process
/// seed), resistant to hash flooding by clients who choose their own keys.
pub type DefaultHashBuilder = std::collections::hash_map::RandomState;

/// Slots swept for idle keys on every insert.
const SWEEP_PER_INSERT: usize = 4;
/// Occupied slots examined when a full shard must pick a victim.
const VICTIM_SAMPLE: usize = 16;

pub(crate) struct Store<K, A: Algorithm, S> {
    hasher: S,
    shards: Box<[LockedShard<K, A::Cell>]>,
    mask: usize,
    max_per_shard: usize,
}

type LockedShard<K, V> = RwLock<Shard<K, V>>;

struct Shard<K, V> {
    table: Table<K, V>,
    cursor: usize,
}

impl<K, A, S> Store<K, A, S>
where
    K: Hash + Eq,
    A: Algorithm,
    S: BuildHasher,
{
    /// `shards` is rounded up to a power of two; `max_keys` is divided between them (rounding
    /// down, so the total never exceeds it).
    pub(crate) fn new(hasher: S, shards: usize, max_keys: Option<usize>) -> Self {
        let mut shards = shards.max(1).next_power_of_two();
        if let Some(max) = max_keys {
            // every shard must be able to hold at least one key
            while shards > max.max(1) {
                shards /= 2;
            }
        }
        let max_per_shard = max_keys.map_or(usize::MAX, |max| (max / shards).max(1));
        let far_bytes = FAR_BYTES / shards;
        Self {
            hasher,
            shards: (0..shards)
                .map(|_| {
                    RwLock::new(Shard {
                        table: Table::new(far_bytes),
                        cursor: 0,
                    })
                })
                .collect(),
            mask: shards - 1,
            max_per_shard,
        }
    }

    /// Runs `f` on `key`'s cell, inserting a fresh cell first when the key is new.
    #[inline]
    pub(crate) fn with_cell<Q, R>(
        &self,
        alg: &A,
        key: &Q,
        now: u64,
        idle_ttl: u64,
        f: impl FnOnce(&A::Cell) -> R,
    ) -> R
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let (shard, tag) = self.locate(key);
        {
            let read = read(shard);
            if let Some(cell) = read.table.find(tag, |k| k.borrow() == key) {
                return f(cell);
            }
        }
        let mut guard = write(shard);
        let shard = &mut *guard;
        if let Some(cell) = shard.table.find(tag, |k| k.borrow() == key) {
            return f(cell);
        }
        shard.sweep(alg, now, idle_ttl, SWEEP_PER_INSERT);
        if shard.table.len() >= self.max_per_shard {
            shard.evict_one(alg, now, idle_ttl);
        }
        if shard.table.is_full() {
            // About to grow: drop every idle key first, so memory follows the live keys.
            shard
                .table
                .retain(|cell| !alg.cell_idle(cell, now, idle_ttl));
        }
        // Nobody else sees the new cell before it is in the table, so it can answer first.
        let cell = alg.new_cell();
        let answer = f(&cell);
        shard.table.insert(tag, key.to_owned(), cell);
        answer
    }

    /// Runs `f` on `key`'s cell if the key is held; never inserts.
    pub(crate) fn peek_cell<Q, R>(&self, key: &Q, f: impl FnOnce(&A::Cell) -> R) -> Option<R>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (shard, tag) = self.locate(key);
        let read = read(shard);
        read.table.find(tag, |k| k.borrow() == key).map(f)
    }

    /// The shard that holds `key` (the hash's low bits) and its tag there (the high 31 bits).
    ///
    /// Always inlined, with the hasher spelled out rather than `hash_one`: in a large caller
    /// (a layer's erased limiter) `hash_one` stayed an out-of-line call on std's generic byte
    /// path, 142 instructions per `u64` key against ~90 inlined (callgrind, BENCHMARKS.md).
    #[inline(always)]
    fn locate<Q: Hash + ?Sized>(&self, key: &Q) -> (&LockedShard<K, A::Cell>, u32) {
        let mut hasher = self.hasher.build_hasher();
        key.hash(&mut hasher);
        let hash = std::hash::Hasher::finish(&hasher);
        #[allow(clippy::cast_possible_truncation)] // only the low bits pick the shard
        let shard = &self.shards[hash as usize & self.mask];
        #[allow(clippy::cast_possible_truncation)] // the high half, exactly
        let tag = (hash >> (64 - TAG_BITS)) as u32;
        (shard, tag)
    }

    /// Drops every idle key, then counts the rest. `O(keys)`.
    pub(crate) fn len(&self, alg: &A, now: u64, idle_ttl: u64) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                let mut shard = write(shard);
                shard
                    .table
                    .retain(|cell| !alg.cell_idle(cell, now, idle_ttl));
                shard.table.len()
            })
            .sum()
    }

    /// Bytes of table memory held (slots, not the keys' own heap data).
    pub(crate) fn allocation_size(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| read(shard).table.allocation_size())
            .sum()
    }
}

impl<K, A: Algorithm, S> Store<K, A, S> {
    pub(crate) fn shard_count(&self) -> usize {
        self.shards.len()
    }
}

impl<K, V> Shard<K, V> {
    /// Drops idle keys found in the next `slots` slots from the cursor.
    fn sweep<A>(&mut self, alg: &A, now: u64, idle_ttl: u64, slots: usize)
    where
        A: Algorithm + super::sealed::Sealed<Cell = V>,
    {
        let n = self.table.num_slots();
        for _ in 0..slots.min(n) {
            self.cursor = (self.cursor + 1) % n;
            if let Some((_, cell)) = self.table.get(self.cursor)
                && alg.cell_idle(cell, now, idle_ttl)
            {
                self.table.remove(self.cursor);
            }
        }
    }

    /// Makes room for one key: an idle key if the sample holds one, else the least recently
    /// used key of the sample.
    fn evict_one<A>(&mut self, alg: &A, now: u64, idle_ttl: u64)
    where
        A: Algorithm + super::sealed::Sealed<Cell = V>,
    {
        let n = self.table.num_slots();
        let mut victim: Option<(usize, u64)> = None;
        let mut seen = 0;
        for _ in 0..n {
            self.cursor = (self.cursor + 1) % n;
            let Some((_, cell)) = self.table.get(self.cursor) else {
                continue;
            };
            if alg.cell_idle(cell, now, idle_ttl) {
                victim = Some((self.cursor, 0));
                break;
            }
            let recency = alg.cell_recency(cell);
            if victim.is_none_or(|(_, best)| recency < best) {
                victim = Some((self.cursor, recency));
            }
            seen += 1;
            if seen == VICTIM_SAMPLE {
                break;
            }
        }
        if let Some((index, _)) = victim {
            self.table.remove(index);
        }
    }
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    // Nothing panics while a shard is locked; a poisoned shard still holds valid states.
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
