//! All-or-nothing composition of two algorithms.

use super::Algorithm;
use super::sealed::Sealed;

/// Admits a request only when both `A` and `B` admit it; built with
/// [`Algorithm::and`]. Nests: `a.and(b).and(c)`.
///
/// A request denied by either part consumes from neither: both parts' states sit under one
/// per-key lock, are checked first and updated only when both pass, so contention cannot
/// make one part pay for a request the other refused. The denial's `retry_after` is the longer
/// of the two waits — the time until both would admit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct All<A, B> {
    a: A,
    b: B,
}

impl<A: Algorithm, B: Algorithm> All<A, B> {
    pub(crate) fn new(a: A, b: B) -> Self {
        Self { a, b }
    }

    /// The two parts.
    pub fn parts(&self) -> (&A, &B) {
        (&self.a, &self.b)
    }
}

impl<A: Algorithm, B: Algorithm> Sealed for All<A, B> {
    type Plain = (A::Plain, B::Plain);
    super::locked_cell!();

    fn capacity(&self) -> u32 {
        self.a.capacity().min(self.b.capacity())
    }

    fn window(&self) -> u64 {
        self.a.window().max(self.b.window())
    }

    fn new_plain(&self) -> Self::Plain {
        (self.a.new_plain(), self.b.new_plain())
    }

    fn peek(&self, s: &Self::Plain, now: u64, cost: u32) -> Result<(), u64> {
        match (self.a.peek(&s.0, now, cost), self.b.peek(&s.1, now, cost)) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(wait), Ok(())) | (Ok(()), Err(wait)) => Err(wait),
            (Err(a), Err(b)) => Err(a.max(b)),
        }
    }

    fn apply(&self, s: &mut Self::Plain, now: u64, cost: u32) -> Result<(), u64> {
        self.peek(s, now, cost)?;
        // Both parts admitted the cost on these very states; applying cannot fail.
        let a = self.a.apply(&mut s.0, now, cost);
        let b = self.b.apply(&mut s.1, now, cost);
        debug_assert!(a.is_ok() && b.is_ok(), "peek and apply disagree");
        Ok(())
    }

    fn plain_idle(&self, s: &Self::Plain, now: u64, idle: u64) -> bool {
        self.a.plain_idle(&s.0, now, idle) && self.b.plain_idle(&s.1, now, idle)
    }

    fn plain_recency(&self, s: &Self::Plain) -> u64 {
        self.a.plain_recency(&s.0).max(self.b.plain_recency(&s.1))
    }

    fn plain_quota(&self, s: &Self::Plain, now: u64) -> (u32, u64) {
        let (ra, ta) = self.a.plain_quota(&s.0, now);
        let (rb, tb) = self.b.plain_quota(&s.1, now);
        (ra.min(rb), ta.max(tb))
    }

    type Undo = (A::Undo, B::Undo);

    fn slot(&self, s: &Self::Plain, now: u64, cost: u32) -> u64 {
        // Each part admits at any instant from its own slot on, so both do from the later one.
        self.a
            .slot(&s.0, now, cost)
            .max(self.b.slot(&s.1, now, cost))
    }

    fn take(&self, s: &mut Self::Plain, at: u64, cost: u32) -> Self::Undo {
        (
            self.a.take(&mut s.0, at, cost),
            self.b.take(&mut s.1, at, cost),
        )
    }

    fn untake(&self, s: &mut Self::Plain, undo: &Self::Undo, cost: u32) {
        self.a.untake(&mut s.0, &undo.0, cost);
        self.b.untake(&mut s.1, &undo.1, cost);
    }

    fn hold(&self, s: &mut Self::Plain, until: u64) {
        self.a.hold(&mut s.0, until);
        self.b.hold(&mut s.1, until);
    }
}

impl<A: Algorithm, B: Algorithm> Algorithm for All<A, B> {}
