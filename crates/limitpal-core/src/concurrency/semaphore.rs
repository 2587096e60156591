//! The slot counter behind [`Bulkhead`](super::Bulkhead) and [`AdaptiveLimit`](super::AdaptiveLimit):
//! a limit that may move, calls in flight, and an optional bounded FIFO of waiting callers.
//!
//! One `AtomicU64` holds `[waiting: 32 | in flight: 32]`; a caller takes a slot with one
//! compare-and-swap when nobody waits. Waiters live in a locked queue, and a freed slot is
//! handed to the oldest waiter directly (the in-flight count does not change), so a caller
//! arriving later never overtakes one that waits. The waiting count only changes under the
//! queue lock, so under that lock it equals the queue's length.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crate::sync::{AtomicU64, Mutex, Ordering, lock};

const IN_FLIGHT: u64 = u32::MAX as u64;
const ONE_WAITER: u64 = 1 << 32;

fn in_flight(state: u64) -> u64 {
    state & IN_FLIGHT
}

fn waiting(state: u64) -> u64 {
    state >> 32
}

/// A queued caller: granted a slot yet, and whom to wake when it is.
#[derive(Debug, Default)]
pub(crate) struct Waiter {
    inner: Mutex<WaiterState>,
}

#[derive(Debug, Default)]
struct WaiterState {
    granted: bool,
    waker: Option<Waker>,
}

impl Waiter {
    /// Marks the slot as handed over; returns the waker to wake once the locks are released.
    fn grant(&self) -> Option<Waker> {
        let mut state = lock(&self.inner);
        state.granted = true;
        state.waker.take()
    }

    pub(crate) fn poll(&self, cx: &Context<'_>) -> Poll<()> {
        let mut state = lock(&self.inner);
        if state.granted {
            return Poll::Ready(());
        }
        match &state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// Slots, limit and waiting callers.
#[derive(Debug)]
pub(crate) struct Semaphore {
    state: AtomicU64,
    limit: AtomicU64,
    max_waiting: u64,
    queue: Mutex<VecDeque<Arc<Waiter>>>,
}

/// How [`Semaphore::enter`] answered.
#[derive(Debug)]
pub(crate) enum Entry {
    /// A slot is taken.
    Slot,
    /// Queued: wait on this; leave with [`Semaphore::leave`] if no longer interested.
    Queued(Arc<Waiter>),
    /// No slot and no room in the queue.
    Full,
}

impl Semaphore {
    pub(crate) fn new(limit: u32, max_waiting: u32) -> Self {
        Self {
            state: AtomicU64::new(0),
            limit: AtomicU64::new(u64::from(limit)),
            max_waiting: u64::from(max_waiting),
            queue: Mutex::new(VecDeque::new()),
        }
    }

    pub(crate) fn limit(&self) -> u32 {
        u32::try_from(self.limit.load(Ordering::Relaxed)).unwrap_or(u32::MAX)
    }

    pub(crate) fn in_flight(&self) -> u32 {
        u32::try_from(in_flight(self.state.load(Ordering::Relaxed))).unwrap_or(u32::MAX)
    }

    pub(crate) fn waiting(&self) -> u32 {
        u32::try_from(waiting(self.state.load(Ordering::Relaxed))).unwrap_or(u32::MAX)
    }

    /// Takes a slot now, or fails; never queues. A caller never takes a slot while others
    /// wait for one.
    pub(crate) fn try_acquire(&self) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if waiting(state) > 0 || in_flight(state) >= limit {
                return false;
            }
            #[allow(clippy::arithmetic_side_effects)] // in_flight < limit <= u32::MAX: no carry
            let next = state + 1;
            match self.state.compare_exchange_weak(
                state,
                next,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => state = now,
            }
        }
    }

    /// Takes a slot now, or joins the queue if it has room.
    pub(crate) fn enter(&self) -> Entry {
        if self.try_acquire() {
            return Entry::Slot;
        }
        if self.max_waiting == 0 {
            return Entry::Full;
        }
        let mut queue = lock(&self.queue);
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            // +1 only while in_flight < limit <= u32::MAX, +ONE_WAITER only while
            // waiting < max_waiting <= u32::MAX: neither half of the state can carry
            #[allow(clippy::arithmetic_side_effects)]
            let (next, entry) =
                if waiting(state) == 0 && in_flight(state) < self.limit.load(Ordering::Relaxed) {
                    (state + 1, None)
                } else if waiting(state) >= self.max_waiting {
                    return Entry::Full;
                } else {
                    (state + ONE_WAITER, Some(Arc::new(Waiter::default())))
                };
            match self
                .state
                .compare_exchange(state, next, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => {
                    return match entry {
                        None => Entry::Slot,
                        Some(waiter) => {
                            queue.push_back(Arc::clone(&waiter));
                            Entry::Queued(waiter)
                        }
                    };
                }
                Err(now) => state = now,
            }
        }
    }

    /// Frees a slot: hands it to the oldest waiter, or gives it back. A slot above a lowered
    /// limit is given back rather than handed over, so the count falls to the new limit.
    pub(crate) fn release(&self) {
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if waiting(state) == 0 || in_flight(state) > self.limit.load(Ordering::Relaxed) {
                #[allow(clippy::arithmetic_side_effects)]
                // a release follows its acquire: in_flight >= 1
                let next = state - 1;
                match self.state.compare_exchange_weak(
                    state,
                    next,
                    Ordering::Release,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return,
                    Err(now) => state = now,
                }
                continue;
            }
            let mut queue = lock(&self.queue);
            if let Some(waiter) = queue.pop_front() {
                self.state.fetch_sub(ONE_WAITER, Ordering::AcqRel);
                let waker = waiter.grant();
                drop(queue);
                if let Some(waker) = waker {
                    waker.wake();
                }
                return;
            }
            // the last waiter left between the load and the lock
            drop(queue);
            state = self.state.load(Ordering::Relaxed);
        }
    }

    /// Moves the limit; a raised limit lets waiters in at once.
    pub(crate) fn set_limit(&self, limit: u32) {
        let old = self.limit.swap(u64::from(limit), Ordering::Relaxed);
        if u64::from(limit) <= old || waiting(self.state.load(Ordering::Relaxed)) == 0 {
            return;
        }
        let mut wake = Vec::new();
        let mut queue = lock(&self.queue);
        let mut state = self.state.load(Ordering::Relaxed);
        while waiting(state) > 0 && in_flight(state) < u64::from(limit) {
            // a waiter becomes a slot: waiting >= 1 and in_flight < limit <= u32::MAX
            #[allow(clippy::arithmetic_side_effects)]
            let next = state + 1 - ONE_WAITER;
            match self
                .state
                .compare_exchange(state, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    state = next;
                    if let Some(waker) = queue.pop_front().and_then(|w| w.grant()) {
                        wake.push(waker);
                    }
                }
                Err(now) => state = now,
            }
        }
        drop(queue);
        wake.into_iter().for_each(Waker::wake);
    }

    /// A queued caller gave up: leaves the queue, or, if a slot was handed over meanwhile,
    /// frees it.
    pub(crate) fn leave(&self, waiter: &Arc<Waiter>) {
        let mut queue = lock(&self.queue);
        if let Some(at) = queue.iter().position(|w| Arc::ptr_eq(w, waiter)) {
            queue.remove(at);
            self.state.fetch_sub(ONE_WAITER, Ordering::AcqRel);
            return;
        }
        drop(queue);
        // not queued any more: it was granted a slot under the lock, which it now frees
        self.release();
    }
}
