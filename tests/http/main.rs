//! HTTP rate limiting over real loopback connections: an axum server, a hyper client, and
//! exact status codes and header values.

#![cfg(feature = "http")]
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::{IpAddr, SocketAddr};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use limitpal::tower::http::{GlobalKey, HeaderKey, HttpRateLimitLayer, MissingKey, PeerIp};
use limitpal::{CircuitState, ManualClock, RateLimiter, TokenBucket};
use tower::{Layer, ServiceExt, service_fn};

/// The example's router, served as is.
#[allow(dead_code)] // the example's `main` is not used here
#[path = "../../examples/axum_server.rs"]
mod example;

/// The vendor-quota client example, run here with fewer items.
#[allow(dead_code)] // the example's `main` is not used here
#[path = "../../examples/vendor_client.rs"]
mod vendor_client;

/// The hyper client example, run whole as `cargo run --example hyper_client` runs it.
#[path = "../../examples/hyper_client.rs"]
mod hyper_client;

/// The example ends with `Ok` (it once ended with `RateLimited`: its GET's `Retry-After`
/// held the host's quota and the POST after it was refused instead of waiting).
#[test]
fn the_hyper_client_example_runs_to_the_end() {
    hyper_client::main().unwrap();
}

/// The tonic client example, its four scenarios checked.
#[allow(dead_code)] // the example's `main` is not used here
#[path = "../../examples/tonic_client.rs"]
mod tonic_client;

/// `UNAVAILABLE` twice is retried to success (3 hits); `RESOURCE_EXHAUSTED` three times is retried
/// to success without counting against the breaker (4 hits, still Closed); a longer outage
/// spends the retries (4 hits) and opens the breaker, so the next call never reaches the
/// server.
#[tokio::test]
async fn the_tonic_client_example_retries_then_opens_the_breaker() {
    let played = tonic_client::run().await.unwrap();
    let hits: Vec<_> = played.iter().map(|s| s.server_hits).collect();
    let states: Vec<_> = played.iter().map(|s| s.breaker).collect();
    assert_eq!(hits, [3, 4, 4, 0]);
    assert_eq!(
        states,
        [
            CircuitState::Closed,
            CircuitState::Closed,
            CircuitState::Open,
            CircuitState::Open
        ]
    );
    let answers: Vec<_> = played.iter().map(|s| s.answer.as_str()).collect();
    assert_eq!(
        answers[..3],
        ["Serving", "Serving", r#"Unavailable "warming up""#]
    );
    assert!(
        answers[3].starts_with("rejected locally (circuit open"),
        "{answers:?}"
    );
}

/// Serves `app` on a free loopback port with connect info; the task ends with the test.
async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

/// GET `http://server/path` from the loopback address `from`, with `headers`.
async fn get_from(
    from: &str,
    server: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap) {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(from.parse::<IpAddr>().unwrap()));
    let client = Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(connector);
    let mut request = Request::get(format!("http://{server}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(request.body(Empty::new()).unwrap())
        .await
        .unwrap();
    (response.status(), response.headers().clone())
}

/// A per-IP limit of `capacity` refilling `per_sec`, on a frozen clock.
fn per_ip_app(capacity: u32, per_sec: f64) -> Router {
    let limiter = RateLimiter::builder(TokenBucket::new(capacity, per_sec).unwrap())
        .clock(ManualClock::new())
        .build()
        .unwrap();
    Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(HttpRateLimitLayer::new(
            limiter,
            PeerIp::from_extension(|info: &ConnectInfo<SocketAddr>| info.0),
        ))
}

#[tokio::test]
async fn two_clients_have_separate_budgets() {
    let server = serve(per_ip_app(2, 1.0)).await;
    let mut seen = Vec::new();
    for client in [
        "127.0.0.1",
        "127.0.0.2",
        "127.0.0.1",
        "127.0.0.2",
        "127.0.0.1",
        "127.0.0.2",
    ] {
        seen.push(get_from(client, server, "/", &[]).await.0.as_u16());
    }
    assert_eq!(seen, [200, 200, 200, 200, 429, 429]);
}

#[tokio::test]
async fn a_429_carries_rounded_up_retry_after_and_ratelimit_fields() {
    // 2 tokens, one every 0.4 s: the third request waits 0.4 s
    let server = serve(per_ip_app(2, 2.5)).await;
    assert_eq!(get_from("127.0.0.3", server, "/", &[]).await.0, 200);
    assert_eq!(get_from("127.0.0.3", server, "/", &[]).await.0, 200);
    let (status, headers) = get_from("127.0.0.3", server, "/", &[]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["retry-after"], "1", "0.4 s rounds up to 1");
    assert_eq!(headers["ratelimit-policy"], "\"default\";q=2;w=1");
    assert_eq!(
        headers["ratelimit"], "\"default\";r=0;t=1",
        "t = Retry-After"
    );
}

#[tokio::test]
async fn the_example_router_limits_per_key_and_per_ip() {
    let server = serve(example_app()).await;
    let key_a = [("x-api-key", "team-a")];
    let mut statuses = Vec::new();
    let mut last = HeaderMap::new();
    for _ in 0..4 {
        let (status, headers) = get_from("127.0.0.4", server, "/api", &key_a).await;
        statuses.push(status.as_u16());
        last = headers;
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    // both layers' policies; RateLimit for the key's, which has less left
    assert_eq!(
        last["ratelimit-policy"],
        "\"per-key\";q=3;w=6, \"per-ip\";q=5;w=5"
    );
    let retry_after: u64 = last["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_eq!(
        last["ratelimit"].to_str().unwrap(),
        format!("\"per-key\";r=0;t={retry_after}")
    );
    // another key from the same IP has its own key budget; the IP's burst of 5 then runs out
    let (status, headers) = get_from("127.0.0.4", server, "/api", &[("x-api-key", "team-b")]).await;
    assert_eq!(status, 200);
    // the IP has spent its burst of 5 (r=0) and the new key has 2 left: the IP's is lower
    assert_eq!(headers["ratelimit"], "\"per-ip\";r=0;t=5");
    let (status, _) = get_from("127.0.0.4", server, "/api", &[("x-api-key", "team-c")]).await;
    assert_eq!(status, 429, "per-IP burst of 5 spent");
    // a fresh IP without a key: 401 from the per-key layer
    assert_eq!(get_from("127.0.0.5", server, "/api", &[]).await.0, 401);
}

fn example_app() -> Router {
    example::app().unwrap()
}

// ---- tower level, no sockets ----

fn frozen(capacity: u32) -> RateLimiter<String, TokenBucket, ManualClock> {
    RateLimiter::builder(TokenBucket::new(capacity, 1.0).unwrap())
        .clock(ManualClock::new())
        .build()
        .unwrap()
}

type Body = String;

fn ok_service() -> impl tower::Service<
    Request<()>,
    Response = http::Response<Body>,
    Error = std::convert::Infallible,
    Future: Send,
> + Clone
+ Send {
    service_fn(|_req: Request<()>| async { Ok(http::Response::new(Body::from("ok"))) })
}

fn with_key(key: Option<&str>) -> Request<()> {
    let mut req = Request::builder();
    if let Some(key) = key {
        req = req.header("x-api-key", key);
    }
    req.body(()).unwrap()
}

#[tokio::test]
async fn missing_keys_follow_the_policy() {
    let header = || HeaderKey::new("x-api-key").unwrap();
    let reject = HttpRateLimitLayer::new(frozen(1), header())
        .missing_key_status(StatusCode::BAD_REQUEST)
        .layer(ok_service());
    assert_eq!(reject.oneshot(with_key(None)).await.unwrap().status(), 400);

    let default_reject = HttpRateLimitLayer::new(frozen(1), header()).layer(ok_service());
    assert_eq!(
        default_reject
            .oneshot(with_key(None))
            .await
            .unwrap()
            .status(),
        500
    );

    let allow = HttpRateLimitLayer::new(frozen(1), header())
        .missing_key(MissingKey::Allow)
        .layer(ok_service());
    for _ in 0..3 {
        assert_eq!(
            allow
                .clone()
                .oneshot(with_key(None))
                .await
                .unwrap()
                .status(),
            200
        );
    }

    let fallback = HttpRateLimitLayer::new(frozen(1), header())
        .missing_key(MissingKey::Fallback("anonymous".to_owned()))
        .layer(ok_service());
    assert_eq!(
        fallback
            .clone()
            .oneshot(with_key(None))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        fallback
            .clone()
            .oneshot(with_key(None))
            .await
            .unwrap()
            .status(),
        429
    );
    assert_eq!(
        fallback
            .oneshot(with_key(Some("anonymous")))
            .await
            .unwrap()
            .status(),
        429,
        "keyless requests share the fallback key's quota"
    );
}

#[tokio::test]
async fn allowed_responses_carry_ratelimit_when_enabled() {
    let svc = HttpRateLimitLayer::new(frozen(3), HeaderKey::new("x-api-key").unwrap())
        .headers_on_success(true)
        .layer(ok_service());
    let response = svc.clone().oneshot(with_key(Some("k"))).await.unwrap();
    assert_eq!(response.headers()["ratelimit"], "\"default\";r=2;t=1");
    assert_eq!(
        response.headers()["ratelimit-policy"],
        "\"default\";q=3;w=3"
    );
    let quiet = HttpRateLimitLayer::new(frozen(3), HeaderKey::new("x-api-key").unwrap())
        .layer(ok_service());
    let response = quiet.oneshot(with_key(Some("k"))).await.unwrap();
    assert!(response.headers().get("ratelimit").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_layer_cloned_into_four_tasks_shares_one_budget() {
    let limiter = RateLimiter::builder(TokenBucket::new(25, 1.0).unwrap())
        .clock(ManualClock::new())
        .build()
        .unwrap();
    let layer = HttpRateLimitLayer::new(limiter, GlobalKey);
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let svc = layer.clone().layer(ok_service());
            tokio::spawn(async move {
                let mut ok = 0;
                for _ in 0..50 {
                    let status = svc
                        .clone()
                        .oneshot(Request::new(()))
                        .await
                        .unwrap()
                        .status();
                    ok += u32::from(status == StatusCode::OK);
                }
                ok
            })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        admitted += task.await.unwrap();
    }
    assert_eq!(admitted, 25);
}

#[tokio::test]
async fn retry_after_is_never_zero_while_denied() {
    // 1000 per second: the wait is 1 ms, still "1" second for HTTP
    let limiter = RateLimiter::builder(TokenBucket::new(1, 1000.0).unwrap())
        .clock(ManualClock::new())
        .build()
        .unwrap();
    let svc = HttpRateLimitLayer::new(limiter, GlobalKey).layer(ok_service());
    let _ = svc.clone().oneshot(Request::new(())).await.unwrap();
    let denied = svc.oneshot(Request::new(())).await.unwrap();
    assert_eq!(denied.status(), 429);
    assert_eq!(denied.headers()["retry-after"], "1");
}

// ---- the client side: ResilienceLayer + HttpClassifier around a hyper client ----

mod client {
    use std::time::Duration;

    use http::{Request, StatusCode};
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use limitpal::fault::FaultPlan;
    use limitpal::tower::ResilienceLayer;
    use limitpal::tower::http::{HttpClassifier, replay_idempotent};
    use limitpal::{CircuitBreaker, CircuitState, Jitter, RetryPolicy};
    use tower::{ServiceBuilder, ServiceExt};

    /// First `failures` answers are `status` with `Retry-After: 0`, then `200 data`: the
    /// hyper client example's server; its plan counts every request.
    async fn flaky(failures: u32, status: StatusCode) -> (String, FaultPlan) {
        let (addr, hits) = super::hyper_client::flaky_server(failures, status, "0")
            .await
            .unwrap();
        (format!("http://{addr}/data"), hits)
    }

    fn request(method: &str, uri: &str) -> Request<Full<Bytes>> {
        Request::builder()
            .method(method)
            .uri(uri)
            .body(Full::new(Bytes::new()))
            .unwrap()
    }

    #[tokio::test]
    async fn idempotent_requests_are_retried_on_503_and_429_and_posts_are_not() {
        // 3 consecutive failures open it: two 503s then a 200 do not; the POST's 503 makes one;
        // four 429s would make five if they were counted
        let breaker = CircuitBreaker::builder()
            .failure_threshold(3)
            .build()
            .unwrap();
        let layer = ResilienceLayer::builder()
            .circuit_breaker(breaker.clone())
            .retry(
                RetryPolicy::builder()
                    .max_attempts(4)
                    .base_delay(Duration::from_millis(1))
                    .jitter(Jitter::None)
                    .build()
                    .unwrap(),
            )
            .classifier(HttpClassifier)
            .clone_request(replay_idempotent::<Full<Bytes>>)
            .build()
            .unwrap();
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let stack = ServiceBuilder::new().layer(layer).service(client);

        let (uri, hits) = flaky(2, StatusCode::SERVICE_UNAVAILABLE).await;
        let response = stack.clone().oneshot(request("GET", &uri)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(hits.calls(), 3);

        let (uri, hits) = flaky(2, StatusCode::SERVICE_UNAVAILABLE).await;
        let response = stack.clone().oneshot(request("POST", &uri)).await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "returned as is"
        );
        assert_eq!(hits.calls(), 1, "a POST is never replayed");

        let (uri, hits) = flaky(5, StatusCode::TOO_MANY_REQUESTS).await;
        let response = stack.clone().oneshot(request("GET", &uri)).await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "the last 429 unchanged"
        );
        assert_eq!(hits.calls(), 4);
        assert_eq!(breaker.state(), CircuitState::Closed);
    }
}

/// Real time on loopback: 60 items through a vendor allowing 20/s burst 5 that fails one
/// answer in five. Waiting for quota means no 429 at all, every item fetched, and the run
/// takes the quota's minimum time (within 5 %), not more.
#[tokio::test]
async fn the_vendor_client_waits_for_quota_gets_no_429_and_runs_at_the_quota() {
    let report = vendor_client::run(60).await.unwrap();
    assert_eq!(report.refused_429, 0, "{report:?}");
    assert_eq!(report.fetched, 60, "{report:?}");
    // one answer in five was a 503, and each was retried until the item came
    assert_eq!(report.failed_503, report.requests / 5, "{report:?}");
    assert_eq!(report.requests - report.failed_503, 60, "{report:?}");
    let minimum = report.minimum().as_secs_f64();
    let elapsed = report.elapsed.as_secs_f64();
    assert!(
        elapsed >= minimum * 0.99,
        "{elapsed} s < {minimum} s: {report:?}"
    );
    assert!(
        elapsed <= minimum * 1.05,
        "{elapsed} s vs {minimum} s: {report:?}"
    );
}

/// The current draft's own examples (draft-ietf-httpapi-ratelimit-headers-10 §3.2, §4.2),
/// produced byte for byte by layers configured to match them.
mod draft_fields {
    use std::time::Duration;

    use http::{HeaderMap, Request, StatusCode};
    use limitpal::tower::http::{GlobalKey, HttpRateLimitLayer, RateLimitFields, pushback};
    use limitpal::{ManualClock, RateLimiter, TokenBucket};
    use tower::{Layer, ServiceExt};

    use super::ok_service;

    /// `q` tokens refilling in `w` seconds, on a frozen clock.
    fn policy(q: u32, w: u32) -> RateLimiter<(), TokenBucket, ManualClock> {
        RateLimiter::builder(TokenBucket::new(q, f64::from(q) / f64::from(w)).unwrap())
            .clock(ManualClock::new())
            .build()
            .unwrap()
    }

    async fn answer(
        svc: impl tower::Service<
            Request<()>,
            Response = http::Response<String>,
            Error = std::convert::Infallible,
        >,
    ) -> (StatusCode, HeaderMap) {
        let response = svc.oneshot(Request::new(())).await.unwrap();
        (response.status(), response.headers().clone())
    }

    #[tokio::test]
    async fn one_named_policy() {
        // RateLimit-Policy: "default";q=100;w=60 and, with 50 spent, RateLimit: "default";r=50;t=30
        let limiter = policy(100, 60);
        for _ in 0..49 {
            limiter.check(&()).unwrap();
        }
        let svc = HttpRateLimitLayer::new(limiter, GlobalKey)
            .headers_on_success(true)
            .layer(ok_service());
        let (status, headers) = answer(svc).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["ratelimit-policy"], r#""default";q=100;w=60"#);
        assert_eq!(headers["ratelimit"], r#""default";r=50;t=30"#);
        // §3.2: RateLimit-Policy: "default";q=100;w=10
        let svc = HttpRateLimitLayer::new(policy(100, 10), GlobalKey)
            .headers_on_success(true)
            .layer(ok_service());
        assert_eq!(
            answer(svc).await.1["ratelimit-policy"],
            r#""default";q=100;w=10"#
        );
    }

    #[tokio::test]
    async fn two_policies_on_one_response() {
        // §3.2: RateLimit-Policy: "permin";q=50;w=60,"perhr";q=1000;w=3600 (in the canonical
        // RFC 9651 serialization, which puts a space after the comma)
        let svc = tower::ServiceBuilder::new()
            .layer(
                HttpRateLimitLayer::new(policy(1000, 3600), GlobalKey)
                    .policy_name("perhr")
                    .unwrap()
                    .headers_on_success(true),
            )
            .layer(
                HttpRateLimitLayer::new(policy(50, 60), GlobalKey)
                    .policy_name("permin")
                    .unwrap()
                    .headers_on_success(true),
            )
            .service(ok_service());
        let (_, headers) = answer(svc.clone()).await;
        assert_eq!(
            headers["ratelimit-policy"],
            r#""permin";q=50;w=60, "perhr";q=1000;w=3600"#
        );
        // 49 left per minute, 999 per hour: RateLimit reports the lower
        assert_eq!(headers["ratelimit"], r#""permin";r=49;t=2"#);
        // spend the minute's quota: the 51st is refused by "permin", and the outer "perhr"
        // lists itself without hiding the refusal
        for _ in 0..49 {
            assert_eq!(answer(svc.clone()).await.0, StatusCode::OK);
        }
        let (status, headers) = answer(svc.clone()).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(headers["retry-after"], "2");
        assert_eq!(
            headers["ratelimit"], r#""permin";r=0;t=2"#,
            "t = Retry-After"
        );
        assert_eq!(
            headers["ratelimit-policy"],
            r#""permin";q=50;w=60, "perhr";q=1000;w=3600"#
        );
        // a client of the draft reads the wait from what we wrote
        assert_eq!(pushback(&headers), Some(Duration::from_secs(2)));
    }

    #[tokio::test]
    async fn the_old_form_is_an_explicit_option() {
        let limiter = policy(3, 6);
        let svc = HttpRateLimitLayer::new(limiter, GlobalKey)
            .fields(RateLimitFields::Draft07)
            .headers_on_success(true)
            .layer(ok_service());
        let (_, headers) = answer(svc.clone()).await;
        assert_eq!(headers["ratelimit-policy"], "3;w=6");
        assert_eq!(headers["ratelimit"], "limit=3, remaining=2, reset=2");
        answer(svc.clone()).await;
        answer(svc.clone()).await;
        let (status, headers) = answer(svc).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(headers["retry-after"], "2");
        assert_eq!(headers["ratelimit"], "limit=3, remaining=0, reset=6");
    }

    #[test]
    fn bad_policy_names_are_config_errors() {
        for bad in ["", "caf\u{e9}", "tab\there", "line\nbreak"] {
            let error = HttpRateLimitLayer::new(policy(1, 1), GlobalKey)
                .policy_name(bad)
                .unwrap_err();
            assert_eq!(error.field(), "policy_name", "{bad:?}");
        }
        // quotes and backslashes are escaped, not refused
        let svc = HttpRateLimitLayer::new(policy(1, 1), GlobalKey)
            .policy_name(r#"say "hi" \o/"#)
            .unwrap();
        drop(svc);
    }

    #[test]
    fn the_draft_examples_are_read() {
        let read = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("ratelimit", value.parse().unwrap());
            pushback(&headers)
        };
        assert_eq!(read(r#""default";r=50;t=30"#), None);
        assert_eq!(read(r#""default";r=999;pk=:dHJpYWwxMjEzMjM=:"#), None);
        assert_eq!(
            read(r#""default";r=300000000;t=60;pk=:QXBwLTk5OQ==:"#),
            None
        );
        assert_eq!(
            read(r#""problemPolicy";r=0;t=10"#),
            Some(Duration::from_secs(10))
        );
        // a list split over two field lines (RFC 9651 §3.1)
        let mut headers = HeaderMap::new();
        headers.append("ratelimit", r#""a";r=0;t=4"#.parse().unwrap());
        headers.append("ratelimit", r#""b";r=0;t=6"#.parse().unwrap());
        assert_eq!(pushback(&headers), Some(Duration::from_secs(6)));
        headers.append("ratelimit", "garbage;;".parse().unwrap());
        assert_eq!(
            pushback(&headers),
            None,
            "one malformed line: the field is ignored"
        );
    }
}
