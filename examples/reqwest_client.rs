//! A reqwest client that stays under its vendor's quota with one middleware: it waits for
//! quota, retries failures, follows the vendor's `RateLimit` fields, and never receives a 429.
//!
//! ```text
//! cargo run --example reqwest_client --features reqwest
//! ```
//!
//! The "vendor" is a local axum server that allows 20 requests per second with a burst of 5,
//! says so on every answer with the current IETF draft's fields
//! (`ratelimit-policy: "default";q=5;w=1`, `ratelimit: "default";r=4;t=1`), answers `429`
//! beyond that (after queueing a request for at most 50 ms, which absorbs loopback jitter),
//! and fails one request in five with `503`. The client fetches 200 items with
//! 200 concurrent tasks through `limitpal::reqwest::Resilience`:
//!
//! - `.limiter(..)` with the vendor's quota, keyed per host, and `.limiter_wait(60 s)`: each
//!   request waits for its slot instead of failing, in arrival order;
//! - `.retry(..)`: a 503 is retried after a short backoff, and the retry waits for quota too;
//! - pushback (on by default): an answer with `Retry-After`, or with `r=0;t=N` (the quota is
//!   spent), holds the host for every task until then.
//!
//! Expected output (the time is real, so it varies a little):
//!
//! ```text
//! 200 items fetched with 249 requests (49 answered 503 and retried), 0 answered 429
//! 13.01 s; the vendor's quota allows 249 requests in no less than 12.20 s (1.07x)
//! ```
//!
//! The 7 % over the minimum is the draft's whole seconds: when an answer says `r=0;t=1`
//! the client holds the host for that second, as the draft asks, although at 20/s the next
//! slot is 50 ms away.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use limitpal::reqwest::{HostKey, Resilience};
use limitpal::tower::TokioClock;
use limitpal::tower::http::{GlobalKey, HttpRateLimitLayer};
use limitpal::{Clock, RateLimiter, RetryPolicy, TokenBucket};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

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

/// The vendor: its own limit with the `RateLimit` fields on every answer, one answer in five
/// a 503; counts what it answered.
async fn vendor() -> Result<(SocketAddr, Arc<[AtomicU32; 3]>), BoxError> {
    let seen: Arc<[AtomicU32; 3]> = Arc::default(); // requests, 503s, 429s
    let counted = Arc::clone(&seen);
    let handler = move || {
        let n = counted[0].fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if n % 5 == 0 {
                (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response()
            } else {
                (StatusCode::OK, "item").into_response()
            }
        }
    };
    let quota = RateLimiter::builder(TokenBucket::new(BURST, PER_SEC)?).build()?;
    let counted = Arc::clone(&seen);
    let app = Router::new()
        .route("/items/{id}", get(handler))
        .layer(
            HttpRateLimitLayer::new(quota, GlobalKey)
                .headers_on_success(true)
                .wait(Duration::from_millis(50)),
        )
        .layer(axum::middleware::map_response(
            move |response: axum::response::Response| {
                match response.status() {
                    StatusCode::SERVICE_UNAVAILABLE => counted[1].fetch_add(1, Ordering::SeqCst),
                    StatusCode::TOO_MANY_REQUESTS => counted[2].fetch_add(1, Ordering::SeqCst),
                    _ => 0,
                };
                std::future::ready(response)
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((addr, seen))
}

/// Fetches `items` items with one task each and reports.
pub(crate) async fn run(items: u32) -> Result<Report, BoxError> {
    let (addr, seen) = vendor().await?;

    // the vendor's quota, per host; wait for a slot rather than fail; retry 5xx
    let per_host = RateLimiter::<HostKey>::builder(TokenBucket::new(BURST, PER_SEC)?).build()?;
    let resilience = Resilience::builder()
        .limiter(per_host)
        .limiter_wait(Duration::from_secs(60))
        .retry(
            RetryPolicy::builder()
                .max_attempts(5)
                .base_delay(Duration::from_millis(20))
                .max_delay(Duration::from_secs(5))
                .build()?,
        )
        .attempt_timeout(Duration::from_secs(5))
        .build()?;
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(resilience)
        .build();

    let clock = TokioClock::new();
    let start = clock.now();
    let mut tasks = Vec::new();
    for id in 0..items {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let response = client
                .get(format!("http://{addr}/items/{id}"))
                .send()
                .await?;
            Ok::<_, BoxError>(response.status() == StatusCode::OK)
        }));
    }
    let mut fetched = 0;
    for task in tasks {
        if task.await?? {
            fetched += 1;
        }
    }
    Ok(Report {
        fetched,
        requests: seen[0].load(Ordering::SeqCst) + seen[2].load(Ordering::SeqCst),
        failed_503: seen[1].load(Ordering::SeqCst),
        refused_429: seen[2].load(Ordering::SeqCst),
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
