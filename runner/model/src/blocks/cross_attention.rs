//! `cross_attention`: the stream attends to an earlier stream of the same sequence.
//!
//! ```text
//! h = RMSNorm(x)                      (norm_scale [D], eps 1e-5)
//! q = h · wq;  k, v = s · wk, s · wv  (s: the `source_stream`, not normalised; [D, D] each)
//! x = x + CausalAttention(q, k, v) · wo
//! x = x + SiLU(x · ff1 [D, F]) · ff2 [F, D]      (F = max(D, round(D · mlp_mult)); un-normalised)
//! ```
//! Fields: `heads` (required), `source_stream` (required): `"embedding"` (the stream after the
//! embedding stage) or `"block:K"` (the stream after the K-th block, 1-indexed, before this one).
//! Weights `norm_scale, wq, wk, wv, wo, ff1, ff2` (mixlab's). Generation keeps a KV cache.
//!
//! **Differs from mixlab**, where configs cannot use this block at all (its config builder has no
//! stream map, so any `source_stream` fails at build time, spec §13.8) and the attention has no mask:
//! here the streams are the ones above, and a position attends only to source positions at or before
//! it (the source is the same sequence, so an unmasked read would see the future).

use super::{Block, BlockCtx, BlockType, ModelDims, Role, kit};
use crate::error::ConfigError;
use crate::ir::{BuildError, Builder, ValueId};
use crate::json::Fields;
use crate::ops::{Attention, AttentionMask, NormKind, UnaryKind};

pub const TYPE: BlockType = BlockType {
    name: "cross_attention",
    parse,
    fields: &["heads", "source_stream"],
    summary: "causal attention from the stream to an earlier stream (`embedding` or `block:K`)",
};

#[derive(Debug, Clone, PartialEq)]
pub struct CrossAttention {
    pub heads: usize,
    pub source: String,
}

fn parse(f: &mut Fields<'_>, dims: &ModelDims) -> Result<Box<dyn Block>, ConfigError> {
    let heads = kit::heads(f, dims.model_dim, "cross_attention", None)?;
    let hint = "use \"embedding\" (the stream after the embedding stage) or \"block:K\" (after the K-th block, 1-indexed, before this one)";
    let source = f.string("source_stream")?.ok_or_else(|| {
        f.error("source_stream", "a cross_attention block needs `source_stream`")
            .with_hint(hint)
    })?;
    let valid = source == "embedding"
        || source
            .strip_prefix("block:")
            .and_then(|k| k.parse::<usize>().ok())
            .is_some_and(|k| k > 0);
    if !valid {
        return Err(f
            .error("source_stream", format!("unknown source_stream {source:?}"))
            .with_hint(hint));
    }
    Ok(Box::new(CrossAttention { heads, source }))
}

impl Block for CrossAttention {
    fn kind(&self) -> &'static str {
        "cross_attention"
    }

    fn lower(&self, b: &mut Builder, x: ValueId, ctx: &BlockCtx<'_>) -> Result<ValueId, BuildError> {
        let (d, f) = (ctx.dims.model_dim, ctx.dims.ffn_dim);
        let Some(src) = ctx.stream(&self.source) else {
            return Err(BuildError {
                index: 0,
                op: "source_stream",
                message: format!(
                    "source_stream {:?} is not a stream before this block (\"block:K\" needs K <= this block's position)",
                    self.source
                ),
                path: Some("source_stream".into()),
            });
        };
        let h = kit::norm_with(b, "norm_scale", x, NormKind::Rms, 1e-5, true)?;
        let wq = kit::matrix(b, ctx, "wq", d, d, Role::In)?;
        let wk = kit::matrix(b, ctx, "wk", d, d, Role::In)?;
        let wv = kit::matrix(b, ctx, "wv", d, d, Role::In)?;
        let wo = kit::matrix(b, ctx, "wo", d, d, Role::Out)?;
        let q = b.matmul("q_proj", h, wq)?;
        let q = b.split_heads("q", q, self.heads)?;
        let k = b.matmul("k_proj", src, wk)?;
        let k = b.split_heads("k", k, self.heads)?;
        let v = b.matmul("v_proj", src, wv)?;
        let v = b.split_heads("v", v, self.heads)?;
        let attn = Attention {
            scale: 1.0 / ((d / self.heads) as f32).sqrt(),
            mask: AttentionMask::Causal,
            dropout: ctx.dims.attn_dropout,
            ordinal: b.reserve_dropout(ctx.dims.attn_dropout),
        };
        let c = b.op1(attn, &[q, k, v], "cross_attention")?;
        let c = b.merge_heads("cross_merged", c)?;
        let o = b.matmul("cross_out", c, wo)?;
        let x = b.add("cross_residual", x, o)?;
        let ff1 = kit::matrix(b, ctx, "ff1", d, f, Role::In)?;
        let ff2 = kit::matrix(b, ctx, "ff2", f, d, Role::Out)?;
        let u = b.matmul("ff1_out", x, ff1)?;
        let a = b.unary("ff_act", u, UnaryKind::Silu)?;
        let y = b.matmul("ff2_out", a, ff2)?;
        b.add("ffn_residual", x, y)
    }
}
