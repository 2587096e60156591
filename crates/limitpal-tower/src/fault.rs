//! [`FaultLayer`]: seeded, deterministic faults injected into a tower service, to test a
//! stack under latency, errors, hangs and lost answers (Polly's Simmy, Envoy's fault filter).
//!
//! The decisions come from a [`FaultPlan`]: the `n`-th call
//! gets the same fault every run with the same seed, and latency sleeps on tokio's timer, so
//! under paused time (`#[tokio::test(start_paused = true)]`) a run is exactly reproducible.
//!
//! - latency: the inner call is made at once but not polled until the delay has passed;
//! - error: the inner service is not called; the caller gets the injected error;
//! - timeout: the inner service is not called and the future never completes (put a
//!   timeout around it: the pipeline's `attempt_timeout` is what it tests);
//! - dropped response: the inner call runs to completion, then its answer is replaced by
//!   [`ResponseDropped`] (the request had its effect: what a lost reply does to retries);
//! - response: the inner service is not called; the caller gets the injected response (an
//!   HTTP `503`, say).
//!
//! ```
//! use limitpal_tower::fault::FaultLayer;
//! use std::time::Duration;
//! use tower::{BoxError, Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), BoxError> {
//! let faults = FaultLayer::builder()
//!     .seed(42)
//!     .latency(0.1, Duration::from_millis(200))
//!     .error(0.05, || "injected failure")
//!     .timeout(0.01)
//!     .build()?;
//! let svc = faults.layer(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
//! let mut failed = 0;
//! for n in 0..1000 {
//!     match tokio::time::timeout(Duration::from_secs(1), svc.clone().oneshot(n)).await {
//!         Ok(Ok(m)) => assert_eq!(m, n),
//!         Ok(Err(_)) | Err(_) => failed += 1, // an injected error, or a hang cut by the timeout
//!     }
//! }
//! assert!((30..90).contains(&failed), "{failed}");
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use limitpal_core::fault::{FaultKind, FaultPlan, FaultPlanBuilder};
use limitpal_core::{Clock, ConfigError};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower::{BoxError, Service};
use tower_layer::Layer;

use crate::TokioClock;

/// The error a [`FaultLayer`] returns in place of an answer it dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseDropped;

impl fmt::Display for ResponseDropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("fault injected: the response was dropped")
    }
}

impl std::error::Error for ResponseDropped {}

/// The error a [`FaultLayer`] injects when no [`error`](FaultLayerBuilder::error) maker is
/// given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InjectedFault;

impl fmt::Display for InjectedFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("fault injected")
    }
}

impl std::error::Error for InjectedFault {}

/// Which requests a [`FaultLayer`] may touch; [`FaultLayerBuilder::only_if`] sets it.
pub trait FaultFilter<Req> {
    /// Whether `req` is subject to the plan (a request that is not draws no fault).
    fn applies(&self, req: &Req) -> bool;
}

/// Every request is subject to the plan (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct Always;

impl<Req> FaultFilter<Req> for Always {
    fn applies(&self, _: &Req) -> bool {
        true
    }
}

impl<Req, F: Fn(&Req) -> bool> FaultFilter<Req> for F {
    fn applies(&self, req: &Req) -> bool {
        self(req)
    }
}

type Make<T> = Arc<dyn Fn() -> T + Send + Sync>;

/// Injects faults from a seeded [`FaultPlan`]; see the [module docs](self). Clones share
/// the plan (one call counter).
pub struct FaultLayer<E = InjectedFault, Res = (), P = Always> {
    plan: FaultPlan,
    error: Make<E>,
    respond: Option<Make<Res>>,
    filter: P,
    clock: TokioClock,
}

impl<E, Res, P: Clone> Clone for FaultLayer<E, Res, P> {
    fn clone(&self) -> Self {
        Self {
            plan: self.plan.clone(),
            error: Arc::clone(&self.error),
            respond: self.respond.clone(),
            filter: self.filter.clone(),
            clock: self.clock,
        }
    }
}

impl<E, Res, P> fmt::Debug for FaultLayer<E, Res, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultLayer")
            .field("plan", &self.plan)
            .finish_non_exhaustive()
    }
}

impl<Res> FaultLayer<InjectedFault, Res> {
    /// Starts a layer that injects nothing (seed 0). The response type is the inner
    /// service's, inferred where the layer is used.
    pub fn builder() -> FaultLayerBuilder<InjectedFault, Res> {
        FaultLayerBuilder {
            plan: FaultPlan::builder(),
            error: Arc::new(|| InjectedFault),
            respond: None,
            filter: Always,
            clock: None,
        }
    }
}

impl<E, Res, P> FaultLayer<E, Res, P> {
    /// The plan it applies (its call count, or the fault of any call number).
    #[must_use]
    pub fn plan(&self) -> &FaultPlan {
        &self.plan
    }
}

impl<S, E, Res, P: Clone> Layer<S> for FaultLayer<E, Res, P> {
    type Service = FaultService<S, E, Res, P>;

    fn layer(&self, inner: S) -> Self::Service {
        FaultService {
            inner,
            layer: self.clone(),
        }
    }
}

/// Configures a [`FaultLayer`]; every rate is a probability in `[0, 1]`.
#[must_use]
pub struct FaultLayerBuilder<E = InjectedFault, Res = (), P = Always> {
    plan: FaultPlanBuilder,
    error: Make<E>,
    respond: Option<Make<Res>>,
    filter: P,
    clock: Option<TokioClock>,
}

impl<E, Res, P> fmt::Debug for FaultLayerBuilder<E, Res, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultLayerBuilder")
            .field("plan", &self.plan)
            .finish_non_exhaustive()
    }
}

impl<E, Res, P> FaultLayerBuilder<E, Res, P> {
    /// Changes the plan with any [`FaultPlanBuilder`] option:
    /// `.plan(|p| p.latency_between(0.1, min, max).during(from, until))`.
    pub fn plan(mut self, edit: impl FnOnce(FaultPlanBuilder) -> FaultPlanBuilder) -> Self {
        self.plan = edit(self.plan);
        self
    }

    /// The seed (default 0): the same seed gives the same faults in the same order.
    pub fn seed(self, seed: u64) -> Self {
        self.plan(|p| p.seed(seed))
    }

    /// Adds `delay` before a `rate` share of calls.
    pub fn latency(self, rate: f64, delay: Duration) -> Self {
        self.plan(|p| p.latency(rate, delay))
    }

    /// Makes a `rate` share of calls never complete.
    pub fn timeout(self, rate: f64) -> Self {
        self.plan(|p| p.timeout(rate))
    }

    /// Models the upstream's capacity: `workers` serve a call each in `service`, the rest
    /// queue in FIFO order (see [`FaultPlanBuilder::capacity`]). Put it over a service that
    /// answers at once to simulate an upstream that overloads.
    pub fn capacity(self, workers: usize, service: Duration) -> Self {
        self.plan(|p| p.capacity(workers, service))
    }

    /// Only `workers` of the capacity serve within `from..until` (see
    /// [`FaultPlanBuilder::degraded`]).
    pub fn degraded(self, from: Duration, until: Duration, workers: usize) -> Self {
        self.plan(|p| p.degraded(from, until, workers))
    }

    /// Makes a `rate` share of calls, then replaces their answer with [`ResponseDropped`].
    pub fn drop_response(self, rate: f64) -> Self {
        self.plan(|p| p.drop_response(rate))
    }

    /// Injects only into the calls numbered `from..until`, counting from 0: with
    /// `.error(1.0, ..)`, an upstream that fails its first `until` calls and then recovers
    /// (see [`FaultPlanBuilder::only_calls`]).
    pub fn only_calls(self, from: u64, until: u64) -> Self {
        self.plan(|p| p.only_calls(from, until))
    }

    /// Fails a `rate` share of calls with `make()`, without calling the inner service.
    pub fn error<E2>(
        self,
        rate: f64,
        make: impl Fn() -> E2 + Send + Sync + 'static,
    ) -> FaultLayerBuilder<E2, Res, P> {
        FaultLayerBuilder {
            plan: self.plan.error(rate),
            error: Arc::new(make),
            respond: self.respond,
            filter: self.filter,
            clock: self.clock,
        }
    }

    /// Answers a `rate` share of calls with `make()` (an HTTP `503`, say), without calling
    /// the inner service.
    pub fn respond(mut self, rate: f64, make: impl Fn() -> Res + Send + Sync + 'static) -> Self {
        self.plan = self.plan.respond(rate);
        self.respond = Some(Arc::new(make));
        self
    }

    /// Injects only into requests for which `filter(&req)` is true (a key, a route); the
    /// others draw no fault and do not advance the plan.
    pub fn only_if<P2>(self, filter: P2) -> FaultLayerBuilder<E, Res, P2> {
        FaultLayerBuilder {
            plan: self.plan,
            error: self.error,
            respond: self.respond,
            filter,
            clock: self.clock,
        }
    }

    /// The clock that [`during`](FaultPlanBuilder::during) windows are read on (default: a
    /// [`TokioClock`] started by `build`).
    pub fn clock(mut self, clock: TokioClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Builds the layer.
    ///
    /// # Errors
    /// [`ConfigError`] naming the field when a rate is not a probability, the outcome rates
    /// add up to more than 1, the latency range is reversed, a window is empty, or a capacity
    /// has no workers (see [`FaultPlanBuilder::build`]).
    pub fn build(self) -> Result<FaultLayer<E, Res, P>, ConfigError> {
        Ok(FaultLayer {
            plan: self.plan.build()?,
            error: self.error,
            respond: self.respond,
            filter: self.filter,
            clock: self.clock.unwrap_or_default(),
        })
    }
}

/// A service behind a [`FaultLayer`].
pub struct FaultService<S, E = InjectedFault, Res = (), P = Always> {
    inner: S,
    layer: FaultLayer<E, Res, P>,
}

impl<S: Clone, E, Res, P: Clone> Clone for FaultService<S, E, Res, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S: fmt::Debug, E, Res, P> fmt::Debug for FaultService<S, E, Res, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultService")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

impl<S, Req, E, P> Service<Req> for FaultService<S, E, S::Response, P>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    E: Into<BoxError>,
    P: FaultFilter<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = FaultFuture<S::Future, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let layer = &self.layer;
        if !layer.filter.applies(&req) {
            return FaultFuture::new(None, Then::Pass, Some(self.inner.call(req)));
        }
        let fault = layer.plan.next(layer.clock.now());
        let sleep = (!fault.latency.is_zero()).then(|| tokio::time::sleep(fault.latency));
        let (then, inner) = match fault.kind {
            FaultKind::Drop => (Then::Drop, Some(self.inner.call(req))),
            FaultKind::Error => (Then::Fail(Some((layer.error)().into())), None),
            FaultKind::Timeout => (Then::Hang, None),
            FaultKind::Respond => match &layer.respond {
                Some(make) => (Then::Respond(Some(make())), None),
                None => (Then::Fail(Some((layer.error)().into())), None),
            },
            // Pass, or a kind this layer does not know yet: leave the call alone
            _ => (Then::Pass, Some(self.inner.call(req))),
        };
        FaultFuture::new(sleep, then, inner)
    }
}

enum Then<Res> {
    Pass,
    Drop,
    Fail(Option<BoxError>),
    Respond(Option<Res>),
    Hang,
}

pin_project! {
    /// The response future of a [`FaultService`].
    pub struct FaultFuture<F, Res> {
        #[pin]
        sleep: Option<Sleep>,
        #[pin]
        inner: Option<F>,
        then: Then<Res>,
    }
}

impl<F, Res> FaultFuture<F, Res> {
    fn new(sleep: Option<Sleep>, then: Then<Res>, inner: Option<F>) -> Self {
        Self { sleep, inner, then }
    }
}

impl<F, Res> fmt::Debug for FaultFuture<F, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultFuture").finish_non_exhaustive()
    }
}

impl<F, T, E> Future for FaultFuture<F, T>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(sleep) = this.sleep.as_mut().as_pin_mut() {
            ready!(sleep.poll(cx));
            this.sleep.set(None);
        }
        match this.then {
            Then::Hang => Poll::Pending, // never completes: nothing will wake it
            Then::Fail(error) => {
                Poll::Ready(Err(error.take().unwrap_or_else(|| Box::new(InjectedFault))))
            }
            Then::Respond(response) => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => Poll::Ready(Err(Box::new(InjectedFault))),
            },
            Then::Pass | Then::Drop => {
                let Some(inner) = this.inner.as_pin_mut() else {
                    return Poll::Ready(Err(Box::new(InjectedFault)));
                };
                let answer = ready!(inner.poll(cx)).map_err(Into::into);
                if matches!(this.then, Then::Drop) {
                    return Poll::Ready(Err(Box::new(ResponseDropped)));
                }
                Poll::Ready(answer)
            }
        }
    }
}
