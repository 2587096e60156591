//! A retry budget: retries may be at most a fraction of requests, plus a small floor.

use std::fmt;
use std::num::NonZeroU64;
use std::sync::Arc;

use crate::sync::{Mutex, lock};
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
    ring: Mutex<[Bucket; BUCKETS]>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    id: u64,
    deposits: u64,
    withdrawals: u64,
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
                ring: Mutex::new([Bucket::default(); BUCKETS]),
            }),
        })
    }

    /// Records a request (call once per request, before its first attempt).
    pub fn deposit(&self, now: Duration) {
        self.inner.update(nanos(now), |bucket, _| {
            bucket.deposits = bucket.deposits.saturating_add(1);
            true
        });
    }

    /// Asks for one retry; `false` means the budget is spent and the caller must not retry.
    #[must_use]
    pub fn withdraw(&self, now: Duration) -> bool {
        self.inner.update(nanos(now), |bucket, balance| {
            if balance < MILLI {
                return false;
            }
            bucket.withdrawals = bucket.withdrawals.saturating_add(1);
            true
        })
    }

    /// Retries that could be withdrawn now.
    #[must_use]
    pub fn available(&self, now: Duration) -> u64 {
        let mut available = 0;
        self.inner.update(nanos(now), |_, balance| {
            available = balance / MILLI;
            false
        });
        available
    }
}

impl Inner {
    /// Runs `f` on the current bucket with the balance of the window ending now.
    fn update(&self, now: u64, f: impl FnOnce(&mut Bucket, u64) -> bool) -> bool {
        // +1 keeps id 0 free; saturates at the end of the clock's range, never a panic
        let id = (now / self.width).saturating_add(1);
        let mut ring = lock(&self.ring);
        // time that goes backwards is no time passed: the window stays at the latest bucket
        // seen, so an earlier reading can neither forget withdrawals nor count deposits twice
        let id = ring.iter().map(|b| b.id).fold(id, u64::max);
        let oldest = id.saturating_sub(BUCKETS_U64 - 1);
        let (earned, spent) = ring.iter().filter(|b| b.id >= oldest && b.id <= id).fold(
            (0_u64, 0_u64),
            |(d, w), b| {
                (
                    d.saturating_add(b.deposits),
                    w.saturating_add(b.withdrawals),
                )
            },
        );
        let balance = self
            .reserve
            .saturating_add(earned.saturating_mul(self.per_request))
            .saturating_sub(spent.saturating_mul(MILLI));
        #[allow(clippy::cast_possible_truncation)] // the modulus is < BUCKETS
        let slot = &mut ring[(id % BUCKETS_U64) as usize];
        if slot.id != id {
            *slot = Bucket {
                id,
                ..Bucket::default()
            };
        }
        f(slot, balance)
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
