//! Distributed rate limiting on Redis for [limitpal](https://docs.rs/limitpal).
//!
//! [`RedisRateLimiter`] shares one GCRA meter per key between every process that uses the
//! same Redis. Each decision is one round trip: `EVALSHA` of a small Lua script (reloaded by
//! `EVAL` after `NOSCRIPT`, as after a `SCRIPT FLUSH` or a failover). The script reads the
//! time from Redis itself (`TIME`, microseconds), so clients with skewed clocks agree; it
//! stores one integer per key, named `prefix:{key}` (a hash tag, so each key lives in one
//! Redis Cluster slot), which expires exactly when the key would be indistinguishable from
//! a fresh one.
//!
//! When Redis fails or is slower than the command timeout, the limiter applies its
//! [`FailurePolicy`]: admit, deny, or decide with a local [`RateLimiter`]. The outage and the
//! recovery are logged once each (feature `tracing`), not per request; nothing panics.
//!
//! It implements [`AsyncLimiter`], so it plugs into `RateLimitLayer` exactly where a local
//! limiter does. Waiting (`until_ready`, `RateLimitLayer::wait`, the pipeline's
//! `limiter_wait`) reserves the key's next slot in the same one-round-trip script, then
//! sleeps locally; such a reservation is not given back if dropped early. Pushback
//! ([`AsyncLimiter::hold`], [`RedisRateLimiter::hold_in_redis`]) holds the key in Redis for
//! every process.
//!
//! # Leased quota
//!
//! Exact mode costs one round trip per decision. With
//! [`.lease(max_batch, max_hold)`](RedisRateLimiterBuilder::lease) a process takes a batch of
//! a key's slots in one round trip — as many as the key's state really has now, up to the
//! key's current batch, the state advanced by each one granted — and spends them locally with
//! a compare-and-swap, no round trip, no future. What it keeps:
//!
//! - **Leased quota is real quota.** Since a key's start the fleet never admits more than the
//!   limit's allowance (burst + rate × t): every slot spent was granted by the script first.
//! - **A slot lapses `max_hold` after its grant** (a lease's slots all lapse with its oldest),
//!   so in any interval of length d the fleet admits at most burst + rate × (d + `max_hold`):
//!   a slot granted just before the interval may be spent inside it, `max_hold` later.
//! - **Stranded quota is bounded.** Lapsed slots, and the slots left when a limiter is
//!   dropped, are given back (the key's state moved back by them). Slots that cannot be
//!   given back — a process killed, Redis down — are lost to the fleet until the key's state
//!   catches up: at most `max_batch` per key and process within `max_hold`. That is also
//!   the fairness cost: a process holding a batch may admit up to `max_batch` more than an
//!   even share while another is refused.
//! - **The batch adapts per key**: a key seen once costs one round trip for a batch of 1,
//!   exactly as in exact mode; each batch spent in full doubles the next (up to
//!   `max_batch`), a batch that lapses unspent halves it.
//! - **No stampede, no waiting while quota remains**: a batch running low (a quarter left) is
//!   refilled on a task, one refill in flight per key, while callers go on spending what is
//!   left; a caller that finds the lease empty makes the key's round trip, and the callers
//!   behind it wait for that one instead of making their own. A refusal from Redis is kept
//!   until its `retry_after` and a quarter of the burst has accrued (at most `max_batch`
//!   slots, the next trip's batch), or for `max_hold`, whichever is sooner: a saturated key
//!   costs a round trip per batch, not per slot, and slots another process gives back are
//!   seen within `max_hold`.
//! - **Bounded memory**: a limiter keeps at most 100 000 leases while fewer are busy; past
//!   that, a new key first drops the leases holding nothing (no caller, no refill, no
//!   remembered refusal, no slot that has not lapsed; lapsed slots are given back). A dropped
//!   key's next trip asks for a batch of 1, as a new key's does.
//! - **Redis down**: slots already leased are still spent; then the [`FailurePolicy`]
//!   answers, as in exact mode — once per key's trip: callers queued behind a trip that
//!   failed take the policy's answer at once instead of timing out one after another.
//!
//! Waiting for quota (`reserve`, `until_ready`) reserves exactly, in one round trip, without
//! the lease; a hold (pushback) drops the key's leased slots and is answered locally until it
//! ends. [`RedisRateLimiter::lease_stats`] counts local decisions, lease round trips and slots
//! granted, given back and stranded.
//!
//! ```no_run
//! use limitpal_core::{AsyncLimiter, TokenBucket};
//! use limitpal_redis::{FailurePolicy, RedisRateLimiter};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let limiter = RedisRateLimiter::builder("redis://127.0.0.1:6379", TokenBucket::new(10, 5.0)?)
//!     .prefix("api")
//!     .on_error(FailurePolicy::Allow)
//!     .connect()
//!     .await?;
//! limiter.check(&"tenant-42".to_string()).await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt::{self, Display};
use std::future::Future;
use std::hash::Hash;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use limitpal_core::{
    Algorithm, AsyncLimiter, Clock, ConfigError, LeakyBucket, MonotonicClock, RateLimited,
    RateLimiter, Reservation, Reserve, TokenBucket,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;

mod lease;

pub use lease::LeaseStats;
use lease::{Lease, Leases, Spend};

/// The GCRA transition, in integer microseconds of Redis time. `ARGV[4]` (optional, default
/// 0) is how far ahead a slot may be reserved. Returns `{1, delay_us}` when admitted
/// (`delay_us` 0: now; else the reserved slot's distance), `{0, wait_us}` when refused. A TAT
/// more than a burst ahead is legitimate (reservations queued behind it). `ARGV[5]`
/// (optional) makes it a hold instead (pushback): nothing is admitted for `ARGV[5]` µs, then
/// the key goes on at its rate; a hold never shortens a later TAT; returns `{1, 0}`. Lua
/// numbers are doubles: exact for integers below 2^53 µs (285 years), which covers Unix time
/// in microseconds. `ARGV[6]` (optional) leases: up to `ARGV[6]` slots the key has *now*,
/// its state advanced by each one granted; returns `{granted, 0}`, or `{0, wait_us}` when
/// none is free. `ARGV[7]` (optional) gives back that many unspent leased slots (the state
/// moved back by them, never below now); returns `{1, 0}`.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local max_wait = tonumber(ARGV[4]) or 0
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local lease = tonumber(ARGV[6])
local give = tonumber(ARGV[7])
if lease then
  local gave = give and give > 0
  if gave then
    tat = tat - give * interval
    if tat < now then tat = now end
  end
  local avail = math.floor((now + burst - tat) / interval)
  if avail < 1 then
    -- refused even with the lapsed slots back (a hold runs): they are back all the same
    -- (tat is past now here, as burst >= interval)
    if gave then
      redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000))
    end
    return {0, tat + interval - burst - now}
  end
  if avail > lease then avail = lease end
  local leased = tat + avail * interval
  redis.call('SET', KEYS[1], string.format('%d', leased), 'PX', math.ceil((leased - now) / 1000))
  return {avail, 0}
end
if give then
  local stored = tonumber(redis.call('GET', KEYS[1]))
  if stored then
    local back = stored - give * interval
    if back > now then
      redis.call('SET', KEYS[1], string.format('%d', back), 'PX', math.ceil((back - now) / 1000))
    else
      redis.call('DEL', KEYS[1])
    end
  end
  return {1, 0}
end
local hold = tonumber(ARGV[5])
if hold then
  local held = now + hold + burst - interval
  if held > tat then
    redis.call('SET', KEYS[1], string.format('%d', held), 'PX', math.ceil((held - now) / 1000))
  end
  return {1, 0}
end
local new_tat = tat + cost * interval
local allow_at = new_tat - burst
if allow_at - now <= max_wait then
  redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
  if allow_at < now then allow_at = now end
  return {1, allow_at - now}
end
return {0, allow_at - now}
";

/// What the limiter does when Redis cannot answer in time.
pub enum FailurePolicy {
    /// Admit (fail open): availability over strictness.
    Allow,
    /// Deny (fail closed) with this `retry_after`.
    Deny(Duration),
    /// Decide with a local limiter (per process) until Redis is back; made by
    /// [`FailurePolicy::fallback`].
    Fallback(LocalCheck),
}

/// A local limiter's check, keyed by the rendered Redis key.
pub type LocalCheck = Arc<dyn Fn(&str) -> Result<(), RateLimited> + Send + Sync>;

impl FailurePolicy {
    /// Decide with `limiter` (keyed by the same string keys) while Redis is unavailable.
    #[must_use]
    pub fn fallback<A, C, S>(limiter: RateLimiter<String, A, C, S>) -> Self
    where
        A: Algorithm,
        C: Clock,
        S: std::hash::BuildHasher + Send + Sync + 'static,
    {
        Self::Fallback(Arc::new(move |key: &str| limiter.check(key)))
    }
}

impl fmt::Debug for FailurePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Allow => f.write_str("Allow"),
            Self::Deny(d) => f.debug_tuple("Deny").field(d).finish(),
            Self::Fallback(_) => f.write_str("Fallback(..)"),
        }
    }
}

/// Why [`RedisRateLimiterBuilder::connect`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConnectError {
    /// A configuration value was rejected.
    Config(ConfigError),
    /// Redis could not be reached or refused the connection.
    Redis(redis::RedisError),
}

impl Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(e) => e.fmt(f),
            Self::Redis(e) => write!(f, "cannot connect to redis: {e}"),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Config(e) => Some(e),
            Self::Redis(e) => Some(e),
        }
    }
}

impl From<ConfigError> for ConnectError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

/// The Lua script every decision runs (`EVALSHA`); arguments: `KEYS[1]` the Redis key,
/// `ARGV` interval µs, burst µs, cost, then optionally how far ahead a slot may be reserved
/// (µs) and a hold (µs, pushback). Public so benchmarks can run the very same script.
#[must_use]
pub fn script_source() -> &'static str {
    SCRIPT
}

/// A GCRA meter that a limiter can send to Redis: [`TokenBucket`] or [`LeakyBucket`].
pub trait RedisAlgorithm: Algorithm {}
impl RedisAlgorithm for TokenBucket {}
impl RedisAlgorithm for LeakyBucket {}

/// A rate limiter whose per-key state lives in Redis; see the [crate docs](crate). Clones
/// share the connection and the failure state.
pub struct RedisRateLimiter<K> {
    inner: Arc<Inner>,
    key: PhantomData<fn(&K)>,
}

impl<K> Clone for RedisRateLimiter<K> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            key: PhantomData,
        }
    }
}

/// A single node (reconnecting) or a Redis Cluster (routing each script by its key's slot).
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

struct Inner {
    conn: Conn,
    script: redis::Script,
    prefix: String,
    interval_us: u64,
    burst_us: u64,
    on_error: FailurePolicy,
    timeout: Duration,
    down: AtomicBool,
    errors: AtomicU64,
    deny_cache: Option<DenyCache>,
    leases: Option<Leases>,
}

/// Keys known to be denied until a time, answered without a round trip.
struct DenyCache {
    clock: MonotonicClock,
    until: Mutex<HashMap<String, Duration>>,
}

const DENY_CACHE_MAX: usize = 10_000;

/// The longest hold sent to Redis: 100 years of microseconds, far inside Lua's exact range.
const MAX_HOLD_US: u64 = 100 * 365 * 86_400 * 1_000_000;

impl DenyCache {
    fn denied(&self, key: &str) -> Option<Duration> {
        let now = self.clock.now();
        let until = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        until
            .get(key)
            .and_then(|t| t.checked_sub(now))
            .filter(|d| !d.is_zero())
    }

    fn remember(&self, key: String, wait: Duration) {
        let now = self.clock.now();
        let mut until = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        if until.len() >= DENY_CACHE_MAX {
            until.retain(|_, t| *t > now);
            if until.len() >= DENY_CACHE_MAX {
                return; // full of live denials: skip caching rather than grow
            }
        }
        // a later answer never shortens a denial or a hold already known
        let end = now.saturating_add(wait);
        until
            .entry(key)
            .and_modify(|t| *t = (*t).max(end))
            .or_insert(end);
    }
}

impl<K> RedisRateLimiter<K> {
    /// Starts a limiter for the Redis at `url` (`redis://host:port/db`) metering every key
    /// with `algorithm`.
    #[allow(clippy::needless_pass_by_value)] // takes the algorithm as `RateLimiter::builder` does
    pub fn builder<A: RedisAlgorithm>(url: &str, algorithm: A) -> RedisRateLimiterBuilder<K> {
        let (capacity, window) = algorithm.policy();
        RedisRateLimiterBuilder {
            nodes: vec![url.to_owned()],
            cluster: false,
            capacity,
            window,
            prefix: "limitpal".to_owned(),
            on_error: FailurePolicy::Allow,
            timeout: Duration::from_millis(250),
            deny_cache: false,
            lease: None,
            key: PhantomData,
        }
    }

    /// Starts a limiter for the Redis Cluster reachable through any of `nodes`
    /// (`redis://host:port`). Each key's state lives in the slot of its hash tag.
    pub fn cluster_builder<A: RedisAlgorithm>(
        nodes: &[&str],
        algorithm: A,
    ) -> RedisRateLimiterBuilder<K> {
        let mut builder = Self::builder(nodes.first().copied().unwrap_or(""), algorithm);
        builder.nodes = nodes.iter().map(|n| (*n).to_owned()).collect();
        builder.cluster = true;
        builder
    }

    /// What the leases did so far (`None` without [`lease`](RedisRateLimiterBuilder::lease)).
    #[must_use]
    pub fn lease_stats(&self) -> Option<LeaseStats> {
        self.inner.leases.as_ref().map(Leases::stats)
    }

    /// Redis errors and timeouts seen so far (each one answered by the failure policy).
    #[must_use]
    pub fn errors(&self) -> u64 {
        self.inner.errors.load(Ordering::Relaxed)
    }

    /// Pushback: admits nothing for `key` during `d` from Redis's now, in every process
    /// sharing the key; then the key goes on at its rate. A hold never shortens one already
    /// in place. Resolves once Redis has applied it (one round trip). The pipeline's pushback
    /// calls the non-blocking [`AsyncLimiter::hold`], which sends the same command.
    ///
    /// # Errors
    /// The Redis error, or a timeout; the hold is then not applied in Redis.
    pub async fn hold_in_redis(&self, key: &K, d: Duration) -> redis::RedisResult<()>
    where
        K: Display,
    {
        if d.is_zero() {
            return Ok(());
        }
        Arc::clone(&self.inner).hold(self.redis_key(key), d).await
    }

    /// The Redis key that holds `key`'s state.
    pub fn redis_key(&self, key: &K) -> String
    where
        K: Display,
    {
        format!("{}:{{{key}}}", self.inner.prefix)
    }
}

impl Inner {
    async fn decide(self: Arc<Self>, key: String) -> Result<(), RateLimited> {
        self.run(key, Duration::ZERO).await.map(drop)
    }

    /// Takes the key's next slot within `max_wait` in one round trip: the slot's delay.
    async fn run(
        self: Arc<Self>,
        key: String,
        max_wait: Duration,
    ) -> Result<Duration, RateLimited> {
        if let Some(cache) = &self.deny_cache
            && let Some(wait) = cache.denied(&key)
            && wait > max_wait
        {
            return Err(RateLimited::new(wait));
        }
        let mut invocation = self.script.key(&key);
        invocation
            .arg(self.interval_us)
            .arg(self.burst_us)
            .arg(1_u32);
        if !max_wait.is_zero() {
            invocation.arg(u64::try_from(max_wait.as_micros()).unwrap_or(u64::MAX));
        }
        match self.invoke(&invocation).await {
            Ok(Ok((admitted, wait_us))) => {
                self.recovered();
                let wait = Duration::from_micros(u64::try_from(wait_us).unwrap_or(0));
                if admitted == 1 {
                    return Ok(wait);
                }
                if let Some(cache) = &self.deny_cache {
                    cache.remember(key, wait);
                }
                Err(RateLimited::new(wait))
            }
            Ok(Err(error)) => self.failed(&key, &error).map(|()| Duration::ZERO),
            Err(_elapsed) => self.failed(&key, &"timed out").map(|()| Duration::ZERO),
        }
    }

    /// Runs the script once, bounded by the timeout.
    async fn invoke(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<redis::RedisResult<(i64, i64)>, tokio::time::error::Elapsed> {
        invoke_on(self.conn.clone(), self.timeout, invocation).await
    }

    /// Leases up to `batch` of `key`'s slots in one round trip: `Ok(granted)` (at least 1),
    /// `Err(Ok(wait))` when none is free, `Err(Err(()))` when Redis did not answer (the
    /// failure counted and logged).
    /// `give`: lapsed slots of the key given back in the same trip, before the grant.
    async fn lease_trip(
        &self,
        key: &str,
        batch: u32,
        give: u32,
    ) -> Result<u32, Result<Duration, ()>> {
        let mut invocation = self.script.key(key);
        invocation
            .arg(self.interval_us)
            .arg(self.burst_us)
            .arg(1_u32)
            .arg(0_u64)
            .arg("")
            .arg(batch)
            .arg(give);
        let answer = self.lease_answer(&invocation).await;
        if let Some(leases) = &self.leases
            && give > 0
        {
            match answer {
                // Redis answered: the script gave them back first
                Ok(_) | Err(Ok(_)) => leases.returned(give),
                // perhaps run, perhaps not: never counted as back (no over-admission)
                Err(Err(())) => leases.stranded(give),
            }
        }
        answer
    }

    async fn lease_answer(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<u32, Result<Duration, ()>> {
        let answer = match self.invoke(invocation).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => {
                self.note_failure(&error);
                return Err(Err(()));
            }
            Err(_elapsed) => {
                self.note_failure(&"timed out");
                return Err(Err(()));
            }
        };
        self.recovered();
        match answer {
            (granted, _) if granted > 0 => Ok(u32::try_from(granted).unwrap_or(u32::MAX)),
            (_, wait_us) => Err(Ok(Duration::from_micros(
                u64::try_from(wait_us).unwrap_or(0),
            ))),
        }
    }

    /// A decision with leases: a slot of the key's lease, else one round trip (one caller
    /// at a time per key: the others wait for it and spend what it brought).
    async fn decide_leased(self: Arc<Self>, key: String) -> Result<(), RateLimited> {
        let Some(leases) = &self.leases else {
            return self.decide(key).await;
        };
        let (lease, lapsed) = leases.lease(&key);
        for (key, n) in lapsed {
            self.spawn_give_back(key, n);
        }
        if let Some(answer) = self.spend(&key, &lease) {
            return answer;
        }
        let seen = leases.trips(&lease);
        let _trip = lease.trip.lock().await;
        if let Some(answer) = self.spend(&key, &lease) {
            return answer;
        }
        if leases.failed_since(&lease, seen) {
            // the trip this caller waited for found Redis unavailable: its answer is the
            // policy's, now, not another timeout in turn
            return self.apply_policy(&key);
        }
        let batch = leases.batch(&lease);
        let _ = leases.start_refill(&lease);
        match self
            .lease_trip(&key, batch, leases.take_lapsed(&lease))
            .await
        {
            Ok(granted) => {
                leases.granted(&lease, batch, granted, 1);
                Ok(())
            }
            Err(Ok(wait)) => {
                leases.denied(&lease, wait);
                if let Some(cache) = &self.deny_cache {
                    cache.remember(key, wait);
                }
                Err(RateLimited::new(wait))
            }
            Err(Err(())) => {
                leases.failed(&lease);
                self.apply_policy(&key)
            }
        }
    }

    /// Spends from the key's lease: `Some(answer)` when the lease answered (a slot, or Redis's
    /// last refusal still running), `None` when a round trip is needed. A low batch starts
    /// its refill; lapsed slots are given back.
    fn spend(self: &Arc<Self>, key: &str, lease: &Arc<Lease>) -> Option<Result<(), RateLimited>> {
        let leases = self.leases.as_ref()?;
        match leases.spend(lease) {
            Spend::Spent { low } => {
                if low && leases.start_refill(lease) {
                    self.spawn_refill(key.to_owned(), Arc::clone(lease));
                }
                Some(Ok(()))
            }
            Spend::Denied(wait) => Some(Err(RateLimited::new(wait))),
            Spend::Empty { lapsed } => {
                if lapsed > 0 {
                    self.spawn_lapsed_give_back(key.to_owned(), Arc::clone(lease));
                }
                None
            }
        }
    }

    /// Refills the key's lease ahead of exhaustion, on a task of the current runtime (none:
    /// the next caller that finds it empty makes the round trip).
    fn spawn_refill(self: &Arc<Self>, key: String, lease: Arc<Lease>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            if let Some(leases) = &self.leases {
                leases.failed(&lease);
            }
            return;
        };
        let inner = Arc::clone(self);
        runtime.spawn(async move {
            let Some(leases) = &inner.leases else { return };
            let batch = leases.batch(&lease);
            match inner
                .lease_trip(&key, batch, leases.take_lapsed(&lease))
                .await
            {
                Ok(granted) => leases.granted(&lease, batch, granted, 0),
                Err(Ok(wait)) => leases.denied(&lease, wait),
                Err(Err(())) => leases.failed(&lease),
            }
        });
    }

    /// Gives a lease's lapsed slots back, on a task of the current runtime that first lets
    /// the caller go on: the trip an empty lease usually leads to takes them along (one
    /// round trip for both), and then this finds none left to give.
    fn spawn_lapsed_give_back(self: &Arc<Self>, key: String, lease: Arc<Lease>) {
        let Some(leases) = &self.leases else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            leases.stranded(leases.take_lapsed(&lease));
            return;
        };
        let inner = Arc::clone(self);
        runtime.spawn(async move {
            tokio::task::yield_now().await;
            let Some(leases) = &inner.leases else { return };
            let n = leases.take_lapsed(&lease);
            if n > 0 {
                inner.give_back_counted(key, n).await;
            }
        });
    }

    /// Gives `n` unspent slots of `key` back to Redis, on a task of the current runtime.
    fn spawn_give_back(self: &Arc<Self>, key: String, n: u32) {
        let Some(leases) = &self.leases else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            leases.stranded(n);
            return;
        };
        runtime.spawn(Arc::clone(self).give_back_counted(key, n));
    }

    /// Gives `n` unspent slots of `key` back to Redis now, counted as returned or stranded.
    async fn give_back_counted(self: Arc<Self>, key: String, n: u32) {
        let given = give_back(
            self.conn.clone(),
            &self.script,
            self.timeout,
            [self.interval_us, self.burst_us],
            &key,
            n,
        )
        .await;
        if let Some(leases) = &self.leases {
            if given {
                leases.returned(n);
            } else {
                leases.stranded(n);
            }
        }
    }

    /// Holds `key` in Redis for `d` (the same script, hold mode), for every process. The
    /// deny cache learns of the hold when this is called, not when the future is first
    /// polled: a hold spawned onto a task is answered locally by the very next check, with
    /// no race with the write.
    fn hold(
        self: Arc<Self>,
        key: String,
        d: Duration,
    ) -> impl Future<Output = redis::RedisResult<()>> + Send + 'static {
        if let Some(cache) = &self.deny_cache {
            cache.remember(key.clone(), d);
        }
        self.hold_in_script(key, d)
    }

    async fn hold_in_script(self: Arc<Self>, key: String, d: Duration) -> redis::RedisResult<()> {
        let mut invocation = self.script.key(&key);
        invocation
            .arg(self.interval_us)
            .arg(self.burst_us)
            .arg(1_u32)
            .arg(0_u64)
            .arg(
                u64::try_from(d.as_micros())
                    .unwrap_or(u64::MAX)
                    .min(MAX_HOLD_US),
            );
        match self.invoke(&invocation).await {
            Ok(Ok(_)) => {
                self.recovered();
                Ok(())
            }
            Ok(Err(error)) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                Err(error)
            }
            Err(_elapsed) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                Err(redis::RedisError::from((redis::ErrorKind::Io, "timed out")))
            }
        }
    }

    fn failed(&self, key: &str, error: &dyn Display) -> Result<(), RateLimited> {
        self.note_failure(error);
        self.apply_policy(key)
    }

    /// Counts a failure and logs the outage once.
    fn note_failure(&self, error: &dyn Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if !self.down.swap(true, Ordering::AcqRel) {
            #[cfg(feature = "tracing")]
            tracing::warn!(
                target: "limitpal::redis",
                error = %error,
                policy = ?self.on_error,
                "redis unavailable: applying the failure policy until it recovers"
            );
        }
        let _ = error;
    }

    /// The failure policy's answer for `key`.
    fn apply_policy(&self, key: &str) -> Result<(), RateLimited> {
        match &self.on_error {
            FailurePolicy::Allow => Ok(()),
            FailurePolicy::Deny(wait) => Err(RateLimited::new(*wait)),
            FailurePolicy::Fallback(local) => local(key),
        }
    }

    fn recovered(&self) {
        if self.down.swap(false, Ordering::AcqRel) {
            #[cfg(feature = "tracing")]
            tracing::info!(target: "limitpal::redis", "redis is back: deciding with redis again");
        }
    }
}

/// Runs `invocation` once on `conn`, bounded by `timeout`.
async fn invoke_on(
    conn: Conn,
    timeout: Duration,
    invocation: &redis::ScriptInvocation<'_>,
) -> Result<redis::RedisResult<(i64, i64)>, tokio::time::error::Elapsed> {
    match conn {
        Conn::Single(mut conn) => {
            tokio::time::timeout(timeout, invocation.invoke_async(&mut conn)).await
        }
        Conn::Cluster(mut conn) => {
            tokio::time::timeout(timeout, invocation.invoke_async(&mut conn)).await
        }
    }
}

/// Gives `n` unspent leased slots of `key` back (the script's give-back mode): whether Redis
/// took them.
async fn give_back(
    conn: Conn,
    script: &redis::Script,
    timeout: Duration,
    [interval_us, burst_us]: [u64; 2],
    key: &str,
    n: u32,
) -> bool {
    let mut invocation = script.key(key);
    invocation
        .arg(interval_us)
        .arg(burst_us)
        .arg(1_u32)
        .arg(0_u64)
        .arg("")
        .arg("")
        .arg(n);
    matches!(invoke_on(conn, timeout, &invocation).await, Ok(Ok(_)))
}

impl Drop for Inner {
    /// Gives every lease's unspent slots back, on tasks of the current runtime (none, or a
    /// runtime shutting down: they are stranded until the keys' state catches up).
    fn drop(&mut self) {
        let Some(leases) = &self.leases else { return };
        let left = leases.drain();
        if left.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let conn = self.conn.clone();
        let script = self.script.clone();
        let (timeout, costs) = (self.timeout, [self.interval_us, self.burst_us]);
        runtime.spawn(async move {
            for (key, n) in left {
                let _ = give_back(conn.clone(), &script, timeout, costs, &key, n).await;
            }
        });
    }
}

impl<K> AsyncLimiter<K> for RedisRateLimiter<K>
where
    K: Display + Hash + Eq,
{
    type Future = Pin<Box<dyn Future<Output = Result<(), RateLimited>> + Send>>;

    fn check(&self, key: &K) -> Self::Future {
        if self.inner.leases.is_some() {
            return Box::pin(Arc::clone(&self.inner).decide_leased(self.redis_key(key)));
        }
        Box::pin(Arc::clone(&self.inner).decide(self.redis_key(key)))
    }

    /// With [`lease`](RedisRateLimiterBuilder::lease): a slot of the key's lease, decided
    /// here with no round trip (and no future); `None` when the key needs one.
    fn check_now(&self, key: &K) -> Option<Result<(), RateLimited>> {
        use std::fmt::Write as _;
        thread_local! {
            // the rendered key, reused: a local decision allocates nothing
            static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        let leases = self.inner.leases.as_ref()?;
        KEY.with_borrow_mut(|rendered| {
            rendered.clear();
            let _ = write!(rendered, "{}:{{{key}}}", self.inner.prefix);
            leases
                .with(rendered, |lease| self.inner.spend(rendered, lease))
                .flatten()
        })
    }

    /// Reserves in the same one-round-trip script (Redis time), then the wait is local. A
    /// Redis reservation is not given back when dropped early: the slot stays used (never
    /// over-admission).
    fn reserve(&self, key: &K, max_wait: Duration) -> Reserve {
        let run = Arc::clone(&self.inner).run(self.redis_key(key), max_wait);
        Reserve::Later(Box::pin(
            async move { run.await.map(Reservation::unreturnable) },
        ))
    }

    /// Pushback for every process: the hold is sent to Redis (one round trip, on a task of
    /// the current tokio runtime; outside a runtime it is dropped). With
    /// [`deny_cache`](RedisRateLimiterBuilder::deny_cache) on, this process also answers the
    /// key locally until the hold ends. To wait for Redis to confirm, use
    /// [`hold_in_redis`](RedisRateLimiter::hold_in_redis).
    fn hold(&self, key: &K, d: Duration) {
        if d.is_zero() {
            return;
        }
        // the deny cache knows the hold from here on, with or without a runtime
        if let Some(leases) = &self.inner.leases {
            for (key, n) in leases.hold(&self.redis_key(key), d) {
                self.inner.spawn_give_back(key, n);
            }
        }
        let hold = Arc::clone(&self.inner).hold(self.redis_key(key), d);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = hold.await;
            });
        }
    }
}

impl<K> fmt::Debug for RedisRateLimiter<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("prefix", &self.inner.prefix)
            .field("interval_us", &self.inner.interval_us)
            .field("burst_us", &self.inner.burst_us)
            .field("on_error", &self.inner.on_error)
            .field("timeout", &self.inner.timeout)
            .field("down", &self.inner.down.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Configures a [`RedisRateLimiter`]; made by [`RedisRateLimiter::builder`].
pub struct RedisRateLimiterBuilder<K> {
    nodes: Vec<String>,
    cluster: bool,
    capacity: u32,
    window: Duration,
    prefix: String,
    on_error: FailurePolicy,
    timeout: Duration,
    deny_cache: bool,
    lease: Option<(u32, Duration)>,
    key: PhantomData<fn(&K)>,
}

impl<K> RedisRateLimiterBuilder<K> {
    /// Leased mode: take a batch of a key's quota from Redis in one round trip (up to
    /// `max_batch` slots, as many as the key really has) and spend it here, with no round
    /// trip, within `max_hold` of its grant. See [Leased quota](crate#leased-quota) for the
    /// bounds it keeps.
    #[must_use]
    pub fn lease(mut self, max_batch: u32, max_hold: Duration) -> Self {
        self.lease = Some((max_batch, max_hold));
        self
    }

    /// The Redis key prefix (default `limitpal`): keys are `prefix:{key}`.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// What to do when Redis cannot answer (default [`FailurePolicy::Allow`]).
    #[must_use]
    pub fn on_error(mut self, policy: FailurePolicy) -> Self {
        self.on_error = policy;
        self
    }

    /// The connect and command timeout (default 250 ms): past it the failure policy answers.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Answer keys known to be denied locally until their `retry_after` passes, with no round
    /// trip (default off). Clients hammering a denied key then cost Redis nothing.
    #[must_use]
    pub fn deny_cache(mut self, enabled: bool) -> Self {
        self.deny_cache = enabled;
        self
    }

    /// Connects and builds the limiter.
    ///
    /// # Errors
    /// [`ConnectError::Config`] for a zero timeout or a rate above 10⁶ per second (Redis time
    /// is in microseconds); [`ConnectError::Redis`] when Redis cannot be reached.
    pub async fn connect(self) -> Result<RedisRateLimiter<K>, ConnectError> {
        if self.timeout.is_zero() {
            return Err(ConfigError::Zero { field: "timeout" }.into());
        }
        if let Some((max_batch, max_hold)) = self.lease {
            if max_batch == 0 {
                return Err(ConfigError::Zero { field: "max_batch" }.into());
            }
            if max_hold.is_zero() {
                return Err(ConfigError::Zero { field: "max_hold" }.into());
            }
        }
        let burst_us = u64::try_from(self.window.as_micros()).unwrap_or(u64::MAX);
        let interval_us = burst_us / u64::from(self.capacity.max(1));
        if interval_us == 0 {
            return Err(ConfigError::OutOfRange {
                field: "refill_per_sec",
                value: format!("{:?} per token", self.window / self.capacity.max(1)),
                expected: "at most 1e6 per second with Redis (microsecond time)",
            }
            .into());
        }
        let timed_out = || {
            ConnectError::Redis(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connect timed out",
            )))
        };
        let conn = if self.cluster {
            let client = ClusterClient::builder(self.nodes.iter().map(String::as_str))
                .connection_timeout(self.timeout)
                .response_timeout(self.timeout)
                .retries(1)
                .build()
                .map_err(ConnectError::Redis)?;
            let conn = tokio::time::timeout(
                self.timeout.saturating_mul(4),
                client.get_async_connection(),
            )
            .await
            .map_err(|_| timed_out())?
            .map_err(ConnectError::Redis)?;
            Conn::Cluster(conn)
        } else {
            let url = self.nodes.first().map_or("", String::as_str);
            let client = redis::Client::open(url).map_err(ConnectError::Redis)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.timeout))
                .set_response_timeout(Some(self.timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(200));
            let conn = tokio::time::timeout(
                self.timeout.saturating_mul(4),
                ConnectionManager::new_with_config(client, config),
            )
            .await
            .map_err(|_| timed_out())?
            .map_err(ConnectError::Redis)?;
            Conn::Single(conn)
        };
        let leases = self.lease.map(|(max_batch, max_hold)| {
            let quota = (Duration::from_micros(interval_us), self.capacity);
            Leases::new(max_batch, max_hold, quota, &self.prefix)
        });
        Ok(RedisRateLimiter {
            inner: Arc::new(Inner {
                conn,
                script: redis::Script::new(SCRIPT),
                prefix: self.prefix,
                interval_us,
                burst_us: interval_us * u64::from(self.capacity),
                on_error: self.on_error,
                timeout: self.timeout,
                down: AtomicBool::new(false),
                errors: AtomicU64::new(0),
                deny_cache: self.deny_cache.then(|| DenyCache {
                    clock: MonotonicClock,
                    until: Mutex::new(HashMap::new()),
                }),
                leases,
            }),
            key: PhantomData,
        })
    }
}

impl<K> fmt::Debug for RedisRateLimiterBuilder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimiterBuilder")
            .field("nodes", &self.nodes)
            .field("cluster", &self.cluster)
            .field("capacity", &self.capacity)
            .field("window", &self.window)
            .field("prefix", &self.prefix)
            .field("on_error", &self.on_error)
            .field("timeout", &self.timeout)
            .field("deny_cache", &self.deny_cache)
            .field("lease", &self.lease)
            .finish()
    }
}
