//! A hyper client behind the resilience pipeline, against a local server that fails on demand.
//!
//! ```text
//! cargo run --example hyper_client --features http
//! ```
//!
//! The server answers `503` with `Retry-After: 1` to its first two requests (a `FaultLayer`
//! in front of the router), then `200`. The client stack is built with tower's `ServiceBuilder`: rate limit → circuit breaker →
//! retries (the HTTP classifier retries 5xx/429 and honours `Retry-After`; only idempotent
//! requests are replayed). Expected output:
//!
//! ```text
//! GET  /data -> 200 OK after 3 server hits, 2.0 s          (waited Retry-After: 1 twice)
//! POST /data -> 503 Service Unavailable after 1 server hit, 0.2 s   (POST is not replayed)
//! ```
//!
//! The POST waits 0.2 s first: the GET's `Retry-After` held the host's quota until its
//! retry, so the next token comes one refill (1/5 s) later, and `limiter_wait` waits for
//! it instead of failing with `RateLimited`.

use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use http::Request;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use limitpal::fault::FaultPlan;
use limitpal::tower::fault::FaultLayer;
use limitpal::tower::http::{HttpClassifier, replay_idempotent};
use limitpal::tower::{ResilienceLayer, TokioClock};
use limitpal::{CircuitBreaker, Clock, Jitter, RateLimiter, RetryPolicy, TokenBucket};
use tower::{BoxError, ServiceBuilder, ServiceExt};

/// A server whose first `failures` answers are `status` with `Retry-After: retry_after`: a
/// `FaultLayer` answers for the router for those calls, and its plan counts every request.
pub(crate) async fn flaky_server(
    failures: u32,
    status: StatusCode,
    retry_after: &'static str,
) -> Result<(std::net::SocketAddr, FaultPlan), BoxError> {
    let faults = FaultLayer::builder()
        .respond(1.0, move || {
            (status, [("retry-after", retry_after)], "busy").into_response()
        })
        .only_calls(0, u64::from(failures))
        .build()?;
    let hits = faults.plan().clone();
    let handler = || async { (StatusCode::OK, "data").into_response() };
    let app = Router::new()
        .route("/data", get(handler).post(handler))
        .layer(
            ServiceBuilder::new()
                // injected answers never fail; the layer's error type says they could
                .layer(HandleErrorLayer::new(|_: BoxError| async {
                    StatusCode::INTERNAL_SERVER_ERROR
                }))
                .layer(faults),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((addr, hits))
}

#[tokio::main(flavor = "current_thread")]
pub(crate) async fn main() -> Result<(), BoxError> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let resilience = ResilienceLayer::builder()
        .rate_limit(
            RateLimiter::builder(TokenBucket::new(10, 5.0)?).build()?,
            |req: &Request<Full<Bytes>>| req.uri().host().unwrap_or("").to_owned(),
        )
        // wait for quota instead of failing: a `Retry-After` holds the host's quota, and the
        // next request waits for it to come back
        .limiter_wait(Duration::from_secs(5))
        .circuit_breaker(CircuitBreaker::builder().failure_threshold(5).build()?)
        .retry(
            RetryPolicy::builder()
                .max_attempts(4)
                .base_delay(Duration::from_millis(100))
                .max_delay(Duration::from_secs(5))
                .jitter(Jitter::Full)
                .build()?,
        )
        .classifier(HttpClassifier)
        .clone_request(replay_idempotent::<Full<Bytes>>)
        .attempt_timeout(Duration::from_secs(2))
        .deadline(Duration::from_secs(10))
        .build()?;
    let stack = ServiceBuilder::new().layer(resilience).service(client);
    let clock = TokioClock::new();

    for method in ["GET", "POST"] {
        let (addr, hits) = flaky_server(2, StatusCode::SERVICE_UNAVAILABLE, "1").await?;
        let request = Request::builder()
            .method(method)
            .uri(format!("http://{addr}/data"))
            .body(Full::new(Bytes::new()))?;
        let start = clock.now();
        let response = stack.clone().oneshot(request).await?;
        let n = hits.calls();
        println!(
            "{method:<4} /data -> {} after {n} server hit{}, {:.1} s",
            response.status(),
            if n == 1 { "" } else { "s" },
            (clock.now() - start).as_secs_f64()
        );
    }
    Ok(())
}
