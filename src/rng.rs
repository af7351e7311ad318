//! The crate's sources of chance: a small, fast, seedable generator (SplitMix64) for what should
//! repeat from a seed, and the operating system's random source for ids.
//!
//! Deterministic from its seed, so the in-memory network's faults repeat run to run. Ids that
//! must not be guessable by another peer come from [`Unpredictable`] instead.

/// SplitMix64: 64 bits of state, good statistical quality, not cryptographic.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Seeded from the operating system's random source (the browser's `crypto` on wasm).
    pub(crate) fn from_entropy() -> Self {
        let mut seed = [0u8; 8];
        if getrandom::fill(&mut seed).is_err() {
            // No entropy source at all: fall back to where the stack is (randomised by the
            // operating system on most platforms), which another peer cannot read either.
            let here = 0u8;
            seed = ((&here as *const u8 as u64) ^ 0x5851_f42d_4c95_7f2d).to_le_bytes();
        }
        Self(u64::from_le_bytes(seed))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f32) -> bool {
        p > 0.0 && self.unit() < p
    }
}

/// Numbers no other peer can predict, from the operating system's random source (the browser's
/// `crypto` on wasm), fetched in batches. SplitMix64 will not do for ids: one output reveals its
/// state, so a peer that saw one of our ids could compute the next and claim them first.
#[derive(Debug)]
pub(crate) struct Unpredictable {
    batch: [u64; 32],
    left: usize,
    /// Only if the operating system has no random source at all.
    fallback: SplitMix64,
}

impl Default for Unpredictable {
    fn default() -> Self {
        Self {
            batch: [0; 32],
            left: 0,
            fallback: SplitMix64::from_entropy(),
        }
    }
}

impl Unpredictable {
    pub(crate) fn next_u64(&mut self) -> u64 {
        if self.left == 0 {
            self.refill();
        }
        self.left -= 1;
        self.batch[self.left]
    }

    fn refill(&mut self) {
        let mut bytes = [0u8; 32 * 8];
        if getrandom::fill(&mut bytes).is_ok() {
            for (slot, chunk) in self.batch.iter_mut().zip(bytes.chunks_exact(8)) {
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                *slot = u64::from_le_bytes(word);
            }
        } else {
            tracing::warn!("no random source: net ids may be predictable by other peers");
            for slot in &mut self.batch {
                *slot = self.fallback.next_u64();
            }
        }
        self.left = self.batch.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_sequence() {
        let mut a = SplitMix64::new(9);
        let mut b = SplitMix64::new(9);
        assert_eq!(
            (0..4).map(|_| a.next_u64()).collect::<Vec<_>>(),
            (0..4).map(|_| b.next_u64()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn unpredictable_numbers_do_not_repeat_across_batches() {
        let mut source = Unpredictable::default();
        let drawn: std::collections::HashSet<u64> = (0..1000).map(|_| source.next_u64()).collect();
        assert_eq!(
            drawn.len(),
            1000,
            "64-bit random numbers should not collide"
        );
    }

    #[test]
    fn unit_stays_in_range() {
        let mut rng = SplitMix64::new(1);
        assert!(
            (0..1000)
                .map(|_| rng.unit())
                .all(|x| (0.0..1.0).contains(&x))
        );
    }
}
