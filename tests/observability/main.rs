//! Listeners, shadow mode and tracing events.

#![cfg(feature = "tower")]
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use limitpal::tower::ResilienceLayer;
use limitpal::{
    CircuitBreaker, CircuitOpen, CircuitState, Clock, Jitter, ManualClock, RateLimited,
    RateLimiter, ResilientExecutor, RetryBudget, RetryPolicy, TokenBucket,
};
use tower::{Layer, ServiceExt, service_fn};

const SEC: Duration = Duration::from_secs(1);

fn policy(attempts: u32) -> RetryPolicy {
    RetryPolicy::builder()
        .max_attempts(attempts)
        .base_delay(SEC)
        .jitter(Jitter::None)
        .build()
        .unwrap()
}

#[test]
fn a_shadow_limiter_reports_every_denial_and_denies_nothing() {
    let _ = events();
    let clock = ManualClock::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let limiter = RateLimiter::builder(TokenBucket::new(1, 1.0).unwrap())
        .clock(clock.clone())
        .shadow(true)
        .on_rejection(move |denied: &RateLimited| log.lock().unwrap().push(denied.retry_after))
        .build()
        .unwrap();
    for _ in 0..5 {
        assert_eq!(limiter.check(&"k"), Ok(()));
    }
    assert_eq!(
        *seen.lock().unwrap(),
        vec![SEC; 4],
        "the four it would have denied"
    );
    assert_eq!(limiter.acquire(&"k", Duration::from_secs(60)), Ok(()));
    assert_eq!(clock.now(), Duration::ZERO, "shadow mode never waits");
}

#[test]
fn an_enforcing_limiter_reports_its_denials() {
    let _ = events();
    let denials = Arc::new(AtomicU32::new(0));
    let count = Arc::clone(&denials);
    let limiter = RateLimiter::builder(TokenBucket::new(2, 1.0).unwrap())
        .clock(ManualClock::new())
        .on_rejection(move |_| {
            count.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    let admitted = (0..10).filter(|_| limiter.check(&()).is_ok()).count();
    assert_eq!((admitted, denials.load(Ordering::SeqCst)), (2, 8));
}

/// `on_key_rejection` names the key of every denial (`check`, `check_n`, `reserve`, and a request
/// through a layer keyed by it), after the keyless `on_rejection`; admitted keys never appear.
#[tokio::test(start_paused = true)]
async fn a_key_rejection_listener_names_the_denied_keys_and_only_those() {
    use limitpal::tower::{RateLimitLayer, TokioClock};
    let keyed = Arc::new(Mutex::new(Vec::new()));
    let keyless = Arc::new(AtomicU32::new(0));
    let (log, count) = (Arc::clone(&keyed), Arc::clone(&keyless));
    let limiter = RateLimiter::<String, _, _, _>::builder(TokenBucket::new(1, 1.0).unwrap())
        .clock(TokioClock::new())
        .on_rejection(move |_| {
            count.fetch_add(1, Ordering::SeqCst);
        })
        .on_key_rejection(move |user: &String, denied: &RateLimited| {
            log.lock().unwrap().push((user.clone(), denied.retry_after));
        })
        .build()
        .unwrap();
    assert!(limiter.check("alice").is_ok());
    assert!(limiter.check("alice").is_err());
    assert!(limiter.check_n("bob", 1).is_ok());
    assert!(limiter.check_n("bob", 1).is_err());
    assert!(limiter.check("carol").is_ok());
    assert!(limiter.reserve("carol", Duration::ZERO).is_err());
    let svc = RateLimitLayer::new(limiter.clone(), |req: &String| req.clone()).layer(service_fn(
        |req: String| async move { Ok::<_, std::convert::Infallible>(req) },
    ));
    assert!(svc.clone().oneshot("dave".to_owned()).await.is_ok());
    assert!(svc.oneshot("dave".to_owned()).await.is_err());
    let names: Vec<String> = keyed
        .lock()
        .unwrap()
        .iter()
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(names, ["alice", "bob", "carol", "dave"]);
    assert!(
        keyed
            .lock()
            .unwrap()
            .iter()
            .all(|(_, wait)| *wait > Duration::ZERO)
    );
    assert_eq!(
        keyless.load(Ordering::SeqCst),
        4,
        "both listeners hear each denial"
    );
}

#[test]
fn a_shadow_breaker_reports_rejections_lets_calls_through_and_learns_nothing_from_them() {
    let _ = events();
    let clock = ManualClock::new();
    let rejections = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&rejections);
    let breaker = CircuitBreaker::builder()
        .failure_threshold(1)
        .recovery_timeout(10 * SEC)
        .shadow(true)
        .on_rejection(move |open: &CircuitOpen| log.lock().unwrap().push(open.retry_after))
        .clock(clock.clone())
        .build()
        .unwrap();
    breaker.try_acquire().unwrap().failure();
    assert_eq!(
        breaker.state(),
        CircuitState::Open,
        "it still counts and transitions"
    );
    clock.advance(SEC);
    for _ in 0..3 {
        breaker
            .try_acquire()
            .expect("shadow: let through")
            .failure();
    }
    assert_eq!(*rejections.lock().unwrap(), vec![9 * SEC; 3]);
    clock.advance(9 * SEC);
    assert_eq!(
        breaker.state(),
        CircuitState::HalfOpen,
        "the shadow calls did not extend Open"
    );
}

#[test]
fn on_retry_sees_each_retry_with_its_wait() {
    let _ = events();
    let clock = ManualClock::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let exec = ResilientExecutor::builder()
        .retry(policy(3))
        .on_retry(move |attempt, delay| log.lock().unwrap().push((attempt, delay)))
        .clock(clock)
        .build()
        .unwrap();
    let _ = exec.run(&(), || Err::<(), _>("down"));
    assert_eq!(*seen.lock().unwrap(), vec![(2, SEC), (3, 2 * SEC)]);
}

#[tokio::test(start_paused = true)]
async fn on_retry_through_the_layer() {
    let _ = events();
    let retries = Arc::new(AtomicU32::new(0));
    let count = Arc::clone(&retries);
    let layer = ResilienceLayer::builder()
        .retry(policy(4))
        .on_retry(move |_, _| {
            count.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(|_: ()| async {
        Err::<(), _>(std::io::Error::other("x"))
    }));
    assert!(svc.oneshot(()).await.is_err());
    assert_eq!(retries.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn on_retry_through_the_retry_layer() {
    let _ = events();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let layer = limitpal::tower::RetryLayer::new(policy(3))
        .name("upstream")
        .on_retry(move |attempt, delay| log.lock().unwrap().push((attempt, delay)));
    let svc = layer.layer(service_fn(|_: ()| async {
        Err::<(), _>(std::io::Error::other("x"))
    }));
    assert!(svc.oneshot(()).await.is_err());
    assert_eq!(*seen.lock().unwrap(), vec![(2, SEC), (3, 2 * SEC)]);
}

/// Records (target, message) of every event.
#[derive(Default, Clone)]
struct Events(Arc<Mutex<Vec<(String, String)>>>);

struct Message<'a>(&'a mut String);

impl tracing::field::Visit for Message<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            *self.0 = format!("{value:?}");
        }
    }
}

impl tracing::Subscriber for Events {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut message = String::new();
        event.record(&mut Message(&mut message));
        self.0
            .lock()
            .unwrap()
            .push((event.metadata().target().to_owned(), message));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// The process-wide collector, installed before any test of this binary runs limitpal code
/// (each test calls this first; `OnceLock` makes the others wait for it). A subscriber
/// scoped to one test is not enough: a callsite first reached by another test's thread while
/// it is being installed can keep a stale "never" interest, and its events are lost.
fn events() -> &'static Events {
    static EVENTS: std::sync::OnceLock<Events> = std::sync::OnceLock::new();
    EVENTS.get_or_init(|| {
        let events = Events::default();
        tracing::subscriber::set_global_default(events.clone()).unwrap();
        events
    })
}

#[test]
fn tracing_events_have_stable_targets_and_messages() {
    let events = events();
    {
        let clock = ManualClock::new();
        let limiter = RateLimiter::builder(TokenBucket::new(1, 1.0).unwrap())
            .clock(clock.clone())
            .build()
            .unwrap();
        let _ = limiter.check(&());
        let _ = limiter.check(&());
        let breaker = CircuitBreaker::builder()
            .failure_threshold(1)
            .clock(clock.clone())
            .build()
            .unwrap();
        let guarded = ResilientExecutor::builder()
            .breaker(breaker)
            .clock(clock.clone())
            .build()
            .unwrap();
        let _ = guarded.run(&(), || Err::<(), _>("down")); // opens it
        let _ = guarded.run(&(), || Err::<(), _>("down")); // rejected
        let retrying = ResilientExecutor::builder()
            .retry(policy(2))
            .clock(clock.clone())
            .build()
            .unwrap();
        let _ = retrying.run(&(), || Err::<(), _>("down"));
        let budgeted = ResilientExecutor::builder()
            .retry(policy(2))
            .budget(RetryBudget::new(SEC * 10, 0, 0.0).unwrap())
            .clock(clock)
            .build()
            .unwrap();
        let _ = budgeted.run(&(), || Err::<(), _>("down"));
        let falling_back = ResilientExecutor::builder()
            .fallback(|e: &limitpal::Error<&str>| {
                matches!(e, limitpal::Error::Failed(_)).then_some(0)
            })
            .clock(ManualClock::new())
            .build()
            .unwrap();
        assert_eq!(falling_back.run(&(), || Err::<u32, _>("down")), Ok(0));
    }
    // other tests add their events too: check that each expected one is there
    let events = events.0.lock().unwrap().clone();
    let has = |target: &str, message: &str| events.iter().any(|(t, m)| t == target && m == message);
    assert!(has("limitpal::limiter", "rate limited"), "{events:?}");
    assert!(
        has("limitpal::breaker", "circuit breaker state changed"),
        "{events:?}"
    );
    assert!(
        has("limitpal::breaker", "circuit open: call rejected"),
        "{events:?}"
    );
    assert!(has("limitpal::retry", "retrying"), "{events:?}");
    assert!(
        has("limitpal::retry", "retry budget exhausted: not retrying"),
        "{events:?}"
    );
    assert!(
        has("limitpal::fallback", "fallback answered for the run"),
        "{events:?}"
    );
}

/// A call through the layer that finds every slot taken and waits in the bulkhead's queue is
/// not a refusal: no "bulkhead full" event. A call refused with no room to wait is reported
/// exactly once.
#[tokio::test(start_paused = true)]
async fn a_bulkhead_refusal_through_the_layer_is_reported_once_and_a_queued_call_never() {
    let events = events();
    let refusals = || {
        events
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(target, _)| target == "limitpal::bulkhead")
            .count()
    };
    let before = refusals();
    let queued = limitpal::Bulkhead::builder(1)
        .queue(1, 10 * SEC)
        .build()
        .unwrap();
    let layer = ResilienceLayer::builder()
        .bulkhead(queued.clone())
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(
        |n: u32| async move { Ok::<_, std::io::Error>(n) },
    ));
    let held = queued.try_acquire().unwrap();
    let waiting = tokio::spawn(svc.oneshot(7));
    tokio::time::sleep(SEC).await;
    assert_eq!(queued.waiting(), 1, "the call waits in the queue");
    drop(held);
    assert_eq!(waiting.await.unwrap().unwrap(), 7, "and gets the slot");
    assert_eq!(refusals(), before, "waiting is not a refusal");

    let no_room = limitpal::Bulkhead::new(1).unwrap();
    let layer = ResilienceLayer::builder()
        .bulkhead(no_room.clone())
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(
        |n: u32| async move { Ok::<_, std::io::Error>(n) },
    ));
    let _held = no_room.try_acquire().unwrap();
    let refused = svc.oneshot(7).await.unwrap_err();
    assert!(refused.is::<limitpal::BulkheadFull>(), "{refused}");
    assert_eq!(refusals(), before + 1, "one refusal, reported once");
}
