//! `perceiver` (and `bottleneck`, the same block with 4 latents): sequence mixing through `L`
//! learned latent slots, made causal.
//!
//! ```text
//! z = latent_init [L, D]                                   (one copy per sequence)
//! z = z + Attn(z·wq_cross ← x·wk_cross, x·wv_cross; prefix mask) · wo_cross     latents read tokens
//! z = z + Attn(RoPE(z·wq_self), RoPE(z·wk_self), z·wv_self; causal) · wo_self  latent self-attention
//! x = x + Attn(x·wq_broad ← z·wk_broad, z·wv_broad; ends mask) · wo_broad       tokens read latents
//! x = x + SiLU(x · ff1 [D, 2D]) · ff2 [2D, D]
//! ```
//! No norms, all projections `[D, D]` split into `heads` (required); `num_latents` defaults to 32
//! (`perceiver`) or 4 (`bottleneck`). Weights in mixlab's order: `latent_init`,
//! `{wq,wk,wv,wo}_cross`, `{wq,wk,wv,wo}_self`, `{wq,wk,wv,wo}_broad`, `ff1`, `ff2`.
//!
//! **Differs from mixlab**, whose latents read every position with no mask, so that under causal
//! language-model training each token sees the future through the latents (spec §13.7; its losses
//! are not comparable). Here the sequence (`seq_len`) is cut into `L` segments of
//! `s = ⌈seq_len / L⌉` tokens; latent `j` reads only tokens `t ≤ e_j = (j + 1)·s − 1` (the end of
//! its segment) and token `t` reads only latents with `e_j ≤ t`. Latent `j` thus summarises the
//! prefix up to `e_j`, and tokens before the end of the first segment read no latent (their update
//! is zero and only the FFN tail acts). Generation recomputes the whole prefix each token (the
//! latents change as the prefix grows): no cache.

use super::{Block, BlockCtx, BlockType, ModelDims, Role, kit};
use crate::error::ConfigError;
use crate::ir::{BuildError, Builder, Dim, ValueId};
use crate::json::Fields;
use crate::ops::{Attention, AttentionMask, Full, Rope};

pub const TYPE: BlockType = BlockType {
    name: "perceiver",
    parse,
    fields: &["heads", "num_latents"],
    summary: "tokens mix through learned latents (causal: latents summarise prefixes)",
};

#[derive(Debug, Clone, PartialEq)]
pub struct Perceiver {
    pub kind: &'static str,
    pub heads: usize,
    pub latents: usize,
    /// Tokens per latent segment, `⌈seq_len / latents⌉`.
    pub segment: usize,
}

fn parse(f: &mut Fields<'_>, dims: &ModelDims) -> Result<Box<dyn Block>, ConfigError> {
    parse_with(f, dims, "perceiver", 32)
}

/// Parses a perceiver-like block with its default latent count.
pub(super) fn parse_with(
    f: &mut Fields<'_>,
    dims: &ModelDims,
    kind: &'static str,
    default_latents: usize,
) -> Result<Box<dyn Block>, ConfigError> {
    let heads = kit::heads(f, dims.model_dim, kind, None)?;
    let head_dim = dims.model_dim / heads;
    if !head_dim.is_multiple_of(2) {
        return Err(f
            .error("heads", format!("head_dim = model_dim / heads = {head_dim} is odd, and the latents' RoPE rotates pairs"))
            .with_hint("choose heads so that model_dim / heads is even"));
    }
    let latents = f.positive("num_latents", default_latents)?;
    if latents > dims.seq_len {
        return Err(f.error(
            "num_latents",
            format!("num_latents={latents} must be <= seq_len={}", dims.seq_len),
        ));
    }
    Ok(Box::new(Perceiver {
        kind,
        heads,
        latents,
        segment: dims.seq_len.div_ceil(latents),
    }))
}

type R<T> = Result<T, BuildError>;

impl Perceiver {
    /// `[B, L, D]` -> `[B, H, L, hd]`.
    fn latent_heads(&self, b: &mut Builder, name: &str, z: ValueId) -> R<ValueId> {
        let d = b.width(z);
        let shape = vec![
            Dim::Batch,
            Dim::Fixed(self.latents),
            Dim::Fixed(self.heads),
            Dim::Fixed(d / self.heads),
        ];
        let r = b.reshape(&format!("{name}_split"), z, shape)?;
        b.transpose(name, r, &[0, 2, 1, 3])
    }

    /// `[B, H, L, hd]` -> `[B, L, D]`.
    fn latent_merge(&self, b: &mut Builder, name: &str, c: ValueId, d: usize) -> R<ValueId> {
        let t = b.transpose(&format!("{name}_t"), c, &[0, 2, 1, 3])?;
        b.reshape(name, t, vec![Dim::Batch, Dim::Fixed(self.latents), Dim::Fixed(d)])
    }

    fn attention(&self, b: &mut Builder, d: usize, mask: AttentionMask, ins: [ValueId; 3], name: &str) -> R<ValueId> {
        let attn = Attention {
            scale: 1.0 / ((d / self.heads) as f32).sqrt(),
            mask,
            dropout: 0.0,
            ordinal: 0,
        };
        b.op1(attn, &ins, name)
    }
}

impl Block for Perceiver {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn lower(&self, b: &mut Builder, x: ValueId, ctx: &BlockCtx<'_>) -> R<ValueId> {
        let (d, l) = (ctx.dims.model_dim, self.latents);
        let init = b.matrix("latent_init", l, d, ctx.init(Role::In, d))?;
        let w = |b: &mut Builder, name: &str, role| kit::matrix(b, ctx, name, d, d, role);
        let cross = [w(b, "wq_cross", Role::In)?, w(b, "wk_cross", Role::In)?, w(b, "wv_cross", Role::In)?, w(b, "wo_cross", Role::Out)?];
        let own = [w(b, "wq_self", Role::In)?, w(b, "wk_self", Role::In)?, w(b, "wv_self", Role::In)?, w(b, "wo_self", Role::Out)?];
        let broad = [w(b, "wq_broad", Role::In)?, w(b, "wk_broad", Role::In)?, w(b, "wv_broad", Role::In)?, w(b, "wo_broad", Role::Out)?];
        let zeros = b.op1(
            Full { shape: vec![Dim::Batch, Dim::Fixed(l), Dim::Fixed(d)], value: 0.0 },
            &[],
            "latent_zeros",
        )?;
        let z = b.add("latents", zeros, init)?;
        // (1) latents read the tokens of their prefix
        let q = b.matmul("cross_q_proj", z, cross[0])?;
        let q = self.latent_heads(b, "cross_q", q)?;
        let k = b.matmul("cross_k_proj", x, cross[1])?;
        let k = b.split_heads("cross_k", k, self.heads)?;
        let v = b.matmul("cross_v_proj", x, cross[2])?;
        let v = b.split_heads("cross_v", v, self.heads)?;
        let prefix = AttentionMask::SegmentPrefix { segment: self.segment };
        let c = self.attention(b, d, prefix, [q, k, v], "cross")?;
        let c = self.latent_merge(b, "cross_merged", c, d)?;
        let c = b.matmul("cross_out", c, cross[3])?;
        let z = b.add("latents_read", z, c)?;
        // (2) causal self-attention among the latents, with RoPE over latent index
        let rope = Rope { dims: d / self.heads, base: 10000.0, adjacent_pairs: true };
        let proj = |b: &mut Builder, name: &str, w: ValueId| -> R<ValueId> {
            let p = b.matmul(&format!("{name}_proj"), z, w)?;
            self.latent_heads(b, name, p)
        };
        let (q, k, v) = (proj(b, "self_q", own[0])?, proj(b, "self_k", own[1])?, proj(b, "self_v", own[2])?);
        let q = b.op1(rope.clone(), &[q], "self_q_rope")?;
        let k = b.op1(rope, &[k], "self_k_rope")?;
        let c = self.attention(b, d, AttentionMask::Causal, [q, k, v], "latent_self")?;
        let c = self.latent_merge(b, "self_merged", c, d)?;
        let c = b.matmul("self_out", c, own[3])?;
        let z = b.add("latents_mixed", z, c)?;
        // (3) tokens read the latents whose prefix has ended
        let q = b.matmul("broad_q_proj", x, broad[0])?;
        let q = b.split_heads("broad_q", q, self.heads)?;
        let k = b.matmul("broad_k_proj", z, broad[1])?;
        let k = self.latent_heads(b, "broad_k", k)?;
        let v = b.matmul("broad_v_proj", z, broad[2])?;
        let v = self.latent_heads(b, "broad_v", v)?;
        let ends = AttentionMask::SegmentEnds { segment: self.segment };
        let c = self.attention(b, d, ends, [q, k, v], "broadcast")?;
        let c = b.merge_heads("broadcast_merged", c)?;
        let c = b.matmul("broadcast_out", c, broad[3])?;
        let x = b.add("broadcast_residual", x, c)?;
        kit::silu_tail(b, ctx, x)
    }
}
