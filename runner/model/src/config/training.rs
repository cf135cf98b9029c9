//! The `training` object: optimisation, schedule, batching and run control, parsed and validated.
//! Zero is honoured (or refused) rather than meaning "default", unlike mixlab.

use super::averaging::Averaging;
use super::evaluation::{QatConfig, Ttt};
use super::optimizer::OptimizerConfig;
use super::schedule::Phase;
use super::stopping::EarlyStop;
use crate::blocks::WeightInit;
use crate::error::ConfigError;
use crate::json::{Fields, MixlabField, mixlab};
use serde_json::Value;

const TRAINING_FIELDS: &[&str] = &[
    "lr",
    "batch_tokens",
    "beta1",
    "beta2",
    "epsilon",
    "weight_decay",
    "weight_decay_policy",
    "embed_lr",
    "matrix_lr",
    "scalar_lr",
    "head_lr",
    "embed_weight_decay",
    "matrix_weight_decay",
    "scalar_weight_decay",
    "head_weight_decay",
    "grad_clip",
    "seed",
    "val_every",
    "log_every",
    "val_batches",
    "compute_dtype",
    "weight_init",
    "weight_init_std",
    "divergence_factor",
];
/// mixlab `training` fields that mixsweep does not implement yet: accepted at their defaults.
/// `objective` comes first, so that a masked-objective config is told that before anything else.
const MIXLAB_TRAINING: &[MixlabField] = &[
    mixlab(
        "objective",
        Some("\"causal\""),
        "mixsweep trains causal language models",
    ),
    mixlab(
        "lr_schedule",
        Some("\"cosine\""),
        "NewBob is for classification",
    ),
    mixlab(
        "first_byte_mask",
        Some("false"),
        "the first-byte mask is not implemented",
    ),
    mixlab(
        "newton_schulz_variant",
        Some("\"fixed\""),
        "the polar_express coefficients are not implemented",
    ),
    mixlab(
        "cautious_weight_decay",
        Some("false"),
        "cautious weight decay is not implemented",
    ),
    mixlab(
        "cautious_weight_decay_activation_frac",
        Some("0"),
        "cautious weight decay is not implemented",
    ),
    mixlab(
        "shuffle_chunk_tokens",
        None,
        "batches are drawn at random offsets",
    ),
    mixlab("batch_size", None, "set batch_tokens"),
    mixlab(
        "seq_len_schedule",
        None,
        "sequence-length schedules are not implemented",
    ),
    mixlab(
        "recurrence_activation_frac",
        Some("0"),
        "recurrence activation schedules are not implemented",
    ),
    mixlab(
        "recurrence_activation_step",
        Some("0"),
        "recurrence activation schedules are not implemented",
    ),
    mixlab(
        "reverse_complement_prob",
        Some("0"),
        "DNA augmentation is not implemented",
    ),
    mixlab(
        "example_framing",
        None,
        "example framing is not implemented",
    ),
    mixlab(
        "attention_segment_mask",
        Some("\"none\""),
        "segment masks are not implemented",
    ),
    mixlab("distillation", None, "distillation is not implemented"),
    mixlab("data2vec", None, "data2vec is not implemented"),
    mixlab("classification", None, "classification is not implemented"),
    mixlab("length_buckets", None, "length buckets are not implemented"),
    mixlab("val_every_steps", None, "use val_every"),
    mixlab("val_examples", None, "use val_batches"),
];

/// Precision of activations and matmuls. Master weights and optimizer state are always float32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComputeDtype {
    Float32,
    Bfloat16,
}

impl ComputeDtype {
    pub fn as_str(self) -> &'static str {
        match self {
            ComputeDtype::Float32 => "float32",
            ComputeDtype::Bfloat16 => "bfloat16",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightDecayPolicy {
    /// Decay rank >= 2 tensors that are not scalar-like (mixlab's default).
    MatrixOnly,
    /// Decay every tensor.
    All,
}

/// Per-group learning rate and weight decay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupHyper {
    pub lr: f64,
    pub weight_decay: f64,
}

/// The `training` object.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingConfig {
    pub steps: usize,
    pub lr: f64,
    pub batch_tokens: usize,
    pub warmup_steps: usize,
    pub hold_steps: usize,
    pub warmdown_steps: usize,
    pub min_lr_fraction: f64,
    pub lr_schedule_steps: usize,
    pub beta1: f64,
    pub beta2: f64,
    pub epsilon: f64,
    pub weight_decay_policy: WeightDecayPolicy,
    pub embed: GroupHyper,
    pub matrix: GroupHyper,
    pub scalar: GroupHyper,
    pub head: GroupHyper,
    pub grad_clip: f64,
    pub seed: u64,
    pub val_every: usize,
    pub log_every: usize,
    pub val_batches: usize,
    pub compute_dtype: ComputeDtype,
    pub weight_init: WeightInit,
    /// A run is `diverged` when its smoothed training loss exceeds this multiple of its best
    /// smoothed loss (mixsweep's own field; 0 turns the check off; non-finite losses always count).
    pub divergence_factor: f64,
    /// The update rule of each parameter group and its settings.
    pub optimizer: OptimizerConfig,
    /// A multi-phase schedule (empty: the standard one).
    pub phases: Vec<Phase>,
    pub early_stop: EarlyStop,
    /// SWA/EMA of the weights (`swa_start > 0`).
    pub averaging: Option<Averaging>,
    /// Test-time training during full validation (`ttt_steps > 0`).
    pub ttt: Option<Ttt>,
    /// Quantization-aware training (`qat`, `qat_start`).
    pub qat: Option<QatConfig>,
    /// The device's peak TFLOP/s, for MFU in logs and summary.
    pub hardware_tflops: Option<f64>,
    /// Weight of `mean(logsumexp(logits)²)` added to the training objective (0 = off).
    pub z_loss: f64,
}

impl TrainingConfig {
    /// Validates a `training` object on its own (`None`: all defaults); `seq_len` is the model's.
    pub fn from_value(
        value: Option<&Value>,
        seq_len: usize,
    ) -> Result<TrainingConfig, ConfigError> {
        parse_training(value, seq_len)
    }

    /// Sequences per step.
    pub fn batch_size(&self, seq_len: usize) -> usize {
        self.batch_tokens / seq_len
    }
}

fn positive_f64(f: &mut Fields<'_>, key: &str, default: f64) -> Result<f64, ConfigError> {
    match f.f64(key)? {
        None => Ok(default),
        Some(v) if v > 0.0 && v.is_finite() => Ok(v),
        Some(v) => Err(f.error(key, format!("{key}={v} must be > 0"))),
    }
}

fn nonneg_f64(f: &mut Fields<'_>, key: &str, default: f64) -> Result<f64, ConfigError> {
    match f.f64(key)? {
        None => Ok(default),
        Some(v) if v >= 0.0 && v.is_finite() => Ok(v),
        Some(v) => Err(f.error(key, format!("{key}={v} must be >= 0"))),
    }
}

fn unit_interval(f: &mut Fields<'_>, key: &str, default: f64) -> Result<f64, ConfigError> {
    match f.f64(key)? {
        None => Ok(default),
        Some(v) if (0.0..1.0).contains(&v) => Ok(v),
        Some(v) => Err(f.error(key, format!("{key}={v} must be in [0, 1)"))),
    }
}

fn positive_usize(f: &mut Fields<'_>, key: &str, default: usize) -> Result<usize, ConfigError> {
    match f.usize(key)? {
        None => Ok(default),
        Some(0) => Err(f.error(key, format!("{key} must be > 0"))),
        Some(v) => Ok(v),
    }
}

pub(crate) fn parse_training(
    value: Option<&Value>,
    seq_len: usize,
) -> Result<TrainingConfig, ConfigError> {
    let empty = Value::Object(Default::default());
    let mut f = Fields::new("training", value.unwrap_or(&empty))?;
    f.mixlab_defaults(MIXLAB_TRAINING)?;
    let schedule = super::schedule::parse(&mut f)?;
    let steps = schedule.steps;
    let lr = positive_f64(&mut f, "lr", 3e-4)?;
    let batch_tokens = positive_usize(&mut f, "batch_tokens", 1024)?;
    if batch_tokens % seq_len != 0 {
        return Err(f
            .error(
                "batch_tokens",
                format!("batch_tokens={batch_tokens} must be a multiple of seq_len={seq_len}"),
            )
            .with_hint(format!(
                "use e.g. {}",
                (batch_tokens / seq_len).max(1) * seq_len
            )));
    }
    let beta1 = unit_interval(&mut f, "beta1", 0.9)?;
    let beta2 = unit_interval(&mut f, "beta2", 0.95)?;
    let epsilon = positive_f64(&mut f, "epsilon", 1e-8)?;
    let weight_decay = nonneg_f64(&mut f, "weight_decay", 0.01)?;
    let weight_decay_policy = match f.string("weight_decay_policy")?.as_deref() {
        None | Some("matrix_only") => WeightDecayPolicy::MatrixOnly,
        Some("all") => WeightDecayPolicy::All,
        Some(other) => {
            return Err(f
                .error("weight_decay_policy", format!("unknown policy {other:?}"))
                .with_hint("use \"matrix_only\" (default) or \"all\""));
        }
    };
    let group = |f: &mut Fields<'_>, name: &str| -> Result<GroupHyper, ConfigError> {
        Ok(GroupHyper {
            lr: positive_f64(f, &format!("{name}_lr"), lr)?,
            weight_decay: nonneg_f64(f, &format!("{name}_weight_decay"), weight_decay)?,
        })
    };
    let embed = group(&mut f, "embed")?;
    let matrix = group(&mut f, "matrix")?;
    let scalar = group(&mut f, "scalar")?;
    let head = group(&mut f, "head")?;
    let grad_clip = nonneg_f64(&mut f, "grad_clip", 0.0)?;
    let seed = f.usize("seed")?.unwrap_or(42) as u64;
    let val_every = f.usize("val_every")?.unwrap_or(100);
    let log_every = positive_usize(&mut f, "log_every", 100)?;
    let val_batches = positive_usize(&mut f, "val_batches", 10)?;
    let compute_dtype = match f.string("compute_dtype")?.as_deref() {
        None | Some("float32") | Some("fp32") => ComputeDtype::Float32,
        Some("bfloat16") | Some("bf16") => ComputeDtype::Bfloat16,
        Some(other) => {
            return Err(f
                .error("compute_dtype", format!("unknown compute_dtype {other:?}"))
                .with_hint("use \"float32\" or \"bfloat16\""));
        }
    };
    let optimizer = super::optimizer::parse(&mut f, beta1)?;
    let weight_init_std = positive_f64(&mut f, "weight_init_std", 0.02)?;
    let std = weight_init_std as f32;
    let weight_init = match f.choice(
        "weight_init",
        &[
            "xavier_uniform",
            "normal",
            "gpt2",
            "gptbert",
            "pytorch_linear",
        ],
        "xavier_uniform",
    )? {
        "xavier_uniform" => WeightInit::XavierUniform,
        "normal" => WeightInit::Normal { std },
        "gpt2" => WeightInit::Gpt2 { std },
        "gptbert" => WeightInit::GptBert,
        _ => WeightInit::PytorchLinear,
    };
    let divergence_factor = match f.f64("divergence_factor")? {
        None => 2.0,
        Some(v) if v == 0.0 || (v > 1.0 && v.is_finite()) => v,
        Some(v) => {
            return Err(f
                .error(
                    "divergence_factor",
                    format!("divergence_factor={v} must be > 1 (or 0 to turn the check off)"),
                )
                .with_hint("the default 2 ends a run whose smoothed loss doubles from its best"));
        }
    };
    let early_stop = super::stopping::parse(&mut f)?;
    let ttt = super::evaluation::parse_ttt(&mut f)?;
    let qat = super::evaluation::parse_qat(&mut f)?;
    let hardware_tflops = super::evaluation::nonneg(&mut f, "hardware_tflops")?;
    let z_loss = super::evaluation::nonneg(&mut f, "z_loss")?;
    let averaging = super::averaging::parse(&mut f)?;
    let valid: Vec<&str> = [
        TRAINING_FIELDS,
        super::optimizer::FIELDS,
        super::schedule::FIELDS,
        super::stopping::FIELDS,
        super::averaging::FIELDS,
        super::evaluation::FIELDS,
    ]
    .concat();
    f.finish(&valid)?;
    Ok(TrainingConfig {
        steps,
        lr,
        batch_tokens,
        warmup_steps: schedule.warmup_steps,
        hold_steps: schedule.hold_steps,
        warmdown_steps: schedule.warmdown_steps,
        min_lr_fraction: schedule.min_lr_fraction,
        lr_schedule_steps: schedule.lr_schedule_steps,
        phases: schedule.phases,
        beta1,
        beta2,
        epsilon,
        weight_decay_policy,
        embed,
        matrix,
        scalar,
        head,
        grad_clip,
        seed,
        val_every,
        log_every,
        val_batches,
        compute_dtype,
        weight_init,
        divergence_factor,
        optimizer,
        early_stop,
        averaging,
        ttt,
        qat,
        hardware_tflops: (hardware_tflops > 0.0).then_some(hardware_tflops),
        z_loss,
    })
}
