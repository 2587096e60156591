//! reqwest middleware over real loopback connections: retries that honour `Retry-After`,
//! a breaker that fails fast, streaming bodies sent once, pushback from `RateLimit`.

#![cfg(feature = "reqwest")]
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use limitpal::reqwest::{HostKey, NotRetried, Resilience};
use limitpal::{CircuitBreaker, CircuitOpen, Jitter, RateLimiter, RetryPolicy, TokenBucket};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};

/// The reqwest client example, run here with fewer items.
#[allow(dead_code)] // the example's `main` is not used here
#[path = "../../examples/reqwest_client.rs"]
mod example;

/// Serves a route whose `n`-th answer (from 1) is `answer(n)`; counts calls.
async fn serve(answer: fn(u32) -> Response) -> (String, Arc<AtomicU32>) {
    let hits = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&hits);
    let handler = move || {
        let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
        async move { answer(n) }
    };
    let app = Router::new().route("/", get(handler.clone()).post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/"), hits)
}

fn retry(attempts: u32) -> RetryPolicy {
    RetryPolicy::builder()
        .max_attempts(attempts)
        .base_delay(Duration::from_millis(1))
        .jitter(Jitter::None)
        .build()
        .unwrap()
}

/// Whether `error` is our refusal `T`: a middleware error holding it.
fn is_refusal<T: std::error::Error + Send + Sync + 'static>(
    error: &reqwest_middleware::Error,
) -> bool {
    matches!(error, reqwest_middleware::Error::Middleware(e) if e.downcast_ref::<T>().is_some())
}

fn client(resilience: Resilience) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(resilience)
        .build()
}

#[tokio::test]
async fn retries_honour_retry_after() {
    let (url, hits) = serve(|n| {
        if n == 1 {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [("retry-after", "1")],
                "busy",
            )
                .into_response()
        } else {
            "data".into_response()
        }
    })
    .await;
    let client = client(Resilience::builder().retry(retry(3)).build().unwrap());
    #[allow(clippy::disallowed_methods)] // real time: the server is real
    let start = Instant::now();
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "retried before Retry-After: {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn the_last_answer_comes_back_when_retries_run_out() {
    let (url, hits) = serve(|_| StatusCode::BAD_GATEWAY.into_response()).await;
    let client = client(Resilience::builder().retry(retry(3)).build().unwrap());
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY, "returned as is");
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn an_open_breaker_fails_fast() {
    let (url, hits) = serve(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()).await;
    let breaker = CircuitBreaker::builder()
        .failure_threshold(2)
        .recovery_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let client = client(Resilience::builder().breaker(breaker).build().unwrap());
    for _ in 0..2 {
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    let error = client.get(&url).send().await.unwrap_err();
    assert!(is_refusal::<CircuitOpen>(&error), "{error:?}");
    assert_eq!(hits.load(Ordering::SeqCst), 2, "the third call never left");
}

/// Per-host breakers on reqwest, with no limiter in the pipeline (the host's key is still
/// computed for them): the failing host's breaker opens and fails fast, the healthy host on
/// another port keeps answering. And the same with a bulkhead per host.
#[tokio::test]
async fn per_host_breakers_and_bulkheads_apply_without_a_limiter() {
    use limitpal::{CircuitState, KeyedBulkhead, KeyedCircuitBreaker};
    let (dead, dead_hits) = serve(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()).await;
    let (alive, alive_hits) = serve(|_| "data".into_response()).await;
    let breakers = KeyedCircuitBreaker::<HostKey>::builder()
        .failure_threshold(2)
        .recovery_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let guarded = client(
        Resilience::builder()
            .circuit_breaker_per(breakers.clone(), |host: &HostKey| *host)
            .build()
            .unwrap(),
    );
    for _ in 0..2 {
        let response = guarded.get(&dead).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    let error = guarded.get(&dead).send().await.unwrap_err();
    assert!(is_refusal::<CircuitOpen>(&error), "{error:?}");
    assert_eq!(
        dead_hits.load(Ordering::SeqCst),
        2,
        "the third call never left"
    );
    let dead_key = HostKey::of(&dead.parse().unwrap());
    assert_eq!(breakers.state(&dead_key), CircuitState::Open);
    for _ in 0..5 {
        let response = guarded.get(&alive).send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "the other host is unaffected"
        );
    }
    assert_eq!(alive_hits.load(Ordering::SeqCst), 5);

    // a bulkhead per host: the one slot of `alive`'s taken, its call is refused
    let per_host = KeyedBulkhead::<HostKey>::builder(1).build().unwrap();
    let bulkheaded = client(
        Resilience::builder()
            .bulkhead_per(per_host.clone(), |host: &HostKey| *host)
            .build()
            .unwrap(),
    );
    let alive_key = HostKey::of(&alive.parse().unwrap());
    let held = per_host.try_acquire(&alive_key).unwrap();
    let error = bulkheaded.get(&alive).send().await.unwrap_err();
    assert!(is_refusal::<limitpal::BulkheadFull>(&error), "{error:?}");
    assert_eq!(
        alive_hits.load(Ordering::SeqCst),
        5,
        "refused before the network"
    );
    drop(held);
    let response = bulkheaded.get(&alive).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_streaming_body_is_sent_once_and_the_error_says_why() {
    let (url, hits) = serve(|_| StatusCode::SERVICE_UNAVAILABLE.into_response()).await;
    let client = client(Resilience::builder().retry(retry(3)).build().unwrap());
    let stream = || reqwest::Body::wrap(http_body_util::Full::new(hyper::body::Bytes::from("x")));
    let response = client.post(&url).body(stream()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(hits.load(Ordering::SeqCst), 1, "not cloneable: not retried");
    // a transport failure of such a request: the error states that it was not retried
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let error = client
        .post(format!("http://{closed}/"))
        .body(stream())
        .send()
        .await
        .unwrap_err();
    let reqwest_middleware::Error::Middleware(error) = error else {
        panic!("not ours: {error:?}");
    };
    let not_retried = error.downcast_ref::<NotRetried>().unwrap();
    assert!(
        not_retried.to_string().contains("cannot be cloned"),
        "{not_retried}"
    );
    // a body-less or buffered request is retried
    let (url, hits) = serve(|_| StatusCode::SERVICE_UNAVAILABLE.into_response()).await;
    let _ = client.post(&url).body("buffered").send().await.unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn ratelimit_r0_holds_the_host_for_every_task() {
    let (url, hits) = serve(|n| {
        if n == 1 {
            ([("ratelimit", "\"default\";r=0;t=1")], "last one").into_response()
        } else {
            "data".into_response()
        }
    })
    .await;
    let limiter = RateLimiter::<HostKey>::builder(TokenBucket::new(100, 100.0).unwrap())
        .build()
        .unwrap();
    let client = client(
        Resilience::builder()
            .limiter(limiter)
            .limiter_wait(Duration::from_secs(5))
            .build()
            .unwrap(),
    );
    #[allow(clippy::disallowed_methods)] // real time: the server is real
    let start = Instant::now();
    assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { client.get(&url).send().await.unwrap().status() })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    assert_eq!(hits.load(Ordering::SeqCst), 5);
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "the host was not held: {:?}",
        start.elapsed()
    );
}

#[test]
fn hosts_are_keyed_by_origin() {
    let key = |u: &str| HostKey::of(&reqwest::Url::parse(u).unwrap());
    assert_eq!(key("http://a.example/x"), key("http://a.example:80/y?q"));
    assert_ne!(key("http://a.example/"), key("https://a.example/"));
    assert_ne!(key("http://a.example/"), key("http://b.example/"));
    assert_ne!(key("http://a.example:8080/"), key("http://a.example/"));
    // neighbouring names and ports all get keys of their own
    let mut keys = std::collections::HashSet::new();
    for host in 0..2_000 {
        for port in [80, 443, 8080] {
            assert!(keys.insert(key(&format!("http://h{host}.example:{port}/"))));
        }
    }
}

/// Real time on loopback: 60 items through a vendor allowing 20/s burst 5 with the `RateLimit`
/// fields, failing one answer in five: every item fetched, no 429.
#[tokio::test]
async fn the_reqwest_client_gets_every_item_and_no_429() {
    let report = example::run(60).await.unwrap();
    assert_eq!(report.refused_429, 0, "{report:?}");
    assert_eq!(report.fetched, 60, "{report:?}");
    assert_eq!(report.requests - report.failed_503, 60, "{report:?}");
    let (elapsed, minimum) = (report.elapsed.as_secs_f64(), report.minimum().as_secs_f64());
    assert!(
        elapsed >= minimum * 0.99,
        "{elapsed} s < {minimum} s: {report:?}"
    );
}
