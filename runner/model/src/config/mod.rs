//! [`ModelConfig`]: the mixlab-compatible JSON(C) model config, parsed and validated; `training` is in
//! [`training`]. A `ModelConfig` is valid by construction: every constructor validates the fields and
//! lowers the model once, so a bad layout or custom block fails here with its config path.
//!
//! Differences from mixlab, on purpose: unknown keys are errors everywhere (mixlab ignores them inside
//! `training` and blocks); an explicit `0` is honoured or rejected rather than meaning "default";
//! mixlab fields that mixsweep does not implement are accepted only at their default value (see
//! `docs/config.md`).

pub mod averaging;
pub mod evaluation;
mod layout;
pub mod optimizer;
pub mod schedule;
pub mod stopping;
pub mod training;

pub use layout::{Layout, Positional};
pub use training::{ComputeDtype, GroupHyper, TrainingConfig, WeightDecayPolicy};

use crate::blocks::{self, Block, ModelDims, NormSettings, Placement};
use crate::error::{ConfigError, suggest};
use crate::json::{Fields, MixlabField, mixlab, parse_jsonc};
use crate::ops::NormKind;
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
    "hidden_dropout",
    "attn_dropout",
    "embedding_dropout",
    "norm_type",
    "norm_eps",
    "norm_affine",
    "norm_placement",
    "final_norm",
    "ffn_internal_norm",
    "block_scales",
    "resid_mix",
    "parallel_residual",
    "unet",
    "recurrence",
    "bigram_vocab_size",
    "bigram_dim",
    "trigram_vocab_size",
    "trigram_dim",
    "char_vocab_size",
    "char_dim",
    "char_max_per_token",
    "logit_softcap",
    "positional_embedding",
    "max_positions",
    "blocks",
    "training",
];

/// mixlab top-level fields that mixsweep does not implement: accepted at their defaults.
/// `input_adapter` comes first: a non-token model is told that before `vocab_size` is asked for.
const MIXLAB_TOP: &[MixlabField] = &[
    mixlab(
        "input_adapter",
        Some("{\"kind\": \"token_embedding\"}"),
        "mixsweep models read token ids",
    ),
    mixlab(
        "smear_embeddings",
        Some("false"),
        "smeared embeddings are not implemented",
    ),
    mixlab(
        "smear_embeddings_gate_shape",
        None,
        "smeared embeddings are not implemented",
    ),
    mixlab(
        "hf_export_format",
        Some("\"mixlab\""),
        "Hugging Face export is not implemented",
    ),
    mixlab(
        "tie_dropout",
        Some("false"),
        "tied dropout masks are not implemented",
    ),
    mixlab(
        "mlm_head",
        Some("\"linear\""),
        "masked objectives are not implemented",
    ),
    mixlab(
        "layer_aggregation",
        Some("\"none\""),
        "dense weighted aggregation is not implemented",
    ),
    mixlab(
        "batchnorm_momentum",
        Some("0.1"),
        "BatchNorm is not implemented",
    ),
    mixlab(
        "rc_equivariant",
        Some("false"),
        "DNA reverse-complement sharing is not implemented",
    ),
    mixlab("mtp", None, "multi-token prediction is not implemented"),
    mixlab("backout", None, "backout is not implemented"),
    mixlab(
        "recurrence_phases",
        None,
        "recurrence phases are not implemented (recurrence is)",
    ),
    mixlab(
        "data",
        Some("{\"no_shard_shuffle\": false}"),
        "the data loader has no options",
    ),
    mixlab("eval", Some("{}"), "eval options are not implemented"),
];

/// A hashed n-gram embedding channel (`bigram_*`, `trigram_*`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ngram {
    pub size: usize,
    pub dim: usize,
}

/// Tokenizer-level character features (`char_*`): each token id's distinct bytes, from
/// `char_features.bin` beside the data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CharFeatures {
    pub vocab: usize,
    pub dim: usize,
    pub max_per_token: usize,
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
    /// Dropout on residual branches (mixlab's `hidden_dropout`, default `dropout`).
    pub dropout: f64,
    /// Dropout on attention probabilities (`attn_dropout`, default `dropout`).
    pub attn_dropout: f64,
    pub embedding_dropout: f64,
    pub norm: NormSettings,
    pub final_norm: bool,
    pub positional: Positional,
    pub bigram: Option<Ngram>,
    pub trigram: Option<Ngram>,
    pub char_features: Option<CharFeatures>,
    pub logit_softcap: Option<f32>,
    pub block_scales: bool,
    pub resid_mix: bool,
    pub layout: Layout,
    pub blocks: Vec<Box<dyn Block>>,
    /// Per block: its `residual_scale_init`.
    pub residual_scale_init: Vec<Option<f32>>,
    pub training: TrainingConfig,
    /// SHA-256 of the canonical JSON (sorted keys, no comments) of the source document.
    pub config_hash: String,
}

fn dropout_field(f: &mut Fields<'_>, key: &str, default: f64) -> Result<f64, ConfigError> {
    f.f64_in(key, 0.0, 1.0, true, default)
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
        f.mixlab_defaults(MIXLAB_TOP)?;
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
        let seq_len = f.positive("seq_len", 128)?;
        let mlp_mult = match f.f64("mlp_mult")? {
            None => 2.67,
            Some(m) if m > 0.0 && m.is_finite() => m,
            Some(m) => return Err(f.error("mlp_mult", format!("mlp_mult={m} must be > 0"))),
        };
        let tie_embeddings = f.bool("tie_embeddings")?.unwrap_or(false);
        let base_dropout = dropout_field(&mut f, "dropout", 0.0)?;
        let dropout = dropout_field(&mut f, "hidden_dropout", base_dropout)?;
        let attn_dropout = dropout_field(&mut f, "attn_dropout", base_dropout)?;
        let embedding_dropout = dropout_field(&mut f, "embedding_dropout", 0.0)?;
        let (norm, final_norm) = parse_norm(&mut f)?;
        let features = layout::parse_features(&mut f, model_dim, seq_len)?;
        let block_scales = f.bool("block_scales")?.unwrap_or(false);
        let resid_mix = f.bool("resid_mix")?.unwrap_or(false);
        let training = training::parse_training(f.raw("training"), seq_len)?;
        let block_values = f.array("blocks")?.ok_or_else(|| {
            f.error("blocks", "blocks is required")
                .with_hint("add e.g. \"blocks\": [{\"type\": \"plain\", \"heads\": 4}]")
        })?;
        if block_values.is_empty() {
            return Err(f.error("blocks", "blocks must hold at least one block"));
        }
        let dims = ModelDims {
            model_dim,
            seq_len,
            vocab_size,
            ffn_dim: model_dim.max((model_dim as f64 * mlp_mult).round() as usize),
            norm,
            dropout: dropout as f32,
            attn_dropout: attn_dropout as f32,
            weight_init: training.weight_init,
            blocks: block_values.len(),
            rope: features.positional == Positional::Rope,
            block_scales,
            scan_chunk: 8,
        };
        let mut blocks = Vec::with_capacity(block_values.len());
        let mut groups = Vec::with_capacity(block_values.len());
        let mut scale_inits = Vec::with_capacity(block_values.len());
        for (i, bv) in block_values.iter().enumerate() {
            let parsed = parse_block(&format!("blocks[{i}]"), bv, &dims)?;
            blocks.push(parsed.block);
            groups.push(parsed.weight_group);
            scale_inits.push(parsed.residual_scale_init);
        }
        let layout = Layout::parse(&mut f, &blocks, &groups, block_values)?;
        f.finish(TOP_FIELDS)?;
        let config_hash = format!("{:x}", Sha256::digest(canonical_json(doc).as_bytes()));
        let cfg = ModelConfig {
            name,
            model_dim,
            vocab_size,
            seq_len,
            mlp_mult,
            tie_embeddings,
            dropout,
            attn_dropout,
            embedding_dropout,
            norm,
            final_norm,
            positional: features.positional,
            bigram: features.bigram,
            trigram: features.trigram,
            char_features: features.char_features,
            logit_softcap: features.logit_softcap,
            block_scales,
            resid_mix,
            layout,
            blocks,
            residual_scale_init: scale_inits,
            training,
            config_hash,
        };
        // Valid by construction: the whole model lowers (shapes of every op checked).
        cfg.try_lower()?;
        Ok(cfg)
    }

    pub fn dims(&self) -> ModelDims {
        ModelDims {
            model_dim: self.model_dim,
            seq_len: self.seq_len,
            vocab_size: self.vocab_size,
            ffn_dim: self
                .model_dim
                .max((self.model_dim as f64 * self.mlp_mult).round() as usize),
            norm: self.norm,
            dropout: self.dropout as f32,
            attn_dropout: self.attn_dropout as f32,
            weight_init: self.training.weight_init,
            blocks: self.blocks.len(),
            rope: self.positional == Positional::Rope,
            block_scales: self.block_scales,
            scan_chunk: 8,
        }
    }
}

fn parse_norm(f: &mut Fields<'_>) -> Result<(NormSettings, bool), ConfigError> {
    let kind = match f.choice(
        "norm_type",
        &["rmsnorm", "layernorm", "batchnorm"],
        "rmsnorm",
    )? {
        "rmsnorm" => NormKind::Rms,
        "layernorm" => NormKind::Layer,
        _ => {
            return Err(f
                .error("norm_type", "norm_type \"batchnorm\" is a mixlab feature that mixsweep does not implement yet")
                .with_hint("use \"rmsnorm\" or \"layernorm\""));
        }
    };
    let eps = match f.f64("norm_eps")? {
        None => 1e-5,
        Some(e) if e > 0.0 && e.is_finite() => e,
        Some(e) => return Err(f.error("norm_eps", format!("norm_eps={e} must be > 0"))),
    };
    let affine = f.bool("norm_affine")?.unwrap_or(true);
    if !affine && kind == NormKind::Rms {
        return Err(f
            .error("norm_affine", "norm_affine false needs norm_type \"layernorm\" (RMSNorm is affine-only, as in mixlab)")
            .with_hint("set \"norm_type\": \"layernorm\", or remove norm_affine"));
    }
    let placement = match f.choice(
        "norm_placement",
        &["pre", "post", "sandwich", "post_residual"],
        "pre",
    )? {
        "pre" => Placement::Pre,
        "post" => Placement::Post,
        "sandwich" => Placement::Sandwich,
        _ => {
            return Err(f
                .error(
                    "norm_placement",
                    "norm_placement \"post_residual\" (mixlab: S4D stacks only) is not implemented",
                )
                .with_hint("use \"pre\", \"post\" or \"sandwich\""));
        }
    };
    let norm = NormSettings {
        kind,
        eps: eps as f32,
        affine,
        placement,
        ffn_internal: f.bool("ffn_internal_norm")?.unwrap_or(false),
    };
    Ok((norm, f.bool("final_norm")?.unwrap_or(true)))
}

/// A block with the model-level options every block type takes.
struct ParsedBlock {
    block: Box<dyn Block>,
    weight_group: Option<String>,
    residual_scale_init: Option<f32>,
}

fn parse_block(path: &str, value: &Value, dims: &ModelDims) -> Result<ParsedBlock, ConfigError> {
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
        err = match suggest(&kind, &type_names()) {
            Some(n) => err.with_hint(format!("did you mean {n:?}?")),
            None => err.with_hint(format!("use one of: {}", type_names().join(", "))),
        };
        return Err(err);
    };
    let weight_group = f.string("weight_group")?.filter(|g| !g.is_empty());
    let residual_scale_init = f.f64("residual_scale_init")?.map(|v| v as f32);
    if residual_scale_init.is_some() && !dims.block_scales {
        return Err(f
            .error(
                "residual_scale_init",
                "residual_scale_init sets the block scales, which are off",
            )
            .with_hint("set the top-level \"block_scales\": true, or remove it"));
    }
    let block = (block_type.parse)(&mut f, dims)?;
    let mut valid = vec!["type", "weight_group", "residual_scale_init"];
    valid.extend_from_slice(block_type.fields);
    f.finish(&valid)?;
    Ok(ParsedBlock {
        block,
        weight_group,
        residual_scale_init,
    })
}

fn type_names() -> Vec<&'static str> {
    blocks::REGISTRY.iter().map(|t| t.name).collect()
}

/// JSON with object keys sorted and no insignificant whitespace (serde_json's map is ordered).
pub fn canonical_json(v: &Value) -> String {
    serde_json::to_string(v).expect("a JSON value serializes")
}
