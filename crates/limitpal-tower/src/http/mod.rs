//! HTTP (feature `http`): key extractors and a rate limit that answers
//! `429 Too Many Requests` itself.
//!
//! [`HttpRateLimitLayer`] turns a denial into a response instead of an error:
//!
//! ```text
//! HTTP/1.1 429 Too Many Requests
//! retry-after: 1                        whole seconds, rounded up, never 0
//! ratelimit-policy: "default";q=2;w=1   policy name; quota; window in seconds (precomputed)
//! ratelimit: "default";r=0;t=1          the key's remaining quota; t = Retry-After
//! ```
//!
//! The `RateLimit-Policy` and `RateLimit` fields follow the current IETF draft
//! (draft-ietf-httpapi-ratelimit-headers-08 to -11: Structured Fields, RFC 9651, written with
//! `sfv`); name the policy with [`policy_name`](HttpRateLimitLayer::policy_name), or write the
//! expired draft-07 form with [`fields`](HttpRateLimitLayer::fields). With
//! [`headers_on_success`](HttpRateLimitLayer::headers_on_success) allowed responses carry
//! them too, `t` then being the time until the key's quota is whole. When two layers apply
//! (per IP, then per API key) both policies are listed and `RateLimit` reports the one with
//! less left, as the draft asks. The plain 200 path allocates nothing; the 429 path builds
//! the response from the precomputed policy and small integers, reading the clock once.
//!
//! Clients read the fields back with [`pushback`]: the wait a response asks for
//! (`Retry-After`, else a `RateLimit` item with `r=0`), which [`HttpClassifier`] hands to the
//! pipeline so that `respect_pushback` holds the key before the server has to refuse.
//!
//! Clients: [`HttpClassifier`] (5xx/408 retried, 429 retried after `Retry-After` without
//! counting against the breaker), [`GrpcClassifier`], and [`replay_idempotent`] as the
//! `clone_request` of a retrying layer.
//!
//! Extractors: [`PeerIp`] (a `SocketAddr` extension or axum's `ConnectInfo`, IPv6 by /64),
//! [`HeaderKey`], [`ForwardedIp`] (trusted `X-Forwarded-For` / `Forwarded` position) and
//! [`GlobalKey`]. A request without a key follows the layer's [`MissingKey`] policy:
//! rejected with [`missing_key_status`](HttpRateLimitLayer::missing_key_status) (default 500),
//! allowed, or counted against a fallback key.
//!
//! ```
//! use http::{Request, Response, StatusCode};
//! use limitpal_core::{ManualClock, RateLimiter, TokenBucket};
//! use limitpal_tower::http::{HttpRateLimitLayer, PeerIp};
//! use std::net::SocketAddr;
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let limiter = RateLimiter::builder(TokenBucket::new(1, 1.0)?).clock(ManualClock::new()).build()?;
//! let app = HttpRateLimitLayer::new(limiter, PeerIp::new()).layer(service_fn(|_req| async {
//!     Ok::<_, std::convert::Infallible>(Response::new(String::from("hello")))
//! }));
//! let request = || {
//!     let mut req = Request::new(());
//!     req.extensions_mut().insert("192.0.2.1:5000".parse::<SocketAddr>().unwrap());
//!     req
//! };
//! assert_eq!(app.clone().oneshot(request()).await?.status(), StatusCode::OK);
//! let denied = app.oneshot(request()).await?;
//! assert_eq!(denied.status(), StatusCode::TOO_MANY_REQUESTS);
//! assert_eq!(denied.headers()["retry-after"], "1");
//! assert_eq!(denied.headers()["ratelimit"], r#""default";r=0;t=1"#);
//! # Ok(()) }
//! ```

mod classify;
mod extract;
mod future;
mod headers;
mod layer;
mod retry_after;
mod service;

pub use classify::{
    GrpcClassifier, HttpClassifier, idempotent, replay_always, replay_idempotent, status_verdict,
    status_verdict_with,
};
pub use extract::{Authority, ForwardedIp, GlobalKey, HeaderKey, PeerIp};
pub use future::ResponseFuture;
pub use headers::{RateLimitFields, pushback};
pub use layer::HttpRateLimitLayer;
pub use retry_after::retry_after;
pub use service::HttpRateLimitService;

pub use crate::MissingKey;
