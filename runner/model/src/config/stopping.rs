//! Ending a run early on its validation loss (mixlab's `target_val_loss` and `early_stop`).

use crate::error::ConfigError;
use crate::json::Fields;

/// When a run stops before its last step. Checked at each validation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EarlyStop {
    /// Stop once the validation loss is at or below this (`target_val_loss`; 0 = off).
    pub target_val_loss: Option<f64>,
    /// Stop after this many validations in a row without an improvement over the best by more
    /// than `min_delta` (`early_stop.patience`; 0 = off), counted from step `min_steps`.
    pub patience: usize,
    pub min_delta: f64,
    pub min_steps: usize,
    /// Stop at the first validation at or after step `at_step` whose loss is above `val_gt`.
    pub val_gt: Option<f64>,
    pub at_step: usize,
}

impl EarlyStop {
    pub fn enabled(&self) -> bool {
        self.target_val_loss.is_some() || self.patience > 0 || self.val_gt.is_some()
    }
}

pub const FIELDS: &[&str] = &["target_val_loss", "early_stop"];

fn nonneg(f: &mut Fields<'_>, key: &str) -> Result<f64, ConfigError> {
    match f.f64(key)? {
        None => Ok(0.0),
        Some(v) if v >= 0.0 && v.is_finite() => Ok(v),
        Some(v) => Err(f.error(key, format!("{key}={v} must be >= 0"))),
    }
}

pub(crate) fn parse(f: &mut Fields<'_>) -> Result<EarlyStop, ConfigError> {
    let target = nonneg(f, "target_val_loss")?;
    let mut stop = EarlyStop {
        target_val_loss: (target > 0.0).then_some(target),
        ..EarlyStop::default()
    };
    let Some(v) = f.raw("early_stop") else {
        return Ok(stop);
    };
    let mut e = Fields::new(f.path_of("early_stop"), v)?;
    let metric = e.choice("metric", &["val"], "val")?;
    debug_assert_eq!(metric, "val");
    stop.patience = e.usize("patience")?.unwrap_or(0);
    stop.min_delta = nonneg(&mut e, "min_delta")?;
    stop.min_steps = e.usize("min_steps")?.unwrap_or(0);
    let val_gt = nonneg(&mut e, "val_gt")?;
    stop.val_gt = (val_gt > 0.0).then_some(val_gt);
    stop.at_step = e.usize("at_step")?.unwrap_or(0);
    e.finish(&[
        "metric",
        "patience",
        "min_delta",
        "min_steps",
        "val_gt",
        "at_step",
    ])?;
    Ok(stop)
}
