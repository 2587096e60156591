//! [`BulkheadLayer`] and [`AdaptiveLimitLayer`]: at most N calls in flight through a service,
//! N fixed or adapting to the callee.
//!
//! - The slot is taken in `call`, never in `poll_ready` (unlike tower's `ConcurrencyLimit`):
//!   a service polled ready and then dropped or not called holds nothing, and `Buffer` or
//!   `Balance` in front never see a slot held by a request that is not running.
//! - Full, with a queue configured: the response future waits in FIFO order up to the
//!   bulkhead's `max_wait`, holding a ready clone of the inner service (so `S: Clone`, as
//!   for retries); without one, or past the wait: [`BulkheadFull`](limitpal_core::BulkheadFull),
//!   a `BoxError` to downcast.
//! - Dropping the response future (a client that went away) frees its slot or its place in
//!   the queue: nothing leaks.
//! - [`AdaptiveLimitLayer`]: each call's duration and classified outcome move the limit
//!   (default classifier: `Err` = the callee is struggling). Its clock times the calls:
//!   build the limit with `.clock(TokioClock::new())` under paused tokio time.
//! - In a full pipeline, use [`ResilienceLayer`](crate::ResilienceLayer)'s `.bulkhead(..)` or
//!   `.adaptive_limit(..)` instead: the slot is then taken after the breaker and the rate
//!   limit, and given back between retries.
//!
//! ```
//! use limitpal_core::{Bulkhead, BulkheadFull};
//! use limitpal_tower::BulkheadLayer;
//! use std::time::Duration;
//! use tower::{BoxError, Layer, Service, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), BoxError> {
//! let bulkhead = Bulkhead::builder(1).queue(1, Duration::from_millis(50)).build()?;
//! let slow = service_fn(|ms: u64| async move {
//!     tokio::time::sleep(Duration::from_millis(ms)).await;
//!     Ok::<_, BoxError>(ms)
//! });
//! let mut svc = BulkheadLayer::new(bulkhead).layer(slow);
//! let first = svc.ready().await?.call(100); // takes the slot
//! let second = svc.ready().await?.call(1); // waits, but not 100 ms
//! let (first, second) = tokio::join!(first, second);
//! assert_eq!(first?, 100);
//! assert!(second.unwrap_err().is::<BulkheadFull>());
//! # Ok(()) }
//! ```

pub(crate) mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::{AdaptiveLimitLayer, BulkheadLayer};
pub use service::BulkheadService;
