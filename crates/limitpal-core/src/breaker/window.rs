//! The failure-rate window: a ring of time buckets, O(buckets) = O(1) per call.

/// Buckets in the ring: the window slides in steps of `window / BUCKETS`.
pub(crate) const BUCKETS: usize = 10;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Which bucket of time (`now / width`) this slot currently counts.
    id: u64,
    calls: u32,
    failures: u32,
}

/// Calls and failures over the last `window`, in `BUCKETS` steps.
#[derive(Debug)]
pub(crate) struct FailureWindow {
    width: u64,
    buckets: [Bucket; BUCKETS],
}

impl FailureWindow {
    pub(crate) fn new(window: u64) -> Self {
        Self {
            width: (window / BUCKETS as u64).max(1),
            buckets: [Bucket::default(); BUCKETS],
        }
    }

    /// Records one call at `now`; returns (calls, failures) in the window ending at `now`.
    pub(crate) fn record(&mut self, now: u64, failed: bool) -> (u32, u32) {
        // +1 keeps id 0 free to mean "never used".
        let id = now / self.width + 1;
        #[allow(clippy::cast_possible_truncation)] // the modulus is < BUCKETS
        let slot = &mut self.buckets[(id % BUCKETS as u64) as usize];
        if slot.id != id {
            *slot = Bucket {
                id,
                calls: 0,
                failures: 0,
            };
        }
        slot.calls = slot.calls.saturating_add(1);
        slot.failures = slot.failures.saturating_add(u32::from(failed));
        let oldest = id.saturating_sub(BUCKETS as u64 - 1);
        self.buckets
            .iter()
            .filter(|b| b.id >= oldest && b.id <= id)
            .fold((0_u32, 0_u32), |(c, f), b| {
                (c.saturating_add(b.calls), f.saturating_add(b.failures))
            })
    }

    pub(crate) fn clear(&mut self) {
        self.buckets = [Bucket::default(); BUCKETS];
    }
}
