//! The vendor API both client examples call (`vendor_client.rs` through hyper and the
//! pipeline layer, `reqwest_client.rs` through reqwest and the middleware): its own quota, a
//! burst of 5 then 20 per second, queueing at most 50 ms before a 429; one answer in five a
//! 503. It counts what it answered, so the report is the vendor's view.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use limitpal::tower::http::{GlobalKey, HttpRateLimitLayer};
use limitpal::{RateLimiter, TokenBucket};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The vendor's quota: a burst of 5, then 20 per second.
pub(crate) const BURST: u32 = 5;
pub(crate) const PER_SEC: f64 = 20.0;

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

    /// Prints the run, and fails unless all `items` came without a single 429.
    pub(crate) fn check(&self, items: u32) -> Result<(), BoxError> {
        println!(
            "{} items fetched with {} requests ({} answered 503 and retried), {} answered 429",
            self.fetched, self.requests, self.failed_503, self.refused_429
        );
        let (elapsed, minimum) = (self.elapsed.as_secs_f64(), self.minimum().as_secs_f64());
        println!(
            "{elapsed:.2} s; the vendor's quota allows {} requests in no less than {minimum:.2} s ({:.2}x)",
            self.requests,
            elapsed / minimum
        );
        if self.fetched != items || self.refused_429 != 0 {
            return Err("the client did not stay under the vendor's quota".into());
        }
        Ok(())
    }
}

/// A running vendor on a loopback port.
pub(crate) struct Vendor {
    pub(crate) addr: SocketAddr,
    /// Answered by the handler (200 or 503), 503s, 429s.
    seen: Arc<[AtomicU32; 3]>,
}

impl Vendor {
    /// Starts the vendor; with `fields_on_success`, every answer carries the `RateLimit`
    /// fields, not only its 429s.
    pub(crate) async fn start(fields_on_success: bool) -> Result<Self, BoxError> {
        let seen: Arc<[AtomicU32; 3]> = Arc::default();
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
                    .headers_on_success(fields_on_success)
                    .wait(Duration::from_millis(50)),
            )
            .layer(axum::middleware::map_response(
                move |response: axum::response::Response| {
                    match response.status() {
                        StatusCode::SERVICE_UNAVAILABLE => {
                            counted[1].fetch_add(1, Ordering::SeqCst)
                        }
                        StatusCode::TOO_MANY_REQUESTS => counted[2].fetch_add(1, Ordering::SeqCst),
                        _ => 0,
                    };
                    std::future::ready(response)
                },
            ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { addr, seen })
    }

    /// The run's report, from what the vendor answered.
    pub(crate) fn report(&self, fetched: u32, elapsed: Duration) -> Report {
        let [answered, failed, refused] = [0, 1, 2].map(|i| self.seen[i].load(Ordering::SeqCst));
        Report {
            fetched,
            requests: answered + refused,
            failed_503: failed,
            refused_429: refused,
            elapsed,
        }
    }
}
