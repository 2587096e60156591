//! The keyed store: a sharded hash table from key to an algorithm's cell.
//!
//! Each shard is a `hashbrown::HashTable<(K, Cell)>` behind an `RwLock`: the key is hashed once
//! (the same hash picks the shard and the bucket), lookups of existing keys take the read lock,
//! and only inserting a new key takes the write lock. Slots are inline, so a GCRA entry for a
//! `u64` key is 16 bytes plus one control byte.
//!
//! Eviction runs inside inserts, never in the background (so a `ManualClock` drives it):
//! - a key whose state has equalled a fresh key's for `idle_ttl` is *idle*; dropping it is
//!   unobservable, because re-creating it gives the same answers;
//! - every insert sweeps a few buckets from a rolling cursor and drops idle keys there;
//! - before a shard's table would grow, it drops all its idle keys first, so memory is bounded
//!   by the keys that are not idle;
//! - with `max_keys`, a full shard drops an idle key if its sample holds one, else the least
//!   recently used key of the sample (approximate LRU by state). This is observable: the
//!   dropped key starts again with a full quota.

use std::hash::{BuildHasher, Hash};
use std::sync::PoisonError;

use crate::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use hashbrown::HashTable;

use super::Algorithm;

/// The default hasher for keys: std's `RandomState` (SipHash-1-3 with a random per-process
/// seed), resistant to hash flooding by clients who choose their own keys.
pub type DefaultHashBuilder = std::collections::hash_map::RandomState;

/// Buckets swept for idle keys on every insert.
const SWEEP_PER_INSERT: usize = 4;
/// Occupied slots examined when a full shard must pick a victim.
const VICTIM_SAMPLE: usize = 16;
/// The top of the hash picks the bucket's tag in hashbrown and the bottom picks the bucket;
/// the shard comes from the middle.
const SHARD_SHIFT: u32 = 32;

pub(crate) struct Store<K, A: Algorithm, S> {
    hasher: S,
    shards: Box<[LockedShard<K, A::Cell>]>,
    mask: usize,
    max_per_shard: usize,
}

type LockedShard<K, V> = RwLock<Shard<K, V>>;

struct Shard<K, V> {
    table: HashTable<(K, V)>,
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
        Self {
            hasher,
            shards: (0..shards)
                .map(|_| {
                    RwLock::new(Shard {
                        table: HashTable::new(),
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
        let hash = self.hasher.hash_one(key);
        let shard = self.shard(hash);
        {
            let read = read(shard);
            if let Some((_, cell)) = read.table.find(hash, |(k, _)| k.borrow() == key) {
                return f(cell);
            }
        }
        let mut guard = write(shard);
        let shard = &mut *guard;
        if let Some((_, cell)) = shard.table.find(hash, |(k, _)| k.borrow() == key) {
            return f(cell);
        }
        shard.sweep(alg, now, idle_ttl, SWEEP_PER_INSERT);
        if shard.table.len() >= self.max_per_shard {
            shard.evict_one(alg, now, idle_ttl);
        }
        if shard.table.len() == shard.table.capacity() {
            // About to grow: drop every idle key first, so memory follows the live keys.
            shard
                .table
                .retain(|(_, cell)| !alg.cell_idle(cell, now, idle_ttl));
        }
        let entry = shard
            .table
            .insert_unique(hash, (key.to_owned(), alg.new_cell()), |(k, _)| {
                self.hasher.hash_one(k)
            });
        f(&entry.get().1)
    }

    /// Runs `f` on `key`'s cell if the key is held; never inserts.
    pub(crate) fn peek_cell<Q, R>(&self, key: &Q, f: impl FnOnce(&A::Cell) -> R) -> Option<R>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hasher.hash_one(key);
        let shard = self.shard(hash);
        let read = read(shard);
        read.table
            .find(hash, |(k, _)| k.borrow() == key)
            .map(|(_, cell)| f(cell))
    }

    /// The shard that holds keys with this hash.
    #[inline]
    fn shard(&self, hash: u64) -> &LockedShard<K, A::Cell> {
        #[allow(clippy::cast_possible_truncation)] // only the low bits are kept
        &self.shards[(hash >> SHARD_SHIFT) as usize & self.mask]
    }

    /// Drops every idle key, then counts the rest. `O(keys)`.
    pub(crate) fn len(&self, alg: &A, now: u64, idle_ttl: u64) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                let mut shard = write(shard);
                shard
                    .table
                    .retain(|(_, cell)| !alg.cell_idle(cell, now, idle_ttl));
                shard.table.len()
            })
            .sum()
    }

    /// Bytes of table memory held (slots and control bytes, not the keys' own heap data).
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
    /// Drops idle keys found in the next `buckets` buckets from the cursor.
    fn sweep<A>(&mut self, alg: &A, now: u64, idle_ttl: u64, buckets: usize)
    where
        A: Algorithm + super::sealed::Sealed<Cell = V>,
    {
        let n = self.table.num_buckets();
        if n == 0 {
            return;
        }
        for _ in 0..buckets.min(n) {
            self.cursor = (self.cursor + 1) % n;
            if let Ok(entry) = self.table.get_bucket_entry(self.cursor)
                && alg.cell_idle(&entry.get().1, now, idle_ttl)
            {
                entry.remove();
            }
        }
    }

    /// Makes room for one key: an idle key if the sample holds one, else the least recently
    /// used key of the sample.
    fn evict_one<A>(&mut self, alg: &A, now: u64, idle_ttl: u64)
    where
        A: Algorithm + super::sealed::Sealed<Cell = V>,
    {
        let n = self.table.num_buckets();
        let mut victim: Option<(usize, u64)> = None;
        let mut seen = 0;
        for _ in 0..n {
            self.cursor = (self.cursor + 1) % n;
            let Some((_, cell)) = self.table.get_bucket(self.cursor) else {
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
        if let Some((index, _)) = victim
            && let Ok(entry) = self.table.get_bucket_entry(index)
        {
            entry.remove();
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
