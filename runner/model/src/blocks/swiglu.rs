//! `swiglu`: pre-norm gated feed-forward, `x += scale ⊙ ((act(h·w_gate) ⊙ h·w_up) · w_down)` with
//! `h = Norm(x)` (`ffn_norm_scale`).
//!
//! mixlab quirk kept on purpose: the gate is a **sigmoid** (a GLU), not SiLU, as in mixlab's
//! `swiglu` (and its PyTorch parity reference). [`GatedFfn`] also serves `geglu` (tanh-GELU gate).

use super::kit::{self, ResidualNames};
use super::{Block, BlockCtx, BlockType, ModelDims, Role};
use crate::error::ConfigError;
use crate::ir::{BuildError, Builder, ValueId};
use crate::json::Fields;
use crate::ops::UnaryKind;

pub const TYPE: BlockType = BlockType {
    name: "swiglu",
    parse,
    fields: &[],
    summary: "pre-norm sigmoid-gated FFN (mixlab's swiglu)",
};

/// A gated feed-forward block: `swiglu` (sigmoid gate) and `geglu` (tanh-GELU gate).
#[derive(Debug, Clone, PartialEq)]
pub struct GatedFfn {
    pub gate: UnaryKind,
    pub kind: &'static str,
}

fn parse(_f: &mut Fields<'_>, _dims: &ModelDims) -> Result<Box<dyn Block>, ConfigError> {
    Ok(Box::new(GatedFfn {
        gate: UnaryKind::Sigmoid,
        kind: "swiglu",
    }))
}

impl GatedFfn {
    /// `(act(h·w_gate) ⊙ h·w_up) · w_down`.
    fn ffn(&self, b: &mut Builder, ctx: &BlockCtx<'_>, h: ValueId) -> Result<ValueId, BuildError> {
        let (d, f) = (ctx.dims.model_dim, ctx.dims.ffn_dim);
        let w_gate = kit::matrix(b, ctx, "w_gate", d, f, Role::In)?;
        let w_up = kit::matrix(b, ctx, "w_up", d, f, Role::In)?;
        let w_down = kit::matrix(b, ctx, "w_down", f, d, Role::Out)?;
        let g = b.matmul("gate", h, w_gate)?;
        let g = b.unary("gate_act", g, self.gate)?;
        let u = b.matmul("up", h, w_up)?;
        let gu = b.mul("gated", g, u)?;
        let gu = kit::ffn_internal_norm(b, ctx, gu)?;
        b.matmul("down", gu, w_down)
    }
}

impl Block for GatedFfn {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn lower(
        &self,
        b: &mut Builder,
        x: ValueId,
        ctx: &BlockCtx<'_>,
    ) -> Result<ValueId, BuildError> {
        let names = ResidualNames {
            norm: "ffn_norm_scale",
            post_norm: "post_ffn_norm",
            scale: "mlp_scale",
            label: "ffn",
        };
        kit::residual(b, ctx, x, names, |b, h| self.ffn(b, ctx, h))
    }

    fn can_join_parallel_pair(&self) -> bool {
        true
    }

    fn delta(
        &self,
        b: &mut Builder,
        h: ValueId,
        ctx: &BlockCtx<'_>,
    ) -> Option<Result<ValueId, BuildError>> {
        Some(self.ffn(b, ctx, h).and_then(|y| {
            let y = b.dropout("ffn_dropout", y, ctx.dims.dropout)?;
            kit::block_scale(b, ctx, y, "mlp_scale")
        }))
    }
}
