//! The drivers' side of hedging: the hedged calls of an attempt, each with its own timeout,
//! and the limiter's answer for the next one. The step machine decides every hedge; this only
//! holds and polls the calls it starts. [`HedgeLayer`] is the stage alone.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use std::fmt;

use limitpal_core::pipeline::{Attempt, Event};
use limitpal_core::{
    CheckFn, ConfigError, DefaultClassifier, Hedge, LimitCheck, RateLimited, RetryBudget,
};
use tokio::time::Sleep;
use tower_layer::Layer;

use crate::resilience::{HedgeIf, NoKey, NoStages, ResilienceLayer, ResilienceService};
use crate::retry::CloneRequest;

/// A remote limiter's answer for a hedge.
type Check = Pin<Box<dyn Future<Output = Result<(), RateLimited>> + Send>>;

/// Polls a call and its timeout: how the attempt ended, if it did.
pub(crate) fn poll_attempt<F, T, E>(
    call: Pin<&mut F>,
    timer: Option<Pin<&mut Sleep>>,
    cx: &mut Context<'_>,
) -> Option<Attempt<T, E>>
where
    F: Future<Output = Result<T, E>>,
{
    if let Poll::Ready(result) = call.poll(cx) {
        return Some(Attempt::Done(result));
    }
    timer
        .is_some_and(|timer| timer.poll(cx).is_ready())
        .then_some(Attempt::TimedOut)
}

/// An attempt's hedges in flight: one pointer in every request's future, allocated when
/// the first hedge is asked of the limiter or started.
pub(crate) struct Lanes<F>(Option<Box<Flight<F>>>);

struct Flight<F> {
    lanes: Vec<Lane<F>>,
    check: Option<Check>,
}

struct Lane<F> {
    number: usize,
    call: Pin<Box<F>>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<F> Default for Lanes<F> {
    fn default() -> Self {
        Self(None)
    }
}

impl<F> Lanes<F> {
    fn flight(&mut self) -> &mut Flight<F> {
        self.0.get_or_insert_with(|| {
            Box::new(Flight {
                lanes: Vec::new(),
                check: None,
            })
        })
    }
}

impl<F, T, E> Lanes<F>
where
    F: Future<Output = Result<T, E>>,
{
    /// Starts lane `number`'s call, bounded by `timeout`.
    pub(crate) fn start(&mut self, number: usize, call: F, timeout: Option<Duration>) {
        self.flight().lanes.push(Lane {
            number,
            call: Box::pin(call),
            timer: timeout.map(|t| Box::pin(tokio::time::sleep(t))),
        });
    }

    /// Drops every hedge in flight (the losers) and a pending limiter answer.
    #[inline(always)]
    pub(crate) fn clear(&mut self) {
        if self.0.is_some() {
            self.drop_flight();
        }
    }

    #[inline(never)]
    fn drop_flight(&mut self) {
        if let Some(flight) = &mut self.0 {
            flight.lanes.clear();
            flight.check = None;
        }
    }

    /// Asks `limiter` about a hedge for `key`: a local limiter's answer is the event to report
    /// now; a remote one's is awaited by [`poll`](Self::poll).
    pub(crate) fn check<K>(
        &mut self,
        limiter: Option<&CheckFn<K>>,
        key: Option<&K>,
    ) -> Option<Event<T, E>> {
        let (Some(limiter), Some(key)) = (limiter, key) else {
            return Some(Event::HedgeLimit(Ok(())));
        };
        match limiter.check(key) {
            LimitCheck::Now(answer) => Some(Event::HedgeLimit(answer)),
            LimitCheck::Later(answer) => {
                self.flight().check = Some(answer);
                None
            }
        }
    }

    /// The next thing that happened to the hedges: a lane's end or the limiter's answer.
    #[inline]
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Event<T, E>> {
        let Some(flight) = &mut self.0 else {
            return Poll::Pending;
        };
        if let Some(check) = &mut flight.check
            && let Poll::Ready(answer) = check.as_mut().poll(cx)
        {
            flight.check = None;
            return Poll::Ready(Event::HedgeLimit(answer));
        }
        for index in 0..flight.lanes.len() {
            let lane = &mut flight.lanes[index];
            let timer = lane.timer.as_mut().map(Pin::as_mut);
            let Some(attempt) = poll_attempt(lane.call.as_mut(), timer, cx) else {
                continue;
            };
            let lane = flight.lanes.swap_remove(index);
            return Poll::Ready(Event::HedgeCalled {
                lane: lane.number,
                attempt,
            });
        }
        Poll::Pending
    }
}

/// Hedging alone, as a tower layer: a call still running after the [`Hedge`]'s delay is
/// sent again (a clone of the request to a clone of the service, ready at once or not at
/// all), up to `max_hedges` times, and the first success answers; the others are dropped.
/// The same stage as `ResilienceLayer::builder().hedge(..)`, with nothing else around it;
/// add a [`RetryBudget`] to bound the extra load.
///
/// ```
/// use limitpal_core::Hedge;
/// use limitpal_tower::HedgeLayer;
/// use std::time::Duration;
/// use tower::{ServiceBuilder, service_fn};
///
/// let svc = ServiceBuilder::new()
///     // only even ids are safe to send twice
///     .layer(HedgeLayer::new(Hedge::after(Duration::from_millis(50)))?.hedge_if(|id: &u32| id % 2 == 0))
///     .service(service_fn(|id: u32| async move { Ok::<_, std::io::Error>(id * 2) }));
/// # drop(svc);
/// # Ok::<(), limitpal_core::ConfigError>(())
/// ```
pub struct HedgeLayer<P = NoStages> {
    layer: ResilienceLayer<NoKey, (), DefaultClassifier, CloneRequest, P>,
}

impl HedgeLayer {
    /// Hedges every request per `hedge`, with no budget.
    ///
    /// # Errors
    /// [`ConfigError`] for a bad hedge (`max_hedges(0)`, a percentile outside (0, 100)).
    pub fn new(hedge: Hedge) -> Result<Self, ConfigError> {
        Ok(Self {
            layer: ResilienceLayer::builder().hedge(hedge).build()?,
        })
    }

    /// Hedges per `hedge`, each hedge drawn from `budget` (shared with its clones).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn with_budget(hedge: Hedge, budget: RetryBudget) -> Result<Self, ConfigError> {
        Ok(Self {
            layer: ResilienceLayer::builder()
                .hedge(hedge)
                .budget(budget)
                .build()?,
        })
    }
}

impl<P> HedgeLayer<P> {
    /// Hedges only the requests `safe` accepts (HTTP: [`idempotent`](crate::http::idempotent)).
    #[must_use]
    pub fn hedge_if<F: Send + Sync + 'static>(self, safe: F) -> HedgeLayer<HedgeIf<F, P>> {
        let ResilienceLayer {
            shared,
            key,
            replay,
            per_key,
        } = self.layer;
        HedgeLayer {
            layer: ResilienceLayer {
                shared,
                key,
                replay,
                per_key: HedgeIf::new(safe, per_key),
            },
        }
    }
}

impl<P: Clone> Clone for HedgeLayer<P> {
    fn clone(&self) -> Self {
        Self {
            layer: self.layer.clone(),
        }
    }
}

impl<P> fmt::Debug for HedgeLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeLayer")
            .field("hedge", &self.layer.shared.pipeline.hedge())
            .finish_non_exhaustive()
    }
}

impl<S, P: Clone> Layer<S> for HedgeLayer<P> {
    type Service = ResilienceService<S, NoKey, (), DefaultClassifier, CloneRequest, P>;

    fn layer(&self, inner: S) -> Self::Service {
        self.layer.layer(inner)
    }
}
