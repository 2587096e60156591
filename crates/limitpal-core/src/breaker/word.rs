//! The breaker's hot state in one atomic word: `[failures:32 | epoch:30 | state:2]`.
//!
//! Closed-state admission is one load; a success or failure in Closed is one compare-and-swap
//! that also checks the permit's epoch, so an outcome from before a transition can never be
//! counted after it.

use super::CircuitState;

const STATE_MASK: u64 = 0b11;
const EPOCH_BITS: u32 = 30;
const EPOCH_MASK: u64 = (1 << EPOCH_BITS) - 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Word(pub(crate) u64);

impl Word {
    pub(crate) const INITIAL: Self = Self(0);

    #[inline]
    pub(crate) fn state(self) -> CircuitState {
        match self.0 & STATE_MASK {
            0 => CircuitState::Closed,
            1 => CircuitState::Open,
            _ => CircuitState::HalfOpen,
        }
    }

    #[inline]
    pub(crate) fn epoch(self) -> u32 {
        #[allow(clippy::cast_possible_truncation)] // masked to 30 bits
        let epoch = ((self.0 >> 2) & EPOCH_MASK) as u32;
        epoch
    }

    #[inline]
    pub(crate) fn failures(self) -> u32 {
        #[allow(clippy::cast_possible_truncation)] // the top 32 bits
        let failures = (self.0 >> 32) as u32;
        failures
    }

    #[inline]
    pub(crate) fn with_failures(self, failures: u32) -> Self {
        Self((self.0 & 0xFFFF_FFFF) | (u64::from(failures) << 32))
    }

    /// The word of the next epoch in `state`, with no failures counted. The epoch wraps after
    /// 2^30 transitions; a permit would have to be held across all of them to be confused.
    pub(crate) fn next(self, state: CircuitState) -> Self {
        let epoch = (u64::from(self.epoch()) + 1) & EPOCH_MASK;
        let state = match state {
            CircuitState::Closed => 0,
            CircuitState::Open => 1,
            CircuitState::HalfOpen => 2,
        };
        Self((epoch << 2) | state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        let w = Word::INITIAL
            .next(CircuitState::HalfOpen)
            .with_failures(u32::MAX);
        assert_eq!(w.state(), CircuitState::HalfOpen);
        assert_eq!(w.epoch(), 1);
        assert_eq!(w.failures(), u32::MAX);
        let mut w = Word(EPOCH_MASK << 2);
        w = w.next(CircuitState::Open);
        assert_eq!(
            (w.epoch(), w.state(), w.failures()),
            (0, CircuitState::Open, 0)
        );
    }
}
