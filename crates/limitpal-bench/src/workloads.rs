//! The keyed workloads users run, built the same way for us and for governor:
//!
//! - *refilling*: every key's quota is whole again when it is checked next (capacity 1 000 000
//!   refilled at 1 000 000 per second, so one check uses 1 µs of it): per-IP and per-user
//!   traffic, where the store finds most keys idle;
//! - *Zipf*: keys drawn Zipf-distributed (s = 1.0 over 1 M keys: a few hot keys and a long
//!   cold tail) with a per-key quota of 10 per second, burst 20, under real time;
//! - *rotating*: every check a key never seen before (a flood of made-up keys), ours with
//!   `max_keys`, governor's unbounded;
//! - *contention*: two threads on one hot key, and two threads on the Zipf mix.

use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota};
use limitpal::{RateLimiter, TokenBucket};

/// Capacity and refill rate of the refilling workload.
pub const REFILL: u32 = 1_000_000;

/// Our limiter for the refilling workload.
#[must_use]
pub fn ours_refilling() -> RateLimiter<u64> {
    RateLimiter::builder(TokenBucket::new(REFILL, f64::from(REFILL)).expect("valid quota"))
        .build()
        .expect("valid limiter")
}

/// governor's limiter for the refilling workload.
#[must_use]
pub fn governor_refilling() -> DefaultKeyedRateLimiter<u64> {
    let rate = NonZeroU32::new(REFILL).expect("non-zero");
    governor::RateLimiter::keyed(Quota::per_second(rate).allow_burst(rate))
}

/// Our per-key quota for the Zipf mix: 10 per second, burst 20.
#[must_use]
pub fn ours_per_user() -> RateLimiter<u64> {
    ours_per_user_bounded(None)
}

/// [`ours_per_user`] holding at most `max_keys` keys, if given.
#[must_use]
pub fn ours_per_user_bounded(max_keys: Option<usize>) -> RateLimiter<u64> {
    let builder = RateLimiter::builder(TokenBucket::new(20, 10.0).expect("valid quota"));
    match max_keys {
        Some(max) => builder.max_keys(max).build(),
        None => builder.build(),
    }
    .expect("valid limiter")
}

/// governor's per-key quota for the Zipf mix: 10 per second, burst 20.
#[must_use]
pub fn governor_per_user() -> DefaultKeyedRateLimiter<u64> {
    governor::RateLimiter::keyed(
        Quota::per_second(NonZeroU32::new(10).expect("non-zero"))
            .allow_burst(NonZeroU32::new(20).expect("non-zero")),
    )
}

/// Keys drawn from a Zipf distribution over `0..n` with exponent `s`, precomputed so that
/// both sides read the same sequence at the cost of one sequential load per check.
#[derive(Debug, Clone)]
pub struct ZipfKeys {
    keys: Vec<u64>,
}

impl ZipfKeys {
    /// `len` draws over `n` keys with exponent `s`, from a fixed seed. Rank `r` (0 = the
    /// hottest) is drawn with probability proportional to `1 / (r + 1)^s`; ranks are mapped
    /// to scattered keys so that hot keys are not neighbours in any table.
    #[must_use]
    pub fn new(n: u64, s: f64, len: usize, seed: u64) -> Self {
        let mut cumulative = Vec::with_capacity(usize::try_from(n).expect("n fits in memory"));
        let mut total = 0.0;
        for rank in 0..n {
            #[allow(clippy::cast_precision_loss)]
            let weight = 1.0 / ((rank + 1) as f64).powf(s);
            total += weight;
            cumulative.push(total);
        }
        let mut rng = seed;
        let keys = (0..len)
            .map(|_| {
                #[allow(clippy::cast_precision_loss)]
                let u = (splitmix(&mut rng) >> 11) as f64 / (1_u64 << 53) as f64 * total;
                let rank = cumulative.partition_point(|&c| c <= u) as u64;
                scatter(rank.min(n - 1))
            })
            .collect();
        Self { keys }
    }

    /// The standard mix: s = 1.0 over 1 M keys, 4 M draws.
    #[must_use]
    pub fn standard() -> Self {
        Self::new(1_000_000, 1.0, 1 << 22, 0x5EED)
    }

    /// The `i`-th draw (the sequence repeats).
    #[inline]
    #[must_use]
    pub fn key(&self, i: u64) -> u64 {
        #[allow(clippy::cast_possible_truncation)] // wraps within the sequence
        self.keys[(i as usize) % self.keys.len()]
    }

    /// Distinct keys in the sequence.
    #[must_use]
    pub fn distinct(&self) -> usize {
        let mut keys = self.keys.clone();
        keys.sort_unstable();
        keys.dedup();
        keys.len()
    }
}

/// A never-repeating key for check `i` of a rotating workload (a bijection of `u64`).
#[inline]
#[must_use]
pub fn rotating(i: u64) -> u64 {
    scatter(i)
}

/// An odd multiplier: a bijection that scatters consecutive ranks.
#[inline]
fn scatter(x: u64) -> u64 {
    x.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_draws_hot_keys_often_and_reach_the_tail() {
        let zipf = ZipfKeys::new(1_000, 1.0, 100_000, 1);
        let hottest = scatter(0);
        let hits = (0..100_000).filter(|&i| zipf.key(i) == hottest).count();
        // P(rank 0) = 1 / H(1000) ~ 0.134
        assert!((12_000..15_000).contains(&hits), "{hits}");
        assert!(zipf.distinct() > 900, "{}", zipf.distinct());
    }
}
