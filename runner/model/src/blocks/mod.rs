//! Block types. Each module owns one block: its config fields, validation, and lowering to IR ops.
//! Adding a block means adding a module and one line in [`REGISTRY`]; the trainer only sees IR ops.

use crate::error::ConfigError;
use crate::ir::{Builder, Init, ValueId};
use crate::json::Fields;

pub mod mamba;
pub mod mlp;
pub mod plain;
pub mod swiglu;

/// Model-wide settings a block reads while parsing and lowering.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelDims {
    pub model_dim: usize,
    pub seq_len: usize,
    pub vocab_size: usize,
    /// `max(D, round(D · mlp_mult))`.
    pub ffn_dim: usize,
    pub norm_eps: f32,
    /// Dropout rate on residual branches (0 = off).
    pub dropout: f32,
    /// Default init of matrix weights (`training.weight_init`).
    pub matrix_init: Init,
}

/// A parsed, validated block.
pub trait Block: std::fmt::Debug + Send + Sync {
    /// The `type` string of the block in the config.
    fn kind(&self) -> &'static str;
    /// Emits the block's weights and ops; takes and returns the residual stream `[B, T, D]`.
    fn lower(&self, b: &mut Builder, x: ValueId, dims: &ModelDims) -> ValueId;
}

pub type ParseFn = fn(&mut Fields<'_>, &ModelDims) -> Result<Box<dyn Block>, ConfigError>;

/// A registered block type.
pub struct BlockType {
    pub name: &'static str,
    pub parse: ParseFn,
    /// Valid keys of the block object besides `type`.
    pub fields: &'static [&'static str],
    /// One-line description for docs and `count`.
    pub summary: &'static str,
}

pub const REGISTRY: &[BlockType] = &[plain::TYPE, swiglu::TYPE, mlp::TYPE, mamba::TYPE];

/// mixlab block types that mixsweep does not implement yet (reported as such, not as typos).
pub const NOT_YET: &[&str] = &[
    "geglu",
    "moe",
    "legacy_mamba",
    "gated_linear_ssm",
    "mamba3",
    "mamba3-canonical",
    "retnet",
    "rwkv",
    "perceiver",
    "bottleneck",
    "cross_attention",
    "token_blend",
    "custom",
    "s4d",
    "gated_deltanet",
    "hgrn2",
    "mlstm",
    "ttt_mlp",
];

pub fn find(name: &str) -> Option<&'static BlockType> {
    REGISTRY.iter().find(|t| t.name == name)
}
