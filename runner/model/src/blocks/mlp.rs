//! `mlp`: pre-norm feed-forward `x += act(RMSNorm(x)·w_up)·w_down` with `activation` one of `silu`
//! (default), `gelu` (tanh approximation, as mixlab), `relu`, `leaky_relu_sq` (`LeakyReLU(z, 0.5)²`).
//! As in mixlab, this block has no dropout.

use super::{Block, BlockType, ModelDims};
use crate::error::ConfigError;
use crate::ir::{Activation, Builder, Init, ParamGroup, ValueId};
use crate::json::Fields;

pub const TYPE: BlockType = BlockType {
    name: "mlp",
    parse,
    fields: &["activation"],
    summary: "pre-norm FFN (silu, gelu, relu, leaky_relu_sq)",
};

#[derive(Debug, Clone, PartialEq)]
pub struct Mlp {
    pub activation: Activation,
}

fn parse(f: &mut Fields<'_>, _dims: &ModelDims) -> Result<Box<dyn Block>, ConfigError> {
    let activation = match f.string("activation")?.as_deref() {
        None | Some("silu") => Activation::Silu,
        Some("gelu") => Activation::GeluTanh,
        Some("relu") => Activation::Relu,
        Some("leaky_relu_sq") => Activation::LeakyReluSquared { slope: 0.5 },
        Some(other) => {
            return Err(f
                .error("activation", format!("unknown activation {other:?}"))
                .with_hint("use silu, gelu, relu or leaky_relu_sq"));
        }
    };
    Ok(Box::new(Mlp { activation }))
}

impl Block for Mlp {
    fn kind(&self) -> &'static str {
        "mlp"
    }

    fn lower(&self, b: &mut Builder, x: ValueId, dims: &ModelDims) -> ValueId {
        let (d, f) = (dims.model_dim, dims.ffn_dim);
        let norm = b.weight(
            "ffn_norm_scale",
            &[d],
            Init::Constant(1.0),
            ParamGroup::Scalar,
        );
        let w_up = b.matrix("w_up", d, f, dims.matrix_init);
        let w_down = b.matrix("w_down", f, d, dims.matrix_init);
        let h = b.rms_norm("ffn_norm", x, norm, dims.norm_eps);
        let u = b.linear("up", h, w_up);
        let a = b.activation("act", u, self.activation);
        let y = b.linear("down", a, w_down);
        b.add("ffn_residual", x, y)
    }
}
