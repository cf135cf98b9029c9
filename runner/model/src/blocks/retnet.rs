//! `retnet`: mixlab's retention block, softmax attention with a learned exponential decay per head.
//!
//! ```text
//! h = RMSNorm(x)                                   (norm_scale [D], eps 1e-5)
//! q, k, v = h · wq, h · wk, h · wv                 ([D, D] each, split into `heads`, no RoPE)
//! c_i = Σ_{j≤i} softmax_j(q_i·k_j/√hd − λ_h·(i − j)) v_j,   λ_h = σ(decay_h)   (decay [H])
//! x = x + c · wo;   x = x + SiLU(x · ff1 [D, 2D]) · ff2 [2D, D]
//! ```
//! The penalty multiplies each attention weight by `γ_h^{i−j}` with `γ_h = e^{−λ_h}` before
//! normalising, which is RetNet's decay mask applied inside a softmax (ALiBi-like), as mixlab computes
//! it; it is not the paper's un-normalised retention with GroupNorm.
//!
//! Fields: `heads` (required), `decay` (optional, in `(1/e, 1)`). **Differs from mixlab**, which
//! parses `decay` and ignores it (every head starts at `λ = σ(0) = 0.5`, i.e. `γ ≈ 0.61`): here
//! `decay: γ` initialises every head's `λ = −ln γ` (so `0.99` starts with a 100-token horizon);
//! without `decay` the init is mixlab's. `λ` is learned in both cases. Generation keeps a KV cache.

use super::{Block, BlockCtx, BlockType, ModelDims, Role, kit};
use crate::error::ConfigError;
use crate::ir::{BuildError, Builder, Init, ParamGroup, ValueId};
use crate::json::Fields;
use crate::ops::{Attention, AttentionMask, NormKind, UnaryKind};

pub const TYPE: BlockType = BlockType {
    name: "retnet",
    parse,
    fields: &["heads", "decay"],
    summary: "attention with a learned per-head exponential decay (mixlab's retention; honours `decay`)",
};

#[derive(Debug, Clone, PartialEq)]
pub struct Retnet {
    pub heads: usize,
    /// Initial value of the decay logit (`λ = σ(logit)`).
    pub decay_logit: f32,
}

fn parse(f: &mut Fields<'_>, dims: &ModelDims) -> Result<Box<dyn Block>, ConfigError> {
    let heads = kit::heads(f, dims.model_dim, "retnet", None)?;
    let decay_logit = match f.f64("decay")? {
        None => 0.0,
        Some(g) if g > (-1f64).exp() && g < 1.0 => {
            let lambda = -g.ln();
            (lambda / (1.0 - lambda)).ln() as f32
        }
        Some(g) => {
            return Err(f
                .error("decay", format!("decay={g} must be in (1/e, 1) = (0.368, 1)"))
                .with_hint("it is the per-token decay γ of RetNet, e.g. 0.99 (omit it for mixlab's init, γ ≈ 0.61)"));
        }
    };
    Ok(Box::new(Retnet { heads, decay_logit }))
}

impl Block for Retnet {
    fn kind(&self) -> &'static str {
        "retnet"
    }

    fn lower(&self, b: &mut Builder, x: ValueId, ctx: &BlockCtx<'_>) -> Result<ValueId, BuildError> {
        let d = ctx.dims.model_dim;
        let h = kit::norm_with(b, "norm_scale", x, NormKind::Rms, 1e-5, true)?;
        let project = |b: &mut Builder, name: &str| -> Result<ValueId, BuildError> {
            let w = kit::matrix(b, ctx, &format!("w{name}"), d, d, Role::In)?;
            let p = b.matmul(&format!("{name}_proj"), h, w)?;
            b.split_heads(name, p, self.heads)
        };
        let (q, k, v) = (project(b, "q")?, project(b, "k")?, project(b, "v")?);
        let decay = b.weight(
            "decay",
            &[self.heads],
            Init::Constant(self.decay_logit),
            ParamGroup::Scalar,
        )?;
        let slopes = b.unary("decay_rate", decay, UnaryKind::Sigmoid)?;
        let attn = Attention {
            scale: 1.0 / ((d / self.heads) as f32).sqrt(),
            mask: AttentionMask::Causal,
            dropout: ctx.dims.attn_dropout,
            ordinal: b.reserve_dropout(ctx.dims.attn_dropout),
        };
        let c = b.op1(attn, &[q, k, v, slopes], "retention")?;
        let c = b.merge_heads("retention_merged", c)?;
        let wo = kit::matrix(b, ctx, "wo", d, d, Role::Out)?;
        let o = b.matmul("retention_out", c, wo)?;
        let x = b.add("retention_residual", x, o)?;
        kit::silu_tail(b, ctx, x)
    }
}
