//! The generic `RateLimitLayer`: errors, shared state, `poll_ready`, local and remote limiters.

#![cfg(feature = "tower")]
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use limitpal::tower::{KeyMissing, MissingKey, RateLimitLayer, TokioClock};
use limitpal::{AsyncLimiter, ManualClock, RateLimited, RateLimiter, TokenBucket};
use tower::{BoxError, Layer, Service, ServiceExt, service_fn};
use tower_test::mock;

fn frozen(capacity: u32) -> RateLimiter<u64, TokenBucket, ManualClock> {
    RateLimiter::builder(TokenBucket::new(capacity, 1.0).unwrap())
        .clock(ManualClock::new())
        .build()
        .unwrap()
}

#[tokio::test]
async fn denied_requests_never_reach_the_inner_service() {
    let (inner, mut handle) = mock::pair::<u64, &'static str>();
    let mut svc = RateLimitLayer::new(frozen(1), |req: &u64| *req).layer(inner);
    handle.allow(10);
    let first = svc.ready().await.unwrap().call(1);
    let (req, respond) = handle.next_request().await.unwrap();
    assert_eq!(req, 1);
    respond.send_response("ok");
    assert_eq!(first.await.unwrap(), "ok");

    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<RateLimited>(),
        Some(&RateLimited::new(Duration::from_secs(1)))
    );
    // the next request the mock sees is key 2's: key 1's denial never reached it
    let second = svc.ready().await.unwrap().call(2);
    let (req, respond) = handle.next_request().await.unwrap();
    assert_eq!(req, 2);
    respond.send_response("ok");
    assert_eq!(second.await.unwrap(), "ok");
}

#[tokio::test]
async fn poll_ready_only_forwards() {
    let (inner, mut handle) = mock::pair::<u64, &'static str>();
    let mut svc = RateLimitLayer::new(frozen(1), |req: &u64| *req).layer(inner);
    handle.allow(0);
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    assert!(
        svc.poll_ready(&mut cx).is_pending(),
        "not ready while the inner is not"
    );
    handle.allow(1);
    assert!(svc.poll_ready(&mut cx).is_ready());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clones_share_one_budget() {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let inner = service_fn(move |_: u64| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, std::io::Error>(()) }
    });
    let svc = RateLimitLayer::new(frozen(40), |_: &u64| 0_u64).layer(inner);
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move {
                let mut ok = 0_u32;
                for i in 0..100 {
                    ok += u32::from(svc.clone().oneshot(i).await.is_ok());
                }
                ok
            })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        admitted += t.await.unwrap();
    }
    assert_eq!(admitted, 40);
    assert_eq!(calls.load(Ordering::SeqCst), 40);
}

#[tokio::test]
async fn missing_keys_follow_the_policy() {
    let inner = service_fn(|_: Option<u64>| async { Ok::<_, BoxError>("ok") });
    // an extractor that can miss: wrap the closure's Option in a KeyExtractor
    #[derive(Clone)]
    struct MaybeKey;
    impl limitpal::tower::KeyExtractor<Option<u64>> for MaybeKey {
        type Key = u64;
        fn extract(&self, req: &Option<u64>) -> Option<u64> {
            *req
        }
    }
    let reject = RateLimitLayer::new(frozen(1), MaybeKey).layer(inner);
    let err = reject.clone().oneshot(None).await.unwrap_err();
    assert!(err.is::<KeyMissing>());
    let allow = RateLimitLayer::new(frozen(1), MaybeKey)
        .missing_key(MissingKey::Allow)
        .layer(inner);
    assert!(allow.clone().oneshot(None).await.is_ok());
    assert!(allow.oneshot(None).await.is_ok());
    let fallback = RateLimitLayer::new(frozen(1), MaybeKey)
        .missing_key(MissingKey::Fallback(0))
        .layer(inner);
    assert!(fallback.clone().oneshot(None).await.is_ok());
    assert!(
        fallback
            .clone()
            .oneshot(None)
            .await
            .unwrap_err()
            .is::<RateLimited>()
    );
    assert!(fallback.oneshot(Some(1)).await.is_ok());
}

/// A limiter that answers later, as a remote one does: wraps a local limiter and delays
/// every answer by 10 ms of (paused) tokio time.
#[derive(Clone)]
struct Slow(RateLimiter<u64, TokenBucket, TokioClock>);

impl AsyncLimiter<u64> for Slow {
    type Future = Pin<Box<dyn Future<Output = Result<(), RateLimited>> + Send>>;

    fn check(&self, key: &u64) -> Self::Future {
        let answer = self.0.check(key);
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            answer
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_remote_limiter_is_awaited_before_the_call() {
    let limiter = RateLimiter::builder(TokenBucket::new(1, 1.0).unwrap())
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let inner = service_fn(move |_: u64| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, BoxError>("ok") }
    });
    let svc = RateLimitLayer::new(Slow(limiter), |req: &u64| *req).layer(inner);
    assert_eq!(svc.clone().oneshot(1).await.unwrap(), "ok");
    assert!(
        svc.clone()
            .oneshot(1)
            .await
            .unwrap_err()
            .is::<RateLimited>()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
