//! The run of one request as a sans-IO step machine: [`Pipeline::step`] takes what the driver
//! saw ([`Event`]) and answers what it does next ([`Action`]). Every decision and every
//! outcome is made here; a driver only checks its limiter, waits, sleeps and calls.

use std::time::Duration;

use super::{AnyBreaker, MAX_PUSHBACK_WITHOUT_RETRY, Pipeline};
use crate::breaker::BreakerTicket;
use crate::concurrency::Acquire;
use crate::{
    Bulkhead, BulkheadFull, BulkheadPermit, CircuitOpen, Classify, Error, Outcome, OwnRejection,
    RateLimited, Reservation, RetryPolicy, RetryState, RetryStep, Verdict,
};

/// The primary call of an attempt, as opposed to its hedges (lanes 1, 2, ...).
const PRIMARY: usize = 0;

/// What the driver does next, as [`Pipeline::step`] answers it.
#[derive(Debug)]
pub enum Action<T, E> {
    /// Step 3: ask the limiter about the run's key. `max_wait: None`: check it and report
    /// [`Event::Limit`]. `Some(max_wait)`: reserve a slot within `max_wait` and report
    /// [`Event::Reserved`].
    CheckLimit {
        /// How long the attempt may wait for quota (cut to the deadline).
        max_wait: Option<Duration>,
    },
    /// The reserved slot is `delay()` ahead: wait for it (the attempt now holds no breaker
    /// permit), then report [`Event::QuotaCame`]. Dropping the reservation gives it back.
    WaitQuota(Reservation),
    /// Step 4: every bulkhead slot is taken; wait in its queue up to `max_wait` and report
    /// [`Event::Slot`], or [`Event::SlotTimedOut`].
    TakeSlot {
        /// The place in the queue, taken already.
        acquire: Acquire,
        /// The bulkhead's `max_wait`, cut to the deadline.
        max_wait: Duration,
    },
    /// Step 5: make the call, bounded by `timeout` (`None`: unbounded), and report
    /// [`Event::Called`] (or [`Event::CalledOnce`] when the request cannot be sent again).
    /// Then, with a limiter, hold the key for [`Run::take_pushback`].
    Call {
        /// The attempt timeout cut to the deadline.
        timeout: Option<Duration>,
    },
    /// Step 7: sleep this long before the next attempt, then report [`Event::Slept`].
    Sleep(Duration),
    /// A hedge is due and the breaker admitted it: ask the limiter for it (a check, never a
    /// wait) and report [`Event::HedgeLimit`].
    CheckHedge,
    /// Start another call of the request as lane `lane` (the calls already running go on),
    /// bounded by `timeout`, and report its end with [`Event::HedgeCalled`]. Then arm the
    /// hedge timer again per [`Run::hedge_in`].
    Hedge {
        /// The lane's number, to report its end with.
        lane: usize,
        /// The attempt timeout cut to the deadline.
        timeout: Option<Duration>,
    },
    /// Nothing new to start: keep waiting for the calls in flight (and for the hedge timer,
    /// if [`Run::hedge_in`] says one is due).
    Await,
    /// The run is over.
    Done(Result<T, Error<E>>),
}

/// What the driver reports to [`Pipeline::step`].
#[derive(Debug)]
pub enum Event<T, E> {
    /// The run starts (steps 1 and 2 of its first attempt follow).
    Start,
    /// The [`Action::Sleep`] before a retry is over (the driver is ready to call again).
    Slept,
    /// The limiter's answer to a check, or its refusal of a reservation.
    Limit(Result<(), RateLimited>),
    /// The limiter's answer to a reservation: a slot now (committed by the pipeline), a slot
    /// later (answered with [`Action::WaitQuota`]), or the refusal.
    Reserved(Result<Reservation, RateLimited>),
    /// The slot of [`Action::WaitQuota`] has come: the breaker is asked again, and the
    /// reservation committed (or cancelled when the breaker refuses).
    QuotaCame(Reservation),
    /// The bulkhead's answer after a wait in its queue.
    Slot(Result<BulkheadPermit, BulkheadFull>),
    /// The wait for a bulkhead slot ran out of time.
    SlotTimedOut,
    /// How the call ended.
    Called(Attempt<T, E>),
    /// How a call whose request cannot be sent again ended: never retried.
    CalledOnce(Attempt<T, E>),
    /// The hedge timer armed per [`Run::hedge_in`] fired, the calls still running.
    HedgeDue,
    /// The limiter's answer for the hedge of [`Action::CheckHedge`].
    HedgeLimit(Result<(), RateLimited>),
    /// The driver could not start the call of [`Action::Hedge`]'s `lane` (no copy of the
    /// request, or the service not ready): its permits go back unrecorded.
    HedgeDropped {
        /// The lane, as the action numbered it.
        lane: usize,
    },
    /// How the call of lane `lane` (an [`Action::Hedge`]) ended.
    HedgeCalled {
        /// The lane, as the action numbered it.
        lane: usize,
        /// How it ended.
        attempt: Attempt<T, E>,
    },
}

/// How an attempt ended.
#[derive(Debug)]
pub enum Attempt<T, E> {
    /// The call returned.
    Done(Result<T, E>),
    /// The call ran past its timeout and was abandoned.
    TimedOut,
}

/// One run through the pipeline: attempts made, the random stream, the deadline, and what
/// the current attempt holds (its breaker permit and bulkhead slot). Dropped before it is
/// done (a cancelled request), it releases both unrecorded.
#[derive(Debug)]
pub struct Run {
    retry: RetryState,
    deadline_at: Option<Duration>,
    pushback: Option<Duration>,
    permits: Permits,
    limited: bool,
    stages: Stages,
    hedge: Round,
}

/// The hedging of the current attempt: the calls in flight, when the next hedge is due,
/// when the primary call started, and the hedges' own permits. Small, since every run of
/// every pipeline carries it: the hedges' part is allocated when the first hedge is admitted.
#[derive(Debug, Default)]
struct Round {
    /// Whether the driver can hedge this run (it can make a call while one runs).
    allowed: bool,
    in_flight: u32,
    next_in: Option<Duration>,
    /// When the primary call started, for a hedge that tracks latency.
    started: Option<Duration>,
    hedges: Option<Box<Hedges>>,
}

/// The permits of an attempt's hedges, by lane (1, 2, ...; `None` once a lane ended), and
/// those of a hedge admitted by the breaker, waiting for the limiter's answer.
#[derive(Debug, Default)]
struct Hedges {
    lanes: Vec<Option<Lane>>,
    pending: Option<Permits>,
}

/// What a hedge holds while it runs, and when its call started (for a hedge that tracks
/// latency).
#[derive(Debug)]
struct Lane {
    permits: Permits,
    started: Option<Duration>,
}

impl Round {
    /// Hedges started in this attempt.
    fn fired(&self) -> usize {
        self.hedges.as_ref().map_or(0, |hedges| hedges.lanes.len())
    }

    /// The admitted hedge waiting for the limiter, taken.
    fn take_pending(&mut self) -> Option<Permits> {
        self.hedges
            .as_mut()
            .and_then(|hedges| hedges.pending.take())
    }

    /// Lane `lane`'s permits, taken (`None`: it already ended, or never started).
    fn take_lane(&mut self, lane: usize) -> Option<Lane> {
        let index = lane.checked_sub(1)?;
        self.hedges
            .as_mut()?
            .lanes
            .get_mut(index)
            .and_then(Option::take)
    }
}

/// The stages a run uses instead of the pipeline's own: the breaker and the bulkhead of the
/// run's key, from a keyed breaker or bulkhead (`circuit_breaker_per`, `bulkhead_per`).
#[derive(Debug, Default, Clone)]
pub struct Stages {
    /// The breaker of this run's key.
    pub breaker: Option<AnyBreaker>,
    /// The bulkhead of this run's key.
    pub bulkhead: Option<Bulkhead>,
}

impl Run {
    /// Attempts started so far, the current one included.
    #[must_use]
    pub fn attempts(&self) -> u32 {
        self.retry.attempts()
    }

    /// The upstream's pushback from the attempt just reported, if any (taken once): a
    /// driver with a limiter holds the run's key in it for that long.
    pub fn take_pushback(&mut self) -> Option<Duration> {
        self.pushback.take()
    }

    /// Lets the run hedge: the driver can start another call of the request while one runs
    /// (the async executor and the tower layer do, for requests that can be copied). Without
    /// it a pipeline's hedge never fires for this run.
    pub fn allow_hedge(&mut self) {
        self.hedge.allowed = true;
    }

    /// After [`Action::Call`], [`Action::Hedge`] or [`Action::Await`]: how long from now
    /// until a hedge is due, if one is; the driver reports [`Event::HedgeDue`] then, if the
    /// calls are still running.
    #[must_use]
    pub fn hedge_in(&self) -> Option<Duration> {
        self.hedge.next_in
    }

    /// Ends every call of the attempt still holding permits: they go unrecorded (the driver
    /// drops those calls).
    fn release_lanes(&mut self) {
        self.permits = Permits::default();
        if let Some(hedges) = &mut self.hedge.hedges {
            hedges.lanes.clear();
            hedges.pending = None;
        }
        self.hedge.in_flight = 0;
        self.hedge.next_in = None;
    }

    /// The deadline passed before the current attempt called the upstream (at admission,
    /// waiting for quota or a slot, or before a retry): the attempts that called it.
    fn timed_out_before_call<E>(&self) -> Error<E> {
        Error::TimedOut {
            attempts: self.attempts().saturating_sub(1),
        }
    }

    /// The deadline passed while the current attempt was calling the upstream.
    fn timed_out_in_call<E>(&self) -> Error<E> {
        Error::TimedOut {
            attempts: self.attempts(),
        }
    }

    /// Ends the current attempt's admission: its breaker permit and slot go unrecorded.
    fn release(&mut self) {
        self.permits = Permits::default();
    }
}

/// What an attempt (or one of its hedges) holds while it runs.
#[derive(Debug, Default)]
struct Permits {
    breaker: Option<BreakerTicket>,
    slot: Option<BulkheadPermit>,
}

impl<Cl> Pipeline<Cl> {
    /// Starts a run: deposits in the budget, fixes the deadline. `stream` seeds the run's
    /// jitter (see [`RetryPolicy::new_stream_seed`]); `limited`: whether the driver has a
    /// limiter for this run's key (otherwise step 3 is skipped). Report [`Event::Start`] next.
    pub fn start(&self, stream: u64, limited: bool) -> Run {
        self.start_with(stream, limited, Stages::default())
    }

    /// [`start`](Self::start) for a run whose breaker or bulkhead is its key's (`stages`
    /// replace the pipeline's own where given).
    pub fn start_with(&self, stream: u64, limited: bool, stages: Stages) -> Run {
        // Read the clock only when something needs the time: a request's happy path with
        // neither a budget nor a deadline reads no clock here.
        let now = (self.budget.is_some() || self.deadline.is_some()).then(|| self.clock.now());
        if let (Some(budget), Some(now)) = (&self.budget, now) {
            budget.deposit(now);
        }
        Run {
            retry: RetryState::new(stream),
            deadline_at: self.deadline.zip(now).map(|(d, now)| now.saturating_add(d)),
            pushback: None,
            permits: Permits::default(),
            limited,
            stages,
            hedge: Round::default(),
        }
    }

    /// The run ends in `error`, or in the fallback's answer to it. (Asked where each error
    /// is made, not of every action `step` answers: that match copied every action once
    /// more, 5 % of a request without a fallback.)
    #[inline(always)]
    fn fail<T, E>(&self, error: Error<E>) -> Action<T, E>
    where
        Cl: Classify<T, E>,
    {
        Action::Done(self.fall_back(error))
    }

    /// The run ends in `result`, or, an error, in the fallback's answer to it.
    #[inline(always)]
    fn end<T, E>(&self, result: Result<T, Error<E>>) -> Action<T, E>
    where
        Cl: Classify<T, E>,
    {
        match result {
            Ok(value) => Action::Done(Ok(value)),
            Err(error) => self.fail(error),
        }
    }

    /// The fallback's answer to `error`, if it has one.
    #[inline(always)]
    fn fall_back<T, E>(&self, error: Error<E>) -> Result<T, Error<E>>
    where
        Cl: Classify<T, E>,
    {
        match self.classifier.fallback(&error) {
            None => Err(error),
            Some(value) => {
                let reason = error.reason();
                self.metrics.fallback(reason);
                #[cfg(feature = "tracing")]
                tracing::info!(target: "limitpal::fallback", reason, "fallback answered for the run");
                Ok(value)
            }
        }
    }

    /// Takes what the driver saw and answers what it does next.
    ///
    /// A run that ends in an error the pipeline's fallback answers ends with the fallback's
    /// value instead (counted and traced).
    #[inline(always)]
    pub fn step<T, E>(&self, run: &mut Run, event: Event<T, E>) -> Action<T, E>
    where
        Cl: Classify<T, E>,
        E: 'static,
    {
        match event {
            Event::Start | Event::Slept => self.admit(run),
            Event::Limit(Ok(())) => self.take_slot(run),
            Event::Limit(Err(denied)) => {
                run.release(); // the breaker learns nothing from our own denial
                self.fail(Error::RateLimited(denied))
            }
            Event::Reserved(Ok(reservation)) if reservation.delay().is_zero() => {
                reservation.commit();
                self.take_slot(run)
            }
            Event::Reserved(Ok(reservation)) => {
                run.release(); // a wait holds no half-open probe
                Action::WaitQuota(reservation)
            }
            Event::Reserved(Err(denied)) => {
                run.release();
                self.fail(Error::RateLimited(denied))
            }
            Event::QuotaCame(reservation) => match self.breaker_admission(run) {
                Ok(()) => {
                    reservation.commit();
                    self.take_slot(run)
                }
                Err(refused) => {
                    reservation.cancel();
                    self.fail(refused)
                }
            },
            Event::Slot(Ok(slot)) => {
                run.permits.slot = Some(slot);
                self.call(run)
            }
            Event::Slot(Err(full)) => {
                run.release();
                self.fail(Error::BulkheadFull(full))
            }
            Event::SlotTimedOut => {
                run.release();
                if self.past_deadline(run) {
                    return self.fail(run.timed_out_before_call());
                }
                let full = run
                    .stages
                    .bulkhead
                    .as_ref()
                    .or(self.bulkhead.as_ref())
                    .map_or_else(|| BulkheadFull::new(0), crate::Bulkhead::refuse);
                self.fail(Error::BulkheadFull(full))
            }
            Event::Called(attempt) => self.settle(run, PRIMARY, attempt, true),
            Event::CalledOnce(attempt) => self.settle(run, PRIMARY, attempt, false),
            Event::HedgeDue => self.hedge_due(run),
            Event::HedgeLimit(Ok(())) => self.hedge_slot(run),
            Event::HedgeLimit(Err(_)) => {
                run.hedge.take_pending(); // refused by the limiter: no hedge, unrecorded
                run.hedge.next_in = None;
                Action::Await
            }
            Event::HedgeCalled { lane, attempt } => self.settle(run, lane, attempt, true),
            Event::HedgeDropped { lane } => {
                if run.hedge.take_lane(lane).is_some() {
                    run.hedge.in_flight = run.hedge.in_flight.saturating_sub(1);
                }
                Action::Await
            }
        }
    }

    /// A hedge is due: it needs hedges left, the budget's leave, the time and the breaker's
    /// permit, then (if the run is limited and attempts are charged) the limiter's.
    fn hedge_due<T, E>(&self, run: &mut Run) -> Action<T, E> {
        run.hedge.next_in = None;
        let Some(hedge) = &self.hedge else {
            return Action::Await;
        };
        let fired = u32::try_from(run.hedge.fired()).unwrap_or(u32::MAX);
        if !run.hedge.allowed || run.hedge.in_flight == 0 || fired >= hedge.hedges() {
            return Action::Await;
        }
        let now = self.clock.now();
        if run.deadline_at.is_some_and(|at| now >= at) {
            return Action::Await; // the calls in flight time out with the run
        }
        // an extra attempt, like a retry: drawn from the same budget
        if let Some(budget) = &self.budget
            && !budget.withdraw(now)
        {
            return Action::Await;
        }
        let mut permits = Permits::default();
        if let Some(breaker) = run.stages.breaker.as_ref().or(self.breaker.as_ref()) {
            match breaker.0.try_acquire() {
                Ok(ticket) => permits.breaker = Some(ticket),
                Err(_) => return Action::Await,
            }
        }
        run.hedge.hedges.get_or_insert_default().pending = Some(permits);
        if run.limited && self.charge_retries {
            return Action::CheckHedge;
        }
        self.hedge_slot(run)
    }

    /// The hedge's bulkhead slot, taken now or not at all, then its call.
    fn hedge_slot<T, E>(&self, run: &mut Run) -> Action<T, E> {
        let Some(mut permits) = run.hedge.take_pending() else {
            return Action::Await;
        };
        if let Some(bulkhead) = run.stages.bulkhead.as_ref().or(self.bulkhead.as_ref()) {
            match bulkhead.try_take() {
                Some(slot) => permits.slot = Some(slot),
                None => return Action::Await, // no slot free: no hedge, the permit unrecorded
            }
        }
        let hedge = self.hedge.as_ref();
        let tracks = hedge.is_some_and(crate::Hedge::tracks_latency);
        let now = (tracks || run.deadline_at.is_some()).then(|| self.clock.now());
        let started = now.filter(|_| tracks);
        let lanes = &mut run.hedge.hedges.get_or_insert_default().lanes;
        lanes.push(Some(Lane { permits, started }));
        let lane = lanes.len();
        run.hedge.in_flight = run.hedge.in_flight.saturating_add(1);
        self.metrics.hedged();
        if let Some(hedge) = hedge
            && u32::try_from(lane).is_ok_and(|lane| lane < hedge.hedges())
        {
            run.hedge.next_in = hedge.delay(now.unwrap_or_default());
        }
        let timeout = self.attempt_limit(run, now);
        Action::Hedge { lane, timeout }
    }

    /// Steps 1 and 2, then 3 (if the run is limited and this attempt is charged).
    #[inline(always)]
    fn admit<T, E>(&self, run: &mut Run) -> Action<T, E>
    where
        Cl: Classify<T, E>,
    {
        if let Err(refused) = self.breaker_admission(run) {
            return self.fail(refused);
        }
        if run.limited && (self.charge_retries || run.attempts() == 1) {
            return Action::CheckLimit {
                max_wait: self.limit_wait(run),
            };
        }
        self.take_slot(run)
    }

    /// Steps 1 and 2: the deadline, then the breaker's permit into the run.
    #[inline(always)]
    fn breaker_admission<E>(&self, run: &mut Run) -> Result<(), Error<E>> {
        if self.past_deadline(run) {
            return Err(run.timed_out_before_call());
        }
        if let Some(breaker) = run.stages.breaker.as_ref().or(self.breaker.as_ref()) {
            run.permits.breaker = Some(breaker.0.try_acquire().map_err(Error::CircuitOpen)?);
        }
        Ok(())
    }

    /// Step 4: a slot now, the wait for one, or the refusal.
    #[inline(always)]
    fn take_slot<T, E>(&self, run: &mut Run) -> Action<T, E>
    where
        Cl: Classify<T, E>,
    {
        let Some(bulkhead) = run.stages.bulkhead.as_ref().or(self.bulkhead.as_ref()) else {
            return self.call(run);
        };
        if let Some(slot) = bulkhead.try_take() {
            run.permits.slot = Some(slot);
            return self.call(run);
        }
        let mut acquire = bulkhead.acquire();
        match acquire.answer() {
            Some(Ok(slot)) => {
                run.permits.slot = Some(slot);
                self.call(run)
            }
            Some(Err(full)) => {
                run.release();
                self.fail(Error::BulkheadFull(full))
            }
            None => {
                let wait = bulkhead.max_wait();
                let max_wait = run
                    .deadline_at
                    .map_or(wait, |at| wait.min(at.saturating_sub(self.clock.now())));
                Action::TakeSlot { acquire, max_wait }
            }
        }
    }

    /// Step 5: the call, bounded by the attempt timeout cut to the time left.
    #[inline(always)]
    fn call<T, E>(&self, run: &mut Run) -> Action<T, E> {
        if self.hedge.is_some() {
            return self.hedged_call(run);
        }
        let now = run.deadline_at.map(|_| self.clock.now());
        Action::Call {
            timeout: self.attempt_limit(run, now),
        }
    }

    /// Step 5 with a hedge: the primary call, and when its hedge is due.
    #[inline(never)]
    fn hedged_call<T, E>(&self, run: &mut Run) -> Action<T, E> {
        let hedge = self.hedge.as_ref();
        let tracks = hedge.is_some_and(crate::Hedge::tracks_latency);
        let now = (tracks || run.deadline_at.is_some()).then(|| self.clock.now());
        run.hedge.started = now.filter(|_| tracks);
        run.hedge.in_flight = 1;
        run.hedge.next_in = hedge
            .filter(|_| run.hedge.allowed)
            .and_then(|hedge| hedge.delay(now.unwrap_or_default()));
        Action::Call {
            timeout: self.attempt_limit(run, now),
        }
    }

    /// The attempt timeout cut to the time left at `now` (read when there is a deadline).
    #[inline(always)]
    fn attempt_limit(&self, run: &Run, now: Option<Duration>) -> Option<Duration> {
        let left = run
            .deadline_at
            .zip(now)
            .map(|(at, now)| at.saturating_sub(now));
        match (self.attempt_timeout, left) {
            (Some(a), Some(l)) => Some(a.min(l)),
            (a, l) => a.or(l),
        }
    }

    /// How long step 3 may wait for quota: `limiter_wait` cut to the time left. `None`: no
    /// waiting (a denial is refused at once).
    #[inline(always)]
    fn limit_wait(&self, run: &Run) -> Option<Duration> {
        let wait = self.limiter_wait?;
        Some(
            run.deadline_at
                .map_or(wait, |at| wait.min(at.saturating_sub(self.clock.now()))),
        )
    }

    #[inline(always)]
    fn past_deadline(&self, run: &Run) -> bool {
        run.deadline_at.is_some_and(|at| self.clock.now() >= at)
    }

    /// Steps 6 and 7: classify the attempt, record it in the breaker and the adaptive
    /// limit, decide what follows. `replay`: whether the request can be sent again.
    fn settle<T, E>(
        &self,
        run: &mut Run,
        lane: usize,
        attempt: Attempt<T, E>,
        replay: bool,
    ) -> Action<T, E>
    where
        Cl: Classify<T, E>,
        E: 'static,
    {
        if matches!(attempt, Attempt::TimedOut) && self.past_deadline(run) {
            run.release_lanes(); // cancelled by the deadline: nothing recorded
            return self.fail(run.timed_out_in_call());
        }
        let (permits, started) = if lane == PRIMARY {
            (std::mem::take(&mut run.permits), run.hedge.started.take())
        } else {
            match run.hedge.take_lane(lane) {
                Some(Lane { permits, started }) => (permits, started),
                // a lane already settled, or never started: nothing to do with it
                None => return Action::Await,
            }
        };
        let retry_after = self.record(run, permits, started, &attempt);
        if self.hedge.is_some() {
            run.hedge.in_flight = run.hedge.in_flight.saturating_sub(1);
            if retry_after.is_some() && run.hedge.in_flight > 0 {
                // a failed call while others run: the first success still wins
                return Action::Await;
            }
            run.release_lanes(); // the losers: dropped by the driver, unrecorded
        }
        let (Some(retry_after), Some(policy), true) = (retry_after, &self.retry, replay) else {
            return self.end(finish(attempt, run, Stop::NotRetryable));
        };
        let now = self.clock.now();
        let time_left = run.deadline_at.map(|at| at.saturating_sub(now));
        match run.retry.after_failure(
            &policy.schedule(),
            retry_after,
            self.budget.as_ref(),
            now,
            time_left,
        ) {
            RetryStep::Retry(delay) => {
                if time_left.is_some_and(|left| delay >= left) {
                    // the next attempt would start at or past the deadline
                    return self.fail(run.timed_out_before_call());
                }
                let breaker = run.stages.breaker.as_ref().or(self.breaker.as_ref());
                if let Some(open) = breaker.and_then(|b| b.0.open_for())
                    && open > delay
                {
                    return self.fail(Error::CircuitOpen(CircuitOpen::new(open)));
                }
                self.metrics.retried(delay);
                if let Some(listener) = &self.on_retry {
                    listener(run.attempts(), delay);
                }
                Action::Sleep(delay)
            }
            RetryStep::Exhausted => {
                self.metrics.exhausted();
                self.end(finish(attempt, run, Stop::Exhausted))
            }
            RetryStep::GiveUp => self.end(finish(attempt, run, Stop::NotRetryable)),
        }
    }

    /// Step 6: classifies the attempt and records it in the breaker and the adaptive limit,
    /// releasing both (and, a success `started` then, its latency in the hedge). Returns
    /// `Some(retry_after)` when the outcome is retryable.
    ///
    /// An upstream's own `retry_after` (not one of our rejections) is left in the run as
    /// pushback for the driver to hold the key with.
    #[inline]
    fn record<T, E>(
        &self,
        run: &mut Run,
        permits: Permits,
        started: Option<Duration>,
        attempt: &Attempt<T, E>,
    ) -> Option<Option<Duration>>
    where
        Cl: Classify<T, E>,
        E: 'static,
    {
        let verdict = match attempt {
            // an attempt timeout is a retryable failure
            Attempt::TimedOut => Verdict::from(Outcome::RETRYABLE),
            Attempt::Done(result) => match result.as_ref().err().and_then(OwnRejection::find) {
                // our own rejections from inside the call say nothing about the callee
                Some(OwnRejection::RateLimited(wait)) => Verdict {
                    breaker: Outcome::Ignore,
                    retry: true,
                    retry_after: Some(wait),
                },
                Some(OwnRejection::CircuitOpen) => Verdict::from(Outcome::Ignore),
                Some(OwnRejection::BulkheadFull) => Verdict {
                    breaker: Outcome::Ignore,
                    retry: true,
                    retry_after: None,
                },
                None => {
                    // a wait on a result not retried is only held in a limiter
                    let pushback = self.respect_pushback && run.limited;
                    let verdict = self.classifier.verdict_with(result.as_ref(), pushback);
                    if self.respect_pushback
                        && let Some(after) = verdict.retry_after.filter(|d| !d.is_zero())
                    {
                        let most = self
                            .retry
                            .as_ref()
                            .map_or(MAX_PUSHBACK_WITHOUT_RETRY, RetryPolicy::max_delay);
                        run.pushback = Some(after.min(most));
                    }
                    verdict
                }
            },
        };
        if let (Some(started), Some(hedge), Outcome::Success) =
            (started, &self.hedge, verdict.breaker)
        {
            let now = self.clock.now();
            hedge.record(now.saturating_sub(started), now);
        }
        let breaker = run.stages.breaker.as_ref().or(self.breaker.as_ref());
        if let (Some(ticket), Some(breaker)) = (permits.breaker, breaker) {
            breaker.0.record(ticket, verdict.breaker);
        }
        if let Some(slot) = permits.slot {
            slot.record(verdict.breaker);
        }
        verdict.retry.then_some(verdict.retry_after)
    }
}

#[derive(Clone, Copy)]
enum Stop {
    NotRetryable,
    Exhausted,
}

/// The run's result from its last attempt.
fn finish<T, E>(attempt: Attempt<T, E>, run: &Run, stop: Stop) -> Result<T, Error<E>> {
    match attempt {
        Attempt::Done(Ok(value)) => Ok(value),
        Attempt::Done(Err(e)) => Err(match stop {
            Stop::NotRetryable => Error::Failed(e),
            Stop::Exhausted => Error::RetryExhausted {
                attempts: run.attempts(),
                last: e,
            },
        }),
        Attempt::TimedOut => Err(run.timed_out_in_call()),
    }
}
