//! Classifiers for HTTP and gRPC responses, and the replay rule for HTTP requests.

use std::time::Duration;

use http::{HeaderMap, Method, Request, Response, StatusCode};

use super::pushback;
use limitpal_core::{Classify, Outcome, Verdict};

/// Classifies HTTP responses for the breaker and retries:
///
/// | response | breaker | retry |
/// |---|---|---|
/// | 5xx, 408 | failure | yes |
/// | 429 | not recorded (the callee protects itself) | yes, after its `Retry-After` |
/// | anything else | success | no |
/// | a transport `Err` | failure | yes |
///
/// A `503` with `Retry-After` is retried no sooner than it asks (either form of the field).
/// Any response's wait, [`pushback`](super::pushback) (`Retry-After`, or a current-draft
/// `RateLimit` item with `r=0;t=N`), is the verdict's `retry_after`: with `respect_pushback`
/// the pipeline holds the key that long, so the next request waits for the quota instead of
/// being refused. Only idempotent requests should be
/// retried: pair it with [`replay_idempotent`] as the layer's `clone_request`, which refuses
/// to replay `POST` and `PATCH`.
///
/// ```
/// use http::{Response, StatusCode};
/// use limitpal_core::{Classify, Outcome};
/// use limitpal_tower::http::HttpClassifier;
///
/// let busy = Response::builder().status(429).header("retry-after", "3").body(()).unwrap();
/// let verdict = Classify::<_, std::io::Error>::verdict(&HttpClassifier, Ok(&busy));
/// assert_eq!(verdict.breaker, Outcome::Ignore);
/// assert_eq!(verdict.retry_after, Some(std::time::Duration::from_secs(3)));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpClassifier;

impl<B, E> Classify<Response<B>, E> for HttpClassifier {
    fn classify(&self, result: Result<&Response<B>, &E>) -> Outcome {
        self.verdict(result).outcome()
    }

    fn verdict(&self, result: Result<&Response<B>, &E>) -> Verdict {
        self.verdict_with(result, true)
    }

    fn verdict_with(&self, result: Result<&Response<B>, &E>, pushback: bool) -> Verdict {
        let Ok(response) = result else {
            return Verdict::from(Outcome::RETRYABLE);
        };
        status_verdict_with(response.status(), response.headers(), pushback)
    }
}

/// What an HTTP answer means, from its status and headers alone: the rules of
/// [`HttpClassifier`], for clients whose response type is not `http::Response` (reqwest).
///
/// ```
/// use http::{HeaderMap, StatusCode};
/// use limitpal_tower::http::status_verdict;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("ratelimit", r#""default";r=0;t=2"#.parse()?);
/// let verdict = status_verdict(StatusCode::OK, &headers);
/// assert!(!verdict.retry);
/// assert_eq!(verdict.retry_after, Some(std::time::Duration::from_secs(2)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use]
pub fn status_verdict(status: StatusCode, headers: &HeaderMap) -> Verdict {
    status_verdict_with(status, headers, true)
}

/// [`status_verdict`], reading the headers of an answer that is not retried (a `2xx`, a
/// `404`) only when `wanted` says its wait will be used as pushback; see
/// [`Classify::verdict_with`](limitpal_core::Classify::verdict_with).
#[must_use]
pub fn status_verdict_with(status: StatusCode, headers: &HeaderMap, wanted: bool) -> Verdict {
    let retried = status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT;
    let after = if retried || wanted {
        pushback(headers)
    } else {
        None
    };
    if status == StatusCode::TOO_MANY_REQUESTS {
        Verdict {
            breaker: Outcome::Ignore,
            retry: true,
            retry_after: after,
        }
    } else if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
        Verdict::from(Outcome::Failure {
            retryable: true,
            retry_after: after,
        })
    } else {
        // a 2xx that spent the last of a quota (`RateLimit: "default";r=0;t=2`): not
        // retried, but its wait is pushback for the key
        Verdict {
            breaker: Outcome::Success,
            retry: false,
            retry_after: after,
        }
    }
}

/// Classifies gRPC responses by their `grpc-status` header (trailers-only responses, which is
/// how servers and proxies report errors before any message): `UNAVAILABLE` (14) and
/// `DEADLINE_EXCEEDED` (4) are retryable failures, `RESOURCE_EXHAUSTED` (8) is retryable but
/// not a breaker failure (like HTTP 429), other non-zero codes are failures that retrying
/// will not fix, and a transport `Err` is a retryable failure.
///
/// ```
/// use http::Response;
/// use limitpal_core::{Classify, Outcome};
/// use limitpal_tower::http::GrpcClassifier;
///
/// let unavailable = Response::builder().header("grpc-status", "14").body(()).unwrap();
/// let verdict = Classify::<_, std::io::Error>::verdict(&GrpcClassifier, Ok(&unavailable));
/// assert_eq!(verdict.breaker, Outcome::RETRYABLE);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcClassifier;

impl<B, E> Classify<Response<B>, E> for GrpcClassifier {
    fn classify(&self, result: Result<&Response<B>, &E>) -> Outcome {
        let verdict = self.verdict(result);
        match verdict.breaker {
            Outcome::Ignore if verdict.retry => Outcome::RETRYABLE,
            other => other,
        }
    }

    fn verdict(&self, result: Result<&Response<B>, &E>) -> Verdict {
        let Ok(response) = result else {
            return Verdict::from(Outcome::RETRYABLE);
        };
        let code = response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u16>().ok());
        match code {
            None | Some(0) => Verdict::from(Outcome::Success),
            Some(4) => Verdict::from(Outcome::RETRYABLE),
            Some(14) => Verdict::from(Outcome::Failure {
                retryable: true,
                retry_after: grpc_pushback(response.headers()),
            }),
            Some(8) => Verdict {
                breaker: Outcome::Ignore,
                retry: true,
                retry_after: grpc_pushback(response.headers()),
            },
            Some(_) => Verdict::from(Outcome::FATAL),
        }
    }
}

/// gRPC's server pushback (`grpc-retry-pushback-ms`, gRPC proposal A6): a non-negative
/// integer of milliseconds; anything else is ignored.
fn grpc_pushback(headers: &HeaderMap) -> Option<Duration> {
    let ms = headers.get("grpc-retry-pushback-ms")?.to_str().ok()?.trim();
    if ms.is_empty() || !ms.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ms.parse().ok().map(Duration::from_millis)
}

/// The replay rule for HTTP requests: a copy of an idempotent request (`GET`, `HEAD`,
/// `OPTIONS`, `TRACE`, `PUT`, `DELETE`) with a cloneable body, `None` for `POST`, `PATCH` and
/// other methods, which are never retried. Extensions are not copied.
///
/// ```
/// use http::Request;
/// use limitpal_tower::http::replay_idempotent;
///
/// assert!(replay_idempotent(&Request::get("/a").body(()).unwrap()).is_some());
/// assert!(replay_idempotent(&Request::post("/a").body(()).unwrap()).is_none());
/// ```
#[must_use]
pub fn replay_idempotent<B: Clone>(req: &Request<B>) -> Option<Request<B>> {
    if !idempotent(req) {
        return None;
    }
    replay_always(req)
}

/// Whether the request's method is idempotent (`GET`, `HEAD`, `OPTIONS`, `TRACE`, `PUT`,
/// `DELETE`): sending it twice does no more than once. The `hedge_if` rule for HTTP.
///
/// ```
/// use http::Request;
/// use limitpal_tower::http::idempotent;
///
/// assert!(idempotent(&Request::get("/a").body(()).unwrap()));
/// assert!(!idempotent(&Request::post("/a").body(()).unwrap()));
/// ```
#[must_use]
pub fn idempotent<B>(req: &Request<B>) -> bool {
    matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// A copy of any request with a cloneable body, whatever its method: for calls you know to be
/// idempotent although their method is not (gRPC unary calls are all `POST`). Extensions are
/// not copied.
///
/// ```
/// use http::Request;
/// use limitpal_tower::http::replay_always;
///
/// let call = Request::post("/grpc.health.v1.Health/Check").body(vec![0_u8; 5]).unwrap();
/// assert_eq!(replay_always(&call).unwrap().body(), call.body());
/// ```
#[must_use]
#[allow(clippy::unnecessary_wraps)] // the shape `clone_request` takes
pub fn replay_always<B: Clone>(req: &Request<B>) -> Option<Request<B>> {
    let mut copy = Request::new(req.body().clone());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `2xx`'s wait is read only when it will be held; a retried answer's always.
    #[test]
    fn an_unwanted_pushback_leaves_a_2xx_unread_but_not_a_retried_answer() {
        let mut headers = HeaderMap::new();
        headers.insert("ratelimit", r#""default";r=0;t=2"#.parse().unwrap());
        headers.insert("retry-after", "3".parse().unwrap());
        let two = Some(Duration::from_secs(3));
        assert_eq!(
            status_verdict_with(StatusCode::OK, &headers, true).retry_after,
            two
        );
        assert_eq!(
            status_verdict_with(StatusCode::OK, &headers, false).retry_after,
            None
        );
        for status in [
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::SERVICE_UNAVAILABLE,
        ] {
            let verdict = status_verdict_with(status, &headers, false);
            assert!(verdict.retry);
            assert_eq!(verdict.retry_after, two, "{status}");
        }
        assert_eq!(
            status_verdict(StatusCode::OK, &headers),
            status_verdict_with(StatusCode::OK, &headers, true)
        );
    }

    fn status(code: u16) -> Response<()> {
        Response::builder().status(code).body(()).unwrap()
    }

    #[test]
    fn statuses() {
        let v = |code| Classify::<_, ()>::verdict(&HttpClassifier, Ok(&status(code)));
        assert_eq!(v(200).breaker, Outcome::Success);
        assert!(!v(404).retry);
        assert!(v(503).retry && v(408).retry);
        assert!(matches!(v(500).breaker, Outcome::Failure { .. }));
        assert_eq!(v(429).breaker, Outcome::Ignore);
        assert!(v(429).retry);
        let err = Classify::<Response<()>, ()>::verdict(&HttpClassifier, Err(&()));
        assert!(err.retry);
    }
}
