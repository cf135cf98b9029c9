//! Block types. Each module owns one block: its config fields, validation, and lowering to IR ops.
//! Adding a block means adding a module and its name in [`registry!`]; the runner only sees ops.
//! [`kit`] holds what blocks share: norms with the model's settings, the residual wrapper, init rules.

use crate::error::ConfigError;
use crate::ir::{BuildError, Builder, Init, ValueId};
use crate::json::Fields;

pub mod differential;
pub mod kit;

/// Declares each block module and lists its `TYPE` in [`REGISTRY`] (in the order of the docs' table).
macro_rules! registry {
    ($($block:ident),* $(,)?) => {
        $(pub mod $block;)*

        /// Every block type.
        pub const REGISTRY: &[BlockType] = &[$($block::TYPE),*];
    };
}

registry! {
    plain,
    swiglu,
    geglu,
    mlp,
    mamba,
    token_blend,
    gated_linear_ssm,
    mamba3,
    legacy_mamba,
    retnet,
    rwkv,
    moe,
    perceiver,
    bottleneck,
    hgrn2,
    mlstm,
    mamba3_canonical,
    s4d,
    gated_deltanet,
    cross_attention,
    custom,
}

/// The norm every block uses unless it says otherwise (mixlab's `norm_type`, `norm_eps`,
/// `norm_affine`, `norm_placement`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormSettings {
    pub kind: crate::ops::NormKind,
    pub eps: f32,
    /// Learned scale (and, for LayerNorm, bias).
    pub affine: bool,
    pub placement: Placement,
    /// A norm before the FFN down-projection (`ffn_internal_norm`).
    pub ffn_internal: bool,
}

/// Where a residual branch is normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// `x + F(Norm(x))` (default).
    Pre,
    /// `x + Norm(F(x))`.
    Post,
    /// `x + Norm(F(Norm(x)))`.
    Sandwich,
}

/// How matrices are initialised (`training.weight_init`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WeightInit {
    XavierUniform,
    Normal {
        std: f32,
    },
    /// GPT-2: `N(0, std)`, output projections scaled by `1/sqrt(2·blocks)`.
    Gpt2 {
        std: f32,
    },
    /// GPT-BERT: truncated normal, `σ = sqrt(2/(5D))`; output projections of block `i` scaled by
    /// `sqrt(1/(2(i+1)))`.
    GptBert,
    /// PyTorch's `nn.Linear`: `U(±1/sqrt(fan_in))`.
    PytorchLinear,
}

/// Whether a matrix writes into the residual stream (scaled under GPT-2 / GPT-BERT init).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    In,
    Out,
}

/// Model-wide settings a block reads while parsing and lowering.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelDims {
    pub model_dim: usize,
    pub seq_len: usize,
    pub vocab_size: usize,
    /// `max(D, round(D · mlp_mult))`.
    pub ffn_dim: usize,
    pub norm: NormSettings,
    /// Dropout on residual branches (0 = off).
    pub dropout: f32,
    /// Dropout on attention probabilities.
    pub attn_dropout: f32,
    pub weight_init: WeightInit,
    /// Blocks in the stack (for GPT-2's output-projection scaling).
    pub blocks: usize,
    /// Whether `plain` blocks rotate q and k (`positional_embedding: rope`).
    pub rope: bool,
    /// Learned per-channel residual scales (`block_scales`).
    pub block_scales: bool,
    /// Chunk length of the parallel scans of generic recurrences (custom `scan`, `scan_tv`, ...).
    pub scan_chunk: usize,
}

impl ModelDims {
    /// The init of a `[fan_in, fan_out]` matrix of block `index` with this role.
    pub fn init(&self, role: Role, index: usize, fan_in: usize) -> Init {
        let out = role == Role::Out;
        match self.weight_init {
            WeightInit::XavierUniform => Init::XavierUniform,
            WeightInit::Normal { std } => Init::Normal { std },
            WeightInit::Gpt2 { std } => Init::Normal {
                std: if out {
                    std / (2.0 * self.blocks as f32).sqrt()
                } else {
                    std
                },
            },
            WeightInit::GptBert => {
                let std = (2.0 / (5.0 * self.model_dim as f32)).sqrt();
                Init::TruncatedNormal {
                    std: if out {
                        std * (1.0 / (2.0 * (index as f32 + 1.0))).sqrt()
                    } else {
                        std
                    },
                }
            }
            WeightInit::PytorchLinear => Init::Uniform {
                bound: 1.0 / (fan_in.max(1) as f32).sqrt(),
            },
        }
    }
}

/// What a block sees while lowering: the model's settings, its position, the embedding-stage stream
/// `x0` (for `resid_mix`), and the keys and values that attention blocks publish for `kv_source`.
pub struct BlockCtx<'a> {
    pub dims: &'a ModelDims,
    /// Position of this block in the executed stack (for init scaling: the root's position when
    /// weights are shared).
    pub index: usize,
    /// Index of this block in the config's `blocks` list.
    pub config_index: usize,
    pub x0: Option<ValueId>,
    /// The block's `residual_scale_init` (any block type; needs `block_scales`).
    pub residual_scale_init: Option<f32>,
    pub kv: &'a std::cell::RefCell<std::collections::HashMap<usize, (ValueId, ValueId)>>,
    /// Named residual streams so far: `embedding` (after the embedding stage) and `block:K`, the
    /// stream after the K-th block (1-indexed), for `cross_attention`'s `source_stream`.
    pub streams: &'a std::cell::RefCell<std::collections::HashMap<String, ValueId>>,
}

impl BlockCtx<'_> {
    pub fn init(&self, role: Role, fan_in: usize) -> Init {
        self.dims.init(role, self.index, fan_in)
    }

    /// Keys and values `[B, Hk, T, hd]` (post-RoPE) of config block `index`, if it published them.
    pub fn shared_kv(&self, index: usize) -> Option<(ValueId, ValueId)> {
        self.kv.borrow().get(&index).copied()
    }

    /// The named stream `name`, if it exists before this block.
    pub fn stream(&self, name: &str) -> Option<ValueId> {
        self.streams.borrow().get(name).copied()
    }

    /// Makes this block's keys and values available to later `kv_source` blocks.
    pub fn publish_kv(&self, index: usize, k: ValueId, v: ValueId) {
        self.kv.borrow_mut().insert(index, (k, v));
    }
}

/// A parsed, validated block.
pub trait Block: std::fmt::Debug + Send + Sync {
    /// The `type` string of the block in the config.
    fn kind(&self) -> &'static str;
    /// Emits the block's weights and ops; takes and returns the residual stream `[B, T, D]`.
    fn lower(&self, b: &mut Builder, x: ValueId, ctx: &BlockCtx<'_>)
    -> Result<ValueId, BuildError>;
    /// As the first block of a `parallel_residual` pair (token mixers): the new stream computed from
    /// `x` and its normalisation `h`, which the model made with this block's norm weight.
    fn lower_normed(
        &self,
        _b: &mut Builder,
        _x: ValueId,
        _h: ValueId,
        _ctx: &BlockCtx<'_>,
    ) -> Option<Result<ValueId, BuildError>> {
        None
    }
    /// As the second block of a `parallel_residual` pair (feed-forward blocks): the branch's output
    /// `F(h)` for the shared normalised input, added to the stream by the model (no norm of its own).
    fn delta(
        &self,
        _b: &mut Builder,
        _h: ValueId,
        _ctx: &BlockCtx<'_>,
    ) -> Option<Result<ValueId, BuildError>> {
        None
    }
    /// `(experts, top_k)` of a mixture of experts (its `expert_*` weights are active k/E per token).
    fn routed_experts(&self) -> Option<(usize, usize)> {
        None
    }
    /// `(heads, kv_heads)` of an attention block (for `kv_source` checks).
    fn attention_heads(&self) -> Option<(usize, usize)> {
        None
    }
    /// The 0-based block whose keys and values this block reuses (`kv_source`).
    fn kv_source(&self) -> Option<usize> {
        None
    }
    /// Whether this block asks to start a parallel-residual pair with the next one.
    fn starts_parallel_pair(&self) -> bool {
        false
    }
    /// Whether this block can be the first of a parallel-residual pair.
    fn can_lead_parallel_pair(&self) -> bool {
        false
    }
    /// Whether this block can be the second (feed-forward) branch of a parallel-residual pair.
    fn can_join_parallel_pair(&self) -> bool {
        false
    }
}

pub type ParseFn = fn(&mut Fields<'_>, &ModelDims) -> Result<Box<dyn Block>, ConfigError>;

/// A registered block type.
pub struct BlockType {
    pub name: &'static str,
    pub parse: ParseFn,
    /// Valid keys of the block object besides `type` and `weight_group`.
    pub fields: &'static [&'static str],
    /// One-line description for docs and `count`.
    pub summary: &'static str,
}

/// mixlab block types that mixsweep does not implement yet (reported as such, not as typos).
pub const NOT_YET: &[&str] = &["ttt_mlp"];

pub fn find(name: &str) -> Option<&'static BlockType> {
    REGISTRY.iter().find(|t| t.name == name)
}

/// The block table of `docs/config.md`, generated from the registry (a test keeps the doc in sync).
pub fn markdown_table() -> String {
    let mut out = String::from("| type | fields | what it is |\n|---|---|---|\n");
    for t in REGISTRY {
        let fields = if t.fields.is_empty() {
            "-".to_string()
        } else {
            t.fields
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out += &format!("| `{}` | {fields} | {} |\n", t.name, t.summary);
    }
    out
}
