//! The run's one source of randomness: a ChaCha8 stream seeded from the run's seed. Everything
//! random in a run (sizes, latencies, losses, operations, clock skews) is drawn from it, in event
//! order, so a seed replays exactly.
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Clone, Debug)]
pub struct SimRng(ChaCha8Rng);

/// One in a million: probabilities are integers so no float rounding can differ between builds.
pub const PPM: u32 = 1_000_000;

impl SimRng {
    pub fn from_seed(seed: u64) -> Self {
        Self(ChaCha8Rng::seed_from_u64(seed))
    }

    /// True with probability `ppm` / 1 000 000.
    pub fn chance_ppm(&mut self, ppm: u32) -> bool {
        ppm > 0 && (ppm >= PPM || self.0.random_range(0..PPM) < ppm)
    }

    /// Uniform in `low..=high` (returns `low` if the range is empty).
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            low
        } else {
            self.0.random_range(low..=high)
        }
    }

    /// Uniform in `low..=high` (returns `low` if the range is empty).
    pub fn between_i64(&mut self, low: i64, high: i64) -> i64 {
        if high <= low {
            low
        } else {
            self.0.random_range(low..=high)
        }
    }

    /// A uniformly chosen index below `len`; `len` must be non-zero (callers pick from tables
    /// that are non-empty by construction).
    pub fn index(&mut self, len: usize) -> usize {
        debug_assert!(len > 0, "index() needs a non-empty range");
        if len <= 1 {
            0
        } else {
            self.0.random_range(0..len)
        }
    }

    /// A uniformly chosen element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }

    /// An item chosen with probability proportional to its weight; the table must have a
    /// positive total weight.
    pub fn weighted<T: Copy>(&mut self, table: &[(u32, T)]) -> T {
        let total: u64 = table.iter().map(|&(w, _)| u64::from(w)).sum();
        let mut ticket = self.between(0, total.saturating_sub(1));
        for &(weight, item) in table {
            if ticket < u64::from(weight) {
                return item;
            }
            ticket -= u64::from(weight);
        }
        table[table.len() - 1].1
    }
}

/// So rand's own helpers (`Rng` methods, distributions, shuffles) can draw from the run's stream.
impl RngCore for SimRng {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }

    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        self.0.fill_bytes(dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_and_different_seeds_differ() {
        let draw = |seed| {
            let mut rng = SimRng::from_seed(seed);
            (0..16)
                .map(|_| rng.between(0, 1_000_000))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn helpers_respect_their_bounds() {
        let mut rng = SimRng::from_seed(1);
        for _ in 0..1000 {
            assert!((3..=5).contains(&rng.between(3, 5)));
            assert!((-2..=2).contains(&rng.between_i64(-2, 2)));
            assert!(rng.index(4) < 4);
        }
        assert_eq!(rng.between(9, 9), 9);
        assert!(!rng.chance_ppm(0));
        assert!(rng.chance_ppm(PPM));
        let hits = (0..10_000).filter(|_| rng.chance_ppm(PPM / 4)).count();
        assert!(
            (2_000..3_000).contains(&hits),
            "25% chance hit {hits} of 10000"
        );
        let zeros = (0..10_000)
            .filter(|_| rng.weighted(&[(1, 0u8), (3, 1u8)]) == 0)
            .count();
        assert!(
            (2_000..3_000).contains(&zeros),
            "weight 1 of 4 chosen {zeros} of 10000"
        );
        assert_eq!(rng.weighted(&[(0, 'a'), (5, 'b')]), 'b');
    }
}
