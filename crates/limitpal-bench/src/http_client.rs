//! The same reqwest client with no middleware, a pass-through middleware, reqwest-retry's
//! `RetryTransientMiddleware` and limitpal's `Resilience`, in two settings:
//!
//! - **canned**: a last middleware answers `200` without touching the network, so what is
//!   measured is the middleware itself (the per-request overhead) with nothing to drown it;
//! - **loopback**: a real axum server on `127.0.0.1` answers `200 ok`, the whole round trip.
//!
//! Every client answers the same `200` to the same `GET`, so each figure differs from the
//! `Canned` alone (or the bare client) only by the middleware under test.

use std::net::SocketAddr;
use std::time::Duration;

use http::Extensions;
use limitpal::reqwest::Resilience;
use limitpal::{CircuitBreaker, RateLimiter, RetryBudget, RetryPolicy, TokenBucket};
use reqwest::{Request, Response};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};
use reqwest_retry::RetryTransientMiddleware;
use reqwest_retry::policies::ExponentialBackoff;
use tokio::runtime::Runtime;

use crate::limiters::BURST;

/// The middleware under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    /// No middleware.
    Bare,
    /// One middleware that only calls the next: what reqwest-middleware itself costs.
    PassThrough,
    /// reqwest-retry's `RetryTransientMiddleware`, exponential backoff, 3 retries.
    ReqwestRetry,
    /// limitpal's `Resilience` with only the same retry (4 attempts).
    OursRetry,
    /// limitpal's `Resilience` with everything: per-host limiter (never runs out), breaker,
    /// retry with a budget.
    OursPipeline,
}

impl Stack {
    /// Every stack, in report order.
    pub const ALL: [Self; 5] = [
        Self::Bare,
        Self::PassThrough,
        Self::ReqwestRetry,
        Self::OursRetry,
        Self::OursPipeline,
    ];

    /// The stack's name in reports.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Bare => "bare client",
            Self::PassThrough => "pass-through middleware",
            Self::ReqwestRetry => "reqwest-retry RetryTransientMiddleware",
            Self::OursRetry => "limitpal Resilience (retry)",
            Self::OursPipeline => "limitpal Resilience (limit+breaker+retry+budget)",
        }
    }
}

/// Answers every request with `200` and an empty body, without the network.
#[derive(Debug, Clone, Copy)]
pub struct Canned;

#[async_trait::async_trait]
impl Middleware for Canned {
    async fn handle(
        &self,
        req: Request,
        _extensions: &mut Extensions,
        _next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        drop(req);
        Ok(Response::from(http::Response::new("")))
    }
}

/// Calls the next middleware and nothing else.
#[derive(Debug, Clone, Copy)]
pub struct PassThrough;

#[async_trait::async_trait]
impl Middleware for PassThrough {
    async fn handle(
        &self,
        req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        next.run(req, extensions).await
    }
}

fn policy() -> RetryPolicy {
    RetryPolicy::builder()
        .max_attempts(4)
        .build()
        .expect("valid policy")
}

fn ours(pipeline: bool) -> Resilience {
    let builder = Resilience::builder().retry(policy());
    let builder = if pipeline {
        builder
            .limiter(
                RateLimiter::builder(TokenBucket::new(BURST, 1.0).expect("valid quota"))
                    .build()
                    .expect("valid limiter"),
            )
            .breaker(CircuitBreaker::builder().build().expect("valid breaker"))
            .budget(RetryBudget::new(Duration::from_secs(10), 10, 0.2).expect("valid budget"))
    } else {
        builder
    };
    builder.build().expect("valid middleware")
}

/// A client with `stack`, answered by [`Canned`] when `canned`, else by the network.
#[must_use]
pub fn client(stack: Stack, canned: bool) -> ClientWithMiddleware {
    let builder = ClientBuilder::new(reqwest::Client::new());
    let builder = match stack {
        Stack::Bare => builder,
        Stack::PassThrough => builder.with(PassThrough),
        Stack::ReqwestRetry => builder.with(RetryTransientMiddleware::new_with_policy(
            ExponentialBackoff::builder().build_with_max_retries(3),
        )),
        Stack::OursRetry => builder.with(ours(false)),
        Stack::OursPipeline => builder.with(ours(true)),
    };
    if canned {
        builder.with(Canned).build()
    } else {
        builder.build()
    }
}

/// A current-thread runtime with time and I/O: the client's connections run on the thread
/// that calls [`get`], so a thread-local allocation count sees all of the client's work.
#[must_use]
pub fn client_runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Starts an axum server answering `GET /` with `200 ok` on its own thread and runtime, and
/// returns its address. It runs until the process exits.
#[must_use]
pub fn server() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    listener.set_nonblocking(true).expect("non-blocking");
    let addr = listener.local_addr().expect("an address");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("a listener");
            let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
            axum::serve(listener, app).await.expect("the server runs");
        });
    });
    addr
}

/// One `GET url` through `client`; the status it got.
pub fn get(rt: &Runtime, client: &ClientWithMiddleware, url: &str) -> Option<u16> {
    rt.block_on(async {
        let response = client.get(url).send().await.ok()?;
        let status = response.status().as_u16();
        // the whole body, so a loopback connection goes back to the pool
        response.bytes().await.ok()?;
        Some(status)
    })
}

/// The URL the canned clients are sent to (never connected to).
pub const CANNED_URL: &str = "http://127.0.0.1:9/";
