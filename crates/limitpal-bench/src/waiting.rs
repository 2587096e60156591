//! Waiting for quota, side by side: our `until_ready` (a reservation, then one sleep on
//! tokio's timer), governor's `until_ready` (check, sleep on `futures-timer`, check again)
//! and tower's `RateLimit` (`poll_ready` sleeps until its window ends), each at the same
//! configured rate, in real time or under paused tokio time.
//!
//! The cost of waiting is CPU time (every thread of the process, so governor's timer thread
//! counts too) per admitted request; the precision of shaping is the elapsed time of a run
//! against the schedule the rate promises.

use std::sync::Arc;
use std::time::Duration;

use limitpal::tower::{TokioClock, UntilReady};
use limitpal::{Clock, LeakyBucket, RateLimiter};
use tokio::runtime::Runtime;
use tower::{Service, ServiceExt, service_fn};

/// CPU time used so far by every live thread of this process (from
/// `/proc/self/task/*/schedstat`, nanosecond resolution); `None` where that is unavailable.
#[must_use]
pub fn cpu_time() -> Option<Duration> {
    let mut total = 0_u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

/// A current-thread runtime with time, real or paused.
#[must_use]
pub fn wait_runtime(paused: bool) -> Runtime {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_time();
    if paused {
        builder.start_paused(true);
    }
    builder.build().expect("a tokio runtime")
}

/// The three waiters, one request per `1 / per_sec` with no burst beyond one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiter {
    /// `RateLimiter<u64, LeakyBucket, TokioClock>` (capacity 1) and `until_ready`.
    Ours,
    /// governor's direct limiter (burst 1) and `until_ready`.
    Governor,
    /// tower's `RateLimit` with `Rate::new(1, 1 / per_sec)`; behind `Buffer` when
    /// concurrent.
    Tower,
}

impl Waiter {
    /// The three, in report order.
    pub const ALL: [Self; 3] = [Self::Ours, Self::Governor, Self::Tower];

    /// Its name in reports.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Ours => "limitpal until_ready",
            Self::Governor => "governor until_ready",
            Self::Tower => "tower RateLimit",
        }
    }
}

fn interval(per_sec: u32) -> Duration {
    Duration::from_secs(1) / per_sec.max(1)
}

/// On tokio's clock, so that paused time drives it as it drives the sleeps.
fn ours(per_sec: u32) -> RateLimiter<u64, LeakyBucket, TokioClock> {
    RateLimiter::builder(LeakyBucket::new(1, f64::from(per_sec)).expect("a valid rate"))
        .clock(TokioClock::new())
        .build()
        .expect("a valid limiter")
}

fn governor(per_sec: u32) -> governor::DefaultDirectRateLimiter {
    let per_sec = std::num::NonZeroU32::new(per_sec.max(1)).expect("non-zero");
    let burst = std::num::NonZeroU32::MIN;
    governor::RateLimiter::direct(governor::Quota::per_second(per_sec).allow_burst(burst))
}

fn tower_rate_limit(
    per_sec: u32,
) -> impl Service<
    u64,
    Response = u64,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<u64, std::convert::Infallible>> + Send,
> + Send
+ 'static {
    tower::ServiceBuilder::new()
        .rate_limit(1, interval(per_sec))
        .service(service_fn(|n: u64| async move { Ok(n) }))
}

/// What one run measured.
#[derive(Debug, Clone, Copy)]
pub struct WaitRun {
    /// Wall (or paused) time from the first wait to the last admission.
    pub elapsed: Duration,
    /// CPU time of the whole process during the run, if it could be read.
    pub cpu: Option<Duration>,
}

/// One task admits `n` requests one after another through `waiter` at `per_sec`, after
/// spending the burst of one: `n` intervals of `1 / per_sec` is the exact schedule.
pub fn sequential(rt: &Runtime, waiter: Waiter, per_sec: u32, n: u32) -> WaitRun {
    rt.block_on(async move {
        let max_wait = Duration::from_secs(3600);
        match waiter {
            Waiter::Ours => {
                let limiter = ours(per_sec);
                let _ = limiter.check(&0);
                measure(|| async {
                    for _ in 0..n {
                        limiter
                            .until_ready(&0, max_wait)
                            .await
                            .expect("within max_wait");
                    }
                })
                .await
            }
            Waiter::Governor => {
                let limiter = governor(per_sec);
                let _ = limiter.check();
                measure(|| async {
                    for _ in 0..n {
                        limiter.until_ready().await;
                    }
                })
                .await
            }
            Waiter::Tower => {
                let mut svc = tower_rate_limit(per_sec);
                let _ = svc.ready().await.expect("infallible").call(0).await;
                measure(|| async {
                    for i in 0..u64::from(n) {
                        let _ = svc.ready().await.expect("infallible").call(i).await;
                    }
                })
                .await
            }
        }
    })
}

/// `n` tasks spawned at once each wait for one admission through one shared `waiter` at
/// `per_sec` (tower's `RateLimit` is shared the way tower shares services: behind
/// `Buffer`): `n - 1` intervals from the first admission to the last is the exact schedule.
pub fn concurrent(rt: &Runtime, waiter: Waiter, per_sec: u32, n: u32) -> WaitRun {
    rt.block_on(async move {
        let max_wait = Duration::from_secs(3600);
        match waiter {
            Waiter::Ours => {
                let limiter = Arc::new(ours(per_sec));
                measure(|| async {
                    let tasks: Vec<_> = (0..n)
                        .map(|_| {
                            let limiter = Arc::clone(&limiter);
                            tokio::spawn(async move {
                                limiter
                                    .until_ready(&0, max_wait)
                                    .await
                                    .expect("within max_wait");
                            })
                        })
                        .collect();
                    for task in tasks {
                        task.await.expect("no panic");
                    }
                })
                .await
            }
            Waiter::Governor => {
                let limiter = Arc::new(governor(per_sec));
                measure(|| async {
                    let tasks: Vec<_> = (0..n)
                        .map(|_| {
                            let limiter = Arc::clone(&limiter);
                            tokio::spawn(async move { limiter.until_ready().await })
                        })
                        .collect();
                    for task in tasks {
                        task.await.expect("no panic");
                    }
                })
                .await
            }
            Waiter::Tower => {
                let svc = tower::buffer::Buffer::new(tower_rate_limit(per_sec), n as usize);
                measure(|| async {
                    let tasks: Vec<_> = (0..u64::from(n))
                        .map(|i| {
                            let svc = svc.clone();
                            tokio::spawn(async move { svc.oneshot(i).await.expect("served") })
                        })
                        .collect();
                    for task in tasks {
                        task.await.expect("no panic");
                    }
                })
                .await
            }
        }
    })
}

/// Times `run` on the runtime's clock (paused or real) and the process's CPU.
async fn measure<F: Future<Output = ()>>(run: impl FnOnce() -> F) -> WaitRun {
    let clock = TokioClock::new();
    let cpu_start = cpu_time();
    let start = clock.now();
    run().await;
    let elapsed = clock.now() - start;
    let cpu = cpu_time()
        .zip(cpu_start)
        .map(|(end, start)| end.saturating_sub(start));
    WaitRun { elapsed, cpu }
}
