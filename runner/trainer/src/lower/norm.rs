//! Norms over the last axis (MLX's fused kernels, which accumulate in float32).

use mixsweep_mlx::{Array, Dtype, Result};
use mixsweep_model::ops::{Norm, NormKind};

pub fn norm(n: &Norm, inputs: &[Array], _dtype: Dtype) -> Result<Array> {
    let x = &inputs[0];
    match n.kind {
        NormKind::Rms => x.rms_norm(inputs.get(1), n.eps),
        NormKind::Layer => x.layer_norm(inputs.get(1), inputs.get(2), n.eps),
    }
}
