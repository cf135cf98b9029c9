//! Training fields about how weights are evaluated and used: test-time training (mixlab §7.5),
//! quantization-aware training, z-loss and MFU accounting.

use crate::error::ConfigError;
use crate::json::Fields;

/// Score-first test-time training during full validation: each validation batch is scored, then
/// the weights take `steps` optimizer steps on it at learning rate `lr` (on a copy: training never
/// sees them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ttt {
    pub steps: usize,
    pub lr: f64,
}

pub const FIELDS: &[&str] = &[
    "ttt_steps",
    "ttt_lr",
    "ttt_mode",
    "ttt_rank",
    "hardware_tflops",
    "z_loss",
    "qat",
    "qat_start",
];

/// Quantization-aware training: fake-quantized weights in the forward pass from step `start`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QatConfig {
    /// 8 or 6.
    pub bits: u8,
    pub start: usize,
}

/// `qat`, `qat_start`: `None` for `"none"`.
pub(crate) fn parse_qat(f: &mut Fields<'_>) -> Result<Option<QatConfig>, ConfigError> {
    let bits = match f.choice("qat", &["none", "int8", "int6"], "none")? {
        "int8" => 8,
        "int6" => 6,
        _ => 0,
    };
    let start = f.usize("qat_start")?.unwrap_or(0);
    if bits == 0 && start > 0 {
        return Err(f
            .error(
                "qat_start",
                format!("training.qat_start={start} but training.qat is not set"),
            )
            .with_hint("set \"qat\": \"int8\" or \"int6\""));
    }
    Ok((bits > 0).then_some(QatConfig { bits, start }))
}

/// `ttt_*`: `None` when `ttt_steps` is 0.
pub(crate) fn parse_ttt(f: &mut Fields<'_>) -> Result<Option<Ttt>, ConfigError> {
    let mode = f.choice("ttt_mode", &["full", "lora"], "full")?;
    let steps = f.usize("ttt_steps")?.unwrap_or(0);
    let lr = match f.f64("ttt_lr")? {
        None => 1e-5,
        Some(l) if l >= 0.0 && l.is_finite() => l,
        Some(l) => return Err(f.error("ttt_lr", format!("ttt_lr={l} must be >= 0"))),
    };
    if let Some(0) = f.usize("ttt_rank")? {
        return Err(f.error("ttt_rank", "ttt_rank must be > 0"));
    }
    if mode == "lora" && steps > 0 {
        return Err(f
            .error(
                "ttt_mode",
                "ttt_mode \"lora\" (per-batch low-rank adapters) is not implemented yet",
            )
            .with_hint("use \"full\" (score-first full-weight adaptation)"));
    }
    Ok((steps > 0).then_some(Ttt { steps, lr }))
}

/// A non-negative, finite number (0 = off).
pub(crate) fn nonneg(f: &mut Fields<'_>, key: &str) -> Result<f64, ConfigError> {
    match f.f64(key)? {
        None => Ok(0.0),
        Some(v) if v >= 0.0 && v.is_finite() => Ok(v),
        Some(v) => Err(f.error(key, format!("{key}={v} must be >= 0"))),
    }
}
