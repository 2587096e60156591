//! A global allocator that counts, for bytes-per-key and allocations-per-request figures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};

/// The system allocator, counting live bytes and allocation calls.
#[derive(Debug)]
pub struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static CALLS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    // const-initialised and without a destructor: using it never allocates
    static THREAD_CALLS: Cell<u64> = const { Cell::new(0) };
}

fn count_call() {
    CALLS.fetch_add(1, Ordering::Relaxed);
    let _ = THREAD_CALLS.try_with(|calls| calls.set(calls.get().wrapping_add(1)));
}

// SAFETY: every method forwards to `System` unchanged and only adds relaxed counter updates;
// the caller's contract (valid layouts, matching dealloc) is passed through as is.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_call();
        LIVE.fetch_add(
            isize::try_from(layout.size()).unwrap_or(isize::MAX),
            Ordering::Relaxed,
        );
        // SAFETY: same layout the caller gave us.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(
            isize::try_from(layout.size()).unwrap_or(isize::MAX),
            Ordering::Relaxed,
        );
        // SAFETY: `ptr` was allocated by `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_call();
        LIVE.fetch_add(
            isize::try_from(new_size).unwrap_or(isize::MAX)
                - isize::try_from(layout.size()).unwrap_or(isize::MAX),
            Ordering::Relaxed,
        );
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Bytes allocated and not yet freed.
#[must_use]
pub fn live_bytes() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Allocation calls so far.
#[must_use]
pub fn calls() -> u64 {
    CALLS.load(Ordering::Relaxed)
}

/// Allocation calls so far made by this thread (a server on another thread is not counted).
#[must_use]
pub fn thread_calls() -> u64 {
    THREAD_CALLS.with(Cell::get)
}
