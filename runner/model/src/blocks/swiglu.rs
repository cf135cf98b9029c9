//! `swiglu`: pre-norm gated feed-forward, `x += ((σ(h·w_gate) ⊙ h·w_up) · w_down)` with `h = RMSNorm(x)`.
//!
//! mixlab quirk kept on purpose: the gate is a **sigmoid** (a GLU), not SiLU, as in mixlab's `swiglu`.

use super::{Block, BlockType, ModelDims};
use crate::error::ConfigError;
use crate::ir::{Activation, Builder, Init, ParamGroup, ValueId};
use crate::json::Fields;

pub const TYPE: BlockType = BlockType {
    name: "swiglu",
    parse,
    fields: &[],
    summary: "pre-norm sigmoid-gated FFN (mixlab's swiglu)",
};

#[derive(Debug, Clone, PartialEq)]
pub struct Swiglu;

fn parse(_f: &mut Fields<'_>, _dims: &ModelDims) -> Result<Box<dyn Block>, ConfigError> {
    Ok(Box::new(Swiglu))
}

impl Block for Swiglu {
    fn kind(&self) -> &'static str {
        "swiglu"
    }

    fn lower(&self, b: &mut Builder, x: ValueId, dims: &ModelDims) -> ValueId {
        let (d, f) = (dims.model_dim, dims.ffn_dim);
        let norm = b.weight(
            "ffn_norm_scale",
            &[d],
            Init::Constant(1.0),
            ParamGroup::Scalar,
        );
        let w_gate = b.matrix("w_gate", d, f, dims.matrix_init);
        let w_up = b.matrix("w_up", d, f, dims.matrix_init);
        let w_down = b.matrix("w_down", f, d, dims.matrix_init);
        let h = b.rms_norm("ffn_norm", x, norm, dims.norm_eps);
        let g = b.linear("gate", h, w_gate);
        let g = b.activation("gate_sigmoid", g, Activation::Sigmoid);
        let u = b.linear("up", h, w_up);
        let gu = b.mul("gated", g, u);
        let y = b.linear("down", gu, w_down);
        let y = b.dropout("ffn_dropout", y, dims.dropout);
        b.add("ffn_residual", x, y)
    }
}
