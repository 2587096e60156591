//! limitpal's pipeline around reqwest: a [`reqwest_middleware::Middleware`] that waits for
//! quota, fails fast on an open breaker, retries with backoff and a budget, cuts attempts
//! with a timeout and follows the server's pushback (`Retry-After`, `RateLimit: ..;r=0;t=N`),
//! each host keyed on its own.
//!
//! ```no_run
//! use limitpal_core::{RateLimiter, RetryPolicy, TokenBucket};
//! use limitpal_reqwest::{HostKey, Resilience};
//! use std::time::Duration;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let per_host = RateLimiter::<HostKey>::builder(TokenBucket::new(5, 20.0)?).build()?;
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(
//!         Resilience::builder()
//!             .limiter(per_host) // 20/s, burst 5, per host
//!             .limiter_wait(Duration::from_secs(30)) // wait for quota, don't fail
//!             .retry(RetryPolicy::builder().max_attempts(5).build()?)
//!             .build()?,
//!     )
//!     .build();
//! let body = client.get("http://127.0.0.1:8080/items/1").send().await?.text().await?;
//! # drop(body); Ok(()) }
//! ```
//!
//! What is retried: 5xx and 408 answers, 429 (after its `Retry-After`, without counting
//! against the breaker), and transport errors (connect, timeout, a request that could not be
//! sent); not builder or redirect errors, and not errors from other middleware. The answer of
//! the last attempt is returned as is (a `503` stays a `503`). A request whose body is a
//! stream cannot be cloned, so it is sent once: if that attempt fails in a way a retry could
//! have fixed, the error is a [`NotRetried`] that says so and carries reqwest's error.
//!
//! Our own refusals come back as [`reqwest_middleware::Error::Middleware`] holding
//! [`RateLimited`](limitpal_core::RateLimited), [`CircuitOpen`](limitpal_core::CircuitOpen),
//! [`BulkheadFull`](limitpal_core::BulkheadFull) or [`TimedOut`];
//! downcast to tell them apart.

#![forbid(unsafe_code)]

use std::hash::BuildHasher;
use std::sync::Arc;

use http::Extensions;
use limitpal_core::{
    BuildTarget, Classify, Clock, ExecutorParts, Outcome, ResilientExecutorBuilder, Verdict,
};
use limitpal_tower::http::status_verdict_with;
use limitpal_tower::{AsyncResilientExecutor, AsyncTarget, TimedOut, TokioClock};
use reqwest::{Request, Response, Url};
use reqwest_middleware::{Error, Next};

/// The key of a request's host: its scheme, host and port (the URL's origin), hashed.
///
/// Two origins share a budget only if their 64-bit hashes collide (about one chance in
/// 10^11 among a thousand hosts); computing it allocates nothing. The hash is foldhash with
/// a fixed seed, so a key is the same in every process of one build (hosts are chosen by
/// the client, not by its peers: a collision merges two budgets, and the keyed store under
/// the limiter defends itself against colliding keys anyway).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostKey(u64);

/// `HostKey`'s hasher: fixed, so keys agree between processes.
const HOST_HASH: foldhash::fast::FixedState =
    foldhash::fast::FixedState::with_seed(0x6c69_6d69_7470_616c);

impl HostKey {
    /// The key of `url`'s origin.
    #[must_use]
    pub fn of(url: &Url) -> Self {
        Self(HOST_HASH.hash_one((
            url.scheme(),
            url.host_str().unwrap_or(""),
            url.port_or_known_default(),
        )))
    }
}

/// Classifies reqwest answers with [`HttpClassifier`](limitpal_tower::http::HttpClassifier)'s
/// rules, and reqwest's errors: transport failures are retryable, builder and redirect
/// errors and other middleware's errors are not.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReqwestClassifier;

impl Classify<Response, Error> for ReqwestClassifier {
    fn classify(&self, result: Result<&Response, &Error>) -> Outcome {
        self.verdict(result).outcome()
    }

    fn verdict(&self, result: Result<&Response, &Error>) -> Verdict {
        self.verdict_with(result, true)
    }

    fn verdict_with(&self, result: Result<&Response, &Error>, pushback: bool) -> Verdict {
        match result {
            Ok(response) => status_verdict_with(response.status(), response.headers(), pushback),
            Err(Error::Reqwest(e)) if e.is_builder() || e.is_redirect() => {
                Verdict::from(Outcome::FATAL)
            }
            Err(Error::Reqwest(_)) => Verdict::from(Outcome::RETRYABLE),
            Err(_) => Verdict::from(Outcome::FATAL),
        }
    }
}

/// The request was sent once and failed in a way a retry could have fixed, but its body is
/// a stream that cannot be cloned, so it was not sent again.
#[derive(Debug)]
pub struct NotRetried {
    /// What the one attempt returned.
    pub source: Error,
}

impl std::fmt::Display for NotRetried {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "not retried: the request body is a stream and cannot be cloned ({})",
            self.source
        )
    }
}

impl std::error::Error for NotRetried {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

type KeyFn<K> = Arc<dyn Fn(&Request) -> K + Send + Sync>;

/// limitpal's pipeline as reqwest middleware; see the [crate docs](crate).
pub struct Resilience<K = HostKey> {
    executor: AsyncResilientExecutor<K, ReqwestClassifier>,
    key: KeyFn<K>,
}

impl<K> Clone for Resilience<K> {
    fn clone(&self) -> Self {
        Self {
            executor: self.executor.clone(),
            key: Arc::clone(&self.key),
        }
    }
}

impl<K> std::fmt::Debug for Resilience<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resilience")
            .field("executor", &self.executor)
            .finish_non_exhaustive()
    }
}

/// Builds [`Resilience`] keyed per host; see [`Resilience::builder`].
#[derive(Debug, Clone, Copy)]
pub struct ReqwestTarget;

impl BuildTarget<HostKey, ReqwestClassifier> for ReqwestTarget {
    type Output = Resilience<HostKey>;

    fn default_clock() -> Arc<dyn Clock> {
        Arc::new(TokioClock::new())
    }

    fn build(parts: ExecutorParts<HostKey, ReqwestClassifier>) -> Self::Output {
        Resilience::new(AsyncTarget::build(parts), |req: &Request| {
            HostKey::of(req.url())
        })
    }
}

impl Resilience<HostKey> {
    /// The pipeline's builder (the executors' builder: `.limiter`, `.limiter_wait`,
    /// `.breaker`, `.bulkhead`, `.retry`, `.budget`, `.attempt_timeout`, `.deadline`,
    /// `.respect_pushback`, …), keyed per host, classifying with [`ReqwestClassifier`].
    #[must_use]
    pub fn builder() -> ResilientExecutorBuilder<HostKey, ReqwestClassifier, ReqwestTarget> {
        ResilientExecutorBuilder::<HostKey, limitpal_core::DefaultClassifier, ReqwestTarget>::new()
            .classifier(ReqwestClassifier)
    }
}

impl<K> Resilience<K> {
    /// Middleware around an executor of your own, keyed by `key` (an API key header, a
    /// tenant, …) instead of the host.
    pub fn new(
        executor: AsyncResilientExecutor<K, ReqwestClassifier>,
        key: impl Fn(&Request) -> K + Send + Sync + 'static,
    ) -> Self {
        Self {
            executor,
            key: Arc::new(key),
        }
    }
}

fn into_result(result: Result<Response, limitpal_core::Error<Error>>) -> Result<Response, Error> {
    use limitpal_core::Error as Pipeline;
    match result {
        Ok(response) => Ok(response),
        Err(Pipeline::Failed(e) | Pipeline::RetryExhausted { last: e, .. }) => Err(e),
        Err(Pipeline::RateLimited(e)) => Err(Error::middleware(e)),
        Err(Pipeline::CircuitOpen(e)) => Err(Error::middleware(e)),
        Err(Pipeline::BulkheadFull(e)) => Err(Error::middleware(e)),
        Err(Pipeline::TimedOut { attempts }) => Err(Error::middleware(TimedOut::new(attempts))),
        Err(_) => Err(Error::middleware(TimedOut::new(0))),
    }
}

#[async_trait::async_trait]
impl<K: Send + Sync + 'static> reqwest_middleware::Middleware for Resilience<K> {
    async fn handle(
        &self,
        req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> Result<Response, Error> {
        // the key is computed only when a limiter or a per-key stage uses it
        let key = self.executor.uses_key().then(|| (self.key)(&req));
        let retries = self.executor.retries();
        if !retries || req.body().is_some_and(|body| body.as_bytes().is_none()) {
            // one attempt: no retry policy, or a streaming body that cannot be sent again
            let result = self
                .executor
                .run_once_with_key(key.as_ref(), next.run(req, extensions))
                .await;
            return match into_result(result) {
                // (a streaming body) say so if a retry could have helped
                Err(e) if retries && ReqwestClassifier.verdict(Err(&e)).retry => {
                    Err(Error::middleware(NotRetried { source: e }))
                }
                other => other,
            };
        }
        // every attempt sends a copy of the request (as reqwest-retry's do: reqwest consumes
        // what it sends) and sees the caller's extensions (a copy: free when there are none)
        let extensions: &Extensions = extensions;
        let req = &req;
        let result = self
            .executor
            .run_with_key(key.as_ref(), || {
                let next = next.clone();
                let mut extensions = extensions.clone();
                // the copy is made when the attempt starts, straight into `next.run`: the
                // attempt's future holds a reference, not a 264-byte request to move around
                async move {
                    match req.try_clone() {
                        Some(copy) => next.run(copy, &mut extensions).await,
                        // cannot happen: a body held in memory always clones
                        None => Err(Error::middleware(TimedOut::new(0))),
                    }
                }
            })
            .await;
        into_result(result)
    }
}
