//! Weight averaging (mixlab's `swa_*` fields): an exponential moving average of the weights,
//! evaluated and exported beside the final weights.

use crate::error::ConfigError;
use crate::json::Fields;

/// `ema = decay · ema + (1 - decay) · w` at steps `s >= start` with `(s - start) % interval == 0`
/// (the first update copies the weights).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Averaging {
    pub start: usize,
    pub decay: f64,
    pub interval: usize,
}

impl Averaging {
    /// Whether the average takes in the weights after 0-based step `s`.
    pub fn updates_at(&self, s: usize) -> bool {
        s >= self.start && (s - self.start).is_multiple_of(self.interval)
    }
}

pub const FIELDS: &[&str] = &["swa_start", "swa_decay", "swa_interval"];

/// `None` when `swa_start` is 0 (mixlab: off).
pub(crate) fn parse(f: &mut Fields<'_>) -> Result<Option<Averaging>, ConfigError> {
    let start = f.usize("swa_start")?.unwrap_or(0);
    let decay = match f.f64("swa_decay")? {
        None => 0.999,
        Some(d) if (0.0..1.0).contains(&d) => d,
        Some(d) => return Err(f.error("swa_decay", format!("swa_decay={d} must be in [0, 1)"))),
    };
    let interval = match f.usize("swa_interval")? {
        None => 10,
        Some(0) => return Err(f.error("swa_interval", "swa_interval must be > 0")),
        Some(i) => i,
    };
    Ok((start > 0).then_some(Averaging {
        start,
        decay,
        interval,
    }))
}
