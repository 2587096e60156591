//! The bounded keyed store every keyed stage is built on: a sharded hash table from key to a
//! small concurrent cell, with unobservable eviction (see [`store`]).
//!
//! A stage says what its cells are through [`Cells`]: how to make a fresh one, when one is
//! indistinguishable from a fresh one (idle: dropping it changes no answer), and how
//! recently one was used (for `max_keys` pressure). The rate limiter's algorithms are the
//! first such stage; hashing, probing, eviction and `max_keys` exist once, here.

pub(crate) mod store;
mod table;

pub use store::DefaultHashBuilder;

/// The store's lock shards unless told otherwise: four per core.
pub(crate) fn default_shards() -> usize {
    std::thread::available_parallelism().map_or(4, |n| n.get().saturating_mul(4))
}
pub(crate) use store::Store;

/// What the keyed store needs to know about a stage's per-key cells.
pub(crate) trait Cells {
    /// The per-key state, updated in place through `&Cell` (atomics or a lock inside).
    type Cell;
    /// A fresh key's cell.
    fn new_cell(&self) -> Self::Cell;
    /// Whether `cell` has equalled a fresh cell for at least `idle` nanoseconds at `now`, so
    /// that dropping it is unobservable.
    fn cell_idle(&self, cell: &Self::Cell, now: u64, idle: u64) -> bool;
    /// How recently `cell` was used, comparable between cells (larger: more recent); the
    /// least recent goes first under `max_keys` pressure.
    fn cell_recency(&self, cell: &Self::Cell) -> u64;
    /// The longest a used cell takes to become fresh again by itself (nanoseconds): the grace
    /// a growing table gives idle keys before reclaiming them.
    fn window(&self) -> u64;
    /// Whether `max_keys` pressure may drop `cell` when it is not idle (default: yes, the
    /// least recent first). A stage whose busy cells must survive (a bulkhead key with calls
    /// in flight) says no; its table then holds more keys than `max_keys` while more keys
    /// than that are busy at once.
    #[inline]
    fn cell_evictable(&self, _cell: &Self::Cell) -> bool {
        true
    }
}

impl<A: crate::rate::Algorithm> Cells for A {
    type Cell = <A as crate::rate::sealed::Sealed>::Cell;

    #[inline]
    fn new_cell(&self) -> Self::Cell {
        crate::rate::sealed::Sealed::new_cell(self)
    }

    #[inline]
    fn cell_idle(&self, cell: &Self::Cell, now: u64, idle: u64) -> bool {
        crate::rate::sealed::Sealed::cell_idle(self, cell, now, idle)
    }

    #[inline]
    fn cell_recency(&self, cell: &Self::Cell) -> u64 {
        crate::rate::sealed::Sealed::cell_recency(self, cell)
    }

    fn window(&self) -> u64 {
        crate::rate::sealed::Sealed::window(self)
    }
}
