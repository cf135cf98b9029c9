//! `hgrn2`: HGRN2's gated linear recurrence with an outer-product matrix state (mixlab's `hgrn2`).
//!
//! ```text
//! h = RMSNorm(x)                                   (norm_scale [D], eps 1e-5)
//! v = SiLU(h · w_v [D, D])            split into H heads of dv = D / H
//! q = σ(h · w_q [D, H·ds])            g = σ(h · w_f [D, H·ds]),   k = 1 − g        (heads of ds)
//! S_t = diag(g_t) S_{t−1} + k_t v_tᵀ               ([ds, dv] per head; the forget gate also sets
//!                                                   the input through k = 1 − g)
//! o_t = RMSNorm_dv(q_tᵀ S_t)                        (o_norm_scale [dv], per head)
//! x = x + o · wo [D, D]
//! ```
//! Fields: `heads` (required, divides D), `d_state` (ds, default D / heads). Weights in mixlab's
//! order `norm_scale, w_v, w_q, w_f, o_norm_scale, wo`; same math as mixlab. The recurrence and its
//! read by `q` run as the `gla_scan` op: a fused CUDA kernel when training on an NVIDIA GPU (state in
//! registers), else chunkwise (states only at chunk boundaries, not at every step); generation keeps
//! one `[ds, dv]` state per head and sequence.

use super::{Block, BlockCtx, BlockType, ModelDims, Role, kit};
use crate::error::ConfigError;
use crate::ir::{BuildError, Builder, Dim, Init, ParamGroup, ValueId};
use crate::json::Fields;
use crate::ops::{GlaScan, Norm, NormKind, ScalarKind, UnaryKind};

pub const TYPE: BlockType = BlockType {
    name: "hgrn2",
    parse,
    fields: &["heads", "d_state"],
    summary: "HGRN2: forget-gated recurrence with an outer-product matrix state per head",
};

#[derive(Debug, Clone, PartialEq)]
pub struct Hgrn2 {
    pub heads: usize,
    pub d_state: usize,
}

fn parse(f: &mut Fields<'_>, dims: &ModelDims) -> Result<Box<dyn Block>, ConfigError> {
    let heads = kit::heads(f, dims.model_dim, "hgrn2", None)?;
    let d_state = f.positive("d_state", dims.model_dim / heads)?;
    Ok(Box::new(Hgrn2 { heads, d_state }))
}

type R<T> = Result<T, BuildError>;

impl Hgrn2 {
    /// `[B, T, H·n]` -> `[B, T, H, n]`.
    fn heads(&self, b: &mut Builder, name: &str, x: ValueId, n: usize) -> R<ValueId> {
        let shape = vec![Dim::Batch, Dim::Seq, Dim::Fixed(self.heads), Dim::Fixed(n)];
        b.reshape(name, x, shape)
    }
}

impl Block for Hgrn2 {
    fn kind(&self) -> &'static str {
        "hgrn2"
    }

    fn lower(&self, b: &mut Builder, x: ValueId, ctx: &BlockCtx<'_>) -> R<ValueId> {
        let (d, h, ds) = (ctx.dims.model_dim, self.heads, self.d_state);
        let dv = d / h;
        let n = kit::norm_with(b, "norm_scale", x, NormKind::Rms, 1e-5, true)?;
        let w_v = kit::matrix(b, ctx, "w_v", d, d, Role::In)?;
        let w_q = kit::matrix(b, ctx, "w_q", d, h * ds, Role::In)?;
        let w_f = kit::matrix(b, ctx, "w_f", d, h * ds, Role::In)?;
        let o_norm = b.weight("o_norm_scale", &[dv], Init::Constant(1.0), ParamGroup::Scalar)?;
        let wo = kit::matrix(b, ctx, "wo", d, d, Role::Out)?;
        let v = b.matmul("v_in", n, w_v)?;
        let v = b.unary("v", v, UnaryKind::Silu)?;
        let q = b.matmul("q_in", n, w_q)?;
        let q = b.unary("q", q, UnaryKind::Sigmoid)?;
        let g = b.matmul("forget_in", n, w_f)?;
        let g = b.unary("forget", g, UnaryKind::Sigmoid)?;
        let k = b.scalar("key_neg", g, ScalarKind::Mul, -1.0)?;
        let k = b.scalar("key", k, ScalarKind::Add, 1.0)?;
        let (kh, vh) = (self.heads(b, "key_heads", k, ds)?, self.heads(b, "v_heads", v, dv)?);
        let (qh, gh) = (self.heads(b, "q_heads", q, ds)?, self.heads(b, "forget_heads", g, ds)?);
        let scan = GlaScan { chunk: ctx.dims.scan_chunk };
        let o = b.op1(scan, &[qh, kh, vh, gh], "state_read")?; // [B, T, H, dv]
        let o = b.op1(Norm { kind: NormKind::Rms, eps: 1e-5 }, &[o, o_norm], "o_norm")?;
        let o = b.reshape("o_merged", o, vec![Dim::Batch, Dim::Seq, Dim::Fixed(d)])?;
        let o = b.matmul("out", o, wo)?;
        b.add("residual", x, o)
    }
}
