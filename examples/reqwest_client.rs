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

use std::time::Duration;

use axum::http::StatusCode;
use limitpal::reqwest::{HostKey, Resilience};
use limitpal::tower::TokioClock;
use limitpal::{Clock, RateLimiter, RetryPolicy, TokenBucket};

#[path = "common/vendor.rs"]
mod vendor;
use vendor::{BURST, PER_SEC, Report, Vendor};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Fetches `items` items with one task each and reports.
pub(crate) async fn run(items: u32) -> Result<Report, BoxError> {
    // the vendor answers with the `RateLimit` fields on every response
    let vendor = Vendor::start(true).await?;
    let addr = vendor.addr;

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
    Ok(vendor.report(fetched, clock.now() - start))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    run(200).await?.check(200)
}
