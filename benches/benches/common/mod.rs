//! What every criterion benchmark of this package shares: a reproducible random source and the run settings.

use std::time::Duration;

use criterion::Criterion;

/// xorshift64*: reproducible tables and picks without a dependency.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// An index below `n`.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Short warm-up and measurement (the figures settle within them on a quiet machine), then
/// whatever the command line says (`--measurement-time`, a filter…).
pub(crate) fn criterion() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).configure_from_args()
}
