//! Pushback: an upstream's `Retry-After` holds its key for every caller.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use limitpal::tower::fault::FaultLayer;
use limitpal::tower::http::HttpClassifier;
use limitpal::tower::{ResilienceLayer, TokioClock};
use limitpal::{Clock, Jitter, RateLimited, RateLimiter, RetryPolicy, TokenBucket};
use tower::{BoxError, Layer, Service, ServiceBuilder, ServiceExt, service_fn};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

type Calls = Arc<Mutex<Vec<(String, Duration)>>>;

/// An upstream that answers the first call for key "a" with `status` and these headers, and
/// every other call with 200 (a `FaultLayer` whose plan sees only key "a" and fails its
/// first call). Records (key, time) of each call.
fn upstream(
    status: StatusCode,
    headers: &'static [(&'static str, &'static str)],
) -> (
    impl Service<Request<()>, Response = Response<()>, Error = BoxError, Future: Send> + Clone,
    Calls,
) {
    let start = TokioClock::new();
    let calls: Calls = Arc::default();
    let seen = Arc::clone(&calls);
    let faults = FaultLayer::builder()
        .respond(1.0, move || {
            let mut response = Response::new(());
            *response.status_mut() = status;
            for (name, value) in headers {
                response.headers_mut().insert(*name, value.parse().unwrap());
            }
            response
        })
        .only_calls(0, 1)
        .only_if(|req: &Request<()>| key_of(req) == "a")
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .map_request(move |req: Request<()>| {
            seen.lock().unwrap().push((key_of(&req), start.now()));
            req
        })
        .layer(faults)
        .service(service_fn(|_: Request<()>| async {
            Ok::<_, BoxError>(Response::new(()))
        }));
    (svc, calls)
}

fn key_of(req: &Request<()>) -> String {
    req.headers()
        .get("x-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

fn request(key: &str) -> Request<()> {
    Request::get("/").header("x-key", key).body(()).unwrap()
}

/// Sends one request for "a" (answered 429), then four more for "a" and one for "b" at once;
/// returns when each upstream call happened.
async fn scenario(
    headers: &'static [(&'static str, &'static str)],
    respect: bool,
    wait: Duration,
) -> (Vec<Duration>, Vec<Duration>, Calls) {
    scenario_after(StatusCode::TOO_MANY_REQUESTS, headers, respect, wait).await
}

/// [`scenario`] with the first answer's status chosen.
async fn scenario_after(
    status: StatusCode,
    headers: &'static [(&'static str, &'static str)],
    respect: bool,
    wait: Duration,
) -> (Vec<Duration>, Vec<Duration>, Calls) {
    let limiter = RateLimiter::builder(TokenBucket::new(100, 100.0).unwrap())
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let (inner, calls) = upstream(status, headers);
    let svc = ResilienceLayer::builder()
        .rate_limit(limiter, key_of)
        .classifier(HttpClassifier)
        .retry(
            RetryPolicy::builder()
                .max_attempts(1)
                .max_delay(5 * SEC)
                .jitter(Jitter::None)
                .build()
                .unwrap(),
        )
        .limiter_wait(wait)
        .respect_pushback(respect)
        .clone_request(|r: &Request<()>| Some(request(&key_of(r))))
        .build()
        .unwrap()
        .layer(inner);
    let first = svc.clone().oneshot(request("a")).await.unwrap();
    assert_eq!(first.status(), status);
    let tasks: Vec<_> = ["a", "a", "a", "a", "b"]
        .into_iter()
        .map(|k| {
            let svc = svc.clone();
            tokio::spawn(async move { svc.oneshot(request(k)).await.map(|r| r.status()) })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    let calls_now = calls.lock().unwrap().clone();
    let times = |key: &str| -> Vec<Duration> {
        calls_now
            .iter()
            .skip(1)
            .filter(|(k, _)| k == key)
            .map(|&(_, t)| t)
            .collect()
    };
    if wait > Duration::ZERO {
        assert!(
            answers
                .iter()
                .all(|a| a.as_ref().is_ok_and(StatusCode::is_success))
        );
    }
    (times("a"), times("b"), calls)
}

#[tokio::test(start_paused = true)]
async fn one_429_with_retry_after_holds_every_caller_of_its_key() {
    let (a, b, _) = scenario(&[("retry-after", "2")], true, 10 * SEC).await;
    assert_eq!(a.len(), 4);
    assert!(a.iter().all(|&t| t >= 2 * SEC), "held for 2 s: {a:?}");
    assert!(
        a.iter().all(|&t| t < 2 * SEC + 50 * MS),
        "then went at the key's rate: {a:?}"
    );
    assert_eq!(b, [Duration::ZERO], "other keys are not held");
}

#[tokio::test(start_paused = true)]
async fn callers_that_do_not_wait_are_refused_with_the_time_left() {
    let limiter = RateLimiter::builder(TokenBucket::new(100, 100.0).unwrap())
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let (inner, _) = upstream(StatusCode::TOO_MANY_REQUESTS, &[("retry-after", "2")]);
    let svc = ResilienceLayer::builder()
        .rate_limit(limiter, key_of)
        .classifier(HttpClassifier)
        .build()
        .unwrap()
        .layer(inner);
    let _ = svc.clone().oneshot(request("a")).await.unwrap();
    tokio::time::sleep(500 * MS).await;
    let error = svc.clone().oneshot(request("a")).await.unwrap_err();
    let denied = error.downcast_ref::<RateLimited>().unwrap();
    assert_eq!(denied.retry_after, 1_500 * MS);
}

#[tokio::test(start_paused = true)]
async fn the_http_date_form_holds_until_that_date() {
    let (a, _, _) = scenario(
        &[
            ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ("retry-after", "Sun, 06 Nov 1994 08:49:40 GMT"),
        ],
        true,
        10 * SEC,
    )
    .await;
    assert!(
        a.iter().all(|&t| t >= 3 * SEC && t < 3 * SEC + 50 * MS),
        "{a:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn hostile_retry_after_values_never_hold_long() {
    for garbage in ["-1", "soon", "1.5", "Sun, 06 Nov 1994 25:00:00 GMT", ""] {
        let headers: &'static [(&str, &str)] = Box::leak(Box::new([("retry-after", garbage)]));
        let (a, _, _) = scenario(headers, true, 10 * SEC).await;
        assert!(
            a.iter().all(|&t| t < 50 * MS),
            "{garbage:?} held the key: {a:?}"
        );
    }
    // a huge value holds at most the retry policy's max_delay (5 s here)
    let (a, _, _) = scenario(&[("retry-after", "99999999999")], true, 10 * SEC).await;
    assert!(
        a.iter().all(|&t| t >= 5 * SEC && t < 5 * SEC + 50 * MS),
        "{a:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn pushback_can_be_turned_off() {
    let (a, _, _) = scenario(&[("retry-after", "2")], false, 10 * SEC).await;
    assert!(a.iter().all(|&t| t < 50 * MS), "{a:?}");
}

/// The current draft's `RateLimit` field on a *successful* answer: the quota is spent, so the
/// client waits before it is refused.
#[tokio::test(start_paused = true)]
async fn a_200_with_ratelimit_r0_holds_the_key_for_its_t() {
    let spent = &[("ratelimit", "\"default\";r=0;t=2")];
    let (a, b, _) = scenario_after(StatusCode::OK, spent, true, 10 * SEC).await;
    assert_eq!(a.len(), 4);
    assert!(
        a.iter().all(|&t| t >= 2 * SEC && t < 2 * SEC + 50 * MS),
        "held for 2 s: {a:?}"
    );
    assert_eq!(b, [Duration::ZERO], "other keys are not held");
    // several policies: the longest wait of the spent ones; Retry-After takes precedence
    let two = &[(
        "ratelimit",
        "\"min\";r=0;t=1, \"hour\";r=0;t=3, \"day\";r=9;t=60",
    )];
    let (a, _, _) = scenario_after(StatusCode::OK, two, true, 10 * SEC).await;
    assert!(
        a.iter().all(|&t| t >= 3 * SEC && t < 3 * SEC + 50 * MS),
        "{a:?}"
    );
    let both = &[("ratelimit", "\"default\";r=0;t=5"), ("retry-after", "1")];
    let (a, _, _) = scenario_after(StatusCode::OK, both, true, 10 * SEC).await;
    assert!(a.iter().all(|&t| t >= SEC && t < SEC + 50 * MS), "{a:?}");
}

#[tokio::test(start_paused = true)]
async fn malformed_or_unspent_ratelimit_fields_hold_nothing() {
    for value in [
        "\"default\";r=3;t=2",
        "\"default\";t=2",
        "\"default\";r=0;t=-2",
        "\"default\";r=0;t=2.5",
        "(\"a\" \"b\");r=0;t=2",
        "\"default\";r=0;t=2,",
        "limit=3, remaining=0, reset=2",
        "",
    ] {
        let headers: &'static [(&str, &str)] = Box::leak(Box::new([("ratelimit", value)]));
        let (a, _, _) = scenario_after(StatusCode::OK, headers, true, 10 * SEC).await;
        assert!(
            a.iter().all(|&t| t < 50 * MS),
            "{value:?} held the key: {a:?}"
        );
    }
}
