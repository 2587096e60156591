//! The circuit breaker: stop calling a callee that keeps failing, probe it after a while,
//! close again when it recovers.
//!
//! ```text
//!            failure_threshold consecutive failures,
//!            or failure rate ≥ ratio over the window (min_calls seen),
//!            or the error budget spent (max_failures per window)
//!   Closed ───────────────────────────────────────────────▶ Open
//!     ▲                                                     │ recovery_timeout
//!     │ half_open_success_threshold successes               ▼
//!     └──────────────────────────────────────────────── HalfOpen ──▶ Open (any failure,
//!                                                     ≤ half_open_max_calls     for a full
//!                                                       probes in flight        recovery_timeout)
//! ```
//!
//! The hot state is one atomic word (`[failures | epoch | state]`): admission in Closed is one
//! load and recording an outcome in Closed one compare-and-swap. Transitions, half-open probe
//! slots and the optional failure-rate window sit under a mutex, taken only on those rarer
//! paths. Every permit carries the epoch it was issued in; outcomes of permits from before a
//! transition or [`reset`](CircuitBreaker::reset) are dropped, so a slow call that started
//! while Closed cannot reopen a breaker that has since recovered.
//!
//! The error budget ([`error_budget`](CircuitBreakerBuilder::error_budget)) is a GCRA meter
//! over failures, the rate limiter's own cell: it holds `max_failures` failures and regains
//! one every `window / max_failures`, whatever the successes. The failure that spends the
//! last of it opens the breaker until the meter would admit a failure again, and
//! [`CircuitOpen::retry_after`] says exactly that.

mod builder;
mod keyed;
mod permit;
mod window;
mod word;

use std::fmt;
use std::sync::Arc;

use crate::sync::{AtomicU64, Mutex, Ordering, lock};
use std::time::Duration;

use crate::clock::{nanos, now_nanos};
use crate::metrics::BreakerMetrics;
use crate::rate::Gcra;
use crate::{CircuitOpen, Clock, MonotonicClock, Outcome};
pub use builder::{CircuitBreakerBuilder, Keyed, Single};
#[cfg(feature = "serde")] // the config file's `[breaker]` defaults
pub(crate) use builder::{
    DEFAULT_FAILURE_THRESHOLD, DEFAULT_HALF_OPEN_MAX_CALLS, DEFAULT_HALF_OPEN_SUCCESS_THRESHOLD,
    DEFAULT_RECOVERY_TIMEOUT,
};
pub use keyed::KeyedCircuitBreaker;
use permit::{Admission, Sink};
pub use permit::{BreakerTicket, CallPermit};
use window::FailureWindow;
use word::Word;

/// The state of a [`CircuitBreaker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CircuitState {
    /// Calls flow; failures are counted.
    Closed,
    /// Calls are rejected with [`CircuitOpen`] until the recovery timeout passes.
    Open,
    /// A limited number of probe calls decide whether to close or reopen.
    HalfOpen,
}

type Listener = Arc<dyn Fn(CircuitState, CircuitState) + Send + Sync>;

/// A circuit breaker. Clones share state.
///
/// ```
/// use limitpal_core::{CircuitBreaker, CircuitState, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let breaker = CircuitBreaker::builder()
///     .failure_threshold(2)
///     .recovery_timeout(Duration::from_secs(5))
///     .clock(clock.clone())
///     .build()?;
/// breaker.try_acquire()?.failure();
/// breaker.try_acquire()?.failure();
/// assert_eq!(breaker.state(), CircuitState::Open);
/// assert_eq!(breaker.try_acquire().unwrap_err().retry_after, Duration::from_secs(5));
/// clock.advance(Duration::from_secs(5));
/// assert_eq!(breaker.state(), CircuitState::HalfOpen);
/// breaker.try_acquire()?.success();
/// assert_eq!(breaker.state(), CircuitState::Closed);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct CircuitBreaker<C = MonotonicClock> {
    inner: Arc<Inner<C>>,
}

impl<C> Clone for CircuitBreaker<C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Config {
    failure_threshold: u32,
    rate: Option<RateTrigger>,
    budget: Option<Gcra>,
    slow_call: Option<u64>,
    recovery: u64,
    half_open_max_calls: u32,
    half_open_success_threshold: u32,
}

#[derive(Debug, Clone, Copy)]
struct RateTrigger {
    ratio: f64,
    min_calls: u32,
}

struct Inner<C> {
    word: AtomicU64,
    /// When the current Open epoch began; written before the word publishes Open.
    opened_at: AtomicU64,
    /// How long the current Open epoch lasts (the recovery timeout, or what the error
    /// budget needs to admit a failure again); written before the word publishes Open.
    open_span: AtomicU64,
    /// The error budget's meter (a GCRA TAT over failures).
    budget: AtomicU64,
    slow: Mutex<SlowState>,
    /// What every breaker made from one configuration shares: a keyed breaker's keys hold
    /// their state and a pointer here, nothing more.
    shared: Arc<Shared<C>>,
}

/// A breaker's settings, its clock and who is told about it.
struct Shared<C> {
    config: Config,
    clock: C,
    listener: Option<Listener>,
    shadow: bool,
    on_rejection: Option<RejectionListener>,
    /// Whether a key's own rejection listener is to be told (a keyed breaker's
    /// `on_key_rejection`): only then does a rejection look for it.
    key_rejections: bool,
    metrics: BreakerMetrics,
}

type RejectionListener = Arc<dyn Fn(&CircuitOpen) + Send + Sync>;

/// A keyed breaker's listeners that hear the key (`on_key_state_change`, `on_key_rejection`),
/// bound to one key's copy: what a key's breaker calls them through.
trait KeyHooks: Send + Sync {
    fn changed(&self, from: CircuitState, to: CircuitState);
    fn rejected(&self, open: &CircuitOpen);
}

/// State touched only under the mutex.
#[derive(Debug)]
struct SlowState {
    in_flight: u32,
    successes: u32,
    /// Boxed: only breakers with a failure-rate trigger or a key's listener pay for them (a
    /// keyed breaker holds one state per key).
    extras: Option<Box<Extras>>,
}

/// What only some breakers have: 24 bytes, the ring (168) boxed on its own so that a key
/// with only listeners does not pay for one.
struct Extras {
    /// The failure-rate trigger's ring.
    window: Option<Box<FailureWindow>>,
    /// A keyed breaker's listeners that hear the key, bound to this breaker's key.
    key: Option<Arc<dyn KeyHooks>>,
}

impl fmt::Debug for Extras {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Extras")
            .field("window", &self.window)
            .field("key_listeners", &self.key.is_some())
            .finish()
    }
}

impl SlowState {
    fn window(&self) -> Option<&FailureWindow> {
        self.extras
            .as_deref()
            .and_then(|extras| extras.window.as_deref())
    }

    fn window_mut(&mut self) -> Option<&mut FailureWindow> {
        self.extras
            .as_deref_mut()
            .and_then(|extras| extras.window.as_deref_mut())
    }
}

/// A transition made, to announce once the mutex is released.
struct Change {
    from: CircuitState,
    to: CircuitState,
    /// The key's own listeners, if its keyed breaker has them.
    key: Option<Arc<dyn KeyHooks>>,
}

/// What happened to a permitted call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Success,
    Failure,
    Cancelled,
}

impl Verdict {
    /// A classifier's outcome as recorded: `Ignore` records nothing, as a cancelled call.
    const fn of(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Success => Self::Success,
            Outcome::Failure { .. } => Self::Failure,
            Outcome::Ignore => Self::Cancelled,
        }
    }
}

/// What a permit remembers: the epoch it belongs to, when the call started, whether it holds
/// a half-open probe slot.
#[derive(Debug, Clone, Copy)]
struct Ticket {
    epoch: u32,
    start: u64,
    probe: bool,
}

impl<C: Clock> CircuitBreaker<C> {
    /// The state now. An Open breaker whose recovery timeout has passed reads `HalfOpen`
    /// (the next `try_acquire` makes it so).
    #[must_use]
    pub fn state(&self) -> CircuitState {
        let inner = &*self.inner;
        let w = inner.load();
        if w.state() == CircuitState::Open
            && inner.recovery_left(now_nanos(&inner.shared.clock)) == 0
        {
            CircuitState::HalfOpen
        } else {
            w.state()
        }
    }

    /// Asks to make a call. The permit must be resolved with [`CallPermit::success`] or
    /// [`CallPermit::failure`]; dropping it unresolved counts as cancelled (nothing recorded,
    /// its half-open slot freed).
    ///
    /// # Errors
    /// [`CircuitOpen`] with the time until a probe may go (zero when only the half-open probe
    /// slots are taken).
    #[inline]
    pub fn try_acquire(&self) -> Result<CallPermit, CircuitOpen> {
        let inner = &*self.inner;
        self.permit(inner.admit(|| now_nanos(&inner.shared.clock)))
    }

    /// [`try_acquire`](Self::try_acquire) of a Closed breaker (`None` otherwise): no
    /// transition, no listener, so a keyed breaker admits this way under its store's lock.
    #[inline]
    pub(crate) fn try_acquire_closed(&self) -> Option<CallPermit> {
        let inner = &*self.inner;
        let w = inner.load();
        (w.state() == CircuitState::Closed).then(|| CallPermit {
            breaker: Some(Arc::clone(&self.inner) as Arc<dyn Sink>),
            ticket: inner.closed_ticket(w, || now_nanos(&inner.shared.clock)),
        })
    }

    /// [`try_acquire`](Self::try_acquire) as of `now`, read from this breaker's clock: lets a
    /// pipeline read the clock once for the limiter and the breaker.
    ///
    /// # Errors
    /// [`CircuitOpen`], as for `try_acquire`.
    #[inline]
    pub fn try_acquire_at(&self, now: Duration) -> Result<CallPermit, CircuitOpen> {
        self.permit(self.inner.admit(|| nanos(now)))
    }

    /// [`try_acquire`](Self::try_acquire) for a pipeline, which holds the breaker itself:
    /// a closed-state admission carries no reference to the breaker (no reference count per
    /// call) and is recorded with [`record_ticket`](Self::record_ticket).
    #[inline]
    pub(crate) fn try_acquire_ticket(&self) -> Result<BreakerTicket, CircuitOpen> {
        let inner = &*self.inner;
        let w = inner.load();
        if w.state() == CircuitState::Closed {
            // built in place: no intermediate `Result` to copy on the hot path
            let ticket = inner.closed_ticket(w, || now_nanos(&inner.shared.clock));
            return Ok(BreakerTicket(Admission::Closed(ticket)));
        }
        match inner.admit(|| now_nanos(&inner.shared.clock)) {
            Ok(ticket) if !ticket.probe => Ok(BreakerTicket(Admission::Closed(ticket))),
            admitted => self
                .permit(admitted)
                .map(|permit| BreakerTicket(Admission::Permit(permit))),
        }
    }

    /// Records what a classifier said about the call a ticket admitted.
    #[inline]
    pub(crate) fn record_ticket(&self, ticket: BreakerTicket, outcome: Outcome) {
        match ticket.0 {
            Admission::Closed(ticket) => self.inner.record(ticket, Verdict::of(outcome)),
            Admission::Permit(permit) => permit.record(outcome),
        }
    }

    /// A permit for an admitted ticket; a refusal reported (and, in shadow mode, waived).
    #[inline]
    fn permit(&self, admitted: Result<Ticket, CircuitOpen>) -> Result<CallPermit, CircuitOpen> {
        match admitted {
            Ok(ticket) => Ok(CallPermit {
                breaker: Some(Arc::clone(&self.inner) as Arc<dyn Sink>),
                ticket,
            }),
            Err(open) => self.inner.reject(open),
        }
    }

    /// How long the breaker stays open from now: `None` unless it is Open with recovery
    /// time left. A pipeline asks this before sleeping for a retry.
    #[must_use]
    pub fn open_for(&self) -> Option<Duration> {
        let inner = &*self.inner;
        if inner.load().state() != CircuitState::Open {
            return None;
        }
        match inner.recovery_left(now_nanos(&inner.shared.clock)) {
            0 => None,
            left => Some(Duration::from_nanos(left)),
        }
    }

    /// Closes the breaker and forgets every count. Outcomes of permits issued before are
    /// dropped.
    pub fn reset(&self) {
        self.inner.force(CircuitState::Closed);
    }

    /// Opens the breaker now, for a full recovery timeout (maintenance, a known outage).
    pub fn force_open(&self) {
        self.inner.force(CircuitState::Open);
    }

    /// The clock this breaker reads.
    #[must_use]
    pub fn clock(&self) -> &C {
        &self.inner.shared.clock
    }
}

impl<C: Clock> Inner<C> {
    /// A rejection: reported, then enforced — or, in shadow mode, only reported, and the call
    /// goes ahead with a permit that records nothing (an enforcing breaker would not have
    /// seen that call at all).
    #[cold]
    fn reject(&self, open: CircuitOpen) -> Result<CallPermit, CircuitOpen> {
        #[cfg(feature = "tracing")]
        tracing::debug!(
            target: "limitpal::breaker",
            retry_after = ?open.retry_after,
            shadow = self.shared.shadow,
            "circuit open: call rejected"
        );
        self.shared.metrics.rejected();
        if let Some(listener) = &self.shared.on_rejection {
            listener(&open);
        }
        if self.shared.key_rejections {
            // cloned out, so the listener runs without the lock (it may use the breaker)
            let key = lock(&self.slow)
                .extras
                .as_ref()
                .and_then(|extras| extras.key.clone());
            if let Some(key) = key {
                key.rejected(&open);
            }
        }
        if self.shared.shadow {
            Ok(CallPermit {
                breaker: None,
                ticket: Ticket {
                    epoch: 0,
                    start: 0,
                    probe: false,
                },
            })
        } else {
            Err(open)
        }
    }

    #[inline]
    fn load(&self) -> Word {
        Word(self.word.load(Ordering::Acquire))
    }

    /// Time that goes backwards is no time passed: a clock that reads before the opening
    /// moves the opening back to it, so the breaker stays open a full recovery timeout from
    /// the earlier reading, never longer.
    fn recovery_left(&self, now: u64) -> u64 {
        let mut opened = self.opened_at.load(Ordering::Acquire);
        if now < opened {
            // only if no transition stored a newer opening meanwhile
            let _ =
                self.opened_at
                    .compare_exchange(opened, now, Ordering::AcqRel, Ordering::Acquire);
            opened = now;
        }
        opened
            .saturating_add(self.open_span.load(Ordering::Acquire))
            .saturating_sub(now)
    }

    /// Reads the clock (`now`) only when the answer depends on it: a closed breaker without a
    /// slow-call trigger admits without it.
    #[inline]
    fn admit(&self, now: impl FnOnce() -> u64) -> Result<Ticket, CircuitOpen> {
        let w = self.load();
        match w.state() {
            CircuitState::Closed => Ok(self.closed_ticket(w, now)),
            CircuitState::Open => {
                let now = now();
                match self.recovery_left(now) {
                    0 => self.admit_slow(now),
                    left => Err(CircuitOpen::new(Duration::from_nanos(left))),
                }
            }
            CircuitState::HalfOpen => self.admit_slow(now()),
        }
    }

    /// A closed breaker's admission (`w` is closed): the clock is read only to time slow calls.
    #[inline]
    fn closed_ticket(&self, w: Word, now: impl FnOnce() -> u64) -> Ticket {
        Ticket {
            epoch: w.epoch(),
            start: if self.shared.config.slow_call.is_some() {
                now()
            } else {
                0
            },
            probe: false,
        }
    }

    fn admit_slow(&self, now: u64) -> Result<Ticket, CircuitOpen> {
        let mut changed = None;
        let result = {
            let mut slow = lock(&self.slow);
            let mut w = self.load();
            if w.state() == CircuitState::Open {
                let left = self.recovery_left(now);
                if left > 0 {
                    return Err(CircuitOpen::new(Duration::from_nanos(left)));
                }
                changed = self.transition(&mut slow, w, CircuitState::HalfOpen, now, 0);
                w = self.load();
            }
            match w.state() {
                CircuitState::Closed => Ok(Ticket {
                    epoch: w.epoch(),
                    start: now,
                    probe: false,
                }),
                _ if slow.in_flight < self.shared.config.half_open_max_calls => {
                    slow.in_flight = slow.in_flight.saturating_add(1); // below a u32 bound
                    Ok(Ticket {
                        epoch: w.epoch(),
                        start: now,
                        probe: true,
                    })
                }
                _ => Err(CircuitOpen::new(Duration::ZERO)),
            }
        };
        self.announce(changed);
        result
    }

    fn record(&self, ticket: Ticket, verdict: Verdict) {
        let w = self.load();
        if w.epoch() != ticket.epoch {
            return; // issued before a transition: says nothing about the present
        }
        if verdict == Verdict::Cancelled {
            if ticket.probe {
                let mut slow = lock(&self.slow);
                if self.load().epoch() == ticket.epoch {
                    slow.in_flight = slow.in_flight.saturating_sub(1);
                }
            }
            return;
        }
        let needs_now = self.shared.config.slow_call.is_some()
            || self.shared.config.rate.is_some()
            || verdict == Verdict::Failure
            || ticket.probe;
        let now = if needs_now {
            now_nanos(&self.shared.clock)
        } else {
            0
        };
        let failed = verdict == Verdict::Failure
            || self
                .shared
                .config
                .slow_call
                .is_some_and(|slow| now.saturating_sub(ticket.start) >= slow);
        if ticket.probe {
            self.record_probe(ticket, failed, now);
        } else {
            self.record_closed(ticket, failed, now);
        }
    }

    fn record_probe(&self, ticket: Ticket, failed: bool, now: u64) {
        let changed = {
            let mut slow = lock(&self.slow);
            let w = self.load();
            if w.epoch() != ticket.epoch {
                return;
            }
            slow.in_flight = slow.in_flight.saturating_sub(1);
            if failed {
                self.transition(
                    &mut slow,
                    w,
                    CircuitState::Open,
                    now,
                    self.shared.config.recovery,
                )
            } else {
                slow.successes = slow.successes.saturating_add(1);
                if slow.successes >= self.shared.config.half_open_success_threshold {
                    self.transition(&mut slow, w, CircuitState::Closed, now, 0)
                } else {
                    None
                }
            }
        };
        self.announce(changed);
    }

    fn record_closed(&self, ticket: Ticket, failed: bool, now: u64) {
        // Consecutive failures: one CAS on the word, tied to the ticket's epoch.
        let mut w = self.load();
        let mut tripped = loop {
            if w.epoch() != ticket.epoch || w.state() != CircuitState::Closed {
                return;
            }
            let failures = if failed {
                w.failures().saturating_add(1)
            } else {
                0
            };
            if failures == w.failures() {
                break false;
            }
            let next = w.with_failures(failures);
            match self
                .word
                .compare_exchange_weak(w.0, next.0, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break failures >= self.shared.config.failure_threshold,
                Err(actual) => w = Word(actual),
            }
        };
        let mut span = self.shared.config.recovery;
        if failed && let Some(budget) = self.shared.config.budget {
            // this failure spends one (a budget already spent by a racing failure stays so)
            let _ = budget.check_cell(&self.budget, now, 1);
            let wait = budget.wait_cell(&self.budget, now, 1);
            if wait > 0 {
                // open until the budget admits a failure again (and, tripped by the other
                // triggers too, for the longer of that and the recovery timeout)
                span = if tripped { span.max(wait) } else { wait };
                tripped = true;
            }
        }
        let Some(rate) = self.shared.config.rate else {
            if tripped {
                self.trip(ticket, now, span);
            }
            return;
        };
        let changed = {
            let mut slow = lock(&self.slow);
            let w = self.load();
            if w.epoch() != ticket.epoch {
                return;
            }
            if let Some(window) = slow.window_mut() {
                let (calls, failures) = window.record(now, failed);
                tripped |= failed
                    && calls >= rate.min_calls
                    && f64::from(failures) >= rate.ratio * f64::from(calls);
            }
            if tripped {
                self.transition(&mut slow, w, CircuitState::Open, now, span)
            } else {
                None
            }
        };
        self.announce(changed);
    }

    fn trip(&self, ticket: Ticket, now: u64, span: u64) {
        let changed = {
            let mut slow = lock(&self.slow);
            let w = self.load();
            if w.epoch() != ticket.epoch || w.state() != CircuitState::Closed {
                return;
            }
            self.transition(&mut slow, w, CircuitState::Open, now, span)
        };
        self.announce(changed);
    }

    fn force(&self, to: CircuitState) {
        let now = now_nanos(&self.shared.clock);
        let changed = {
            let mut slow = lock(&self.slow);
            let w = self.load();
            if to == CircuitState::Closed {
                self.budget.store(0, Ordering::Relaxed); // a reset forgets the budget's count too
            }
            self.transition(&mut slow, w, to, now, self.shared.config.recovery)
        };
        self.announce(changed);
    }

    /// Moves from `from`'s epoch to a new epoch in `to` (Open for `span`). Must hold the
    /// mutex: every change of state or epoch happens under it, so only the failure count can
    /// race (and is retried).
    fn transition(
        &self,
        slow: &mut SlowState,
        from: Word,
        to: CircuitState,
        now: u64,
        span: u64,
    ) -> Option<Change> {
        if to == CircuitState::Open {
            self.open_span.store(span, Ordering::Release);
            self.opened_at.store(now, Ordering::Release);
        }
        let mut current = from;
        loop {
            if current.epoch() != from.epoch() || current.state() != from.state() {
                return None;
            }
            match self.word.compare_exchange_weak(
                current.0,
                current.next(to).0,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => current = Word(actual),
            }
        }
        slow.in_flight = 0;
        slow.successes = 0;
        if let Some(window) = slow.window_mut() {
            window.clear();
        }
        Some(Change {
            from: from.state(),
            to,
            key: slow.extras.as_ref().and_then(|extras| extras.key.clone()),
        })
    }

    /// Tells listeners and tracing about a transition; called after the mutex is released so
    /// a listener may use the breaker.
    fn announce(&self, changed: Option<Change>) {
        let Some(Change { from, to, key }) = changed else {
            return;
        };
        #[cfg(feature = "tracing")]
        tracing::info!(
            target: "limitpal::breaker",
            from = ?from,
            to = ?to,
            "circuit breaker state changed"
        );
        self.shared.metrics.state(to);
        if let Some(listener) = &self.shared.listener {
            listener(from, to);
        }
        if let Some(key) = key {
            key.changed(from, to);
        }
    }
}

impl<C> fmt::Debug for CircuitBreaker<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = Word(self.inner.word.load(Ordering::Acquire));
        f.debug_struct("CircuitBreaker")
            .field("state", &w.state())
            .field("consecutive_failures", &w.failures())
            .field("config", &self.inner.shared.config)
            .finish_non_exhaustive()
    }
}
