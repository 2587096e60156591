//! Waiting for quota: a reservation, then a sleep on tokio's timer until its slot.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use limitpal_core::{AsyncLimiter, RateLimited, Reservation, Reserve, ReserveFuture};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

pin_project! {
    /// Reserves a slot, then sleeps until it: resolves to the reservation once its time has
    /// come (not yet committed, so the caller may still give it back), or to the refusal.
    /// Dropped while it sleeps, it gives the slot back where the algorithm can.
    pub(crate) struct WaitForQuota {
        reserving: Option<ReserveFuture>,
        answer: Option<Result<Reservation, RateLimited>>,
        // when the slot comes, on tokio's timer: fixed when the answer arrives, so a first
        // poll that comes late does not push the wake-up later
        due: Option<Instant>,
        #[pin]
        sleep: Option<Sleep>,
    }
}

impl WaitForQuota {
    pub(crate) fn new(reserve: Reserve) -> Self {
        let (reserving, answer) = match reserve {
            Reserve::Now(answer) => (None, Some(answer)),
            Reserve::Later(future) => (Some(future), None),
        };
        let due = answer.as_ref().and_then(due);
        Self {
            reserving,
            answer,
            due,
            sleep: None,
        }
    }

    /// The answer, when it needs no waiting: a refusal, or a slot free now.
    pub(crate) fn now(&mut self) -> Option<Result<Reservation, RateLimited>> {
        match &self.answer {
            Some(Ok(reservation)) if reservation.delay().is_zero() => self.answer.take(),
            Some(Err(_)) => self.answer.take(),
            _ => None,
        }
    }
}

impl Future for WaitForQuota {
    type Output = Result<Reservation, RateLimited>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(reserving) = this.reserving.as_mut() {
            let answer = ready!(reserving.as_mut().poll(cx));
            *this.reserving = None;
            *this.due = due(&answer);
            *this.answer = Some(answer);
        }
        if let Some(due) = this.due.take() {
            this.sleep.set(Some(tokio::time::sleep_until(due)));
        }
        if let Some(sleep) = this.sleep.as_pin_mut() {
            ready!(sleep.poll(cx));
        }
        Poll::Ready(
            this.answer
                .take()
                .unwrap_or_else(|| Err(RateLimited::new(Duration::ZERO))),
        )
    }
}

/// When a reservation's slot comes on tokio's timer (`None`: now, or refused).
fn due(answer: &Result<Reservation, RateLimited>) -> Option<Instant> {
    let delay = answer.as_ref().ok()?.delay();
    #[allow(clippy::disallowed_methods)] // the instant the reservation was answered
    let now = Instant::now();
    // past the timer's range (a wait of centuries), sleep as long as it can
    let far = Duration::from_secs(86_400 * 365 * 30);
    (!delay.is_zero()).then(|| {
        now.checked_add(delay)
            .or_else(|| now.checked_add(far))
            .unwrap_or(now)
    })
}

/// Waiting for quota in async code: implemented for every [`AsyncLimiter`], so for
/// [`RateLimiter`](limitpal_core::RateLimiter) and the Redis limiter alike.
///
/// `limiter.until_ready(&key, max_wait).await` reserves the key's next slot at once (so
/// callers are served in the order they called) and sleeps on tokio's timer until it: under
/// paused time (`#[tokio::test(start_paused = true)]`) the wait takes no real time. A slot
/// more than `max_wait` ahead is refused at once with the exact `retry_after`, never a wait
/// bound to fail. Dropping the future before its slot (a timeout, a cancelled request)
/// gives the slot back where the algorithm can (see
/// [`Reservation`](limitpal_core::Reservation)).
///
/// ```
/// use limitpal_core::{LeakyBucket, RateLimiter};
/// use limitpal_tower::{TokioClock, limit::UntilReady};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // jobs at exactly 10 per second, no bursts
/// let jobs = RateLimiter::builder(LeakyBucket::new(1, 10.0)?).clock(TokioClock::new()).build()?;
/// let start = tokio::time::Instant::now();
/// for _ in 0..10 {
///     jobs.until_ready(&"jobs", Duration::from_secs(60)).await?;
/// }
/// assert_eq!(start.elapsed(), Duration::from_millis(900));
/// # Ok(()) }
/// ```
pub trait UntilReady<K> {
    /// Waits until `key` may go, at most `max_wait`.
    fn until_ready(&self, key: &K, max_wait: Duration) -> UntilReadyFuture;
}

impl<K, L: AsyncLimiter<K> + ?Sized> UntilReady<K> for L {
    fn until_ready(&self, key: &K, max_wait: Duration) -> UntilReadyFuture {
        UntilReadyFuture {
            wait: WaitForQuota::new(self.reserve(key, max_wait)),
        }
    }
}

pin_project! {
    /// The future of [`UntilReady::until_ready`]: `Ok(())` when the slot's time has come,
    /// or the refusal.
    #[must_use = "futures do nothing unless polled; dropped, the slot is given back"]
    pub struct UntilReadyFuture {
        #[pin]
        wait: WaitForQuota,
    }
}

impl Future for UntilReadyFuture {
    type Output = Result<(), RateLimited>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let reservation = ready!(self.project().wait.poll(cx))?;
        reservation.commit();
        Poll::Ready(Ok(()))
    }
}

impl std::fmt::Debug for UntilReadyFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UntilReadyFuture")
            .field("answer", &self.wait.answer)
            .finish_non_exhaustive()
    }
}
