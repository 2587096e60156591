//! The keyed store's hash table: one array of inline `(tag, key, value)` slots, so looking up
//! a key reads one run of adjacent slots (the [`WINDOW`] from its home, whose cache lines are
//! fetched together), where a Swiss table reads a control group first and then, depending on
//! it, the slot: two dependent misses once the table outgrows the caches.
//!
//! It is an *ordered* linear-probing table (Amble and Knuth, 1974) without wrap-around:
//! - a key's 31-bit `tag` (the top of its hash) picks its home slot by multiply-shift,
//!   `tag * homes >> 31`, so homes follow tags in order and any number of homes works (the
//!   table grows by a fifth, not by doubling, once it is large);
//! - the slots hold their keys sorted by tag, each at its home or after it, with no empty slot
//!   between a key and its home, so a lookup walks from the home over smaller tags and stops
//!   at its own tag, a larger one or an empty slot;
//! - how it walks depends on the table's size (see [`FAR_BYTES`]). While the tables fit in the
//!   caches a lookup compares the tags of the [`WINDOW`] slots from the home without a branch
//!   per slot (an empty slot's tag matches nothing) and only scans on when that finds nothing:
//!   no mispredicted branch. Once they do not, it takes one branch per slot, so the CPU runs
//!   ahead on its prediction and the lookup waits only for the cache line that holds the key,
//!   not for the window's last line (up to four lines, each a trip to DRAM);
//! - keys pushed past the last home spill into an overflow tail that grows slot by slot (a
//!   weak hasher slows lookups down, it never makes the table grow without end);
//! - removal shifts the displaced keys that follow one slot back (no tombstones), and growth
//!   is one ordered pass that never hashes a key again.
//!
//! Both slot variants keep the tag in the padding next to the enum's discriminant, so a slot
//! for a `u64` key and an atomic `u64` state is 24 bytes and reading a tag needs no branch.

use std::mem;

/// Grow once `len` reaches this fraction of the home slots.
const LOAD_NUM: usize = 9;
const LOAD_DEN: usize = 10;
/// Home slots of a table's first allocation.
const FIRST_HOMES: usize = 8;
/// From this many home slots on, the table grows by a fifth instead of doubling (memory per
/// key stays within `24 / (9/10 / 1.2) = 32` bytes for a `u64` key and a GCRA state).
const STEP_FROM: usize = 1024;
/// Slots added to the overflow tail when a run reaches its end.
const TAIL_STEP: usize = 8;
/// Homes are picked by `tag * homes >> 31`; this keeps the product within 64 bits.
const MAX_HOMES: usize = 1 << 31;
/// Slots whose tags a lookup compares at once; the slots always extend this far past the
/// last home.
const WINDOW: usize = 8;
/// Bytes of slots, over all the tables that share the caches (a store's shards), from which
/// lookups take one branch per slot instead of comparing a window.
///
/// A branch-free window wins while its lines are in a core's own cache (a branch per slot
/// costs a mispredict per lookup), and loses once each of its lines must come from the
/// shared cache or DRAM: then fetching the key's line alone is what counts. 2 MB is a core's
/// L2 on the reference machine; `compare keyed` and `compare workloads` measure both sides
/// of it (BENCHMARKS.md).
pub(crate) const FAR_BYTES: usize = 2 << 20;
/// Tags are 31 bits; an empty slot's tag is never a key's.
pub(crate) const TAG_BITS: u32 = 31;
const EMPTY_TAG: u32 = u32::MAX;

/// What an insert met on its way: colliding keys show up here.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Walk {
    /// Slots from the key's home to the empty slot it took.
    pub(crate) run: usize,
    /// Keys met whose tag equals the new key's.
    pub(crate) same_tag: usize,
}

pub(crate) enum Slot<K, V> {
    Empty { tag: u32 },
    Full { tag: u32, key: K, value: V },
}

impl<K, V> Slot<K, V> {
    const fn empty() -> Self {
        Self::Empty { tag: EMPTY_TAG }
    }

    #[inline]
    fn tag(&self) -> u32 {
        match self {
            Self::Empty { tag } | Self::Full { tag, .. } => *tag,
        }
    }
}

pub(crate) struct Table<K, V> {
    /// `homes` home slots, then the overflow tail.
    slots: Vec<Slot<K, V>>,
    homes: usize,
    len: usize,
    /// Slots from which lookups probe slot by slot.
    far_from: usize,
}

impl<K, V> Table<K, V> {
    /// An empty table whose lookups probe slot by slot once its slots take `far_bytes`
    /// (its share of [`FAR_BYTES`]; 0: always, `usize::MAX`: never).
    // divides by a slot's size, which is never zero (a slot holds at least its `u32` tag)
    #[allow(clippy::arithmetic_side_effects)]
    pub(crate) const fn new(far_bytes: usize) -> Self {
        Self {
            slots: Vec::new(),
            homes: 0,
            len: 0,
            // a slot holds at least its `u32` tag: never zero-sized
            far_from: far_bytes / mem::size_of::<Slot<K, V>>(),
        }
    }

    pub(crate) const fn len(&self) -> usize {
        self.len
    }

    /// Slots, home and tail, for walking the table by index.
    pub(crate) fn num_slots(&self) -> usize {
        self.slots.len()
    }

    /// Bytes allocated for slots.
    pub(crate) fn allocation_size(&self) -> usize {
        self.slots
            .capacity()
            .saturating_mul(mem::size_of::<Slot<K, V>>())
    }

    #[inline]
    pub(crate) fn home(&self, tag: u32) -> usize {
        // `tag < 2^31` and `homes <= 2^31`: the product fits in 64 bits, the result is below
        // `homes`.
        #[allow(clippy::cast_possible_truncation, clippy::arithmetic_side_effects)]
        let home = ((u64::from(tag) * self.homes as u64) >> TAG_BITS) as usize;
        home
    }

    /// The value stored under `tag` (below `2^31`) whose key satisfies `eq`.
    #[inline]
    pub(crate) fn find(&self, tag: u32, mut eq: impl FnMut(&K) -> bool) -> Option<&V> {
        let home = self.home(tag);
        if self.slots.len() >= self.far_from {
            return self.probe(home, tag, eq);
        }
        // home < homes <= 2^31: no overflow
        #[allow(clippy::arithmetic_side_effects)]
        let window_end = home + WINDOW;
        if let Some(window) = self.slots.get(home..window_end) {
            let mut hits = 0_u32;
            for (j, slot) in window.iter().enumerate() {
                hits |= u32::from(slot.tag() == tag) << j;
            }
            if let Some(Slot::Full { key, value, .. }) = window.get(hits.trailing_zeros() as usize)
                && eq(key)
            {
                return Some(value);
            }
        }
        self.scan(home, tag, eq)
    }

    /// `find` on a table out of the caches: one branch per slot from `home`, so only the
    /// line that holds the key is waited for.
    #[inline]
    #[allow(clippy::arithmetic_side_effects)] // i stays below slots.len() <= isize::MAX
    fn probe(&self, home: usize, tag: u32, mut eq: impl FnMut(&K) -> bool) -> Option<&V> {
        let mut i = home;
        while self.slots.get(i).is_some_and(|slot| slot.tag() < tag) {
            i += 1;
        }
        match self.slots.get(i) {
            Some(Slot::Full { tag: t, key, value }) if *t == tag => {
                if eq(key) {
                    Some(value)
                } else {
                    // another key with our tag: rare, on to the slow path
                    self.scan(i + 1, tag, eq)
                }
            }
            _ => None,
        }
    }

    /// `find`'s slow path: every slot of the run from `home` (or from any slot of the run
    /// whose predecessors all have smaller tags).
    #[cold]
    #[allow(clippy::arithmetic_side_effects)] // i stays below slots.len() <= isize::MAX
    fn scan(&self, home: usize, tag: u32, mut eq: impl FnMut(&K) -> bool) -> Option<&V> {
        let mut i = home;
        while let Some(Slot::Full { tag: t, key, value }) = self.slots.get(i) {
            if *t == tag {
                if eq(key) {
                    return Some(value);
                }
            } else if *t > tag {
                return None;
            }
            i += 1;
        }
        None
    }

    /// The key and value at slot `index`, if it is full.
    pub(crate) fn get(&self, index: usize) -> Option<(&K, &V)> {
        match self.slots.get(index) {
            Some(Slot::Full { key, value, .. }) => Some((key, value)),
            _ => None,
        }
    }

    /// Whether the next insert grows the table.
    pub(crate) fn is_full(&self) -> bool {
        self.len.saturating_mul(LOAD_DEN) >= self.homes.saturating_mul(LOAD_NUM)
            && self.homes < MAX_HOMES
    }

    /// Inserts a key the caller knows is absent; says how far it walked.
    pub(crate) fn insert(&mut self, tag: u32, key: K, value: V) -> Walk {
        if self.is_full() {
            self.grow();
        }
        // After every key with a tag no larger than ours, at the next empty slot's cost.
        let home = self.home(tag);
        let mut at = home;
        let mut same = 0_usize;
        while let Some(Slot::Full { tag: t, .. }) = self.slots.get(at) {
            if *t > tag {
                break;
            }
            // both below slots.len(): saturating never binds
            same = same.saturating_add(usize::from(*t == tag));
            at = at.saturating_add(1);
        }
        let mut empty = at;
        while let Some(Slot::Full { .. }) = self.slots.get(empty) {
            empty = empty.saturating_add(1);
        }
        if empty == self.slots.len() {
            self.slots.reserve_exact(TAIL_STEP);
            self.slots
                .extend(std::iter::repeat_with(Slot::empty).take(TAIL_STEP));
        }
        self.slots[at..=empty].rotate_right(1);
        self.slots[at] = Slot::Full { tag, key, value };
        self.len = self.len.saturating_add(1);
        Walk {
            run: empty.saturating_sub(home), // empty >= at >= home
            same_tag: same,
        }
    }

    /// Gives every key the tag `tag(key)`, rebuilding the table at its size: the keys sorted
    /// by their new tags, then placed by the same ordered pass as growth.
    pub(crate) fn retag(&mut self, mut tag: impl FnMut(&K) -> u32) {
        let mut slots: Vec<Slot<K, V>> = mem::take(&mut self.slots)
            .into_iter()
            .filter_map(|slot| match slot {
                Slot::Full { key, value, .. } => Some(Slot::Full {
                    tag: tag(&key),
                    key,
                    value,
                }),
                Slot::Empty { .. } => None,
            })
            .collect();
        slots.sort_unstable_by_key(Slot::tag);
        self.slots = slots;
        self.grow_to(self.homes);
    }

    /// Removes the key at slot `index` (nothing if it is empty), shifting the displaced keys
    /// that follow it one slot back.
    pub(crate) fn remove(&mut self, index: usize) {
        if !matches!(self.slots.get(index), Some(Slot::Full { .. })) {
            return;
        }
        // index < slots.len(): saturating never binds
        let mut end = index.saturating_add(1);
        while let Some(Slot::Full { tag, .. }) = self.slots.get(end) {
            if self.home(*tag) >= end {
                break;
            }
            end = end.saturating_add(1);
        }
        self.slots[index] = Slot::empty();
        self.slots[index..end].rotate_left(1);
        self.len = self.len.saturating_sub(1); // the slot was full
    }

    /// Keeps only the values for which `keep` is true.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) {
        let mut i = 0;
        while i < self.slots.len() {
            match &self.slots[i] {
                Slot::Full { value, .. } if !keep(value) => self.remove(i),
                _ => i = i.saturating_add(1), // i < slots.len()
            }
        }
    }

    /// Grows the table now, but no further than `max_len` keys need (at the load at which it
    /// grows), unless it already holds that many.
    pub(crate) fn grow_within(&mut self, max_len: usize) {
        let needed = max_len
            .saturating_mul(LOAD_DEN)
            .div_ceil(LOAD_NUM)
            .saturating_add(1);
        let homes = self
            .next_homes()
            .min(needed.max(self.homes.saturating_add(1)));
        self.grow_to(homes);
    }

    fn next_homes(&self) -> usize {
        match self.homes {
            0 => FIRST_HOMES,
            n if n < STEP_FROM => n.saturating_mul(2),
            n => n.saturating_add(n / 5).min(MAX_HOMES),
        }
    }

    /// Moves every key into a larger table, in one ordered pass.
    fn grow(&mut self) {
        self.grow_to(self.next_homes());
    }

    /// Moves every key into a table of `homes` home slots, in one ordered pass (the slots hold
    /// their keys sorted by tag).
    fn grow_to(&mut self, homes: usize) {
        let len = self.len;
        let old = mem::replace(
            self,
            Self {
                slots: Vec::new(),
                homes,
                len,
                far_from: self.far_from,
            },
        );
        // Each key lands at its new home or right after the key before it.
        let mut end = 0;
        for slot in &old.slots {
            if let Slot::Full { tag, .. } = slot {
                end = self.home(*tag).max(end).saturating_add(1); // below homes + len
            }
        }
        let total = end.max(homes.saturating_add(WINDOW - 1));
        let mut slots = Vec::with_capacity(total);
        for slot in old.slots {
            if let Slot::Full { tag, .. } = &slot {
                let at = self.home(*tag).max(slots.len());
                slots.resize_with(at, Slot::empty);
                slots.push(slot);
            }
        }
        slots.resize_with(total, Slot::empty);
        self.slots = slots;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn lookups_go_slot_by_slot_once_the_slots_take_far_bytes() {
        let mut table = Table::new(24 * 100);
        assert_eq!(table.far_from, 100, "24-byte slots");
        let mut k = 0;
        while table.num_slots() < 100 {
            table.insert(tag(k << 40), k << 40, k);
            k += 1;
        }
        // past the switch: every key is still found, and absent ones are not
        for j in 0..k {
            assert_eq!(table.find(tag(j << 40), |key| *key == j << 40), Some(&j));
            let absent = j << 40 | 1;
            assert_eq!(table.find(tag(absent), |key| *key == absent), None);
        }
    }

    #[test]
    fn a_slot_for_a_u64_key_and_an_atomic_state_is_24_bytes() {
        assert_eq!(
            mem::size_of::<Slot<u64, std::sync::atomic::AtomicU64>>(),
            24
        );
    }

    /// Every key is at or after its home, keys are sorted by tag, and no empty slot lies
    /// between a key and its home.
    fn check_invariants<V>(table: &Table<u64, V>) {
        let mut last_tag = 0;
        let mut full = 0;
        let mut last_empty = None;
        for (i, slot) in table.slots.iter().enumerate() {
            match slot {
                Slot::Empty { tag } => {
                    assert_eq!(*tag, EMPTY_TAG);
                    last_empty = Some(i);
                }
                Slot::Full { tag, .. } => {
                    full += 1;
                    let home = table.home(*tag);
                    assert!(home <= i, "key before its home");
                    assert!(*tag >= last_tag, "tags out of order");
                    assert!(
                        last_empty.is_none_or(|e| e < home),
                        "empty slot between a key and its home"
                    );
                    last_tag = *tag;
                }
            }
        }
        assert_eq!(full, table.len());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64),
        RemoveAt(usize),
        RetainEven,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => any::<u64>().prop_map(Op::Insert),
            // few distinct tags: forces equal tags, long runs and the overflow tail
            4 => (0..64_u64).prop_map(|k| Op::Insert(k << 58 | k)),
            3 => any::<usize>().prop_map(Op::RemoveAt),
            1 => Just(Op::RetainEven),
        ]
    }

    /// The tag a key gets here: its top 31 bits, so tests pick collisions on purpose.
    #[allow(clippy::cast_possible_truncation)]
    fn tag(key: u64) -> u32 {
        (key >> 33) as u32
    }

    proptest! {
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec(op(), 0..400)) {
            let mut table = Table::new(usize::MAX);
            let mut model = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k) => {
                        model.entry(k).or_insert_with(|| {
                            table.insert(tag(k), k, k.wrapping_mul(3));
                            k.wrapping_mul(3)
                        });
                    }
                    Op::RemoveAt(i) => {
                        if table.num_slots() > 0 {
                            let i = i % table.num_slots();
                            if let Some((k, _)) = table.get(i) {
                                model.remove(&k.clone());
                            }
                            table.remove(i);
                        }
                    }
                    Op::RetainEven => {
                        table.retain(|v| v % 2 == 0);
                        model.retain(|_, v| *v % 2 == 0);
                    }
                }
                check_invariants(&table);
                prop_assert_eq!(table.len(), model.len());
            }
            // both ways of looking up: the window (in cache) and slot by slot (out of it)
            for far_from in [usize::MAX, 0] {
                table.far_from = far_from;
                for (k, v) in &model {
                    prop_assert_eq!(table.find(tag(*k), |key| key == k), Some(v));
                }
                for k in 0..64_u64 {
                    // absent keys: between the inserted tags, and sharing their tags
                    for k in [k << 58 | 1 << 40, k << 58 | 1 << 20] {
                        prop_assert_eq!(table.find(tag(k), |key| *key == k), model.get(&k));
                    }
                }
            }
        }
    }

    #[test]
    fn equal_tags_only_lengthen_runs() {
        let mut table = Table::new(usize::MAX);
        for k in 0..2_000_u64 {
            table.insert(7, k, k);
        }
        check_invariants(&table);
        for far_from in [usize::MAX, 0] {
            table.far_from = far_from;
            for k in 0..2_000_u64 {
                assert_eq!(table.find(7, |key| *key == k), Some(&k));
            }
            assert_eq!(table.find(7, |key| *key == 2_000), None);
            assert_eq!(table.find(6, |key| *key == 0), None);
            assert_eq!(table.find(8, |key| *key == 0), None);
        }
        // the homes grew with the keys, not without bound: one run spills into the tail
        assert!(table.homes < 4_096, "homes {}", table.homes);
    }

    #[test]
    fn large_tables_stay_within_the_memory_bound() {
        let mut table = Table::new(usize::MAX);
        let mut worst: f64 = 0.0;
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for k in 0..200_000_u64 {
            x = x.wrapping_mul(0x5851_f42d_4c95_7f2d).wrapping_add(1);
            table.insert(tag(x), k, std::sync::atomic::AtomicU64::new(k));
            if k > 10_000 {
                #[allow(clippy::cast_precision_loss)]
                let per_key = table.allocation_size() as f64 / table.len() as f64;
                worst = worst.max(per_key);
            }
        }
        assert!(worst <= 32.1, "{worst} bytes per key");
    }
}
