//! The atomics and locks the crate's concurrent state is built on: std's, or loom's under
//! `cfg(loom)`, so the loom models in `tests/loom.rs` check the very code that ships.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `mutex`, taking over a poisoned one: nothing in this crate leaves shared state
/// half-updated when it panics under a lock (a user's `LimitAlgorithm` may panic, but the
/// limit it was computing is simply not applied), so one panic must not disable the
/// component for every later caller.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Read-locks `lock`, taking over a poisoned one, for the reason [`lock`] gives (the keyed
/// store's shards: nothing panics while one is locked, and a poisoned shard still holds valid
/// states).
pub(crate) fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Write-locks `lock`, taking over a poisoned one; see [`read`].
pub(crate) fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
