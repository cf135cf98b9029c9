//! `legacy_mamba`: mixlab's former `mamba`, a gated recurrence with a fixed learned decay per
//! channel. Not Mamba: its "convolution" is a same-position dense projection and its decay does not
//! depend on the input (mixsweep's `mamba` is the selective SSM of the paper).
//!
//! ```text
//! z, u = split(x · in_proj [D, 2I])          (no norm)
//! u = u · conv_w [I, I]
//! s_t = g ⊙ s_{t-1} + (1 − g) ⊙ u_t,  g = σ(scan_decay)      (scan_decay [I], init 0)
//! x = x + (s ⊙ SiLU(z)) · out_proj [I, D]
//! ```
//! Fields: `inner_dim` (default D). Weights `in_proj, conv_w, out_proj, scan_decay` in mixlab's
//! order, so mixlab checkpoints of this block load. Same math as mixlab.

use super::{Block, BlockCtx, BlockType, ModelDims, Role, kit};
use crate::error::ConfigError;
use crate::ir::{BuildError, Builder, Init, ParamGroup, ValueId};
use crate::json::Fields;
use crate::ops::{GatedScan, Split, UnaryKind};

pub const TYPE: BlockType = BlockType {
    name: "legacy_mamba",
    parse,
    fields: &["inner_dim"],
    summary: "mixlab's former `mamba`: gated recurrence with a fixed learned decay (not selective)",
};

#[derive(Debug, Clone, PartialEq)]
pub struct LegacyMamba {
    pub inner_dim: usize,
}

fn parse(f: &mut Fields<'_>, dims: &ModelDims) -> Result<Box<dyn Block>, ConfigError> {
    let inner_dim = f.positive("inner_dim", dims.model_dim)?;
    Ok(Box::new(LegacyMamba { inner_dim }))
}

impl Block for LegacyMamba {
    fn kind(&self) -> &'static str {
        "legacy_mamba"
    }

    fn lower(&self, b: &mut Builder, x: ValueId, ctx: &BlockCtx<'_>) -> Result<ValueId, BuildError> {
        let (d, i) = (ctx.dims.model_dim, self.inner_dim);
        let in_proj = kit::matrix(b, ctx, "in_proj", d, 2 * i, Role::In)?;
        let conv_w = kit::matrix(b, ctx, "conv_w", i, i, Role::In)?;
        let out_proj = kit::matrix(b, ctx, "out_proj", i, d, Role::Out)?;
        let decay = b.weight("scan_decay", &[i], Init::Constant(0.0), ParamGroup::Scalar)?;
        let p = b.matmul("in", x, in_proj)?;
        let parts = b.op(Split { sizes: vec![i, i] }, &[p], "in_split")?;
        let u = b.matmul("mixed", parts[1], conv_w)?;
        let s = b.op1(GatedScan { chunk: ctx.dims.scan_chunk }, &[u, decay], "scan")?;
        let z = b.unary("gate", parts[0], UnaryKind::Silu)?;
        let y = b.mul("gated", s, z)?;
        let y = b.matmul("out", y, out_proj)?;
        b.add("residual", x, y)
    }
}
