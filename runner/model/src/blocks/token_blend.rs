//! `token_blend`: a learned per-channel blend of each token with the one before it,
//! `g = σ(x · w_gate [D, D])`, `x = (1 - g) ⊙ x + g ⊙ x_{t-1}` (`x_{-1} = 0` in every row). No norm and
//! no extra residual, as in mixlab.

use super::{Block, BlockCtx, BlockType, ModelDims, Role};
use crate::error::ConfigError;
use crate::ir::{BuildError, Builder, ValueId};
use crate::json::Fields;
use crate::ops::{BinaryKind, TokenShift, UnaryKind};

pub const TYPE: BlockType = BlockType {
    name: "token_blend",
    parse,
    fields: &[],
    summary: "gated blend of each token with the previous one",
};

#[derive(Debug, Clone, PartialEq)]
pub struct TokenBlend;

fn parse(_f: &mut Fields<'_>, _dims: &ModelDims) -> Result<Box<dyn Block>, ConfigError> {
    Ok(Box::new(TokenBlend))
}

impl Block for TokenBlend {
    fn kind(&self) -> &'static str {
        "token_blend"
    }

    fn lower(
        &self,
        b: &mut Builder,
        x: ValueId,
        ctx: &BlockCtx<'_>,
    ) -> Result<ValueId, BuildError> {
        let d = ctx.dims.model_dim;
        let w = super::kit::matrix(b, ctx, "w_gate", d, d, Role::In)?;
        let g = b.matmul("gate_logits", x, w)?;
        let g = b.unary("gate", g, UnaryKind::Sigmoid)?;
        let prev = b.op1(TokenShift, &[x], "previous")?;
        // (1 - g) ⊙ x + g ⊙ prev = x + g ⊙ (prev - x)
        let diff = b.op1(crate::ops::Binary(BinaryKind::Sub), &[prev, x], "delta")?;
        let step = b.mul("blend", g, diff)?;
        b.add("blended", x, step)
    }
}
