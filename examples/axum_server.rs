//! An axum server with two rate limits on one route: per client IP, then per API key.
//!
//! ```text
//! cargo run --example axum_server --features http        # serves http://127.0.0.1:3000
//! ```
//!
//! Per IP: a burst of 5, then 1 per second. Per API key: a burst of 3, then 1 every 2 s.
//!
//! ```text
//! $ for i in 1 2 3; do curl -s -o /dev/null -w '%{http_code} ' -H 'x-api-key: team-a' http://127.0.0.1:3000/api; done
//! 200 200 200
//! $ curl -si -H 'x-api-key: team-a' http://127.0.0.1:3000/api        # the key's burst of 3 is spent
//! HTTP/1.1 429 Too Many Requests
//! retry-after: 2
//! ratelimit-policy: "per-key";q=3;w=6, "per-ip";q=5;w=5
//! ratelimit: "per-key";r=0;t=2
//! $ curl -si -H 'x-api-key: team-b' http://127.0.0.1:3000/api        # another key: its own quota
//! HTTP/1.1 200 OK
//! ratelimit-policy: "per-key";q=3;w=6, "per-ip";q=5;w=5
//! ratelimit: "per-ip";r=0;t=5                                         # the IP has less left
//! $ curl -si -H 'x-api-key: team-c' http://127.0.0.1:3000/api        # 6th request from this IP
//! HTTP/1.1 429 Too Many Requests
//! retry-after: 1
//! ratelimit-policy: "per-ip";q=5;w=5
//! ratelimit: "per-ip";r=0;t=1
//! $ sleep 1; curl -s -o /dev/null -w '%{http_code}\n' http://127.0.0.1:3000/api
//! 401                                                                 # no API key
//! ```
//!
//! The fields follow the current IETF draft (named policies, Structured Fields); both layers
//! list their policy, and `ratelimit` reports the one with less left.
//! Set `PORT` to serve on another port.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::routing::get;
use limitpal::tower::http::{HeaderKey, HttpRateLimitLayer, PeerIp};
use limitpal::{RateLimiter, TokenBucket};

/// The app, on its own so the integration tests serve exactly this router.
pub(crate) fn app() -> Result<Router, limitpal::ConfigError> {
    let per_ip = RateLimiter::builder(TokenBucket::new(5, 1.0)?).build()?;
    let per_key = RateLimiter::builder(TokenBucket::new(3, 0.5)?).build()?;
    Ok(Router::new()
        .route("/api", get(|| async { "hello\n" }))
        // inner: per API key, with RateLimit fields on every answer; no key = 401
        .layer(
            HttpRateLimitLayer::new(per_key, HeaderKey::new("x-api-key")?)
                .policy_name("per-key")?
                .missing_key_status(StatusCode::UNAUTHORIZED)
                .headers_on_success(true),
        )
        // outer (checked first): per client IP, from axum's connect info
        .layer(
            HttpRateLimitLayer::new(
                per_ip,
                PeerIp::from_extension(|info: &ConnectInfo<SocketAddr>| info.0),
            )
            .policy_name("per-ip")?
            .headers_on_success(true),
        ))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("serving http://{}/api", listener.local_addr()?);
    axum::serve(
        listener,
        app()?.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
