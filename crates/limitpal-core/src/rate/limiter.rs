//! The keyed rate limiter: an algorithm, a clock and a keyed store of per-key states.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use super::reservation::Reservation;
use super::{Algorithm, TokenBucket};
use crate::clock::{nanos, now_nanos};
use crate::keyed::{DefaultHashBuilder, Store, default_shards};
use crate::metrics::LimiterMetrics;
use crate::{CheckNError, Clock, ConfigError, MonotonicClock, RateLimited};

/// A rate limiter with an independent quota per key. Clones share state.
///
/// - `K`: the key type (`u64`, `String`, `IpAddr`, …; `()` for one global quota, which
///   skips hashing altogether). Checks take a borrowed form of the key, as `HashMap::get`
///   does, and allocate only when a key is seen for the first time.
/// - `A`: the [`Algorithm`]; `C`: the [`Clock`]; `S`: the key hasher.
///
/// ```
/// use limitpal_core::{ManualClock, RateLimiter, TokenBucket};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let limiter = RateLimiter::builder(TokenBucket::new(2, 1.0)?) // burst 2, 1 per second
///     .clock(clock.clone())
///     .build()?;
/// let user = String::from("alice");
/// assert!(limiter.check(user.as_str()).is_ok());
/// assert!(limiter.check("alice").is_ok());
/// assert_eq!(limiter.check("alice").unwrap_err().retry_after, Duration::from_secs(1));
/// assert!(limiter.check("bob").is_ok()); // keys do not share a quota
/// # Ok::<(), limitpal_core::ConfigError>(())
/// ```
pub struct RateLimiter<K, A: Algorithm = TokenBucket, C = MonotonicClock, S = DefaultHashBuilder> {
    inner: Arc<Inner<K, A, C, S>>,
}

/// Called with every denial (shadow ones included).
type RejectionListener = Arc<dyn Fn(&RateLimited) + Send + Sync>;

/// Called with every denial and its key (opt-in: keys are never reported otherwise).
type KeyRejectionListener<K> = Arc<dyn Fn(&K, &RateLimited) + Send + Sync>;

struct Inner<K, A: Algorithm, C, S> {
    algorithm: A,
    clock: C,
    shadow: bool,
    on_rejection: Option<RejectionListener>,
    on_key_rejection: Option<KeyRejectionListener<K>>,
    metrics: LimiterMetrics,
    idle_ttl: u64,
    /// The only cell when `K` is zero-sized (unkeyed use): no hashing, no lock.
    single: A::Cell,
    store: Store<K, A, S>,
}

impl<K, A: Algorithm, C, S> Clone for RateLimiter<K, A, C, S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, A: Algorithm> RateLimiter<K, A> {
    /// Starts a limiter using `algorithm` for every key, with [`MonotonicClock`] and the
    /// default hasher; the key type is inferred from use.
    pub fn builder(algorithm: A) -> RateLimiterBuilder<K, A, MonotonicClock, DefaultHashBuilder> {
        RateLimiterBuilder {
            algorithm,
            clock: MonotonicClock,
            hasher: DefaultHashBuilder::default(),
            shadow: false,
            on_rejection: None,
            on_key_rejection: None,
            name: None,
            idle_ttl: Duration::ZERO,
            max_keys: None,
            shards: None,
            key: PhantomData,
        }
    }
}

impl<K, A, C, S> RateLimiter<K, A, C, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    A: Algorithm,
    C: Clock,
    S: BuildHasher,
{
    /// Admits one request for `key`, or says how long until it would be admitted.
    ///
    /// # Errors
    /// [`RateLimited`] with the exact `retry_after`.
    #[inline]
    pub fn check<Q>(&self, key: &Q) -> Result<(), RateLimited>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.decide(key, || now_nanos(&self.inner.clock), 1)
            .map(|()| self.inner.metrics.allowed())
            .or_else(|wait| self.reject(key, wait))
    }

    /// [`check`](Self::check) as of `now`, a time read from this limiter's clock. Lets a
    /// pipeline read the clock once and pass the same `now` to the limiter and the breaker.
    ///
    /// # Errors
    /// [`RateLimited`] with the exact `retry_after`.
    #[inline]
    pub fn check_at<Q>(&self, key: &Q, now: Duration) -> Result<(), RateLimited>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.decide(key, || nanos(now), 1)
            .map(|()| self.inner.metrics.allowed())
            .or_else(|wait| self.reject(key, wait))
    }

    /// Admits a batch costing `n` for `key` all at once, or nothing. `n == 0` always passes.
    ///
    /// ```
    /// use limitpal_core::{CheckNError, ManualClock, RateLimiter, TokenBucket};
    ///
    /// let limiter = RateLimiter::builder(TokenBucket::new(10, 1.0)?)
    ///     .clock(ManualClock::new())
    ///     .build()?;
    /// assert!(limiter.check_n(&1_u32, 7).is_ok());
    /// assert!(matches!(limiter.check_n(&1_u32, 7), Err(CheckNError::RateLimited(_))));
    /// assert_eq!(limiter.check_n(&1_u32, 11), Err(CheckNError::InsufficientCapacity { max: 10 }));
    /// # Ok::<(), limitpal_core::ConfigError>(())
    /// ```
    ///
    /// # Errors
    /// [`CheckNError::RateLimited`] when the batch will fit later,
    /// [`CheckNError::InsufficientCapacity`] when it never can.
    pub fn check_n<Q>(&self, key: &Q, n: u32) -> Result<(), CheckNError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if n == 0 {
            return Ok(());
        }
        let max = self.inner.algorithm.capacity();
        if n > max {
            return Err(CheckNError::InsufficientCapacity { max });
        }
        self.decide(key, || now_nanos(&self.inner.clock), n)
            .map(|()| self.inner.metrics.allowed())
            .or_else(|wait| self.reject(key, wait).map_err(CheckNError::RateLimited))
    }

    /// Admits one request for `key`, waiting through the clock when the wait fits `timeout`.
    ///
    /// It reserves the key's next slot (see [`reserve`](Self::reserve)) and sleeps until it:
    /// concurrent callers are admitted in arrival order, each exactly on the algorithm's
    /// schedule, with no polling. A wait that would not fit `timeout` is refused at once.
    /// With [`ManualClock`](crate::ManualClock) the sleep advances the clock, so the call
    /// returns at once with the clock moved by the wait. If a sleep leaves the clock where it
    /// was (a paused clock), the slot is given back and the denial returned instead of
    /// spinning.
    ///
    /// ```
    /// use limitpal_core::{Clock, ManualClock, RateLimiter, TokenBucket};
    /// use std::time::Duration;
    ///
    /// let clock = ManualClock::new();
    /// let limiter = RateLimiter::builder(TokenBucket::new(1, 1.0)?).clock(clock.clone()).build()?;
    /// limiter.check(&())?;
    /// assert!(limiter.acquire(&(), Duration::from_millis(999)).is_err()); // would not fit
    /// assert_eq!(clock.now(), Duration::ZERO);
    /// limiter.acquire(&(), Duration::from_secs(2))?; // waits exactly 1 s
    /// assert_eq!(clock.now(), Duration::from_secs(1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`RateLimited`] when the wait does not fit in `timeout`.
    pub fn acquire<Q>(&self, key: &Q, timeout: Duration) -> Result<(), RateLimited>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        S: Send + Sync + 'static,
    {
        let clock = &self.inner.clock;
        let mut now = now_nanos(clock);
        let (reservation, at) = self.reserve_at(key, now, 1, nanos(timeout))?;
        while now < at {
            clock.sleep(Duration::from_nanos(at.saturating_sub(now)));
            let after = now_nanos(clock);
            if after == now {
                reservation.cancel(); // this caller is not coming
                return Err(denied(at.saturating_sub(now)));
            }
            now = after;
        }
        reservation.commit();
        Ok(())
    }

    /// Takes `key`'s next slot, even when it lies in the future, if it is at most `max_wait`
    /// ahead: the request may go after [`Reservation::delay`]. Beyond `max_wait` the
    /// reservation is refused at once with the exact `retry_after` (never a wait bound to
    /// fail). Reservations and checks of one key are served in arrival order.
    ///
    /// Dropped before its time, a reservation gives its slot back where the algorithm can
    /// (see [`Reservation`]). In shadow mode nothing waits: a request that would have to is
    /// reported, and admitted at once.
    ///
    /// ```
    /// use limitpal_core::{ManualClock, RateLimiter, LeakyBucket};
    /// use std::time::Duration;
    ///
    /// // jobs at exactly 10 per second, no bursts
    /// let jobs = RateLimiter::builder(LeakyBucket::new(1, 10.0)?).clock(ManualClock::new()).build()?;
    /// let delays: Vec<_> = (0..3)
    ///     .map(|_| jobs.reserve("jobs", Duration::from_secs(60)).map(|r| { let d = r.delay(); r.commit(); d }))
    ///     .collect::<Result<_, _>>()?;
    /// assert_eq!(delays, [Duration::ZERO, Duration::from_millis(100), Duration::from_millis(200)]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`RateLimited`] when the slot is more than `max_wait` ahead.
    pub fn reserve<Q>(&self, key: &Q, max_wait: Duration) -> Result<Reservation, RateLimited>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        S: Send + Sync + 'static,
    {
        let now = now_nanos(&self.inner.clock);
        self.reserve_at(key, now, 1, nanos(max_wait))
            .map(|(reservation, _)| reservation)
    }

    /// [`reserve`](Self::reserve) for a batch costing `n`, all at one slot or not at all.
    /// `n == 0` is admitted at once.
    ///
    /// # Errors
    /// [`CheckNError::RateLimited`] when the slot is more than `max_wait` ahead,
    /// [`CheckNError::InsufficientCapacity`] when the batch can never fit.
    pub fn reserve_n<Q>(
        &self,
        key: &Q,
        n: u32,
        max_wait: Duration,
    ) -> Result<Reservation, CheckNError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        S: Send + Sync + 'static,
    {
        if n == 0 {
            return Ok(Reservation::now());
        }
        let max = self.inner.algorithm.capacity();
        if n > max {
            return Err(CheckNError::InsufficientCapacity { max });
        }
        let now = now_nanos(&self.inner.clock);
        self.reserve_at(key, now, n, nanos(max_wait))
            .map(|(reservation, _)| reservation)
            .map_err(CheckNError::RateLimited)
    }

    /// Pushback: admits nothing for `key` during `d` from now, for any caller; checks are
    /// denied with the remaining time and reservations queue after it. When the hold ends
    /// the key goes on at its rate (one request per interval), not with a full burst: what an
    /// upstream that said "retry after d" can take. A hold never shortens one already in
    /// place; `d` saturates at the end of the clock's range.
    ///
    /// ```
    /// use limitpal_core::{ManualClock, RateLimiter, TokenBucket};
    /// use std::time::Duration;
    ///
    /// let clock = ManualClock::new();
    /// let limiter = RateLimiter::builder(TokenBucket::new(10, 5.0)?).clock(clock.clone()).build()?;
    /// limiter.hold("vendor", Duration::from_secs(2)); // the vendor said Retry-After: 2
    /// assert_eq!(limiter.check("vendor").unwrap_err().retry_after, Duration::from_secs(2));
    /// assert!(limiter.check("other").is_ok());
    /// clock.advance(Duration::from_secs(2));
    /// assert!(limiter.check("vendor").is_ok());
    /// # Ok::<(), limitpal_core::ConfigError>(())
    /// ```
    pub fn hold<Q>(&self, key: &Q, d: Duration)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if d.is_zero() {
            return;
        }
        let inner = &*self.inner;
        self.with_cell(
            key,
            || now_nanos(&inner.clock),
            |cell, now| {
                inner
                    .algorithm
                    .hold_cell(cell, now.saturating_add(nanos(d)));
            },
        );
    }

    /// The reservation and the instant (on this limiter's clock) it admits at.
    fn reserve_at<Q>(
        &self,
        key: &Q,
        now: u64,
        cost: u32,
        max_wait: u64,
    ) -> Result<(Reservation, u64), RateLimited>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        S: Send + Sync + 'static,
    {
        let inner = &*self.inner;
        let alg = &inner.algorithm;
        if inner.shadow {
            self.decide(key, || now, cost)
                .map(|()| inner.metrics.allowed())
                .or_else(|wait| self.reject(key, wait))?;
            return Ok((Reservation::now(), now));
        }
        let reserved = self.with_cell(
            key,
            || now,
            |cell, now| alg.reserve_cell(cell, now, cost, max_wait),
        );
        let (at, undo) = match reserved {
            Ok(slot) => slot,
            Err(wait) => return self.reject(key, wait).map(|()| (Reservation::now(), now)),
        };
        inner.metrics.allowed();
        if at <= now {
            return Ok((Reservation::now(), now));
        }
        let limiter = self.clone();
        let key = key.to_owned();
        let give_back = Box::new(move |always: bool| {
            let inner = &*limiter.inner;
            if !always && now_nanos(&inner.clock) >= at {
                return; // its time has come: the request may have gone
            }
            let alg = &inner.algorithm;
            if size_of::<K>() == 0 {
                alg.untake_cell(&inner.single, &undo, cost);
            } else {
                inner
                    .store
                    .peek_cell(key.borrow(), |cell| alg.untake_cell(cell, &undo, cost));
            }
        });
        Ok((
            Reservation::ahead(Duration::from_nanos(at.saturating_sub(now)), give_back),
            at,
        ))
    }

    /// [`check`](Self::check), also reporting what the key has left after the decision (for
    /// HTTP's `RateLimit` field). One lookup; the quota is read right after the decision.
    ///
    /// ```
    /// use limitpal_core::{ManualClock, Quota, RateLimiter, TokenBucket};
    /// use std::time::Duration;
    ///
    /// let limiter = RateLimiter::builder(TokenBucket::new(2, 1.0)?).clock(ManualClock::new()).build()?;
    /// let (result, quota) = limiter.check_with_quota(&1_u8);
    /// assert!(result.is_ok());
    /// assert_eq!(quota, Quota { limit: 2, remaining: 1, reset: Duration::from_secs(1) });
    /// # Ok::<(), limitpal_core::ConfigError>(())
    /// ```
    pub fn check_with_quota<Q>(&self, key: &Q) -> (Result<(), RateLimited>, Quota)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let inner = &*self.inner;
        let alg = &inner.algorithm;
        let decide =
            |cell: &A::Cell, now| (alg.check_cell(cell, now, 1), alg.cell_quota(cell, now));
        let (result, (remaining, reset)) = self.with_cell(key, || now_nanos(&inner.clock), decide);
        let quota = Quota {
            limit: alg.capacity(),
            remaining,
            reset: Duration::from_nanos(reset),
        };
        let result = result.map(|()| self.inner.metrics.allowed());
        (result.or_else(|wait| self.reject(key, wait)), quota)
    }

    /// The quota `key` has left now: (requests that would pass at once, time until its quota
    /// is fully replenished). Reading it does not consume anything nor insert the key.
    pub fn quota<Q>(&self, key: &Q) -> (u32, Duration)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let inner = &*self.inner;
        let now = now_nanos(&inner.clock);
        let (remaining, reset) = if size_of::<K>() == 0 {
            inner.algorithm.cell_quota(&inner.single, now)
        } else {
            inner
                .store
                .peek_cell(key, |cell| inner.algorithm.cell_quota(cell, now))
                .unwrap_or((inner.algorithm.capacity(), 0))
        };
        (remaining, Duration::from_nanos(reset))
    }

    /// The number of keys held now. Idle keys (indistinguishable from fresh ones for at least
    /// `idle_ttl`) are dropped first, so this walks every key: `O(keys)`.
    #[must_use]
    pub fn len(&self) -> usize {
        let inner = &*self.inner;
        let now = now_nanos(&inner.clock);
        if size_of::<K>() == 0 {
            return usize::from(
                !inner
                    .algorithm
                    .cell_idle(&inner.single, now, inner.idle_ttl),
            );
        }
        inner.store.len(&inner.algorithm, now, inner.idle_ttl)
    }

    /// Whether no key is held (see [`len`](Self::len)).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of key-table memory held now: the slots, not heap data owned by
    /// the keys themselves (a `String` key's characters).
    #[must_use]
    pub fn table_bytes(&self) -> usize {
        self.inner.store.allocation_size()
    }

    /// A denial: reported (when anything listens), then enforced — or, in shadow mode,
    /// only reported. Kept inline and cheap: the deny path must cost what the allow path does.
    #[inline]
    fn reject<Q>(&self, key: &Q, wait: u64) -> Result<(), RateLimited>
    where
        Q: ToOwned<Owned = K> + ?Sized,
    {
        let inner = &*self.inner;
        if inner.on_rejection.is_some()
            || inner.on_key_rejection.is_some()
            || inner.metrics.active()
            || tracing_on()
        {
            self.report(key, wait);
        }
        if inner.shadow {
            Ok(())
        } else {
            Err(denied(wait))
        }
    }

    #[cold]
    fn report<Q>(&self, key: &Q, wait: u64)
    where
        Q: ToOwned<Owned = K> + ?Sized,
    {
        let denied = denied(wait);
        #[cfg(feature = "tracing")]
        tracing::debug!(
            target: "limitpal::limiter",
            retry_after = ?denied.retry_after,
            shadow = self.inner.shadow,
            "rate limited"
        );
        self.inner.metrics.denied();
        if let Some(listener) = &self.inner.on_rejection {
            listener(&denied);
        }
        if let Some(listener) = &self.inner.on_key_rejection {
            listener(&key.to_owned(), &denied);
        }
    }

    #[inline]
    fn decide<Q>(&self, key: &Q, now: impl FnOnce() -> u64, cost: u32) -> Result<(), u64>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let inner = &*self.inner;
        self.with_cell(key, now, |cell, now| {
            inner.algorithm.check_cell(cell, now, cost)
        })
    }

    /// Runs `f` on `key`'s cell and the time `now` reads: the single cell for zero-sized keys
    /// (no hashing), else the store's (inserting a fresh one for a new key).
    #[inline]
    fn with_cell<Q, R>(
        &self,
        key: &Q,
        now: impl FnOnce() -> u64,
        f: impl FnOnce(&A::Cell, u64) -> R,
    ) -> R
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let inner = &*self.inner;
        if size_of::<K>() == 0 {
            return f(&inner.single, now());
        }
        inner
            .store
            .with_cell(&inner.algorithm, key, now, inner.idle_ttl, f)
    }
}

/// What a key has left: reported by [`RateLimiter::check_with_quota`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// The most that can pass at once (the algorithm's capacity).
    pub limit: u32,
    /// What would pass at once now.
    pub remaining: u32,
    /// Time until the quota is whole again.
    pub reset: Duration,
}

impl<K, A: Algorithm, C, S> RateLimiter<K, A, C, S> {
    /// The clock this limiter reads.
    #[must_use]
    pub fn clock(&self) -> &C {
        &self.inner.clock
    }

    /// The algorithm applied to every key.
    #[must_use]
    pub fn algorithm(&self) -> &A {
        &self.inner.algorithm
    }
}

/// Whether a tracing subscriber wants DEBUG events at all: one relaxed load.
#[inline]
fn tracing_on() -> bool {
    #[cfg(feature = "tracing")]
    {
        tracing::level_enabled!(tracing::Level::DEBUG)
    }
    #[cfg(not(feature = "tracing"))]
    {
        false
    }
}

fn denied(wait: u64) -> RateLimited {
    RateLimited::new(Duration::from_nanos(wait))
}

impl<K, A: Algorithm, C, S> fmt::Debug for RateLimiter<K, A, C, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("algorithm", &self.inner.algorithm)
            .field("idle_ttl", &Duration::from_nanos(self.inner.idle_ttl))
            .field("shadow", &self.inner.shadow)
            .field("shards", &self.inner.store.shard_count())
            .finish_non_exhaustive()
    }
}

/// Configures a [`RateLimiter`]; made by [`RateLimiter::builder`].
pub struct RateLimiterBuilder<K, A, C, S> {
    algorithm: A,
    clock: C,
    hasher: S,
    shadow: bool,
    on_rejection: Option<RejectionListener>,
    on_key_rejection: Option<KeyRejectionListener<K>>,
    name: Option<String>,
    idle_ttl: Duration,
    max_keys: Option<usize>,
    shards: Option<usize>,
    key: PhantomData<fn() -> K>,
}

impl<K, A, C, S> RateLimiterBuilder<K, A, C, S> {
    /// The clock to read (default [`MonotonicClock`]).
    pub fn clock<C2: Clock>(self, clock: C2) -> RateLimiterBuilder<K, A, C2, S> {
        RateLimiterBuilder {
            algorithm: self.algorithm,
            clock,
            hasher: self.hasher,
            shadow: self.shadow,
            on_rejection: self.on_rejection,
            on_key_rejection: self.on_key_rejection,
            name: self.name,
            idle_ttl: self.idle_ttl,
            max_keys: self.max_keys,
            shards: self.shards,
            key: PhantomData,
        }
    }

    /// The hasher for keys (default [`DefaultHashBuilder`]). Any hasher is flood-safe here: a
    /// shard whose keys collide under it rehashes them with SipHash.
    pub fn hasher<S2: BuildHasher>(self, hasher: S2) -> RateLimiterBuilder<K, A, C, S2> {
        RateLimiterBuilder {
            algorithm: self.algorithm,
            clock: self.clock,
            hasher,
            shadow: self.shadow,
            on_rejection: self.on_rejection,
            on_key_rejection: self.on_key_rejection,
            name: self.name,
            idle_ttl: self.idle_ttl,
            max_keys: self.max_keys,
            shards: self.shards,
            key: PhantomData,
        }
    }

    /// How long a key must have been indistinguishable from a fresh key before it may be
    /// dropped (default zero: as soon as its quota is full again). Dropping such a key changes
    /// no answer; a longer ttl only keeps memory for keys that come back soon.
    #[must_use]
    pub fn idle_ttl(mut self, ttl: Duration) -> Self {
        self.idle_ttl = ttl;
        self
    }

    /// A hard bound on the keys held (default: none). The bound is split evenly across the
    /// store's shards; a full shard drops an idle key if it finds one, else the least recently
    /// used key among a sample of 16 — that key starts again with a full quota. nginx's
    /// `limit_req_zone` does the same when its zone is full.
    #[must_use]
    pub fn max_keys(mut self, max: usize) -> Self {
        self.max_keys = Some(max);
        self
    }

    /// Shadow (dry-run) mode: every decision is computed, reported to
    /// [`on_rejection`](Self::on_rejection) and tracing, but no request is denied. How to roll
    /// a new limit out safely: watch what it would deny first.
    #[must_use]
    pub fn shadow(mut self, shadow: bool) -> Self {
        self.shadow = shadow;
        self
    }

    /// Called with every denial, shadow ones included (for metrics, logs, alerts). Runs on
    /// the denying thread: keep it short.
    #[must_use]
    pub fn on_rejection(mut self, listener: impl Fn(&RateLimited) + Send + Sync + 'static) -> Self {
        self.on_rejection = Some(Arc::new(listener));
        self
    }

    /// Called with the key and the denial, after [`on_rejection`](Self::on_rejection): the
    /// opt-in way to see who is limited (keys are never logged nor labelled otherwise). The
    /// key is the limiter's own type, made from the borrowed one checked (`to_owned`: a copy
    /// for `u64` or `IpAddr` keys, an allocation per denial for `String` keys checked as
    /// `&str`). Runs on the denied caller's thread: keep it short.
    ///
    /// ```
    /// use limitpal_core::{ManualClock, RateLimiter, TokenBucket};
    /// use std::sync::{Arc, Mutex};
    ///
    /// let limited = Arc::new(Mutex::new(Vec::new()));
    /// let log = Arc::clone(&limited);
    /// let limiter = RateLimiter::<String, _, _, _>::builder(TokenBucket::new(1, 1.0)?)
    ///     .clock(ManualClock::new())
    ///     .on_key_rejection(move |user: &String, _denied| log.lock().unwrap().push(user.clone()))
    ///     .build()?;
    /// assert!(limiter.check("alice").is_ok());
    /// assert!(limiter.check("alice").is_err());
    /// assert!(limiter.check("bob").is_ok());
    /// assert_eq!(*limited.lock().unwrap(), ["alice"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn on_key_rejection(
        mut self,
        listener: impl Fn(&K, &RateLimited) + Send + Sync + 'static,
    ) -> Self {
        self.on_key_rejection = Some(Arc::new(listener));
        self
    }

    /// A name for this limiter's metrics (feature `metrics`: label `name`); unnamed limiters
    /// record no metrics.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The number of lock shards (default: four per core, rounded up to a power of two).
    #[must_use]
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
        self
    }

    /// Builds the limiter.
    ///
    /// # Errors
    /// [`ConfigError`] when `max_keys` or `shards` is zero.
    pub fn build(self) -> Result<RateLimiter<K, A, C, S>, ConfigError>
    where
        K: Hash + Eq,
        A: Algorithm,
        C: Clock,
        S: BuildHasher,
    {
        if self.max_keys == Some(0) {
            return Err(ConfigError::Zero { field: "max_keys" });
        }
        if self.shards == Some(0) {
            return Err(ConfigError::Zero { field: "shards" });
        }
        let shards = if size_of::<K>() == 0 {
            1
        } else {
            self.shards.unwrap_or_else(default_shards).min(1 << 16)
        };
        Ok(RateLimiter {
            inner: Arc::new(Inner {
                single: self.algorithm.new_cell(),
                algorithm: self.algorithm,
                clock: self.clock,
                shadow: self.shadow,
                on_rejection: self.on_rejection,
                on_key_rejection: self.on_key_rejection,
                metrics: LimiterMetrics::new(self.name.as_deref()),
                idle_ttl: nanos(self.idle_ttl),
                store: Store::new(self.hasher, shards, self.max_keys),
            }),
        })
    }
}

impl<K, A: fmt::Debug, C, S> fmt::Debug for RateLimiterBuilder<K, A, C, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiterBuilder")
            .field("algorithm", &self.algorithm)
            .field("idle_ttl", &self.idle_ttl)
            .field("max_keys", &self.max_keys)
            .field("shards", &self.shards)
            .finish_non_exhaustive()
    }
}
