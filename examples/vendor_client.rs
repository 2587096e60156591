//! A client that stays under its vendor's quota: it waits for quota, retries failures, and
//! never receives a 429.
//!
//! ```text
//! cargo run --example vendor_client --features http
//! ```
//!
//! The "vendor" is a local axum server that allows 20 requests per second with a burst of 5
//! (answering `429` beyond that, after queueing a request for at most 50 ms) and fails one
//! request in five with `503`. The client fetches 200 items with 200 concurrent tasks through
//! one `ResilienceLayer` around a hyper client:
//!
//! - `rate_limit` with the vendor's own quota, keyed by host, and `limiter_wait(60 s)`: each
//!   request waits for its slot instead of failing, in arrival order, so the vendor sees a
//!   steady 20/s and no request is refused;
//! - `retry` with the HTTP classifier: a 503 is retried after a short backoff, and the retry
//!   waits for quota like any attempt (every attempt is charged);
//! - pushback (on by default): had the vendor answered `429` or `503` with `Retry-After`,
//!   every task calling that host would have held off until then.
//!
//! Expected output (the time is real, so it varies a little):
//!
//! ```text
//! 200 items fetched with 250 requests (50 answered 503 and retried), 0 answered 429
//! 12.30 s; the vendor's quota allows 250 requests in no less than 12.25 s (1.00x)
//! ```

use std::time::Duration;

use axum::http::StatusCode;
use http::Request;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use limitpal::tower::http::{HttpClassifier, replay_idempotent};
use limitpal::tower::{ResilienceLayer, TokioClock};
use limitpal::{Clock, RateLimiter, RetryPolicy, TokenBucket};
use tower::{BoxError, ServiceBuilder, ServiceExt};

#[path = "common/vendor.rs"]
mod vendor;
use vendor::{BURST, PER_SEC, Report, Vendor};

/// Fetches `items` items with one task each, through the pipeline, and reports.
pub(crate) async fn run(items: u32) -> Result<Report, BoxError> {
    // the vendor sends the `RateLimit` fields on its 429s only
    let vendor = Vendor::start(false).await?;
    let addr = vendor.addr;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let stack = ServiceBuilder::new()
        .layer(
            ResilienceLayer::builder()
                // the vendor's quota, per host; wait for a slot rather than fail
                .rate_limit(
                    RateLimiter::builder(TokenBucket::new(BURST, PER_SEC)?).build()?,
                    |req: &Request<Full<Bytes>>| req.uri().host().unwrap_or("").to_owned(),
                )
                .limiter_wait(Duration::from_secs(60))
                .retry(
                    RetryPolicy::builder()
                        .max_attempts(5)
                        .base_delay(Duration::from_millis(20))
                        .max_delay(Duration::from_secs(5))
                        .build()?,
                )
                .classifier(HttpClassifier)
                .clone_request(replay_idempotent::<Full<Bytes>>)
                .attempt_timeout(Duration::from_secs(5))
                .build()?,
        )
        .service(client);

    let clock = TokioClock::new();
    let start = clock.now();
    let mut tasks = Vec::new();
    for id in 0..items {
        let stack = stack.clone();
        tasks.push(tokio::spawn(async move {
            let request =
                Request::get(format!("http://{addr}/items/{id}")).body(Full::new(Bytes::new()))?;
            let response = stack.oneshot(request).await?;
            Ok::<_, BoxError>(response.status() == StatusCode::OK)
        }));
    }
    let mut fetched = 0;
    for task in tasks {
        if task.await?? {
            fetched += 1;
        }
    }
    Ok(vendor.report(fetched, clock.now() - start))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    run(200).await?.check(200)
}
