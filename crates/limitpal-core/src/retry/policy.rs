//! Backoff and jitter: when to retry.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::{Rng, RngCore};

use super::rng::{RetryRng, mix};
use crate::ConfigError;
use crate::clock::nanos;

/// How the un-jittered delay grows with the retry number `n` (retry 1 = before attempt 2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Backoff {
    /// `base` every time.
    Constant,
    /// `base × n`.
    Linear,
    /// `base × factor^(n−1)`; `factor` must be at least 1.
    Exponential {
        /// Growth per retry (2.0 doubles).
        factor: f64,
    },
}

impl Default for Backoff {
    fn default() -> Self {
        Self::Exponential { factor: 2.0 }
    }
}

/// How the delay is randomised so that clients do not retry in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    /// No randomness: the exact backoff delay.
    None,
    /// Uniform in `[0, delay]` (AWS "full jitter"; the default).
    #[default]
    Full,
    /// Uniform in `[delay/2, delay]`.
    Equal,
    /// Uniform in `[base, min(max_delay, 3 × previous un-jittered delay)]`.
    Decorrelated,
}

/// The numbers of a [`RetryPolicy`], `Copy` so that a retrying future carries them without a
/// pointer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetrySchedule {
    max_attempts: u32,
    base: u64,
    max: u64,
    backoff: Backoff,
    jitter: Jitter,
}

impl RetrySchedule {
    /// The un-jittered delay before retry `n`, in nanoseconds, saturating at `max`.
    /// Total calls allowed, the first one included.
    #[must_use]
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The longest delay.
    #[must_use]
    pub fn max_delay(&self) -> Duration {
        Duration::from_nanos(self.max)
    }

    fn plain(&self, n: u32) -> u64 {
        #[allow(clippy::cast_precision_loss)] // nanoseconds as f64 are exact below 2^53
        let base = self.base as f64;
        let scaled = match self.backoff {
            Backoff::Constant => base,
            Backoff::Linear => base * f64::from(n),
            Backoff::Exponential { factor } => {
                base * factor.powi(i32::try_from(n.saturating_sub(1)).unwrap_or(i32::MAX))
            }
        };
        // Float-to-int casts saturate (and map NaN to 0, which cannot occur here).
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let scaled = scaled as u64;
        scaled.min(self.max)
    }

    /// See [`RetryPolicy::delay`].
    pub fn delay<R: RngCore + ?Sized>(&self, retry: u32, rng: &mut R) -> Duration {
        let n = retry.max(1);
        let plain = self.plain(n);
        let nanos = match self.jitter {
            Jitter::None => plain,
            Jitter::Full => uniform(rng, 0, plain),
            Jitter::Equal => uniform(rng, plain / 2, plain),
            Jitter::Decorrelated => {
                let previous = if n <= 1 {
                    self.base
                } else {
                    self.plain(n.saturating_sub(1))
                };
                let high = previous.saturating_mul(3).min(self.max).max(self.base);
                uniform(rng, self.base, high)
            }
        };
        Duration::from_nanos(nanos)
    }
}

fn uniform<R: RngCore + ?Sized>(rng: &mut R, low: u64, high: u64) -> u64 {
    if low >= high {
        return low;
    }
    let mut rng = rng;
    (&mut rng).random_range(low..=high)
}

/// When and how often to retry. Cheap to clone; clones share the counter that gives every
/// retrying request its own random stream.
///
/// ```
/// use limitpal_core::{Backoff, Jitter, RetryPolicy};
/// use rand::SeedableRng;
/// use std::time::Duration;
///
/// let policy = RetryPolicy::builder()
///     .max_attempts(4)
///     .base_delay(Duration::from_secs(1))
///     .backoff(Backoff::Exponential { factor: 2.0 })
///     .jitter(Jitter::None)
///     .build()?;
/// let mut rng = rand::rngs::StdRng::seed_from_u64(7);
/// let delays: Vec<_> = (1..4).map(|n| policy.delay(n, &mut rng).as_secs()).collect();
/// assert_eq!(delays, [1, 2, 4]);
/// # Ok::<(), limitpal_core::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct RetryPolicy {
    pub(crate) schedule: RetrySchedule,
    seed: u64,
    streams: Arc<AtomicU64>,
}

impl RetryPolicy {
    /// Starts a policy with the defaults: 3 attempts, 100 ms base, 10 s cap, exponential ×2,
    /// full jitter, a random seed.
    #[must_use]
    pub fn builder() -> RetryPolicyBuilder {
        RetryPolicyBuilder {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            backoff: Backoff::default(),
            jitter: Jitter::default(),
            seed: None,
        }
    }

    /// Total calls allowed, the first one included.
    #[must_use]
    pub fn max_attempts(&self) -> u32 {
        self.schedule.max_attempts
    }

    /// The delay before retry `retry` (1 = the wait before attempt 2), drawn from `rng`;
    /// never more than `max_delay`, for any `retry`. `retry` 0 is read as 1.
    pub fn delay<R: RngCore + ?Sized>(&self, retry: u32, rng: &mut R) -> Duration {
        self.schedule.delay(retry, rng)
    }

    /// The longest delay this policy ever waits.
    #[must_use]
    pub fn max_delay(&self) -> Duration {
        Duration::from_nanos(self.schedule.max)
    }

    /// The policy's numbers, to carry by value.
    #[must_use]
    pub fn schedule(&self) -> RetrySchedule {
        self.schedule
    }

    /// The seed every random stream of this policy derives from.
    #[must_use]
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// A new random stream: distinct for every call, on every clone, reproducible for a
    /// given seed and call order. Layers take one per service instance and derive one per
    /// request from it without further synchronisation.
    #[must_use]
    pub fn new_rng(&self) -> RetryRng {
        RetryRng::stream(self.seed, self.streams.fetch_add(1, Ordering::Relaxed))
    }

    /// A fresh seed for a new stream family (see [`new_rng`](Self::new_rng)).
    #[must_use]
    pub fn new_stream_seed(&self) -> u64 {
        mix(self.seed ^ mix(self.streams.fetch_add(1, Ordering::Relaxed)))
    }
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &self.schedule.max_attempts)
            .field("base_delay", &Duration::from_nanos(self.schedule.base))
            .field("max_delay", &Duration::from_nanos(self.schedule.max))
            .field("backoff", &self.schedule.backoff)
            .field("jitter", &self.schedule.jitter)
            .field("seed", &self.seed)
            .finish()
    }
}

/// Configures a [`RetryPolicy`]; made by [`RetryPolicy::builder`].
#[derive(Debug, Clone)]
pub struct RetryPolicyBuilder {
    max_attempts: u32,
    base_delay: Duration,
    max_delay: Duration,
    backoff: Backoff,
    jitter: Jitter,
    seed: Option<u64>,
}

impl RetryPolicyBuilder {
    /// Total calls, the first one included (default 3; 1 means never retry).
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// The first delay (default 100 ms).
    #[must_use]
    pub fn base_delay(mut self, delay: Duration) -> Self {
        self.base_delay = delay;
        self
    }

    /// The cap on any delay (default 10 s); must be at least `base_delay`.
    #[must_use]
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// How delays grow (default exponential ×2).
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// How delays are randomised (default full jitter).
    #[must_use]
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// A fixed seed, for reproducible runs (default: random per policy).
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Builds the policy.
    ///
    /// # Errors
    /// [`ConfigError`] for zero `max_attempts`, `max_delay` below `base_delay`, or an
    /// exponential `factor` below 1, NaN or infinite.
    pub fn build(self) -> Result<RetryPolicy, ConfigError> {
        if self.max_attempts == 0 {
            return Err(ConfigError::Zero {
                field: "max_attempts",
            });
        }
        if self.max_delay < self.base_delay {
            return Err(ConfigError::out_of_range(
                "max_delay",
                format_args!("{:?}", self.max_delay),
                "at least base_delay",
            ));
        }
        if let Backoff::Exponential { factor } = self.backoff
            && !(factor.is_finite() && factor >= 1.0)
        {
            return Err(ConfigError::out_of_range(
                "factor",
                factor,
                "a finite number of at least 1",
            ));
        }
        // std's RandomState is seeded from the OS once per thread and stepped per instance:
        // a random seed without pulling an OS-entropy dependency into this crate.
        let seed = self.seed.unwrap_or_else(|| {
            std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0_u64)
        });
        Ok(RetryPolicy {
            schedule: RetrySchedule {
                max_attempts: self.max_attempts,
                base: nanos(self.base_delay),
                max: nanos(self.max_delay),
                backoff: self.backoff,
                jitter: self.jitter,
            },
            seed,
            streams: Arc::new(AtomicU64::new(0)),
        })
    }
}
