//! Leased quota: a batch of a key's slots taken from Redis in one round trip and spent here.
//!
//! Each key's lease is a few atomics: the slots left, when they lapse, the next batch to
//! ask for, and until when Redis said none is free. Spending one is a compare-and-swap; a
//! round trip happens only for a key's first slot, when its batch runs low (ahead of
//! exhaustion, one refill in flight per key) or runs out. The batch adapts: it starts at 1
//! (a key seen once costs exactly one round trip, as without leases), doubles each time a
//! batch is spent in full, up to `max_batch`, and halves when a batch lapses unspent.
//!
//! Slots lapse `max_hold` after the oldest of them was granted; lapsed and left-over slots
//! are given back to Redis (the key's state moved back by them) when that is still possible.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use limitpal_core::{Clock, DefaultHashBuilder, MonotonicClock};

const SHARDS: usize = 16;

/// Leases a limiter keeps, unless more are busy at once: past this, adding a key first drops
/// the leases that hold nothing (about 150 bytes each, 15 MB at the bound).
const MAX_LEASES: usize = 100_000;

/// One shard of the leases' table: read-locked to spend (callers on one hot key share it),
/// write-locked only to add a key.
type Shard = RwLock<Table>;

struct Table {
    leases: HashMap<String, Arc<Lease>, DefaultHashBuilder>,
    /// The size at which adding a key sweeps the shard first.
    sweep_at: usize,
}

/// What the leases of one limiter did, counted since it was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseStats {
    /// Decisions answered from a lease, with no round trip.
    pub local: u64,
    /// Lease round trips (first slots, refills).
    pub leases: u64,
    /// Slots Redis granted.
    pub granted: u64,
    /// Unspent slots given back to Redis (lapsed, or left when the limiter was dropped).
    pub returned: u64,
    /// Unspent slots that could not be given back (Redis down, a hold over them): quota the
    /// fleet lost until the key's state catches up, at most `max_batch` per key and process
    /// within `max_hold`.
    pub stranded: u64,
}

#[derive(Default)]
struct Counts {
    /// Local decisions of leases since dropped (the others count their own).
    swept_local: AtomicU64,
    leases: AtomicU64,
    granted: AtomicU64,
    returned: AtomicU64,
    stranded: AtomicU64,
    #[cfg(feature = "metrics")]
    exported: Option<Exported>,
}

/// The counts as `metrics` counters (feature `metrics`), labelled with the limiter's prefix.
#[cfg(feature = "metrics")]
struct Exported {
    local: metrics::Counter,
    leases: metrics::Counter,
    granted: metrics::Counter,
    returned: metrics::Counter,
    stranded: metrics::Counter,
}

/// Which count.
#[derive(Clone, Copy)]
enum Count {
    Leases,
    Granted,
    Returned,
    Stranded,
}

impl Counts {
    fn new(prefix: &str) -> Self {
        let _ = prefix;
        Self {
            #[cfg(feature = "metrics")]
            exported: Some(Exported {
                local: metrics::counter!("limitpal_redis_local_decisions_total", "prefix" => prefix.to_owned()),
                leases: metrics::counter!("limitpal_redis_lease_round_trips_total", "prefix" => prefix.to_owned()),
                granted: metrics::counter!("limitpal_redis_lease_slots_granted_total", "prefix" => prefix.to_owned()),
                returned: metrics::counter!("limitpal_redis_lease_slots_returned_total", "prefix" => prefix.to_owned()),
                stranded: metrics::counter!("limitpal_redis_lease_slots_stranded_total", "prefix" => prefix.to_owned()),
            }),
            ..Self::default()
        }
    }

    /// A decision answered from a lease, for the metrics (the count itself is the lease's).
    #[inline]
    fn exported_local(&self) {
        #[cfg(feature = "metrics")]
        if let Some(exported) = &self.exported {
            exported.local.increment(1);
        }
    }

    fn add(&self, count: Count, n: u64) {
        let atomic = match count {
            Count::Leases => &self.leases,
            Count::Granted => &self.granted,
            Count::Returned => &self.returned,
            Count::Stranded => &self.stranded,
        };
        atomic.fetch_add(n, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        if let Some(exported) = &self.exported {
            match count {
                Count::Leases => &exported.leases,
                Count::Granted => &exported.granted,
                Count::Returned => &exported.returned,
                Count::Stranded => &exported.stranded,
            }
            .increment(n);
        }
    }
}

/// The leases of one limiter, by Redis key.
pub(crate) struct Leases {
    pub(crate) max_batch: u32,
    pub(crate) max_hold: Duration,
    /// The limit's emission interval (ns): one slot accrues per interval.
    interval: u64,
    /// The batch a refused key waits to accrue before it asks again: a quarter of the burst
    /// (so the burst holds what every process waits for), at most `max_batch`.
    refused_batch: u32,
    clock: MonotonicClock,
    hasher: DefaultHashBuilder,
    shards: Box<[Shard]>,
    counts: Counts,
}

/// One key's lease.
pub(crate) struct Lease {
    left: AtomicU32,
    /// Decisions answered from this lease: counted here, in the line the spend has just
    /// taken, not in one counter every thread's decisions would pass through.
    local: AtomicU64,
    /// Lapsed slots to give back with the key's next trip (the spend that finds them
    /// lapsed is followed by that trip: one round trip for both, not two).
    lapsed: AtomicU32,
    /// When the slots left lapse, in the limiter's clock (ns); 0: none held.
    lapses_at: AtomicU64,
    /// The next batch to ask for.
    batch: AtomicU32,
    /// Redis said no slot is free before this time (ns).
    denied_until: AtomicU64,
    /// A refill is in flight (one per key).
    refilling: AtomicBool,
    /// Round trips finished for this key, and whether the last one failed: a caller that
    /// waited for another's trip takes its failure instead of making its own.
    trips: AtomicU64,
    last_failed: AtomicBool,
    /// Serialises the round trips of callers that found no slot.
    pub(crate) trip: tokio::sync::Mutex<()>,
}

/// What spending from a lease found.
pub(crate) enum Spend {
    /// A slot, spent; `low` when the batch runs low and a refill should start.
    Spent { low: bool },
    /// Redis said no slot is free for this long.
    Denied(Duration),
    /// Nothing to spend (never leased, spent, or lapsed: `lapsed` slots just moved to the
    /// lease's give-back, for the key's next trip or a give-back of their own,
    /// [`Leases::take_lapsed`]).
    Empty { lapsed: u32 },
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Leases {
    /// `quota`: the limit's emission interval and burst capacity (slots).
    pub(crate) fn new(
        max_batch: u32,
        max_hold: Duration,
        (interval, capacity): (Duration, u32),
        prefix: &str,
    ) -> Self {
        let interval = nanos(interval);
        Self {
            max_batch,
            max_hold,
            interval,
            refused_batch: (capacity / 4).clamp(1, max_batch.max(1)),
            clock: MonotonicClock,
            hasher: DefaultHashBuilder::default(),
            shards: (0..SHARDS)
                .map(|_| {
                    RwLock::new(Table {
                        leases: HashMap::default(),
                        sweep_at: MAX_LEASES / SHARDS,
                    })
                })
                .collect(),
            counts: Counts::new(prefix),
        }
    }

    fn now(&self) -> u64 {
        nanos(self.clock.now()).max(1)
    }

    fn shard(&self, key: &str) -> &Shard {
        let index = usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0);
        &self.shards[index]
    }

    /// The key's lease, made on first use, and the lapsed slots of leases dropped to make
    /// room (to give back).
    pub(crate) fn lease(&self, key: &str) -> (Arc<Lease>, Vec<(String, u32)>) {
        if let Some(lease) = self.with(key, Arc::clone) {
            return (lease, Vec::new());
        }
        let mut shard = self
            .shard(key)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(lease) = shard.leases.get(key) {
            return (Arc::clone(lease), Vec::new()); // added since the read
        }
        let lapsed = if shard.leases.len() >= shard.sweep_at {
            let lapsed = self.sweep(&mut shard);
            // while more are busy than the bound, sweep again only when the shard doubles
            shard.sweep_at = (MAX_LEASES / SHARDS).max(shard.leases.len().saturating_mul(2));
            lapsed
        } else {
            Vec::new()
        };
        let lease = Arc::new(Lease {
            local: AtomicU64::new(0),
            lapsed: AtomicU32::new(0),
            left: AtomicU32::new(0),
            lapses_at: AtomicU64::new(0),
            batch: AtomicU32::new(1),
            denied_until: AtomicU64::new(0),
            refilling: AtomicBool::new(false),
            trips: AtomicU64::new(0),
            last_failed: AtomicBool::new(false),
            trip: tokio::sync::Mutex::new(()),
        });
        shard.leases.insert(key.to_owned(), Arc::clone(&lease));
        (lease, lapsed)
    }

    /// Drops the shard's leases that hold nothing a fresh lease would not: no caller or
    /// refill holding them, no refusal still remembered, no slot left that has not lapsed
    /// (lapsed ones are returned, to give back). What is lost is the key's batch size: its
    /// next trip asks for one slot, as a key seen for the first time.
    fn sweep(&self, shard: &mut Table) -> Vec<(String, u32)> {
        let now = self.now();
        let mut lapsed = Vec::new();
        shard.leases.retain(|key, lease| {
            let lapses = lease.lapses_at.load(Ordering::Acquire);
            let left = lease.left.load(Ordering::Acquire);
            let idle = Arc::strong_count(lease) == 1 // the table's own: under its write lock
                && !lease.refilling.load(Ordering::Acquire)
                && lease.denied_until.load(Ordering::Acquire) <= now
                && (left == 0 || (lapses != 0 && now >= lapses));
            if !idle {
                return true;
            }
            let back = left.saturating_add(self.take_lapsed(lease));
            if back > 0 {
                lapsed.push((key.clone(), back));
            }
            self.counts
                .swept_local
                .fetch_add(lease.local.load(Ordering::Relaxed), Ordering::Relaxed);
            false
        });
        lapsed
    }

    /// `f` of the key's lease if it has one (the hot path: no allocation, no reference
    /// count touched).
    pub(crate) fn with<R>(&self, key: &str, f: impl FnOnce(&Arc<Lease>) -> R) -> Option<R> {
        let shard = self
            .shard(key)
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        shard.leases.get(key).map(f)
    }

    /// Spends one slot of `lease`, if it has one that has not lapsed.
    pub(crate) fn spend(&self, lease: &Lease) -> Spend {
        let now = self.now();
        let denied = lease.denied_until.load(Ordering::Acquire);
        let lapses = lease.lapses_at.load(Ordering::Acquire);
        if lapses != 0 && now >= lapses {
            // the batch lapsed: whoever empties it gives the rest back
            let lapsed = lease.left.swap(0, Ordering::AcqRel);
            if lapsed > 0 {
                lease.lapsed.fetch_add(lapsed, Ordering::AcqRel);
                let _ = lease.lapses_at.compare_exchange(
                    lapses,
                    0,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
                let half = (lease.batch.load(Ordering::Relaxed) / 2).max(1);
                lease.batch.store(half, Ordering::Relaxed);
            }
            return Spend::Empty { lapsed };
        }
        let mut left = lease.left.load(Ordering::Acquire);
        loop {
            if left == 0 {
                if denied > now {
                    return Spend::Denied(Duration::from_nanos(denied - now));
                }
                return Spend::Empty { lapsed: 0 };
            }
            match lease.left.compare_exchange_weak(
                left,
                left - 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    lease.local.fetch_add(1, Ordering::Relaxed);
                    self.counts.exported_local();
                    let batch = lease.batch.load(Ordering::Relaxed);
                    // refill when a quarter of the batch is left (the last slot of a small one)
                    let low = left - 1 <= (batch / 4).max(u32::from(batch > 1));
                    return Spend::Spent { low };
                }
                Err(now_left) => left = now_left,
            }
        }
    }

    /// The lapsed slots waiting to go back with the key's next trip, taken for it.
    pub(crate) fn take_lapsed(&self, lease: &Lease) -> u32 {
        lease.lapsed.swap(0, Ordering::AcqRel)
    }

    /// Round trips finished for the key so far.
    pub(crate) fn trips(&self, lease: &Lease) -> u64 {
        lease.trips.load(Ordering::Acquire)
    }

    /// Whether a trip finished since `seen` and the last one failed (Redis unavailable).
    pub(crate) fn failed_since(&self, lease: &Lease, seen: u64) -> bool {
        lease.trips.load(Ordering::Acquire) != seen && lease.last_failed.load(Ordering::Acquire)
    }

    fn finished(lease: &Lease, failed: bool) {
        lease.last_failed.store(failed, Ordering::Release);
        lease.trips.fetch_add(1, Ordering::AcqRel);
        lease.refilling.store(false, Ordering::Release);
    }

    /// Whether the caller should start the key's refill (none in flight yet).
    pub(crate) fn start_refill(&self, lease: &Lease) -> bool {
        !lease.refilling.swap(true, Ordering::AcqRel)
    }

    /// The batch to ask Redis for.
    pub(crate) fn batch(&self, lease: &Lease) -> u32 {
        lease.batch.load(Ordering::Relaxed).clamp(1, self.max_batch)
    }

    /// Redis granted `granted` slots (at least one); the caller keeps `keep` of them to spend
    /// now, the rest go into the lease.
    pub(crate) fn granted(&self, lease: &Lease, asked: u32, granted: u32, keep: u32) {
        self.counts.add(Count::Leases, 1);
        self.counts.add(Count::Granted, u64::from(granted));
        lease.denied_until.store(0, Ordering::Release);
        let put = granted.saturating_sub(keep);
        let before = lease.left.fetch_add(put, Ordering::AcqRel);
        if before == 0 {
            // no older slot left: the lapse clock starts with this batch (an older slot
            // keeps its own, earlier, lapse time for the whole lease: never later)
            lease.lapses_at.store(
                self.now().saturating_add(nanos(self.max_hold)),
                Ordering::Release,
            );
        }
        if granted >= asked {
            let next = asked.saturating_mul(2).min(self.max_batch);
            lease.batch.fetch_max(next, Ordering::Relaxed);
        }
        Self::finished(lease, false);
    }

    /// Redis has no slot free for `wait`: answered locally for that long and until a batch
    /// of a quarter of the burst (at most `max_batch`) has accrued, which the next trip asks
    /// for, or `max_hold` if sooner (slots another process gives back are seen within
    /// `max_hold`). A saturated key then costs a round trip per batch, not one per slot
    /// (three processes on one key limited to 1 000/s, burst 100: 2 900 trips a second
    /// before this, about 400 now), the same slots admitted: the burst holds what accrues
    /// meanwhile.
    pub(crate) fn denied(&self, lease: &Lease, wait: Duration) {
        self.counts.add(Count::Leases, 1);
        lease.batch.fetch_max(self.refused_batch, Ordering::Relaxed);
        let accrue = self
            .interval
            .saturating_mul(u64::from(self.refused_batch.saturating_sub(1)));
        let remembered = wait
            .saturating_add(Duration::from_nanos(accrue))
            .min(self.max_hold);
        lease.denied_until.store(
            self.now().saturating_add(nanos(remembered)),
            Ordering::Release,
        );
        Self::finished(lease, false);
    }

    /// The refill failed (Redis unavailable): another may start.
    pub(crate) fn failed(&self, lease: &Lease) {
        Self::finished(lease, true);
    }

    /// A hold (pushback) for `d`: the slots left are dropped (a hold admits nothing), and
    /// nothing is spent before it ends. Returns the lapsed slots of leases dropped to make
    /// room for the key's (to give back).
    #[must_use]
    pub(crate) fn hold(&self, key: &str, d: Duration) -> Vec<(String, u32)> {
        let (lease, lapsed) = self.lease(key);
        let dropped = lease.left.swap(0, Ordering::AcqRel);
        self.counts.add(Count::Stranded, u64::from(dropped));
        lease
            .denied_until
            .fetch_max(self.now().saturating_add(nanos(d)), Ordering::AcqRel);
        lapsed
    }

    pub(crate) fn returned(&self, n: u32) {
        self.counts.add(Count::Returned, u64::from(n));
    }

    pub(crate) fn stranded(&self, n: u32) {
        self.counts.add(Count::Stranded, u64::from(n));
    }

    /// Every key's unspent slots, taken out of the leases (to give back on drop).
    pub(crate) fn drain(&self) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let shard = shard.read().unwrap_or_else(PoisonError::into_inner);
            for (key, lease) in &shard.leases {
                let left = lease
                    .left
                    .swap(0, Ordering::AcqRel)
                    .saturating_add(self.take_lapsed(lease));
                if left > 0 {
                    out.push((key.clone(), left));
                }
            }
        }
        out
    }

    pub(crate) fn stats(&self) -> LeaseStats {
        let c = &self.counts;
        let local = self
            .shards
            .iter()
            .map(|shard| {
                let shard = shard.read().unwrap_or_else(PoisonError::into_inner);
                shard
                    .leases
                    .values()
                    .map(|lease| lease.local.load(Ordering::Relaxed))
                    .sum::<u64>()
            })
            .sum::<u64>()
            .saturating_add(c.swept_local.load(Ordering::Relaxed));
        LeaseStats {
            local,
            leases: c.leases.load(Ordering::Relaxed),
            granted: c.granted.load(Ordering::Relaxed),
            returned: c.returned.load(Ordering::Relaxed),
            stranded: c.stranded.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(leases: &Leases) -> usize {
        leases
            .shards
            .iter()
            .map(|shard| shard.read().unwrap().leases.len())
            .sum()
    }

    fn leases(max_hold: Duration) -> Leases {
        Leases::new(64, max_hold, (Duration::from_micros(1_000), 100), "test")
    }

    #[test]
    fn rotating_keys_stay_bounded_and_busy_or_stocked_leases_stay() {
        let leases = leases(Duration::from_secs(60));
        // a caller holds this one; this other one holds slots that have not lapsed
        let (busy, _) = leases.lease("busy");
        let (stocked, _) = leases.lease("stocked");
        leases.granted(&stocked, 8, 8, 0);
        drop(stocked);
        for i in 0..3 * MAX_LEASES {
            let (_, lapsed) = leases.lease(&format!("key-{i}"));
            assert!(lapsed.is_empty(), "nothing had slots to give back");
        }
        assert!(
            held(&leases) <= MAX_LEASES + SHARDS,
            "{} leases held",
            held(&leases)
        );
        assert!(
            Arc::ptr_eq(&busy, &leases.lease("busy").0),
            "the busy lease stayed"
        );
        let (stocked, _) = leases.lease("stocked");
        assert_eq!(stocked.left.load(Ordering::Relaxed), 8, "its slots stayed");
    }

    #[test]
    fn a_swept_lease_gives_its_lapsed_slots_back_and_keeps_its_count() {
        let leases = leases(Duration::from_nanos(1));
        let (lapsing, _) = leases.lease("lapsing");
        leases.granted(&lapsing, 5, 5, 0);
        // one slot spent before it lapses is a local decision; make it so by hand
        lapsing.local.fetch_add(1, Ordering::Relaxed);
        drop(lapsing);
        let mut given = Vec::new();
        for i in 0..2 * MAX_LEASES {
            given.extend(leases.lease(&format!("key-{i}")).1);
        }
        assert_eq!(given, vec![("lapsing".to_owned(), 5)]);
        assert_eq!(
            leases.stats().local,
            1,
            "the dropped lease's decisions still count"
        );
    }
}
