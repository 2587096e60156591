//! The limiter interface that layers and executors use, local or remote alike.

use std::future::{Ready, ready};
use std::hash::{BuildHasher, Hash};

use crate::rate::Algorithm;
use crate::{Clock, RateLimited, RateLimiter};

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
}

impl<K, A, C, S> AsyncLimiter<K> for RateLimiter<K, A, C, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    A: Algorithm,
    C: Clock,
    S: BuildHasher,
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
}
