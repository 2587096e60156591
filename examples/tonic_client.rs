//! A tonic gRPC client (the standard health service, no protoc needed) behind the resilience
//! pipeline with the gRPC classifier, against an in-process tonic server that fails on demand
//! (a `FaultLayer` on the server answers the calls it is told to fail with an error status).
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
//! 4. no server change                                -> rejected locally (circuit open: retry after 29.99…s) after 0 server hits; breaker Open
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use limitpal::tower::ResilienceLayer;
use limitpal::tower::fault::FaultLayer;
use limitpal::tower::http::{GrpcClassifier, replay_always};
use limitpal::{CircuitBreaker, CircuitState, Jitter, RetryPolicy};
use tonic::Code;
use tonic::body::Body;
use tonic::transport::{Channel, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::{BoxError, ServiceBuilder, ServiceExt};

/// What the server is told to do: fail the next `failing` calls with `code`; `hits` counts
/// every call that reaches it. A `FaultLayer` on the server asks it which calls to answer
/// with an error status.
#[derive(Clone, Default)]
struct OnDemand {
    failing: Arc<AtomicU32>,
    code: Arc<AtomicI32>,
    hits: Arc<AtomicU32>,
}

impl OnDemand {
    fn fail_next(&self, calls: u32, code: tonic::Code) {
        self.code.store(code as i32, Ordering::SeqCst);
        self.failing.store(calls, Ordering::SeqCst);
    }

    /// Counts a call and says whether it is one of those to fail.
    fn fails_this_call(&self) -> bool {
        self.hits.fetch_add(1, Ordering::SeqCst);
        self.failing
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    fn status(&self) -> http::Response<Body> {
        let code = tonic::Code::from(self.code.load(Ordering::SeqCst));
        tonic::Status::new(code, "warming up").into_http()
    }

    fn hits(&self) -> u32 {
        self.hits.load(Ordering::SeqCst)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    for (i, scenario) in run().await?.iter().enumerate() {
        println!(
            "{}. {} -> {} after {} server hits; breaker {:?}",
            i + 1,
            scenario.what,
            scenario.answer,
            scenario.server_hits,
            scenario.breaker
        );
    }
    Ok(())
}

/// What one scenario did: what the server was told, the client's answer, how many calls
/// reached the server, and the breaker's state after it.
pub(crate) struct Scenario {
    pub(crate) what: &'static str,
    pub(crate) answer: String,
    pub(crate) server_hits: u32,
    pub(crate) breaker: CircuitState,
}

/// Starts the server and the client, and plays the four scenarios.
pub(crate) async fn run() -> Result<Vec<Scenario>, BoxError> {
    // ---- the server ----
    let (_reporter, health) = tonic_health::server::health_reporter();
    let server = OnDemand::default();
    let (answers, asks) = (server.clone(), server.clone());
    let faults = FaultLayer::builder()
        .respond(1.0, move || answers.status())
        .only_if(move |_: &http::Request<Body>| asks.fails_this_call())
        .build()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(
        Server::builder()
            .layer(faults)
            .add_service(health)
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

    let scenarios = [
        (
            "server fails the next 2 calls with UNAVAILABLE ",
            2,
            Code::Unavailable,
        ),
        (
            "server fails the next 3 calls with RESOURCE_EXHAUSTED",
            3,
            Code::ResourceExhausted,
        ),
        (
            "server fails the next 50 calls with UNAVAILABLE",
            50,
            Code::Unavailable,
        ),
        (
            "no server change                               ",
            0,
            Code::Ok,
        ),
    ];
    let mut played = Vec::new();
    for (what, fail, code) in scenarios {
        if fail > 0 {
            server.fail_next(fail, code);
        }
        let before = server.hits();
        let answer = client.check(HealthCheckRequest::default()).await;
        let server_hits = server.hits() - before;
        let answer = match answer {
            Ok(response) => format!("{:?}", response.into_inner().status()),
            Err(status) if server_hits == 0 => format!("rejected locally ({})", status.message()),
            Err(status) => format!("{:?} {:?}", status.code(), status.message()),
        };
        played.push(Scenario {
            what,
            answer,
            server_hits,
            breaker: breaker.state(),
        });
    }
    Ok(played)
}
