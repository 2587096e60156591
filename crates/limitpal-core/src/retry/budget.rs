//! A retry budget: retries may be at most a fraction of requests, plus a small floor.

use std::fmt;
use std::num::NonZeroU64;
use std::sync::Arc;

use crate::sync::{AtomicU64, Ordering};
use std::time::Duration;

use crate::ConfigError;
use crate::clock::nanos;

const BUCKETS: usize = 10;
const BUCKETS_U64: u64 = BUCKETS as u64;
/// Balances are kept in thousandths of a retry, so ratios like 0.1 stay exact integers.
const MILLI: u64 = 1000;

/// Caps retries, as Finagle's and tower's `TpsBudget` do: over any `ttl`, retries are at most
/// `min_per_sec × ttl + retry_ratio × requests`. Clones share one budget.
///
/// Every request [`deposit`](Self::deposit)s; every retry must [`withdraw`](Self::withdraw)
/// and is refused when the balance is spent. The window slides in tenths of `ttl`. The clock
/// is passed by the owner (a layer or an executor), so the budget follows whatever clock
/// drives them.
///
/// ```
/// use limitpal_core::RetryBudget;
/// use std::time::Duration;
///
/// let budget = RetryBudget::new(Duration::from_secs(10), 0, 0.1)?; // 10 % of requests
/// let now = Duration::ZERO;
/// for _ in 0..20 {
///     budget.deposit(now);
/// }
/// assert!(budget.withdraw(now));
/// assert!(budget.withdraw(now));
/// assert!(!budget.withdraw(now), "20 requests buy 2 retries");
/// # Ok::<(), limitpal_core::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct RetryBudget {
    inner: Arc<Inner>,
}

struct Inner {
    width: NonZeroU64,
    /// `min_per_sec × ttl`, in thousandths of a retry.
    reserve: u64,
    /// Thousandths of a retry earned per request.
    per_request: u64,
    /// The latest bucket seen: time that goes backwards stays here, so an earlier reading
    /// can neither forget withdrawals nor count deposits twice.
    latest: AtomicU64,
    /// Requests per bucket of the ring, each packed with its bucket's id ([`Count`]).
    deposits: [AtomicU64; BUCKETS],
    /// Retries per bucket of the ring, packed alike.
    withdrawals: [AtomicU64; BUCKETS],
}

/// A bucket's count packed with (the low bits of) its id in one word, so that moving a slot
/// of the ring on to a new bucket and counting in it are one compare-and-swap: no lock, and
/// no count lost to a racing reset. Ids wrap after 2^40 buckets (35 years of 1 ms buckets);
/// a count saturates at 2^24 − 1 per bucket (16.7 M requests per tenth of `ttl`), which can
/// only make the budget stingier.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Count(u64);

const COUNT_BITS: u32 = 24;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;
const TAG_MASK: u64 = (1 << (64 - COUNT_BITS)) - 1;

impl Count {
    const fn new(id: u64, count: u64) -> Self {
        Self(((id & TAG_MASK) << COUNT_BITS) | count)
    }

    const fn count(self) -> u64 {
        self.0 & COUNT_MAX
    }

    /// How many buckets this one is behind bucket `id` (`None`: ahead of it).
    const fn behind(self, id: u64) -> Option<u64> {
        let gap = (id & TAG_MASK).wrapping_sub(self.0 >> COUNT_BITS) & TAG_MASK;
        if gap <= TAG_MASK / 2 { Some(gap) } else { None }
    }
}

impl RetryBudget {
    /// A budget over `ttl` with a floor of `min_per_sec` retries per second and
    /// `retry_ratio` retries per request.
    ///
    /// # Errors
    /// [`ConfigError`] for a zero `ttl` or a `retry_ratio` outside `[0, 1000]` (or NaN).
    pub fn new(ttl: Duration, min_per_sec: u32, retry_ratio: f64) -> Result<Self, ConfigError> {
        let ttl_ns = nanos(ttl);
        if ttl_ns == 0 {
            return Err(ConfigError::Zero { field: "ttl" });
        }
        if !(0.0..=1000.0).contains(&retry_ratio) {
            return Err(ConfigError::out_of_range(
                "retry_ratio",
                retry_ratio,
                "a ratio in [0, 1000]",
            ));
        }
        // min_per_sec × ttl in thousandths: min × ttl_ms.
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        // The ratio is in [0, 1000], so the product fits and is non-negative.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let per_request = (retry_ratio * MILLI as f64).round() as u64;
        Ok(Self {
            inner: Arc::new(Inner {
                width: NonZeroU64::new(ttl_ns / BUCKETS_U64).unwrap_or(NonZeroU64::MIN),
                reserve: u64::from(min_per_sec).saturating_mul(ttl_ms),
                per_request,
                latest: AtomicU64::new(0),
                deposits: std::array::from_fn(|_| AtomicU64::new(0)),
                withdrawals: std::array::from_fn(|_| AtomicU64::new(0)),
            }),
        })
    }

    /// Records a request (call once per request, before its first attempt).
    pub fn deposit(&self, now: Duration) {
        let inner = &*self.inner;
        inner.count(&inner.deposits, nanos(now), |_, _| true);
    }

    /// Asks for one retry; `false` means the budget is spent and the caller must not retry.
    ///
    /// Exact under concurrency within a bucket (a racing withdrawal makes this one check the
    /// balance again); two callers on either side of a bucket's boundary may overdraw it by
    /// one between them.
    #[must_use]
    pub fn withdraw(&self, now: Duration) -> bool {
        let inner = &*self.inner;
        // the balance counts this slot as read: a racing withdrawal fails the swap
        inner.count(&inner.withdrawals, nanos(now), |id, current| {
            inner.balance(id, Some(current)) >= MILLI
        })
    }

    /// Retries that could be withdrawn now.
    #[must_use]
    pub fn available(&self, now: Duration) -> u64 {
        let inner = &*self.inner;
        inner.balance(inner.bucket(nanos(now)), None) / MILLI
    }
}

impl Inner {
    /// The bucket `now` falls in, or the latest seen if that is later.
    fn bucket(&self, now: u64) -> u64 {
        // +1 keeps id 0 free; saturates at the end of the clock's range, never a panic
        let id = (now / self.width).saturating_add(1);
        let latest = self.latest.load(Ordering::Acquire);
        if id > latest {
            // one read-modify-write per bucket, not per call
            self.latest.fetch_max(id, Ordering::AcqRel).max(id)
        } else {
            latest
        }
    }

    /// The balance of the window ending with bucket `id`, in thousandths of a retry; the
    /// withdrawals slot of `id` read as `current` (what a withdrawal will compare and swap).
    fn balance(&self, id: u64, current: Option<Count>) -> u64 {
        let in_window = |count: Count| match count.behind(id) {
            Some(gap) if gap < BUCKETS_U64 => count.count(),
            _ => 0,
        };
        let load = |slot: &AtomicU64| Count(slot.load(Ordering::Acquire));
        let earned: u64 = self.deposits.iter().map(|slot| in_window(load(slot))).sum();
        #[allow(clippy::cast_possible_truncation)] // the modulus is < BUCKETS
        let mine = (id % BUCKETS_U64) as usize;
        let spent: u64 = self
            .withdrawals
            .iter()
            .enumerate()
            .map(|(i, slot)| match current {
                Some(current) if i == mine => in_window(current),
                _ => in_window(load(slot)),
            })
            .sum();
        self.reserve
            .saturating_add(earned.saturating_mul(self.per_request))
            .saturating_sub(spent.saturating_mul(MILLI))
    }

    /// Counts one in `ring`'s slot for the bucket of `now`, if `allow` (given the bucket's
    /// id and the slot as read, which the count then swaps from) says so; whether it counted.
    /// A slot still holding an older bucket starts the new one; one taken by a newer bucket
    /// (another thread saw time move on meanwhile) sends the count there.
    fn count(
        &self,
        ring: &[AtomicU64; BUCKETS],
        now: u64,
        mut allow: impl FnMut(u64, Count) -> bool,
    ) -> bool {
        let mut id = self.bucket(now);
        loop {
            #[allow(clippy::cast_possible_truncation)] // the modulus is < BUCKETS
            let slot = &ring[(id % BUCKETS_U64) as usize];
            let current = Count(slot.load(Ordering::Acquire));
            if !allow(id, current) {
                return false;
            }
            let next = match current.behind(id) {
                Some(0) => Count::new(id, current.count().saturating_add(1).min(COUNT_MAX)),
                None if self.latest.load(Ordering::Acquire) > id => {
                    id = self.bucket(now); // time moved on meanwhile: count there
                    continue;
                }
                // older (by more than half the ids' range, if it looks ahead: ids only
                // grow, and none is past the latest)
                _ => Count::new(id, 1),
            };
            if slot
                .compare_exchange_weak(current.0, next.0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return true;
            }
            // another caller counted in this slot first: a withdrawal checks the balance again
        }
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field(
                "window",
                &Duration::from_nanos(self.inner.width.get().saturating_mul(BUCKETS_U64)),
            )
            .field("reserve_milli", &self.inner.reserve)
            .field("per_request_milli", &self.inner.per_request)
            .finish()
    }
}
