//! Retries that cannot storm: backoff with jitter ([`RetryPolicy`]) and a shared
//! [`RetryBudget`] that caps retries to a fraction of requests.
//!
//! The un-jittered delay before retry `n` (retry 1 is the wait before attempt 2) is
//! `min(max_delay, base × b(n))` with `b(n) = 1` (Constant), `n` (Linear) or `factor^(n−1)`
//! (Exponential). Jitter then draws from:
//!
//! | jitter | delay before retry `n` |
//! |---|---|
//! | `None` | the un-jittered delay `d(n)` |
//! | `Full` | uniform in `[0, d(n)]` |
//! | `Equal` | uniform in `[d(n)/2, d(n)]` |
//! | `Decorrelated` | uniform in `[base, min(max_delay, 3 × d(n−1))]`, `d(0) = base` |
//!
//! All arithmetic saturates: any retry number up to `u32::MAX` gives a delay within
//! `[0, max_delay]`.

mod budget;
mod policy;
mod rng;
mod state;

pub use budget::RetryBudget;
pub use policy::{Backoff, Jitter, RetryPolicy, RetryPolicyBuilder, RetrySchedule};
pub use rng::RetryRng;
pub use state::{RetryState, RetryStep};
