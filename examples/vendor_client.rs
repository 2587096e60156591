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

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use limitpal::tower::http::{GlobalKey, HttpClassifier, HttpRateLimitLayer, replay_idempotent};
use limitpal::tower::{ResilienceLayer, TokioClock};
use limitpal::{Clock, RateLimiter, RetryPolicy, TokenBucket};
use tower::{BoxError, ServiceBuilder, ServiceExt};

/// The vendor's quota: a burst of 5, then 20 per second.
const BURST: u32 = 5;
const PER_SEC: f64 = 20.0;

/// What one run saw.
#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) fetched: u32,
    pub(crate) requests: u32,
    pub(crate) failed_503: u32,
    pub(crate) refused_429: u32,
    pub(crate) elapsed: Duration,
}

impl Report {
    /// The least time the vendor's quota allows for this many requests.
    pub(crate) fn minimum(&self) -> Duration {
        Duration::from_secs_f64(f64::from(self.requests.saturating_sub(BURST)) / PER_SEC)
    }
}

/// The vendor: its own limit (queueing at most 50 ms before a 429), and one answer in five a 503.
async fn vendor() -> Result<(SocketAddr, Arc<AtomicU32>), BoxError> {
    let hits = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&hits);
    let handler = move || {
        let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if n % 5 == 0 {
                (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response()
            } else {
                (StatusCode::OK, "item").into_response()
            }
        }
    };
    let quota = RateLimiter::builder(TokenBucket::new(BURST, PER_SEC)?).build()?;
    let app = Router::new()
        .route("/items/{id}", get(handler))
        .layer(HttpRateLimitLayer::new(quota, GlobalKey).wait(Duration::from_millis(50)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((addr, hits))
}

/// Fetches `items` items with one task each, through the pipeline, and reports.
pub(crate) async fn run(items: u32) -> Result<Report, BoxError> {
    let (addr, hits) = vendor().await?;

    // Counts what the vendor answered to each attempt (inside the pipeline, so retries count).
    let (refused, failed) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let (count_429, count_503) = (Arc::clone(&refused), Arc::clone(&failed));
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
        .map_response(move |response: Response<Incoming>| {
            match response.status() {
                StatusCode::TOO_MANY_REQUESTS => count_429.fetch_add(1, Ordering::Relaxed),
                StatusCode::SERVICE_UNAVAILABLE => count_503.fetch_add(1, Ordering::Relaxed),
                _ => 0,
            };
            response
        })
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
    let requests = hits.load(Ordering::SeqCst);
    Ok(Report {
        fetched,
        requests,
        failed_503: failed.load(Ordering::Relaxed),
        refused_429: refused.load(Ordering::Relaxed),
        elapsed: clock.now() - start,
    })
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let report = run(200).await?;
    println!(
        "{} items fetched with {} requests ({} answered 503 and retried), {} answered 429",
        report.fetched, report.requests, report.failed_503, report.refused_429
    );
    let (elapsed, minimum) = (report.elapsed.as_secs_f64(), report.minimum().as_secs_f64());
    println!(
        "{elapsed:.2} s; the vendor's quota allows {} requests in no less than {minimum:.2} s ({:.2}x)",
        report.requests,
        elapsed / minimum
    );
    if report.fetched != 200 || report.refused_429 != 0 {
        return Err("the client did not stay under the vendor's quota".into());
    }
    Ok(())
}
