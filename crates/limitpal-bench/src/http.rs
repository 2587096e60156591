//! The same axum router behind limitpal's `HttpRateLimitLayer` and tower_governor's layer.

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::Request;
use limitpal::tower::http::{GlobalKey, HttpRateLimitLayer};
use limitpal::{RateLimiter, TokenBucket};
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::GlobalKeyExtractor;

use crate::limiters::BURST;

fn router() -> Router {
    Router::new().route("/", get(|| async { "ok" }))
}

/// A request for the router.
#[must_use]
pub fn request() -> Request<Body> {
    Request::get("/")
        .body(Body::empty())
        .expect("valid request")
}

/// Our router: `allow` = a quota that never runs out; otherwise one that is spent.
pub fn ours(allow: bool) -> Router {
    let limiter = if allow {
        RateLimiter::builder(TokenBucket::new(BURST, 1.0).expect("quota"))
    } else {
        RateLimiter::builder(TokenBucket::new(1, 1e-6).expect("quota"))
    }
    .build()
    .expect("limiter");
    if !allow {
        let _ = limiter.check(&());
    }
    router().layer(HttpRateLimitLayer::new(limiter, GlobalKey))
}

/// tower_governor's router with the same quotas.
pub fn governor(allow: bool) -> Router {
    let config = if allow {
        GovernorConfigBuilder::default()
            .per_second(1)
            .burst_size(BURST)
            .key_extractor(GlobalKeyExtractor)
            .finish()
    } else {
        GovernorConfigBuilder::default()
            .per_second(1_000_000)
            .burst_size(1)
            .key_extractor(GlobalKeyExtractor)
            .finish()
    }
    .expect("governor config");
    router().layer(GovernorLayer::new(config))
}
