//! [`ModelConfig`] and [`TrainingConfig`]: the mixlab-compatible JSON(C) model config, parsed and
//! validated. A `ModelConfig` value is valid by construction: every constructor validates.
//!
//! Differences from mixlab, on purpose: unknown keys are errors everywhere (mixlab ignores them inside
//! `training` and blocks); an explicit `0` is honoured or rejected rather than meaning "default"; the
//! default optimizer is `adamw` (mixlab's is `muon`, not implemented here yet).

use crate::blocks::{self, Block, ModelDims};
use crate::error::{ConfigError, nearest};
use crate::ir::Init;
use crate::json::{Fields, parse_jsonc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::Path;

const TOP_FIELDS: &[&str] = &[
    "name",
    "model_dim",
    "vocab_size",
    "seq_len",
    "mlp_mult",
    "tie_embeddings",
    "dropout",
    "norm_eps",
    "blocks",
    "training",
];
const TOP_UNSUPPORTED: &[&str] = &[
    "block_scales",
    "resid_mix",
    "parallel_residual",
    "unet",
    "recurrence",
    "bigram_vocab_size",
    "bigram_dim",
    "trigram_vocab_size",
    "trigram_dim",
    "logit_softcap",
    "embedding_dropout",
    "norm_type",
    "norm_affine",
    "norm_placement",
    "final_norm",
    "ffn_internal_norm",
    "positional_embedding",
    "max_positions",
    "char_vocab_size",
    "char_dim",
    "char_max_per_token",
    "smear_embeddings",
    "mtp",
    "backout",
    "layer_aggregation",
    "input_adapter",
    "hidden_dropout",
    "attn_dropout",
    "eval",
    "data",
];
const TRAINING_FIELDS: &[&str] = &[
    "steps",
    "lr",
    "batch_tokens",
    "warmup_steps",
    "hold_steps",
    "warmdown_steps",
    "min_lr_fraction",
    "lr_schedule_steps",
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
    "optimizer",
    "weight_init",
    "weight_init_std",
    "divergence_factor",
];
const TRAINING_UNSUPPORTED: &[&str] = &[
    "phases",
    "lr_schedule",
    "target_val_loss",
    "early_stop",
    "swa_start",
    "swa_decay",
    "swa_interval",
    "hardware_tflops",
    "qat",
    "qat_start",
    "ttt_mode",
    "ttt_steps",
    "ttt_lr",
    "ttt_rank",
    "objective",
    "z_loss",
    "first_byte_mask",
    "muon_momentum",
    "muon_backend_steps",
    "muon_nesterov",
    "newton_schulz_variant",
    "cautious_weight_decay",
    "warmup_ratio",
    "shuffle_chunk_tokens",
    "batch_size",
    "seq_len_schedule",
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
    pub weight_init: Init,
    /// A run is `diverged` when its smoothed training loss exceeds this multiple of its best
    /// smoothed loss (mixsweep's own field; 0 turns the check off; non-finite losses always count).
    pub divergence_factor: f64,
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

    /// mixlab's schedule: linear warmup from 0, hold at peak, cosine down to the floor
    /// (`min_lr_fraction · lr`, or 10% of lr when it is 0), optional linear warmdown at the end.
    /// Returns the multiplier of each group's peak learning rate at `step` (0-based).
    pub fn lr_scale(&self, step: usize) -> f64 {
        let floor = if self.min_lr_fraction > 0.0 {
            self.min_lr_fraction
        } else {
            0.1
        };
        let base = |t: usize| -> f64 {
            let (w, h, s) = (self.warmup_steps, self.hold_steps, self.lr_schedule_steps);
            if t < w {
                return t as f64 / w as f64;
            }
            if t < w + h || s <= w + h {
                return 1.0;
            }
            let p = ((t - w - h) as f64 / (s - w - h) as f64).min(1.0);
            floor + (1.0 - floor) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
        };
        if self.warmdown_steps > 0 {
            let t0 = self.lr_schedule_steps.saturating_sub(self.warmdown_steps);
            if step >= t0 {
                let target = if self.min_lr_fraction > 0.0 {
                    floor
                } else {
                    floor / 10.0
                };
                let p = ((step - t0) as f64 / self.warmdown_steps as f64).min(1.0);
                let start = base(t0);
                return start + (target - start) * p;
            }
        }
        base(step)
    }
}

/// A validated model config.
#[derive(Debug)]
pub struct ModelConfig {
    pub name: String,
    pub model_dim: usize,
    pub vocab_size: usize,
    pub seq_len: usize,
    pub mlp_mult: f64,
    pub tie_embeddings: bool,
    pub dropout: f64,
    pub norm_eps: f64,
    pub blocks: Vec<Box<dyn Block>>,
    pub training: TrainingConfig,
    /// SHA-256 of the canonical JSON (sorted keys, no comments) of the source document.
    pub config_hash: String,
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

fn parse_training(value: Option<&Value>, seq_len: usize) -> Result<TrainingConfig, ConfigError> {
    let empty = Value::Object(Default::default());
    let mut f = Fields::new("training", value.unwrap_or(&empty))?;
    let steps = positive_usize(&mut f, "steps", 200)?;
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
    let warmup_steps = f.usize("warmup_steps")?.unwrap_or(steps.min(100));
    let hold_steps = f.usize("hold_steps")?.unwrap_or(200);
    let warmdown_steps = f.usize("warmdown_steps")?.unwrap_or(0);
    let min_lr_fraction = unit_interval(&mut f, "min_lr_fraction", 0.0)?;
    let lr_schedule_steps = positive_usize(&mut f, "lr_schedule_steps", steps)?;
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
    match f.string("optimizer")?.as_deref() {
        None | Some("adamw") => {}
        Some(other @ ("muon" | "muon_eq_r" | "normuon" | "lamb")) => {
            return Err(f
                .error(
                    "optimizer",
                    format!("optimizer {other:?} is not implemented in mixsweep yet"),
                )
                .with_hint("use \"adamw\""));
        }
        Some(other) => {
            return Err(f
                .error("optimizer", format!("unknown optimizer {other:?}"))
                .with_hint("use \"adamw\""));
        }
    }
    let weight_init_std = positive_f64(&mut f, "weight_init_std", 0.02)?;
    let weight_init = match f.string("weight_init")?.as_deref() {
        None | Some("xavier_uniform") => Init::XavierUniform,
        Some("normal") => Init::Normal {
            std: weight_init_std as f32,
        },
        Some(other) => {
            return Err(f
                .error("weight_init", format!("unknown weight_init {other:?}"))
                .with_hint("use \"xavier_uniform\" (default) or \"normal\""));
        }
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
    f.finish(TRAINING_FIELDS, TRAINING_UNSUPPORTED)?;
    Ok(TrainingConfig {
        steps,
        lr,
        batch_tokens,
        warmup_steps,
        hold_steps,
        warmdown_steps,
        min_lr_fraction,
        lr_schedule_steps,
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
    })
}

impl ModelConfig {
    /// Reads and validates a config file; errors name the file.
    pub fn load(path: &Path) -> Result<ModelConfig, ConfigError> {
        let src = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("", format!("cannot read config: {e}")).in_file(path))?;
        let mut cfg = Self::from_jsonc(&src).map_err(|e| e.in_file(path))?;
        if cfg.name.is_empty() {
            cfg.name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
        }
        Ok(cfg)
    }

    /// Parses JSONC text (`//` and `/* */` comments allowed).
    pub fn from_jsonc(src: &str) -> Result<ModelConfig, ConfigError> {
        Self::from_value(&parse_jsonc(src)?)
    }

    /// Validates a JSON document.
    pub fn from_value(doc: &Value) -> Result<ModelConfig, ConfigError> {
        let mut f = Fields::new("", doc)?;
        let name = f.string("name")?.unwrap_or_default();
        let model_dim = f.usize("model_dim")?.filter(|&d| d > 0).ok_or_else(|| {
            f.error("model_dim", "model_dim is required and must be > 0")
                .with_hint("add e.g. \"model_dim\": 128")
        })?;
        let vocab_size = f.usize("vocab_size")?.filter(|&v| v > 0).ok_or_else(|| {
            f.error("vocab_size", "vocab_size is required and must be > 0")
                .with_hint("256 for byte-level data")
        })?;
        if vocab_size > 65536 {
            return Err(f
                .error(
                    "vocab_size",
                    format!(
                        "vocab_size={vocab_size} exceeds 65536, the limit of uint16 token shards"
                    ),
                )
                .with_hint("use a tokenizer with at most 65536 tokens"));
        }
        let seq_len = positive_usize(&mut f, "seq_len", 128)?;
        let mlp_mult = positive_f64(&mut f, "mlp_mult", 2.67)?;
        let tie_embeddings = f.bool("tie_embeddings")?.unwrap_or(false);
        let dropout = match f.f64("dropout")? {
            None => 0.0,
            Some(p) if (0.0..1.0).contains(&p) => p,
            Some(p) => return Err(f.error("dropout", format!("dropout={p} must be in [0, 1)"))),
        };
        let norm_eps = positive_f64(&mut f, "norm_eps", 1e-5)?;
        let training = parse_training(f.raw("training"), seq_len)?;
        let dims = ModelDims {
            model_dim,
            seq_len,
            vocab_size,
            ffn_dim: model_dim.max((model_dim as f64 * mlp_mult).round() as usize),
            norm_eps: norm_eps as f32,
            dropout: dropout as f32,
            matrix_init: training.weight_init,
        };
        let block_values = f.array("blocks")?.ok_or_else(|| {
            f.error("blocks", "blocks is required")
                .with_hint("add e.g. \"blocks\": [{\"type\": \"plain\", \"heads\": 4}]")
        })?;
        if block_values.is_empty() {
            return Err(f.error("blocks", "blocks must hold at least one block"));
        }
        let mut blocks = Vec::with_capacity(block_values.len());
        for (i, bv) in block_values.iter().enumerate() {
            blocks.push(parse_block(&format!("blocks[{i}]"), bv, &dims)?);
        }
        f.finish(TOP_FIELDS, TOP_UNSUPPORTED)?;
        let config_hash = format!("{:x}", Sha256::digest(canonical_json(doc).as_bytes()));
        Ok(ModelConfig {
            name,
            model_dim,
            vocab_size,
            seq_len,
            mlp_mult,
            tie_embeddings,
            dropout,
            norm_eps,
            blocks,
            training,
            config_hash,
        })
    }

    pub fn dims(&self) -> ModelDims {
        ModelDims {
            model_dim: self.model_dim,
            seq_len: self.seq_len,
            vocab_size: self.vocab_size,
            ffn_dim: self
                .model_dim
                .max((self.model_dim as f64 * self.mlp_mult).round() as usize),
            norm_eps: self.norm_eps as f32,
            dropout: self.dropout as f32,
            matrix_init: self.training.weight_init,
        }
    }
}

fn parse_block(path: &str, value: &Value, dims: &ModelDims) -> Result<Box<dyn Block>, ConfigError> {
    let mut f = Fields::new(path, value)?;
    let kind = f.string("type")?.ok_or_else(|| {
        f.error("type", "every block needs a `type`")
            .with_hint(format!("one of: {}", type_names().join(", ")))
    })?;
    let Some(block_type) = blocks::find(&kind) else {
        if blocks::NOT_YET.contains(&kind.as_str()) {
            return Err(f
                .error("type", format!("block type {kind:?} exists in mixlab but is not implemented in mixsweep yet"))
                .with_hint(format!("use one of: {}", type_names().join(", "))));
        }
        let mut err = f.error("type", format!("unknown block type {kind:?}"));
        err = match nearest(&kind, &type_names()) {
            Some(n) => err.with_hint(format!("did you mean {n:?}?")),
            None => err.with_hint(format!("use one of: {}", type_names().join(", "))),
        };
        return Err(err);
    };
    let block = (block_type.parse)(&mut f, dims)?;
    let mut valid = vec!["type"];
    valid.extend_from_slice(block_type.fields);
    f.finish(&valid, &[])?;
    Ok(block)
}

fn type_names() -> Vec<&'static str> {
    blocks::REGISTRY.iter().map(|t| t.name).collect()
}

/// JSON with object keys sorted and no insignificant whitespace (serde_json's map is ordered).
pub fn canonical_json(v: &Value) -> String {
    serde_json::to_string(v).expect("a JSON value serializes")
}
