//! `gated_linear_ssm` (mixlab's former `mamba3`): a gated linear recurrence with a learned constant
//! decay per channel.
//!
//! ```text
//! h = RMSNorm(x)                   (norm_scale [D], eps 1e-5 whatever norm_type says, as in mixlab)
//! z = SiLU(h · w_gate)             u = h · w_ssm             dt = σ(h · w_dt)       (all [D, I])
//! s_t = g ⊙ s_{t-1} + (1 - g) ⊙ (u ⊙ dt)_t,  g = σ(scan_decay)   (scan_decay [I], init 0: g = 1/2)
//! x = x + (z ⊙ s) · wo             (wo [I, D])
//! ```
//! Built from existing ops only: this file and its registry entry are the whole block.

use super::{Block, BlockCtx, BlockType, ModelDims, Role, kit};
use crate::error::ConfigError;
use crate::ir::{BuildError, Builder, Init, ParamGroup, ValueId};
use crate::json::Fields;
use crate::ops::{GatedScan, NormKind, UnaryKind};

pub const TYPE: BlockType = BlockType {
    name: "gated_linear_ssm",
    parse,
    fields: &["inner_dim"],
    summary: "gated linear recurrence with a learned per-channel decay (mixlab's former mamba3)",
};

#[derive(Debug, Clone, PartialEq)]
pub struct GatedLinearSsm {
    /// `I`, the recurrence's width (default D).
    pub inner_dim: usize,
}

fn parse(f: &mut Fields<'_>, dims: &ModelDims) -> Result<Box<dyn Block>, ConfigError> {
    let inner_dim = f.positive("inner_dim", dims.model_dim)?;
    Ok(Box::new(GatedLinearSsm { inner_dim }))
}

impl Block for GatedLinearSsm {
    fn kind(&self) -> &'static str {
        "gated_linear_ssm"
    }

    fn lower(&self, b: &mut Builder, x: ValueId, ctx: &BlockCtx<'_>) -> Result<ValueId, BuildError> {
        let (d, i) = (ctx.dims.model_dim, self.inner_dim);
        let h = kit::norm_with(b, "norm_scale", x, NormKind::Rms, 1e-5, true)?;
        let w_gate = kit::matrix(b, ctx, "w_gate", d, i, Role::In)?;
        let w_ssm = kit::matrix(b, ctx, "w_ssm", d, i, Role::In)?;
        let w_dt = kit::matrix(b, ctx, "w_dt", d, i, Role::In)?;
        let wo = kit::matrix(b, ctx, "wo", i, d, Role::Out)?;
        let decay = b.weight("scan_decay", &[i], Init::Constant(0.0), ParamGroup::Scalar)?;
        let z = b.matmul("gate_in", h, w_gate)?;
        let z = b.unary("gate", z, UnaryKind::Silu)?;
        let u = b.matmul("ssm_in", h, w_ssm)?;
        let dt = b.matmul("dt_in", h, w_dt)?;
        let dt = b.unary("dt", dt, UnaryKind::Sigmoid)?;
        let u = b.mul("ssm_gated", u, dt)?;
        let s = b.op1(GatedScan { chunk: ctx.dims.scan_chunk }, &[u, decay], "scan")?;
        let y = b.mul("gated", z, s)?;
        let y = b.matmul("out", y, wo)?;
        b.add("residual", x, y)
    }
}
