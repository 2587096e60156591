//! The failure-rate window: a ring of time buckets, O(buckets) = O(1) per call.

use std::num::NonZeroU64;

/// Buckets in the ring: the window slides in steps of `window / BUCKETS`.
pub(crate) const BUCKETS: usize = 10;
#[allow(clippy::cast_possible_truncation)] // 10 fits any integer
const BUCKETS_U64: u64 = BUCKETS as u64;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Which bucket of time (`now / width`) this slot currently counts.
    id: u64,
    calls: u32,
    failures: u32,
}

/// Calls and failures over the last `window`, in `BUCKETS` steps.
#[derive(Debug, Clone)]
pub(crate) struct FailureWindow {
    width: NonZeroU64,
    buckets: [Bucket; BUCKETS],
}

impl FailureWindow {
    pub(crate) fn new(window: u64) -> Self {
        Self {
            width: NonZeroU64::new(window / BUCKETS_U64).unwrap_or(NonZeroU64::MIN),
            buckets: [Bucket::default(); BUCKETS],
        }
    }

    /// Records one call at `now`; returns (calls, failures) in the window ending at `now`.
    pub(crate) fn record(&mut self, now: u64, failed: bool) -> (u32, u32) {
        // +1 keeps id 0 free to mean "never used"; at the end of the clock's range (width 1,
        // now u64::MAX) the id saturates: the last bucket keeps counting, never a panic
        // (that `now / width + 1` overflowed here once).
        let id = (now / self.width).saturating_add(1);
        #[allow(clippy::cast_possible_truncation)] // the modulus is < BUCKETS
        let slot = &mut self.buckets[(id % BUCKETS_U64) as usize];
        if slot.id != id {
            *slot = Bucket {
                id,
                calls: 0,
                failures: 0,
            };
        }
        slot.calls = slot.calls.saturating_add(1);
        slot.failures = slot.failures.saturating_add(u32::from(failed));
        let oldest = id.saturating_sub(BUCKETS_U64 - 1);
        self.buckets
            .iter()
            .filter(|b| b.id >= oldest && b.id <= id)
            .fold((0_u32, 0_u32), |(c, f), b| {
                (c.saturating_add(b.calls), f.saturating_add(b.failures))
            })
    }

    /// The window's length (nanoseconds, in whole buckets).
    pub(crate) fn span(&self) -> u64 {
        self.width.get().saturating_mul(BUCKETS_U64)
    }

    /// Whether no call falls in the window ending at `now`: it answers as a fresh one would.
    pub(crate) fn is_empty(&self, now: u64) -> bool {
        let id = (now / self.width).saturating_add(1);
        let oldest = id.saturating_sub(BUCKETS_U64 - 1);
        self.buckets
            .iter()
            .all(|b| b.calls == 0 || b.id < oldest || b.id > id)
    }

    pub(crate) fn clear(&mut self) {
        self.buckets = [Bucket::default(); BUCKETS];
    }
}
