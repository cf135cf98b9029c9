//! Deterministic host-side random numbers: SplitMix64 (batch sampling, seeds) and the derived
//! uniform/normal draws used for weight initialisation. Simple enough to re-implement in a reference
//! (see `runner/tests/reference/`), so batches and init can be reproduced outside Rust.

/// SplitMix64 (Steele, Lea, Flood 2014).
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn next_normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// A seed for stream `stream` derived from `seed` (independent streams for init, batches, dropout).
pub fn derive(seed: u64, stream: u64) -> u64 {
    let mut a = SplitMix64::new(seed);
    let mut b = SplitMix64::new(stream ^ a.next_u64());
    b.next_u64()
}
