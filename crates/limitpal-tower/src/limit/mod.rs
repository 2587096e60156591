//! [`RateLimitLayer`]: a keyed rate limit in front of a tower service.
//!
//! The layer is generic over [`AsyncLimiter`](limitpal_core::AsyncLimiter): the local
//! [`RateLimiter`](limitpal_core::RateLimiter) is decided inside `call` (no extra future
//! state, no clone of the inner service), a remote limiter (Redis) through its future.
//! `poll_ready` only forwards to the inner service, and a denied request gets a ready error
//! future downcastable to [`RateLimited`](limitpal_core::RateLimited) without reaching the
//! inner service, so it never holds a slot in `Buffer` or `Balance`. Every clone of the
//! layer and its services shares the limiter's state, unlike tower's `RateLimit`.
//!
//! For HTTP servers that should answer `429 Too Many Requests` with `Retry-After` and
//! `RateLimit` fields instead of an error, see `limitpal_tower::http` (feature `http`).
//!
//! ```
//! use limitpal_core::{ManualClock, RateLimited, RateLimiter, TokenBucket};
//! use limitpal_tower::RateLimitLayer;
//! use std::time::Duration;
//! use tower::{BoxError, Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), BoxError> {
//! let limiter = RateLimiter::builder(TokenBucket::new(1, 1.0)?).clock(ManualClock::new()).build()?;
//! // requests are (user id, payload); the key is the user id
//! let svc = RateLimitLayer::new(limiter, |req: &(u64, &'static str)| req.0)
//!     .layer(service_fn(|req: (u64, &'static str)| async move { Ok::<_, BoxError>(req.1.len()) }));
//!
//! assert_eq!(svc.clone().oneshot((1, "hello")).await?, 5);
//! let denied = svc.clone().oneshot((1, "again")).await.unwrap_err();
//! assert_eq!(denied.downcast_ref::<RateLimited>().unwrap().retry_after, Duration::from_secs(1));
//! assert_eq!(svc.oneshot((2, "other user")).await?, 10);
//! # Ok(()) }
//! ```

mod future;
mod layer;
mod service;
mod wait;

pub use future::ResponseFuture;
pub use layer::RateLimitLayer;
pub use service::RateLimitService;
pub(crate) use wait::WaitForQuota;
pub use wait::{UntilReady, UntilReadyFuture};
