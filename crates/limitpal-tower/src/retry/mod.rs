//! [`RetryLayer`]: retries with backoff, jitter and an optional budget, with no hand-written
//! tower `Policy`.
//!
//! - Works for any `Req: Clone`; for requests that are not (HTTP bodies), give
//!   [`clone_request`](RetryLayer::clone_request) a function returning `None` when a request
//!   cannot be replayed.
//! - The response future owns a ready clone of the inner service and polls it ready before
//!   each retry; it sleeps with tokio's timer, so paused test time drives it.
//! - The classifier decides what is retryable (default: every `Err`). limitpal's own
//!   `RateLimited` from an inner layer is retried no sooner than its `retry_after`; its own
//!   `CircuitOpen` is never retried. A final `Ok` the classifier calls a failure (a 503) is
//!   returned unchanged.
//! - Retries used up, or refused by the budget → [`RetryExhausted`] with the attempt count and
//!   the last error as `source()`.
//! - Every service instance draws its own random stream from the policy (one per request,
//!   no synchronisation per request), so clones never retry in lockstep.
//! - It is [`ResilienceLayer`](crate::ResilienceLayer) with retries only: one retry state
//!   machine serves both.
//!
//! ```
//! use limitpal_core::{Jitter, RetryPolicy};
//! use limitpal_tower::{RetryExhausted, RetryLayer};
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tower::{BoxError, Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), BoxError> {
//! let policy = RetryPolicy::builder()
//!     .max_attempts(3)
//!     .base_delay(Duration::from_secs(1))
//!     .jitter(Jitter::None)
//!     .build()?;
//! let calls = Arc::new(AtomicU32::new(0));
//! let counted = Arc::clone(&calls);
//! let flaky = service_fn(move |_: ()| {
//!     let n = counted.fetch_add(1, Ordering::SeqCst);
//!     async move { if n < 2 { Err::<u32, _>(std::io::Error::other("503")) } else { Ok(n) } }
//! });
//! let start = tokio::time::Instant::now();
//! assert_eq!(RetryLayer::new(policy).layer(flaky).oneshot(()).await?, 2);
//! assert_eq!(start.elapsed(), Duration::from_secs(3)); // 1 s + 2 s of backoff
//! # Ok(()) }
//! ```

mod layer;

pub use layer::{CloneRequest, NoReplay, ReplayRequest, RetryLayer};

use crate::resilience::{self, NoKey, ResilienceService};

/// A service behind a [`RetryLayer`]: the resilience pipeline with retries only.
pub type RetryService<S, Cl, R> = ResilienceService<S, NoKey, (), Cl, R>;

/// The response future of a [`RetryService`].
pub type ResponseFuture<S, Req, Cl, R> = resilience::ResponseFuture<S, Req, (), Cl, R>;

pub use crate::error::RetryExhausted;
