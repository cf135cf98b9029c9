//! `geglu`: the `swiglu` block with a tanh-approximated GELU gate,
//! `x += scale ⊙ ((GELU_tanh(h·w_gate) ⊙ h·w_up) · w_down)`, `h = Norm(x)`; mixlab's field names
//! and weights (`ffn_norm_scale`, `w_gate`, `w_up`, `w_down`).

use super::swiglu::GatedFfn;
use super::{Block, BlockType, ModelDims};
use crate::error::ConfigError;
use crate::json::Fields;
use crate::ops::UnaryKind;

pub const TYPE: BlockType = BlockType {
    name: "geglu",
    parse,
    fields: &[],
    summary: "pre-norm GELU-gated FFN",
};

fn parse(_f: &mut Fields<'_>, _dims: &ModelDims) -> Result<Box<dyn Block>, ConfigError> {
    Ok(Box::new(GatedFfn {
        gate: UnaryKind::GeluTanh,
        kind: "geglu",
    }))
}
