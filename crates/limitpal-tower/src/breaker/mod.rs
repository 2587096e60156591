//! [`CircuitBreakerLayer`]: a [`CircuitBreaker`](limitpal_core::CircuitBreaker) around a
//! tower service.
//!
//! `poll_ready` only forwards to the inner service. Admission happens in `call`: an open
//! breaker answers at once with a ready error future, downcastable to
//! [`CircuitOpen`](limitpal_core::CircuitOpen), without calling the inner service. The
//! response future records the classified outcome when the call completes; a future dropped
//! before that records nothing and frees its half-open probe slot. Errors from inner layers
//! that are limitpal's own (`RateLimited`, `CircuitOpen`) are never recorded as failures.
//! Every clone of the layer and of the service shares one breaker.
//!
//! ```
//! use limitpal_core::{CircuitBreaker, CircuitOpen, CircuitState};
//! use limitpal_tower::{CircuitBreakerLayer, TokioClock};
//! use std::time::Duration;
//! use tower::{BoxError, Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), BoxError> {
//! let breaker = CircuitBreaker::builder()
//!     .failure_threshold(1)
//!     .recovery_timeout(Duration::from_secs(10))
//!     .clock(TokioClock::new())
//!     .build()?;
//! let failing = service_fn(|_: ()| async { Err::<(), _>(std::io::Error::other("down")) });
//! let svc = CircuitBreakerLayer::new(breaker.clone()).layer(failing);
//!
//! assert!(svc.clone().oneshot(()).await.is_err()); // the failure opens it
//! let rejected = svc.oneshot(()).await.unwrap_err();
//! assert!(rejected.is::<CircuitOpen>());
//! assert_eq!(breaker.state(), CircuitState::Open);
//! # Ok(()) }
//! ```

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::CircuitBreakerLayer;
pub use service::CircuitBreakerService;
