//! A tiny, fast random stream per retrying request (SplitMix64).

use rand::RngCore;

/// The random stream a retrying request draws its jitter from: SplitMix64, 8 bytes of state,
/// created only when a request first retries.
///
/// Components derive one stream per request from the policy's seed and a counter, so two
/// clones of a layer never retry in lockstep while a fixed seed still gives a reproducible
/// run. It is not cryptographic; it only spreads retries in time.
#[derive(Debug, Clone)]
pub struct RetryRng {
    state: u64,
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function: a bijective mix of 64 bits.
#[inline]
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl RetryRng {
    /// The stream for `seed`. Seeds that differ in any bit give unrelated streams.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self { state: mix(seed) }
    }

    /// The `index`-th stream derived from `seed`.
    #[must_use]
    pub fn stream(seed: u64, index: u64) -> Self {
        Self::new(seed ^ mix(index.wrapping_add(GOLDEN)))
    }
}

impl RngCore for RetryRng {
    #[inline]
    fn next_u32(&mut self) -> u32 {
        #[allow(clippy::cast_possible_truncation)] // the high half is the better half
        let high = (self.next_u64() >> 32) as u32;
        high
    }

    #[inline]
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix(self.state)
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}
