//! A tonic gRPC client (the standard health service, no protoc needed) behind the resilience
//! pipeline with the gRPC classifier, against an in-process tonic server that fails on demand.
//!
//! ```text
//! cargo run --example tonic_client --features http
//! ```
//!
//! gRPC request bodies are streams, so the stack buffers each request into a `Full<Bytes>`
//! first; the pipeline can then replay it (`replay_always`: health checks are idempotent).
//! `UNAVAILABLE` and `DEADLINE_EXCEEDED` are retried and count against the breaker;
//! `RESOURCE_EXHAUSTED` is retried but does not (the server is shedding load, not broken).
//! Expected output:
//!
//! ```text
//! 1. server fails the next 2 calls with UNAVAILABLE  -> Serving after 3 server hits; breaker Closed
//! 2. server fails the next 3 calls with RESOURCE_EXHAUSTED -> Serving after 4 server hits; breaker Closed
//! 3. server fails the next 50 calls with UNAVAILABLE -> Unavailable "warming up" after 4 server hits; breaker Open
//! 4. no server change                                -> rejected locally after 0 server hits: circuit open: retry after 29.99…s; breaker Open
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use limitpal::tower::ResilienceLayer;
use limitpal::tower::http::{GrpcClassifier, replay_always};
use limitpal::{CircuitBreaker, Jitter, RetryPolicy};
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::transport::{Channel, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

/// Wraps a gRPC service: answers the next `failures` calls with `code` instead.
#[derive(Clone)]
struct FailOnDemand<S> {
    inner: S,
    failures: Arc<AtomicU32>,
    code: Arc<AtomicU32>,
    hits: Arc<AtomicU32>,
}

impl<S: NamedService> NamedService for FailOnDemand<S> {
    const NAME: &'static str = S::NAME;
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> Service<http::Request<Body>> for FailOnDemand<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        self.hits.fetch_add(1, Ordering::SeqCst);
        let fail = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            let code =
                tonic::Code::from(i32::try_from(self.code.load(Ordering::SeqCst)).unwrap_or(14));
            let status = tonic::Status::new(code, "warming up");
            return Box::pin(async move { Ok(status.into_http()) });
        }
        Box::pin(self.inner.call(req))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    // ---- the server ----
    let (_reporter, health) = tonic_health::server::health_reporter();
    let failures = Arc::new(AtomicU32::new(0));
    let code = Arc::new(AtomicU32::new(14));
    let hits = Arc::new(AtomicU32::new(0));
    let server = FailOnDemand {
        inner: health,
        failures: Arc::clone(&failures),
        code: Arc::clone(&code),
        hits: Arc::clone(&hits),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(
        Server::builder()
            .add_service(server)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    // ---- the client: buffer the body, then the pipeline, then the channel ----
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let breaker = CircuitBreaker::builder()
        .failure_threshold(4)
        .recovery_timeout(Duration::from_secs(30))
        .build()?;
    let resilience = ResilienceLayer::builder()
        .circuit_breaker(breaker.clone())
        .retry(
            RetryPolicy::builder()
                .max_attempts(4)
                .base_delay(Duration::from_millis(20))
                .jitter(Jitter::Full)
                .build()?,
        )
        .classifier(GrpcClassifier)
        .clone_request(replay_always::<Full<Bytes>>)
        .attempt_timeout(Duration::from_secs(1))
        .build()?;
    let resilient = ServiceBuilder::new()
        .layer(resilience)
        .map_request(|req: http::Request<Full<Bytes>>| req.map(Body::new))
        .service(channel);
    let buffered = tower::service_fn(move |req: http::Request<Body>| {
        let resilient = resilient.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect().await?.to_bytes();
            resilient
                .oneshot(http::Request::from_parts(parts, Full::new(bytes)))
                .await
        }
    });
    let mut client = HealthClient::new(buffered);

    let scenarios: [(&str, u32, u32); 4] = [
        ("server fails the next 2 calls with UNAVAILABLE ", 2, 14),
        (
            "server fails the next 3 calls with RESOURCE_EXHAUSTED",
            3,
            8,
        ),
        ("server fails the next 50 calls with UNAVAILABLE", 50, 14),
        ("no server change                               ", 0, 14),
    ];
    for (i, (what, fail, status)) in scenarios.into_iter().enumerate() {
        if fail > 0 {
            failures.store(fail, Ordering::SeqCst);
            code.store(status, Ordering::SeqCst);
        }
        let before = hits.load(Ordering::SeqCst);
        let answer = client.check(HealthCheckRequest::default()).await;
        let server_hits = hits.load(Ordering::SeqCst) - before;
        let outcome = match answer {
            Ok(response) => format!(
                "{:?} after {server_hits} server hits",
                response.into_inner().status()
            ),
            Err(status) if server_hits == 0 => {
                format!("rejected locally after 0 server hits: {}", status.message())
            }
            Err(status) => format!(
                "{:?} {:?} after {server_hits} server hits",
                status.code(),
                status.message()
            ),
        };
        println!(
            "{}. {what} -> {outcome}; breaker {:?}",
            i + 1,
            breaker.state()
        );
    }
    Ok(())
}
