//! The keyed store: a sharded hash table from key to a stage's cell.
//!
//! Each shard is a [`Table`] of inline `(tag, key, cell)` slots behind an `RwLock` (padded to
//! its own cache lines, so that two threads on two shards never share one): the key is hashed
//! once (the low bits pick the shard, the high 31 bits are the tag that picks the slot),
//! lookups of existing keys take the read lock and read one run of adjacent slots, and only
//! inserting a new key takes the write lock. A GCRA slot for a `u64` key is 24 bytes.
//!
//! A key whose state has equalled a fresh key's for `idle_ttl` is *idle*: dropping it is
//! unobservable, because re-creating it gives the same answers. Idle keys are *not* dropped
//! as soon as they are idle: a key that comes back finds its entry and reuses it in place, at
//! the cost of any other lookup (per-IP traffic is mostly such keys). Space is reclaimed only
//! where it is needed, inside inserts (never in the background, so a `ManualClock` drives it):
//! - before a shard's table would grow, it drops the keys that have been idle for `idle_ttl`
//!   plus a grace of one refill period (at most one second; [`MAX_GRACE`]), and grows only if
//!   that freed less than a quarter of it, so memory follows the keys in use and one pass
//!   over the table pays for many inserts;
//! - with `max_keys`, a full shard drops an idle key if its sample holds one, else the least
//!   recently used key of the sample (approximate LRU by state). This is observable: the
//!   dropped key starts again with a full quota. Its table never grows past what `max_keys`
//!   needs.
//!
//! So a table holds at most the keys checked within `idle_ttl`, one refill period (the
//! longest a key takes to be full again) and the grace, and a key checked at least that often
//! is never dropped and re-inserted.

use crate::sync::{RwLock, read, write};
use std::hash::{BuildHasher, Hash};

use super::Cells;
use super::table::{FAR_BYTES, TAG_BITS, Table};

/// The default hasher for keys: foldhash, seeded at random per limiter (a third of
/// SipHash's cost for a `u64` key).
///
/// Flooding is handled by the store rather than the hasher: a shard whose keys collide (an
/// insert walks 4096 slots, or meets 8 keys with its 31-bit tag) rehashes them with std's
/// SipHash-1-3 (random seed), and its lookups use SipHash from then on. So a client who learns the seed
/// and chooses colliding keys costs one rehash per shard, never slow lookups; the same holds
/// for any hasher given to [`hasher`](crate::RateLimiterBuilder::hasher).
pub type DefaultHashBuilder = foldhash::fast::RandomState;

/// Slots an insert may walk before its shard turns to SipHash. By chance, below the table's
/// load limit (9/10), the longest run among 4 M random keys in one table is about 1 600
/// slots (it grows with the logarithm of the keys), so reaching this means colliding keys.
const LONG_RUN: usize = 4096;
/// Keys with one 31-bit tag an insert may meet before its shard turns to SipHash: among
/// random keys even three equal tags are rare.
const SAME_TAG: usize = 8;

/// Occupied slots examined when a full shard must pick a victim.
const VICTIM_SAMPLE: usize = 16;
/// The longest grace an idle key gets before a growing table reclaims it (nanoseconds): a
/// refill period, but no more than this, so a limit over hours does not hold keys for hours.
const MAX_GRACE: u64 = 1_000_000_000;

pub(crate) struct Store<K, A: Cells, S> {
    hasher: S,
    /// SipHash, for the shards whose keys collide under `hasher`.
    strong: std::collections::hash_map::RandomState,
    shards: Box<[LockedShard<K, A::Cell>]>,
    mask: usize,
    max_per_shard: usize,
}

type LockedShard<K, V> = CacheLines<RwLock<Shard<K, V>>>;

/// Keeps a shard's lock and table header on cache lines of their own (two, for the
/// adjacent-line prefetcher): without it, threads on neighbouring shards contend for one line.
#[repr(align(128))]
struct CacheLines<T>(T);

impl<T> std::ops::Deref for CacheLines<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

struct Shard<K, V> {
    table: Table<K, V>,
    /// Tags come from the store's SipHash instead of the hasher (after colliding keys).
    strong: bool,
}

impl<K, A, S> Store<K, A, S>
where
    K: Hash + Eq,
    A: Cells,
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
        // shards >= 1 (a power of two, halved no further than 1)
        let max_per_shard = max_keys.map_or(usize::MAX, |max| {
            max.checked_div(shards).unwrap_or(max).max(1)
        });
        let far_bytes = FAR_BYTES.checked_div(shards).unwrap_or(FAR_BYTES);
        Self {
            hasher,
            strong: std::collections::hash_map::RandomState::new(),
            shards: (0..shards)
                .map(|_| {
                    CacheLines(RwLock::new(Shard {
                        table: Table::new(far_bytes),
                        strong: false,
                    }))
                })
                .collect(),
            mask: shards.saturating_sub(1),
            max_per_shard,
        }
    }

    /// Runs `f` on `key`'s cell and the time, inserting a fresh cell first when the key is new.
    ///
    /// The time is read (`now`) once the key's slot is being fetched, so that reading the
    /// clock overlaps a cache miss on the slot instead of preceding it.
    #[inline]
    pub(crate) fn with_cell<Q, R>(
        &self,
        alg: &A,
        key: &Q,
        now: impl FnOnce() -> u64,
        idle_ttl: u64,
        f: impl FnOnce(&A::Cell, u64) -> R,
    ) -> R
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.with_cell_made(alg, key, now, idle_ttl, |_| alg.new_cell(), f)
    }

    /// [`with_cell`](Self::with_cell), a new key's cell made by `make` from the key (a cell
    /// that names its key: a keyed breaker's listener).
    #[inline]
    pub(crate) fn with_cell_made<Q, R>(
        &self,
        alg: &A,
        key: &Q,
        now: impl FnOnce() -> u64,
        idle_ttl: u64,
        make: impl FnOnce(&K) -> A::Cell,
        f: impl FnOnce(&A::Cell, u64) -> R,
    ) -> R
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let (shard, hash) = self.locate(key);
        // read before the probe, so the clock's read overlaps the probe's cache miss (a cold
        // key's slot) instead of following it
        let now = now();
        {
            let read = read(shard);
            let tag = self.tag(&read, key, hash);
            if let Some(cell) = read.table.find(tag, |k| k.borrow() == key) {
                return f(cell, now);
            }
        }
        let mut guard = write(shard);
        let shard = &mut *guard;
        let tag = self.tag(shard, key, hash);
        if let Some(cell) = shard.table.find(tag, |k| k.borrow() == key) {
            return f(cell, now);
        }
        if shard.table.len() >= self.max_per_shard {
            shard.evict_one(alg, now, idle_ttl, tag);
        } else if shard.table.is_full() {
            shard.reclaim_or_grow(alg, now, idle_ttl, self.max_per_shard);
        }
        // Nobody else sees the new cell before it is in the table, so it can answer first.
        let key = key.to_owned();
        let cell = make(&key);
        let answer = f(&cell, now);
        let walk = shard.table.insert(tag, key, cell);
        if (walk.run >= LONG_RUN || walk.same_tag >= SAME_TAG) && !shard.strong {
            self.strengthen(shard);
        }
        answer
    }

    /// Runs `f` on `key`'s cell if the key is held; never inserts.
    pub(crate) fn peek_cell<Q, R>(&self, key: &Q, f: impl FnOnce(&A::Cell) -> R) -> Option<R>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (shard, hash) = self.locate(key);
        let read = read(shard);
        let tag = self.tag(&read, key, hash);
        read.table.find(tag, |k| k.borrow() == key).map(f)
    }

    /// The shard that holds `key` (the hash's low bits) and the hash.
    ///
    /// Always inlined, with the hasher spelled out rather than `hash_one`: in a large caller
    /// (a layer's erased limiter) `hash_one` stayed an out-of-line call on std's generic byte
    /// path, 142 instructions per `u64` key against ~90 inlined (callgrind, BENCHMARKS.md).
    #[inline(always)]
    fn locate<Q: Hash + ?Sized>(&self, key: &Q) -> (&LockedShard<K, A::Cell>, u64) {
        let hash = hash_with(&self.hasher, key);
        #[allow(clippy::cast_possible_truncation)] // only the low bits pick the shard
        let shard = &self.shards[hash as usize & self.mask];
        (shard, hash)
    }

    /// `key`'s tag in `shard`: the high 31 bits of `hash`, or of its SipHash once the shard
    /// has seen colliding keys.
    #[inline(always)]
    fn tag<Q: Hash + ?Sized>(&self, shard: &Shard<K, A::Cell>, key: &Q, hash: u64) -> u32 {
        if shard.strong {
            tag_of(hash_with(&self.strong, key))
        } else {
            tag_of(hash)
        }
    }

    /// Re-tags a shard's keys with SipHash: its keys collide under the hasher.
    #[cold]
    fn strengthen(&self, shard: &mut Shard<K, A::Cell>) {
        shard.strong = true;
        shard
            .table
            .retag(|key| tag_of(hash_with(&self.strong, key)));
        #[cfg(feature = "tracing")]
        tracing::warn!(
            target: "limitpal::limiter",
            keys = shard.table.len(),
            "keys collide under the hasher: this shard now hashes them with SipHash"
        );
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

impl<K, A: Cells, S> Store<K, A, S> {
    pub(crate) fn shard_count(&self) -> usize {
        self.shards.len()
    }
}

impl<K, V> Shard<K, V> {
    /// Makes room in a table that is about to grow: drops the keys idle for `idle_ttl` plus
    /// the grace, and grows now (within `max_len` keys) if that freed less than a quarter, so
    /// that the next pass is at least a quarter of the table's inserts away.
    fn reclaim_or_grow<A>(&mut self, alg: &A, now: u64, idle_ttl: u64, max_len: usize)
    where
        A: Cells<Cell = V>,
    {
        let grace = alg.window().min(MAX_GRACE);
        let idle = idle_ttl.saturating_add(grace);
        let before = self.table.len();
        self.table.retain(|cell| !alg.cell_idle(cell, now, idle));
        if self.table.len() > before.saturating_sub(before / 4) {
            self.table.grow_within(max_len);
        }
    }

    /// Makes room for a key with `tag`: drops an idle key if the sample holds one, else the
    /// least recently used key of the sample.
    ///
    /// The sample is the occupied slots from the new key's home on, a random place in the
    /// table (the hasher is seeded), and the one the insert is about to touch. A rolling cursor
    /// would empty the slots behind it and fill those ahead, whose runs then grow long enough to
    /// make every insert and removal shift thousands of slots once most keys are idle.
    fn evict_one<A>(&mut self, alg: &A, now: u64, idle_ttl: u64, tag: u32)
    where
        A: Cells<Cell = V>,
    {
        let n = self.table.num_slots();
        let mut at = self.table.home(tag);
        let mut victim: Option<(usize, u64)> = None;
        let mut seen = 0_usize;
        for _ in 0..n {
            at = at.saturating_add(1); // at < n: a slot index
            if at >= n {
                at = 0;
            }
            let Some((_, cell)) = self.table.get(at) else {
                continue;
            };
            if alg.cell_idle(cell, now, idle_ttl) {
                victim = Some((at, 0));
                break;
            }
            let recency = alg.cell_recency(cell);
            if alg.cell_evictable(cell) && victim.is_none_or(|(_, best)| recency < best) {
                victim = Some((at, recency));
            }
            seen = seen.saturating_add(1);
            if seen == VICTIM_SAMPLE {
                break;
            }
        }
        if let Some((index, _)) = victim {
            self.table.remove(index);
        }
    }
}

#[inline(always)]
fn hash_with<S: BuildHasher, Q: Hash + ?Sized>(hasher: &S, key: &Q) -> u64 {
    let mut hasher = hasher.build_hasher();
    key.hash(&mut hasher);
    std::hash::Hasher::finish(&hasher)
}

#[inline(always)]
fn tag_of(hash: u64) -> u32 {
    #[allow(clippy::cast_possible_truncation)] // the high 31 bits, exactly
    let tag = (hash >> (64 - TAG_BITS)) as u32;
    tag
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate::TokenBucket;
    use crate::rate::sealed::Sealed;
    use std::hash::BuildHasherDefault;

    /// A hasher under which every key collides.
    #[derive(Default)]
    struct Constant;

    impl std::hash::Hasher for Constant {
        fn finish(&self) -> u64 {
            0x5eed
        }

        fn write(&mut self, _: &[u8]) {}
    }

    fn strong_shards<S>(store: &Store<u64, TokenBucket, S>) -> usize {
        store.shards.iter().filter(|s| read(s).strong).count()
    }

    #[test]
    fn colliding_keys_turn_their_shard_to_siphash_and_keep_their_state() {
        let alg = TokenBucket::new(2, 1.0).unwrap();
        let store = Store::new(BuildHasherDefault::<Constant>::default(), 4, None);
        let check = |key: u64| {
            store.with_cell(
                &alg,
                &key,
                || 0,
                0,
                |cell, now| alg.check_cell(cell, now, 1),
            )
        };
        for key in 0..20_000 {
            assert_eq!(check(key), Ok(()));
        }
        assert_eq!(strong_shards(&store), 1, "one shard held every key");
        for key in 0..20_000 {
            assert_eq!(check(key), Ok(()), "the second of two tokens, key {key}");
            assert!(check(key).is_err(), "and no third");
        }
    }

    #[test]
    fn random_keys_never_turn_a_shard_to_siphash() {
        let alg = TokenBucket::new(2, 1.0).unwrap();
        let store = Store::new(DefaultHashBuilder::default(), 1, None);
        for key in 0..1_000_000_u64 {
            store
                .with_cell(
                    &alg,
                    &key,
                    || 0,
                    0,
                    |cell, now| alg.check_cell(cell, now, 1),
                )
                .unwrap();
        }
        assert_eq!(strong_shards(&store), 0);
    }
}
