//! The limiter interface that layers and executors use, local or remote alike.

use std::fmt;
use std::future::{Ready, ready};
use std::hash::{BuildHasher, Hash};
use std::pin::Pin;
use std::time::Duration;

use crate::rate::{Algorithm, Reservation};
use crate::{Clock, RateLimited, RateLimiter};

/// A reservation a remote limiter answers through a future.
pub type ReserveFuture = Pin<Box<dyn Future<Output = Result<Reservation, RateLimited>> + Send>>;

/// What [`AsyncLimiter::reserve`] answers: at once (a local limiter) or through a future.
pub enum Reserve {
    /// The answer, now.
    Now(Result<Reservation, RateLimited>),
    /// The answer, later (a remote limiter's round trip).
    Later(ReserveFuture),
}

impl fmt::Debug for Reserve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Now(answer) => f.debug_tuple("Now").field(answer).finish(),
            Self::Later(_) => f.write_str("Later(..)"),
        }
    }
}

/// A limiter that answers through a future: the local [`RateLimiter`] (an already-ready
/// future, no boxing) or a remote one such as the Redis limiter. Runtime-agnostic.
///
/// ```
/// use limitpal_core::{AsyncLimiter, ManualClock, RateLimiter, TokenBucket};
///
/// let limiter = RateLimiter::builder(TokenBucket::new(1, 1.0)?).clock(ManualClock::new()).build()?;
/// let first = futures_lite_block_on(AsyncLimiter::check(&limiter, &"k".to_string()));
/// assert!(first.is_ok());
/// # fn futures_lite_block_on<F: std::future::IntoFuture>(f: F) -> F::Output where F::IntoFuture: Unpin {
/// #     use std::task::{Context, Poll, Waker};
/// #     let mut f = f.into_future();
/// #     match std::pin::Pin::new(&mut f).poll(&mut Context::from_waker(Waker::noop())) {
/// #         Poll::Ready(v) => v,
/// #         Poll::Pending => unreachable!("a local limiter is always ready"),
/// #     }
/// # }
/// # use std::future::Future;
/// # Ok::<(), limitpal_core::ConfigError>(())
/// ```
pub trait AsyncLimiter<K> {
    /// The answer's future.
    type Future: Future<Output = Result<(), RateLimited>> + Send + 'static;

    /// Admits one request for `key`, or says how long until it would be admitted.
    fn check(&self, key: &K) -> Self::Future;

    /// The answer right now, when the limiter can give it without waiting (a local limiter
    /// always can; a remote one returns `None`). Lets a layer decide inside `call` with no
    /// future to poll.
    fn check_now(&self, key: &K) -> Option<Result<(), RateLimited>> {
        let _ = key;
        None
    }

    /// Takes `key`'s next slot if it is at most `max_wait` ahead (see
    /// [`RateLimiter::reserve`]); waiting for it is the caller's part. The default, for a
    /// limiter that cannot reserve, answers as [`check`](Self::check) does: admitted now or
    /// refused, never a slot ahead.
    fn reserve(&self, key: &K, max_wait: Duration) -> Reserve {
        let _ = max_wait;
        if let Some(answer) = self.check_now(key) {
            return Reserve::Now(answer.map(|()| Reservation::now()));
        }
        let check = self.check(key);
        Reserve::Later(Box::pin(
            async move { check.await.map(|()| Reservation::now()) },
        ))
    }

    /// Pushback: admits nothing for `key` during `d` (see [`RateLimiter::hold`]). The default
    /// does nothing.
    fn hold(&self, key: &K, d: Duration) {
        let _ = (key, d);
    }
}

impl<K, A, C, S> AsyncLimiter<K> for RateLimiter<K, A, C, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    A: Algorithm,
    C: Clock,
    S: BuildHasher + Send + Sync + 'static,
{
    type Future = Ready<Result<(), RateLimited>>;

    #[inline]
    fn check(&self, key: &K) -> Self::Future {
        ready(RateLimiter::check(self, key))
    }

    #[inline]
    fn check_now(&self, key: &K) -> Option<Result<(), RateLimited>> {
        Some(RateLimiter::check(self, key))
    }

    #[inline]
    fn reserve(&self, key: &K, max_wait: Duration) -> Reserve {
        Reserve::Now(RateLimiter::reserve(self, key, max_wait))
    }

    fn hold(&self, key: &K, d: Duration) {
        RateLimiter::hold(self, key, d);
    }
}
